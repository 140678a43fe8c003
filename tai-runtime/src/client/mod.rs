//! The client side of tai: what a generated client runs on every call.
//!
//! ```text
//! ClientCore (core) ─► Observed: span + metrics (observed)
//!   ─► deadline for the whole call (deadline, timer)
//!   ─► retry loop (retry) | hedging (hedge) | one attempt
//!      (chosen per call from the policy in effect: route)
//!        ─► Attempt (attempt): breaker gate (breaker/), transport (transport),
//!           grpc-timeout, send, read; outcome to breaker and throttle (throttle)
//! ```
//!
//! Every piece is plain data plus a small state machine: policies are `const`
//! data, the state a client shares (breakers, throttle) lives in
//! [`ClientState`](state::ClientState), and a call allocates nothing for its
//! policies beyond the one `Arc` its attempts share.

mod attempt;
pub(crate) mod backoff;
pub mod breaker;
mod codec;
pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod contract;
pub(crate) mod core;
pub(crate) mod deadline;
pub(crate) mod forward;
mod hedge;
pub mod layers;
mod observed;
mod options;
pub(crate) mod retry;
mod route;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod stream;
pub mod throttle;
pub(crate) mod timer;
pub(crate) mod token;
mod transport;
