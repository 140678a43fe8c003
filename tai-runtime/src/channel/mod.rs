//! A load-balanced, health-tracked gRPC channel over a set of endpoints.
//!
//! ```text
//! Endpoints (one | list | DNS re-resolved | Change stream)
//!    └─► EndpointSet ─ Endpoint ─ pool of Connections (driver task each: dial,
//!          │                         HTTP/2, keepalive, idle, reconnect backoff)
//!          ├─ outlier ejection (consecutive failures, capped %, growing time)
//!          └─ active grpc.health.v1 Watch (optional)
//! call ─► balancer pick (round-robin | least-loaded P2C | peak-EWMA | random)
//!       ─► least-busy ready connection ─► hyper HTTP/2 (no tower::buffer hop)
//! ```
//!
//! A `Channel` is a tower service (`http::Request<tonic::body::Body>` in), so it is
//! a `tai_runtime` transport and a tonic one alike. Calls that never left the
//! client (the connection closed before the request was written) are re-sent on
//! another endpoint transparently: they cost no retry attempt and no throttle
//! token (gRFC A6 transparent retry).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tai_runtime::channel::{Channel, Endpoints};
//! use tai_runtime::config::{BalancerKind, ClientConfig};
//!
//! let mut config = ClientConfig::high_reliability();
//! config.balancer = BalancerKind::LeastLoaded;
//! let channel = Channel::builder(Endpoints::list(["127.0.0.1:7001", "127.0.0.1:7002"]))
//!     .config(config)
//!     .build()?;
//! for stats in channel.endpoint_stats() {
//!     println!("{} {} in flight", stats.address, stats.in_flight);
//! }
//! # Ok(()) }
//! ```

mod balance;
mod builder;
mod coalesce;
#[cfg(feature = "bench")]
pub(crate) use balance::bench as balance_bench;
mod connection;
mod connectivity;
mod connector;
mod discovery;
mod endpoint;
mod endpoint_set;
mod first_frame;
mod headers_with_body;
mod health;
mod request;
mod response;
mod rng;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

pub use builder::ChannelBuilder;
pub use connectivity::ConnectivityState;
pub use connector::{BoxIo, ConnectFuture, Connector, Io};
pub use discovery::{Endpoints, Resolve, ResolveFuture, SystemResolver};
pub use endpoint::EndpointStats;
pub use response::ResponseBody;

pub(crate) use endpoint_set::EndpointSet;
use endpoint_set::{MAX_TRANSPARENT_RETRIES, Pick};

use crate::config::ClientConfig;
use crate::metrics::Metrics;

use crate::BoxError;

pub(super) struct Shared {
    pub(super) set: Arc<EndpointSet>,
    pub(super) shutdown: watch::Sender<bool>,
    /// What the channel reaches, when that names a backend (see
    /// [`Channel::target`]).
    pub(super) target: Option<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for e in self.set.snapshot().iter() {
            e.shutdown.send_replace(true);
        }
    }
}

/// A load-balanced gRPC channel; cheap to clone (clones share endpoints and
/// connections). Dropping the last clone closes its connections after their calls.
pub struct Channel {
    shared: Arc<Shared>,
    /// Where this clone's `poll_ready` stands.
    readiness: Readiness,
}

/// Where a clone's `poll_ready` stands.
enum Readiness {
    /// Not asked since the last call.
    Unasked,
    /// Waiting for an endpoint that can take a call (boxed: only when none can).
    Waiting(Pin<Box<dyn Future<Output = Result<Pick, Status>> + Send + Sync>>),
    /// Ready: what the next call goes to.
    Picked(Pick),
}

impl Clone for Channel {
    /// A clone shares everything but its own readiness.
    fn clone(&self) -> Self {
        Self::from_shared(Arc::clone(&self.shared))
    }
}

impl Channel {
    pub(super) fn from_shared(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            readiness: Readiness::Unasked,
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("state", &self.state())
            .field("endpoints", &self.shared.set.snapshot().len())
            .finish()
    }
}

impl Channel {
    /// A builder for a channel over `endpoints`.
    pub fn builder(endpoints: Endpoints) -> ChannelBuilder {
        ChannelBuilder {
            endpoints,
            config: ClientConfig::default(),
            connector: None,
            seed: None,
            metrics: Metrics::global().clone(),
        }
    }

    /// A channel to one address with the default configuration.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tai_runtime::ConnectError> {
    /// let channel = tai_runtime::Channel::to("127.0.0.1:50051")?;
    /// # Ok(()) }
    /// ```
    pub fn to(address: impl Into<String>) -> Result<Channel, crate::ConnectError> {
        Self::builder(Endpoints::one(address)).build()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.set.config
    }

    /// The channel's connectivity: `Ready` if any endpoint is.
    pub fn state(&self) -> ConnectivityState {
        self.shared.set.state()
    }

    /// Whether a call could be sent now without waiting.
    pub fn is_healthy(&self) -> bool {
        self.shared.set.pick().is_some()
    }

    /// Waits until the state differs from `from`, or `deadline` passes; returns
    /// whether it changed (grpc's `WaitForStateChange`).
    pub async fn wait_for_state_change(&self, from: ConnectivityState, deadline: Instant) -> bool {
        self.wait_change(from, Some(deadline)).await
    }

    /// [`Channel::wait_for_state_change`] with `None` for no deadline.
    async fn wait_change(&self, from: ConnectivityState, deadline: Option<Instant>) -> bool {
        let mut changes = self.shared.set.changed.subscribe();
        loop {
            if self.state() != from {
                return true;
            }
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return false },
                () = expired => return self.state() != from,
            }
        }
    }

    /// Waits until the channel is `Ready` or `timeout` passes; a `timeout` too long
    /// for the clock (`Duration::MAX`, say) waits as long as it takes.
    pub async fn ready(&self, timeout: Duration) -> bool {
        // A deadline past what `Instant` can hold is no deadline, not a panic.
        let deadline = Instant::now().checked_add(timeout);
        for e in self.shared.set.snapshot().iter() {
            e.want();
        }
        while self.state() != ConnectivityState::Ready {
            if !self.wait_change(self.state(), deadline).await {
                return false;
            }
        }
        true
    }

    /// Statistics of every endpoint.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.shared
            .set
            .snapshot()
            .iter()
            .map(|e| e.stats())
            .collect()
    }

    /// Connection attempts made to `address` so far (all pooled connections).
    pub fn connect_attempts(&self, address: &str) -> u64 {
        self.shared
            .set
            .snapshot()
            .iter()
            .filter(|e| e.address == address)
            .flat_map(|e| e.connections.iter())
            .map(|c| c.attempts.load(Ordering::Relaxed))
            .sum()
    }

    /// The backend this channel reaches, as clients key what they share by it
    /// (breakers and retry throttling, see
    /// [`ClientState`](crate::ClientState)): its addresses or the DNS name it
    /// resolves. `None` over a connector of your own or a stream of endpoints.
    pub fn target(&self) -> Option<&str> {
        self.shared.target.as_deref()
    }

    /// Why no call could be sent now: each endpoint's state and last connection
    /// error (what a `connect` that timed out reports).
    pub(crate) fn unready_reason(&self) -> String {
        self.shared.set.no_endpoint_status().message().to_owned()
    }

    /// Reseeds the balancing and jitter randomness.
    pub fn reseed(&self, seed: u64) {
        self.shared.set.rng.reseed(seed);
    }
}

/// The future of a call on a [`Channel`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, BoxError>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Ready once an endpoint can take the call: the pick is made here and kept
    /// for the next `call`. Waiting for a connection happens here, not inside the
    /// call's future, so the caller knows that nothing was sent while it waited
    /// (the tai engine then counts a deadline that passes meanwhile as no
    /// failure of the server's). Readiness is per clone (the engine clones the
    /// channel for each attempt), so one waiting call never blocks the others.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match &mut self.readiness {
                Readiness::Picked(_) => return Poll::Ready(Ok(())),
                Readiness::Unasked => {
                    self.readiness = match self.shared.set.pick() {
                        Some(pick) => Readiness::Picked(pick),
                        None => {
                            let set = Arc::clone(&self.shared.set);
                            Readiness::Waiting(Box::pin(async move { set.wait_for_pick().await }))
                        }
                    };
                }
                Readiness::Waiting(wait) => match std::task::ready!(wait.as_mut().poll(cx)) {
                    Ok(pick) => self.readiness = Readiness::Picked(pick),
                    Err(status) => {
                        self.readiness = Readiness::Unasked;
                        return Poll::Ready(Err(status.into()));
                    }
                },
            }
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> ResponseFuture {
        let set = Arc::clone(&self.shared.set);
        let mut picked = match std::mem::replace(&mut self.readiness, Readiness::Unasked) {
            Readiness::Picked(pick) => Some(pick),
            _ => None,
        };
        Box::pin(async move {
            let mut request = request;
            for _ in 0..=MAX_TRANSPARENT_RETRIES {
                let pick = match picked.take().or_else(|| set.pick()) {
                    Some(p) => p,
                    None => set.wait_for_pick().await?,
                };
                match set.send(pick, request).await {
                    Ok(response) => return Ok(response),
                    Err(Ok(status)) => return Err(status.into()),
                    Err(Err(unsent)) => request = unsent,
                }
            }
            Err(Status::unavailable("every connection closed before the call could be sent").into())
        })
    }
}
