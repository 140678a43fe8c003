//! The client's resilience pieces as tower layers, for any gRPC service —
//! tonic's `Channel`, a tonic-generated client's transport, a stack of your own.
//!
//! A generated tai client runs these decisions flat, in one state machine per
//! attempt and without allocating per call; these layers run the *same*
//! decisions — one gRFC A6 decision (the engine's `Retries::next_delay`), one backoff, one
//! [`CircuitBreaker`], one [`RetryThrottle`], one `grpc-timeout` codec — over
//! `http::Request<tonic::body::Body>` → `http::Response<B>`, with policies built
//! at run time ([`ByMethod`]: a default and per-method overrides, keyed by path).
//!
//! Stack them outside in, as the engine orders them: the deadline covers the
//! whole call, retries or hedges run inside it, and the breaker gates each
//! attempt.
//!
//! A call made through them inside a tai handler carries on the call being
//! handled, as a generated client's does (see [`crate::context`]): the
//! outermost tai layer writes the handler's trace as a child `traceparent`
//! (one span id per call: the layers have no attempt spans), and the deadline,
//! retry and hedge layers cap the call by the handler's deadline, failing it at
//! once, sending nothing, once that has passed.
//!
//! ```no_run
//! use std::time::Duration;
//! use tai_runtime::Code;
//! use tai_runtime::layers::{BreakerLayer, ByMethod, DeadlineLayer, RetryLayer};
//! use tai_runtime::policy::{BreakerPolicy, CodeSet, RetryPolicy, ThrottlePolicy};
//! use tower::ServiceBuilder;
//!
//! # fn f(channel: tonic::transport::Channel) {
//! let retry = RetryPolicy::new(
//!     4,
//!     Duration::from_millis(50),
//!     Duration::from_secs(1),
//!     2.0,
//!     CodeSet::of(&[Code::Unavailable]),
//! );
//! let breaker = BreakerPolicy::new(
//!     5,
//!     Duration::from_secs(1),
//!     Duration::from_secs(30),
//!     1,
//!     CodeSet::of(&[Code::Unavailable, Code::Internal]),
//! );
//! let throttle = ThrottlePolicy::new(10, 0.1);
//! let stack = ServiceBuilder::new()
//!     // 2s for every method, 100ms for one of them.
//!     .layer(DeadlineLayer::new(
//!         ByMethod::all(Duration::from_secs(2))
//!             .method("/demo.Kv/Get", Duration::from_millis(100)),
//!     ))
//!     // Retry every method but one (a streaming upload is never retried anyway).
//!     .layer(RetryLayer::new(
//!         ByMethod::all(retry).method("/demo.Kv/Put", None),
//!         Some(throttle),
//!     ))
//!     .layer(BreakerLayer::new(breaker))
//!     .service(channel);
//! // `stack` is a gRPC service: give it to `tonic::client::Grpc::new`, or to a
//! // tonic-generated client's `new`.
//! # let _ = stack;
//! # }
//! ```
//!
//! A generated policy works too: each layer's `for_service` reads a
//! [`ServicePolicy`](crate::policy::ServicePolicy) (a compiled one, or one built
//! at run time).
//!
//! Retrying and hedging need the request again: the layers keep a request body
//! that is complete when the call starts (tonic's unary and server-streaming
//! requests always are) and at most a size limit (4 MiB unless set), once, as
//! [`Bytes`](bytes::Bytes), and send a copy per attempt. A larger request, or a
//! streaming one, is sent once and not retried.
//!
//! [`CircuitBreaker`]: crate::breaker::CircuitBreaker
//! [`RetryThrottle`]: crate::throttle::RetryThrottle

mod breaker;
mod classify;
mod deadline;
mod hedge;
mod request;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::{MethodPolicy, ServicePolicy};

pub use breaker::{Admitted, Breaker, BreakerFuture, BreakerLayer, BreakerOpen};
pub use classify::{Finish, Observed};
pub use deadline::{Deadline, DeadlineBody, DeadlineFuture, DeadlineLayer};
pub use hedge::{Hedge, HedgeFuture, HedgeLayer};
pub use retry::{Refill, Retry, RetryFuture, RetryLayer};

/// The largest request body the retry and hedge layers keep for another
/// attempt, unless set otherwise: 4 MiB, tai's (and gRPC's) default message
/// size limit.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 4 << 20;

/// A policy per method, keyed by the method's HTTP/2 path
/// (`"/package.Service/Method"`), with a default for the paths not named.
///
/// Cheap to clone (the table is shared); built once, read on every call.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::layers::ByMethod;
///
/// let timeouts = ByMethod::all(Duration::from_secs(2))
///     .method("/demo.Kv/Get", Duration::from_millis(100))
///     .method("/demo.Kv/Watch", None); // no timeout for the long-lived stream
/// assert_eq!(timeouts.get("/demo.Kv/Get"), Some(Duration::from_millis(100)));
/// assert_eq!(timeouts.get("/demo.Kv/Watch"), None);
/// assert_eq!(timeouts.get("/demo.Kv/Put"), Some(Duration::from_secs(2)));
/// assert_eq!(ByMethod::<Duration>::none().get("/demo.Kv/Put"), None);
/// ```
#[derive(Clone, Debug)]
pub struct ByMethod<P> {
    default: Option<P>,
    methods: Arc<HashMap<Box<str>, Option<P>>>,
}

impl<P: Copy> ByMethod<P> {
    /// `policy` for every method.
    pub fn all(policy: P) -> Self {
        Self {
            default: Some(policy),
            methods: Arc::default(),
        }
    }

    /// No policy, except for the methods named with [`method`](Self::method).
    pub fn none() -> Self {
        Self {
            default: None,
            methods: Arc::default(),
        }
    }

    /// `policy` (or, with `None`, no policy) for the method at `path`.
    pub fn method(mut self, path: &str, policy: impl Into<Option<P>>) -> Self {
        Arc::make_mut(&mut self.methods).insert(path.into(), policy.into());
        self
    }

    /// The policy `pick` reads from each method of `service`; no policy for
    /// methods the service does not list.
    ///
    /// ```
    /// use tai_runtime::layers::ByMethod;
    /// use tai_runtime::policy::ServicePolicy;
    ///
    /// let service = ServicePolicy::new("demo.Kv", &[]);
    /// let retries = ByMethod::from_service(&service, |m| m.retry);
    /// assert_eq!(retries.get("/demo.Kv/Get"), None);
    /// ```
    pub fn from_service(
        service: &ServicePolicy,
        pick: impl Fn(&MethodPolicy) -> Option<P>,
    ) -> Self {
        service
            .methods
            .iter()
            .fold(Self::none(), |table, m| table.method(m.path, pick(m)))
    }

    /// The policy of the method at `path`.
    pub fn get(&self, path: &str) -> Option<P> {
        match self.methods.get(path) {
            Some(policy) => *policy,
            None => self.default,
        }
    }
}

impl<P: Copy> From<P> for ByMethod<P> {
    /// `policy` for every method.
    fn from(policy: P) -> Self {
        Self::all(policy)
    }
}

/// What the retry and hedge layers share: a policy per method, the retry
/// throttle, and how large a request they keep for another attempt.
#[derive(Clone, Debug)]
struct Repeat<P> {
    policies: ByMethod<P>,
    throttle: Option<Arc<crate::throttle::RetryThrottle>>,
    max_request_size: usize,
}

impl<P> Repeat<P> {
    fn new(policies: ByMethod<P>, throttle: Option<crate::policy::ThrottlePolicy>) -> Self {
        Self {
            policies,
            throttle: throttle.map(|t| Arc::new(crate::throttle::RetryThrottle::new(&t))),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}
