//! How a [`Server`] serves: tai's own accept loop, each connection on hyper's
//! HTTP/2 server, and the graceful shutdown; with what serving can end in
//! ([`Drained`], [`ServeError`]).
//!
//! The loop is tai's (not tonic's `Server`) for three reasons: the acceptor
//! ([`Accept`](super::Accept)) is a seam where TLS, with live certificate reload, plugs in;
//! each connection's bytes pass the keepalive police ([`KeepalivePolicy`]),
//! which hyper cannot be asked to be; and shutdown can end what is left after
//! the drain timeout (tonic waits for every connection without bound). The
//! connections run on hyper's HTTP/2 server, the calls on tonic's routes; a
//! caller's deadline runs on tai's shared deadline timer ([`ServerLayer`](super::ServerLayer)), not
//! a timer per call.
//!
//! Shutting down goes in this order: the listener closes; every service's
//! health turns NOT_SERVING (health watchers are sent it, then their streams
//! end); the [`on_shutdown`](Server::on_shutdown) hooks run; every connection
//! is sent GOAWAY (new calls are refused, with UNAVAILABLE at the client); calls
//! in flight finish, for up to the drain timeout; then what is left is cut off.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::body::Body;
use tower::Layer;
use tower::util::{BoxCloneSyncService, Either, MapResponse};

use super::accept::{ConnectInfo, DynAccept};
use super::builder::Routed;
use super::call::{self, Answer, CallService, Calls};
use super::keepalive::{KeepalivePolicy, Policed};
use super::limits::{self, Limit, ResponseLimit};
use super::reflection::{Reflection, ReflectionError};
use super::shed::Admission;
use super::{Server, ServerService};

/// How a server's shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Calls in flight when shutdown began.
    pub in_flight: usize,
    /// Whether they all finished within the drain timeout (otherwise the rest
    /// were cut off).
    pub complete: bool,
}

/// Why a server could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// Another process listens on the address.
    AddrInUse(SocketAddr),
    /// The address cannot be listened on.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Reflection could not read a descriptor set.
    Reflection(ReflectionError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddrInUse(addr) => write!(
                f,
                "address {addr} is already in use: is another server running on it?"
            ),
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Reflection(e) => write!(f, "cannot build the reflection service: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::AddrInUse(_) => None,
            Self::Bind { source, .. } => Some(source),
            Self::Reflection(e) => Some(e),
        }
    }
}

impl From<ReflectionError> for ServeError {
    fn from(e: ReflectionError) -> Self {
        Self::Reflection(e)
    }
}

/// Binds `addr`, with an error that says when it is taken.
///
/// ```no_run
/// # async fn run() -> Result<(), tai_runtime::server::ServeError> {
/// let listener = tai_runtime::server::bind("127.0.0.1:0".parse().unwrap()).await?;
/// # drop(listener); Ok(()) }
/// ```
///
/// # Errors
///
/// [`ServeError::AddrInUse`] or [`ServeError::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServeError::AddrInUse(addr)
        } else {
            ServeError::Bind { addr, source }
        }
    })
}

impl Server {
    /// Serves on `addr` until SIGINT or SIGTERM ([`shutdown_signal`](super::shutdown_signal)),
    /// then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// If `addr` cannot be bound or reflection cannot read a descriptor set.
    pub async fn serve(self, addr: SocketAddr) -> Result<Drained, ServeError> {
        self.serve_with_shutdown(addr, super::shutdown_signal())
            .await
    }

    /// Serves on `addr` until `signal` resolves, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    pub async fn serve_with_shutdown(
        self,
        addr: SocketAddr,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<Drained, ServeError> {
        let listener = bind(addr).await?;
        self.serve_with_incoming(listener, signal).await
    }

    /// Serves the connections of `listener` until `signal` resolves, then shuts
    /// down gracefully (see the module docs for the order).
    ///
    /// # Errors
    ///
    /// If reflection cannot read a descriptor set.
    pub async fn serve_with_incoming(
        mut self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<Drained, ServeError> {
        // The response limit inside tai's layer: what it reports is what the
        // client is sent.
        let routes = ResponseLimit::new(self.routes()?, Limit::response(self.max_send));
        let inner = match self.layer.take() {
            Some(layer) => Either::Left(layer.layer(routes)),
            None => Either::Right(MapResponse::new(routes, unreported as Unreported)),
        };
        let connections = Connections {
            inner,
            calls: Arc::new(Calls {
                admission: Admission::new(self.in_flight.clone(), self.concurrency_limit),
                request: Limit::request(self.max_receive),
            }),
            http2: {
                let mut http2 = hyper::server::conn::http2::Builder::new(BoxingExecutor);
                http2
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(self.max_concurrent_streams);
                http2
            },
            keepalive: self.keepalive,
            acceptor: Arc::clone(&self.acceptor),
        };
        if let Some(health) = &self.health {
            health.serving().await;
        }
        let (shutdown, shutting_down) = watch::channel(false);
        let limit = self.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let mut tasks = JoinSet::new();
        {
            let listener = listener;
            let mut signal = std::pin::pin!(signal);
            loop {
                tokio::select! {
                    () = &mut signal => break,
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    accepted = listener.accept() => {
                        let (tcp, peer) = match accepted {
                            Ok(accepted) => accepted,
                            Err(e) => {
                                // Out of file descriptors, most likely: wait for
                                // connections to close rather than spin.
                                tracing::warn!("cannot accept a connection: {e}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let permit = match &limit {
                            None => None,
                            Some(limit) => match Arc::clone(limit).try_acquire_owned() {
                                Ok(permit) => Some(permit),
                                Err(_) => {
                                    tracing::debug!("closed a connection from {peer}: at the limit of connections");
                                    continue;
                                }
                            },
                        };
                        let serving = connections.serve(tcp, peer, shutting_down.clone());
                        tasks.spawn(async move {
                            serving.await;
                            drop(permit);
                        });
                    }
                }
            }
        }
        let in_flight = self.in_flight.get();
        if let Some(health) = &mut self.health {
            health.shutting_down().await;
        }
        for hook in self.on_shutdown.drain(..) {
            hook();
        }
        let _ = shutdown.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        let complete = tokio::time::timeout(self.drain_timeout, drain)
            .await
            .is_ok();
        if !complete {
            tracing::info!(
                "calls still in flight after the drain timeout ({:?}): cut off",
                self.drain_timeout
            );
            tasks.shutdown().await;
        }
        Ok(Drained {
            in_flight,
            complete,
        })
    }

    /// The routes: the services added, health and reflection.
    fn routes(&mut self) -> Result<Routed, ServeError> {
        let mut routes = std::mem::take(&mut self.routes);
        if let Some(health) = &self.health {
            routes.add_service(health.service());
        }
        if let Some(sets) = &self.reflection {
            let health_set = self
                .health
                .as_ref()
                .map(|_| tonic_health::pb::FILE_DESCRIPTOR_SET);
            let reflection = Reflection::from_sets(sets.iter().copied().chain(health_set))?;
            routes.add_service(reflection.v1());
            routes.add_service(reflection.v1alpha());
        }
        let mut routed = BoxCloneSyncService::new(routes.routes());
        // Innermost: the identity the layers outside it proved is in the request.
        if let Some(access) = self.access.take() {
            routed = BoxCloneSyncService::new(access.layer(routed));
        }
        for layer in self.layers.drain(..).rev() {
            routed = layer(routed);
        }
        Ok(routed)
    }
}

/// hyper's executor for a connection's streams: tokio's, each stream's task
/// boxed. hyper spawns one task per call, holding the call's whole future (the
/// layers', the handler's); boxed, spawning moves a pointer, not the future,
/// through tokio's spawn path.
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// The routes, their answers held to the response limit, behind tai's server
/// layer or not.
type Inner = Either<ServerService<Limited>, MapResponse<Limited, Unreported>>;

type Limited = ResponseLimit<Routed>;

/// The routes' answers without tai's server layer: in the body type the layer's
/// answers have, reporting nothing.
type Unreported = fn(http::Response<limits::ResponseBody<Body>>) -> http::Response<Answer>;

fn unreported(response: http::Response<limits::ResponseBody<Body>>) -> http::Response<Answer> {
    response.map(call::unreported)
}

/// What each connection is served with.
struct Connections {
    inner: Inner,
    calls: Arc<Calls>,
    http2: hyper::server::conn::http2::Builder<BoxingExecutor>,
    keepalive: Option<KeepalivePolicy>,
    acceptor: Arc<dyn DynAccept>,
}

impl Connections {
    /// Serves one connection until it ends; once `shutting_down`, sends GOAWAY
    /// and lets its calls finish.
    fn serve(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        mut shutting_down: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        // Nagle's algorithm would hold back small responses for tens of milliseconds.
        let _ = tcp.set_nodelay(true);
        let info = ConnectInfo::new(peer, tcp.local_addr().ok());
        let accepting = self.acceptor.accept(tcp, info);
        let (inner, calls, http2, keepalive) = (
            self.inner.clone(),
            Arc::clone(&self.calls),
            self.http2.clone(),
            self.keepalive,
        );
        async move {
            let accepted = tokio::select! {
                accepted = accepting => accepted,
                _ = shutting_down.wait_for(|down| *down) => return,
            };
            let (io, info) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!("connection from {peer} not accepted: {e}");
                    return;
                }
            };
            let on_connection = Arc::new(AtomicUsize::new(0));
            let io = Policed::new(io, keepalive, Arc::clone(&on_connection));
            let service = CallService::new(inner, calls, info, on_connection);
            let connection = http2.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                    return;
                }
                _ = shutting_down.wait_for(|down| *down) => {}
            }
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!("connection from {peer} ended while draining: {e}");
            }
        }
    }
}
