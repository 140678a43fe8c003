//! The endpoints of one channel and the call path through them: pick an endpoint
//! by the balancer and a ready connection of it, wait when none can take a call,
//! and send a request so that one never written can be re-sent elsewhere.
//!
//! One shared set per channel (its clones hold it through `Shared`), read
//! lock-free on every call (`ArcSwap` of the endpoint list); the lock guards only
//! membership changes, which discovery makes rarely.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::connection::{self, Connection, DriverContext};
use super::connectivity::ConnectivityState;
use super::endpoint::{CallResult, EjectionBudget, Endpoint};
use super::request::RequestBody;
use super::response::{CallGuard, ResponseBody, connection_status, grpc_status, own_status};
use super::{balance, health, rng};
use crate::config::{BalancerKind, ClientConfig};
use crate::metrics::Metrics;
use crate::sync::lock;

/// An endpoint, a connection of it, and the connection's request sender.
pub(super) type Pick = (Arc<Endpoint>, Arc<Connection>, connection::Sender);

/// Transparent re-sends of one call, at most: enough to step past every closing
/// connection of a small cluster, never a loop.
pub(super) const MAX_TRANSPARENT_RETRIES: usize = 8;

/// The endpoints of a channel and everything the call path reads.
pub(crate) struct EndpointSet {
    pub(super) endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    pub(super) keys: Mutex<HashMap<String, String>>,
    pub(super) budget: EjectionBudget,
    pub(super) rng: Arc<rng::Rng>,
    pub(super) cursor: AtomicUsize,
    pub(super) changed: watch::Sender<u64>,
    pub(super) resolved: AtomicBool,
    pub(super) driver: Arc<DriverContext>,
    pub(super) config: Arc<ClientConfig>,
    pub(super) metrics: Metrics,
}

impl EndpointSet {
    pub(super) fn snapshot(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
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

    pub(super) fn state(&self) -> ConnectivityState {
        let endpoints = self.snapshot();
        if endpoints.is_empty() && !self.resolved.load(Ordering::Acquire) {
            return ConnectivityState::Connecting;
        }
        ConnectivityState::aggregate(endpoints.iter().map(|e| e.state()))
    }

    pub(super) fn pick(&self) -> Option<Pick> {
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

    pub(super) fn record(&self, endpoint: &Endpoint, result: CallResult) {
        let endpoints = self.snapshot().len();
        endpoint.record(
            result,
            self.config.outlier.as_ref(),
            &self.budget,
            endpoints,
        );
    }

    pub(super) fn no_endpoint_status(&self) -> Status {
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
    pub(super) async fn wait_for_pick(&self) -> Result<Pick, Status> {
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
    pub(super) fn send(
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
                // The body as HTTP/2 gets it: ending with its last message.
                let request = request.map(RequestBody::new);
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
                        Err(Err(request.map(RequestBody::into_inner)))
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
