//! Internals exposed for tai's own benchmarks (`tai-runtime/benches`, `bench/`).
//! Not a public API.

pub use crate::channel::balance_bench::{Fake, Picker};
