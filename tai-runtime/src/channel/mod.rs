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
#[cfg(feature = "bench")]
pub(crate) use balance::bench as balance_bench;
mod connection;
mod connectivity;
mod connector;
mod discovery;
mod endpoint;
mod health;
mod rng;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Code, Status};

pub use connectivity::ConnectivityState;
pub use connector::{BoxIo, ConnectFuture, Connector, Io};
pub use discovery::{Endpoints, Resolve, ResolveFuture, SystemResolver};
pub use endpoint::EndpointStats;

use connection::{Connection, DriverContext};
use connector::TcpConnector;
use endpoint::{CallResult, EjectionBudget, Endpoint};

use crate::config::{BalancerKind, ClientConfig};
use crate::metrics::Metrics;
use crate::sync::lock;

use crate::BoxError;

/// Transparent re-sends of one call, at most: enough to step past every closing
/// connection of a small cluster, never a loop.
const MAX_TRANSPARENT_RETRIES: usize = 8;

/// The endpoints of a channel and everything the call path reads.
pub(crate) struct EndpointSet {
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    keys: Mutex<HashMap<String, String>>,
    budget: EjectionBudget,
    rng: Arc<rng::Rng>,
    cursor: AtomicUsize,
    changed: watch::Sender<u64>,
    resolved: AtomicBool,
    driver: Arc<DriverContext>,
    config: Arc<ClientConfig>,
    metrics: Metrics,
}

impl EndpointSet {
    fn snapshot(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        lock(&self.keys).keys().cloned().collect()
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        lock(&self.keys).contains_key(key)
    }

    pub(crate) fn mark_resolved(&self) {
        if !self.resolved.swap(true, Ordering::AcqRel) {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    pub(crate) fn insert(self: &Arc<Self>, address: String, scheme: Scheme, authority: Authority) {
        self.insert_keyed(address.clone(), address, scheme, authority);
    }

    /// Adds an endpoint under `key` (replacing one with the same key) and starts its
    /// connections.
    pub(crate) fn insert_keyed(
        self: &Arc<Self>,
        key: String,
        address: String,
        scheme: Scheme,
        authority: Authority,
    ) {
        let mut keys = lock(&self.keys);
        if let Some(old) = keys.get(&key) {
            if *old == address {
                return;
            }
            let old = old.clone();
            drop(keys);
            self.remove(&key);
            tracing::debug!(%key, %old, %address, "endpoint address changed");
            keys = lock(&self.keys);
        }
        let endpoint = Arc::new(Endpoint::new(
            address.clone(),
            scheme,
            authority,
            self.config.connection.pool_size,
            self.config.connection.keepalive.map(|k| k.time),
            self.metrics.endpoint(&address),
        ));
        for connection in endpoint.connections.iter() {
            tokio::spawn(connection::drive(
                Arc::clone(connection),
                address.clone(),
                Arc::clone(&endpoint.keepalive),
                Arc::clone(&self.driver),
                endpoint.metrics.clone(),
                endpoint.shutdown.subscribe(),
            ));
        }
        if let Some(hc) = &self.config.health_check {
            tokio::spawn(health::watch(
                Arc::clone(&endpoint),
                hc.service.clone(),
                Arc::clone(self),
                endpoint.shutdown.subscribe(),
            ));
        }
        keys.insert(key, address);
        let mut next = Vec::clone(&self.snapshot());
        next.push(endpoint);
        self.endpoints.store(Arc::new(next));
        drop(keys);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Takes an endpoint out of rotation; its calls in flight finish first.
    pub(crate) fn remove(&self, key: &str) {
        let Some(address) = lock(&self.keys).remove(key) else {
            return;
        };
        let current = self.snapshot();
        let (gone, kept): (Vec<_>, Vec<_>) =
            current.iter().cloned().partition(|e| e.address == address);
        self.endpoints.store(Arc::new(kept));
        for e in gone {
            e.release(&self.budget);
            e.shutdown.send_replace(true);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    fn state(&self) -> ConnectivityState {
        let endpoints = self.snapshot();
        if endpoints.is_empty() && !self.resolved.load(Ordering::Acquire) {
            return ConnectivityState::Connecting;
        }
        ConnectivityState::aggregate(endpoints.iter().map(|e| e.state()))
    }

    fn pick(&self) -> Option<Pick> {
        let endpoints = self.snapshot();
        for _ in 0..2 {
            let endpoint = &endpoints[balance::pick(
                self.config.balancer,
                &endpoints,
                &self.budget,
                &self.rng,
                &self.cursor,
            )?];
            if let Some((c, sender)) = endpoint.pick_connection() {
                return Some((Arc::clone(endpoint), Arc::clone(c), sender));
            }
        }
        None
    }

    fn record(&self, endpoint: &Endpoint, result: CallResult) {
        let endpoints = self.snapshot().len();
        endpoint.record(
            result,
            self.config.outlier.as_ref(),
            &self.budget,
            endpoints,
        );
    }

    fn no_endpoint_status(&self) -> Status {
        let endpoints = self.snapshot();
        if endpoints.is_empty() {
            return Status::unavailable(
                "no endpoints: the endpoint list is empty or has not resolved yet",
            );
        }
        let reasons: Vec<String> = endpoints
            .iter()
            .map(|e| {
                let error = e.connections.iter().find_map(|c| c.last_error());
                match (e.state(), error) {
                    (ConnectivityState::Ready, _) => {
                        format!("{}: ejected or not serving", e.address)
                    }
                    (state, Some(err)) => format!("{} ({state}): {err}", e.address),
                    (state, None) => format!("{} ({state})", e.address),
                }
            })
            .collect();
        Status::unavailable(format!("no healthy endpoint: {}", reasons.join("; ")))
    }

    /// Waits until an endpoint can take a call; fails fast when all are failing and
    /// the call does not wait for ready.
    async fn wait_for_pick(&self) -> Result<Pick, Status> {
        let mut changes = self.changed.subscribe();
        loop {
            for e in self.snapshot().iter() {
                e.want();
            }
            if let Some(pick) = self.pick() {
                return Ok(pick);
            }
            match self.state() {
                ConnectivityState::Shutdown => {
                    return Err(Status::unavailable("channel is shut down"));
                }
                ConnectivityState::Connecting | ConnectivityState::Idle => {}
                // Ready endpoints that are all ejected or NOT_SERVING, or all failing:
                ConnectivityState::Ready | ConnectivityState::TransientFailure => {
                    if !self.config.connection.wait_for_ready {
                        return Err(self.no_endpoint_status());
                    }
                }
            }
            if changes.changed().await.is_err() {
                return Err(Status::unavailable("channel is shut down"));
            }
        }
    }

    /// Sends `request` on `endpoint`/`connection`; gives the request back if it was
    /// never sent.
    ///
    /// Not an `async fn`: the request is handed to the connection before the first
    /// await, so the returned future holds no copy of it. An `async fn` would keep
    /// its arguments in its state, and that state sits in every call's boxed future
    /// (`Channel::call`), pushing it past the allocator's small-size cache.
    fn send(
        self: &Arc<Self>,
        (endpoint, connection, mut sender): (Arc<Endpoint>, Arc<Connection>, connection::Sender),
        mut request: http::Request<tonic::body::Body>,
    ) -> impl Future<
        Output = Result<
            http::Response<ResponseBody>,
            Result<Status, http::Request<tonic::body::Body>>,
        >,
    > + Send
    + 'static {
        let uri = std::mem::take(request.uri_mut());
        let mut parts = uri.into_parts();
        parts.scheme = Some(endpoint.scheme.clone());
        parts.authority = Some(endpoint.authority.clone());
        let sent = match http::Uri::from_parts(parts) {
            Ok(uri) => {
                *request.uri_mut() = uri;
                endpoint.call_started(&connection);
                let guard = CallGuard {
                    endpoint,
                    connection,
                    set: Arc::clone(self),
                    recorded: false,
                };
                // Only peak-EWMA uses the latency; the others need no clock.
                let start = (self.config.balancer == BalancerKind::PeakEwma).then(Instant::now);
                Ok((guard, start, sender.try_send_request(request)))
            }
            Err(e) => Err(Status::internal(format!("invalid request URI: {e}"))),
        };
        async move {
            let (mut guard, start, response) = sent.map_err(Ok)?;
            match response.await {
                Ok(response) => {
                    if let Some(start) = start {
                        let now = Instant::now();
                        guard.endpoint.observe_latency(now - start, now);
                    }
                    if let Some(code) = grpc_status(response.headers()) {
                        guard.finish(CallResult::Status(code));
                    }
                    Ok(response.map(|body| ResponseBody {
                        inner: body,
                        guard: Some(guard),
                    }))
                }
                Err(mut e) => match e.take_message() {
                    Some(request) => {
                        // Never sent: the connection is going away. Not the endpoint's
                        // fault as far as the call goes; re-send elsewhere.
                        guard.connection.mark_broken(&guard.set.changed);
                        guard.recorded = true;
                        Err(Err(request))
                    }
                    None => {
                        let error = e.into_error();
                        if let Some(status) = own_status(&error) {
                            guard.finish(CallResult::Status(status.code()));
                            return Err(Ok(status));
                        }
                        guard.finish(CallResult::ConnectionLost);
                        let address = guard.endpoint.address.clone();
                        Err(Ok(connection_status(&address, error)))
                    }
                },
            }
        }
    }
}

/// Keeps a call counted as in flight until its response body is finished or
/// dropped, and records its result once.
struct CallGuard {
    endpoint: Arc<Endpoint>,
    connection: Arc<Connection>,
    set: Arc<EndpointSet>,
    recorded: bool,
}

impl CallGuard {
    fn finish(&mut self, result: CallResult) {
        if !self.recorded {
            self.recorded = true;
            self.set.record(&self.endpoint, result);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.endpoint.call_ended(&self.connection);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(crate::wire::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// A status the caller's own request body failed with (tonic's encoder refusing
/// an oversize message, say), found in the transport error's source chain.
fn own_status(error: &hyper::Error) -> Option<Status> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Some(Status::new(status.code(), status.message()));
        }
        source = e.source();
    }
    None
}

/// The status of a call whose connection failed under it: UNAVAILABLE, as gRPC
/// specifies for transport failures, unless tonic knows better.
fn connection_status(address: &str, error: hyper::Error) -> Status {
    let status = Status::from_error(Box::new(error));
    match status.code() {
        Code::Unknown | Code::Internal => {
            // The error stays reachable as the source: the call engine reads it
            // (an HTTP/2 REFUSED_STREAM is retried transparently).
            let mut unavailable = Status::unavailable(format!("{address}: {}", status.message()));
            unavailable.set_source(Arc::new(status));
            unavailable
        }
        _ => status,
    }
}

/// The response body of a call on a [`Channel`]: tracks the call until it ends and
/// reads its final status for the endpoint's health.
pub struct ResponseBody {
    inner: Incoming,
    guard: Option<CallGuard>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Only the trailers frame ends the call; data frames leave the guard.
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut guard) = this.guard.take()
                {
                    guard.finish(CallResult::Status(
                        grpc_status(trailers).unwrap_or(Code::Unknown),
                    ));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let address = this
                    .guard
                    .as_ref()
                    .map(|g| g.endpoint.address.clone())
                    .unwrap_or_default();
                if let Some(mut guard) = this.guard.take() {
                    guard.finish(CallResult::ConnectionLost);
                }
                Poll::Ready(Some(Err(connection_status(&address, e))))
            }
            Poll::Ready(None) => {
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Shared {
    set: Arc<EndpointSet>,
    shutdown: watch::Sender<bool>,
    /// What the channel reaches, when that names a backend (see
    /// [`Channel::target`]).
    target: Option<String>,
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

/// An endpoint, a connection of it, and the connection's request sender.
type Pick = (Arc<Endpoint>, Arc<Connection>, connection::Sender);

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
    fn from_shared(shared: Arc<Shared>) -> Self {
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

/// Builds a [`Channel`].
pub struct ChannelBuilder {
    endpoints: Endpoints,
    config: ClientConfig,
    connector: Option<Arc<dyn Connector>>,
    seed: Option<u64>,
    metrics: Metrics,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ChannelBuilder {
    /// Uses `config` (default: [`ClientConfig::default`], the production preset).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens connections with `connector` instead of plain TCP (TLS, in-memory
    /// pipes, fault injection). `https://` addresses need one that speaks TLS,
    /// such as `tai_runtime::tls::ClientTls`.
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// Records the channel's series (`tai_channel_*`, by endpoint) into `metrics`
    /// instead of [`Metrics::global`]; give the clients over it the same set
    /// (`with_metrics`) to see everything in one registry.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tai_runtime::ConnectError> {
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let metrics = tai_runtime::metrics::Metrics::new(&mut registry);
    /// let channel = tai_runtime::Channel::builder(tai_runtime::Endpoints::one("127.0.0.1:50051"))
    ///     .metrics(&metrics)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// Makes balancing and backoff jitter reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the channel without waiting for any connection; the first call waits
    /// for one (bounded by its deadline). Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// If the configuration is invalid ([`ClientConfig::validate`]) or an endpoint
    /// address is, or an address is `https://` and no [connector](Self::connector)
    /// was given (plain TCP would send plaintext to a TLS server).
    pub fn build(self) -> Result<Channel, crate::ConnectError> {
        let description = format!("{:?}", self.endpoints);
        if self.connector.is_none() && self.endpoints.names_https() {
            return Err(crate::ConnectError::new(
                &description,
                "https:// needs a TLS connector: \
                 `.connector(tai_runtime::tls::ClientTls::from_pem(ca, cert, key)?)`",
            ));
        }
        // A connector of the user's own may reach anything (an in-memory pipe, a
        // proxy): only TCP to named addresses identifies a backend.
        let target = self
            .connector
            .is_none()
            .then(|| self.endpoints.target())
            .flatten();
        self.config
            .validate()
            .map_err(|e| crate::ConnectError::new(&description, e))?;
        let config = Arc::new(self.config);
        let rng = Arc::new(
            self.seed
                .map_or_else(rng::Rng::from_entropy, rng::Rng::seeded),
        );
        let (changed, _) = watch::channel(0u64);
        let connector = self.connector.unwrap_or_else(|| {
            Arc::new(TcpConnector {
                nodelay: config.connection.tcp_nodelay,
            })
        });
        let driver = Arc::new(DriverContext {
            config: Arc::new(config.connection.clone()),
            connector,
            changed: changed.clone(),
            jitter: Arc::clone(&rng),
        });
        let set = Arc::new(EndpointSet {
            endpoints: ArcSwap::from_pointee(Vec::new()),
            keys: Mutex::default(),
            budget: EjectionBudget::default(),
            rng,
            cursor: AtomicUsize::new(0),
            changed,
            resolved: AtomicBool::new(false),
            driver,
            config,
            metrics: self.metrics,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        self.endpoints
            .start(Arc::clone(&set), shutdown_rx)
            .map_err(|e| crate::ConnectError::new(&description, e))?;
        Ok(Channel::from_shared(Arc::new(Shared {
            set,
            shutdown,
            target,
        })))
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
