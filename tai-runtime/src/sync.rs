//! The one way this crate takes a `std::sync::Mutex`.
//!
//! Every mutex here guards state that a panic cannot leave half-changed in a way
//! worth refusing to read (counters, tables rebuilt whole, a random source), so a
//! poisoned lock is taken as it is: one panicking task must not make every later
//! call on the client or server panic too.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
