//! One server for any of the mesh services, with what every production gRPC
//! server needs next to them: the standard `grpc.health.v1.Health` service (for
//! load balancers and `grpc-health-probe`), server reflection (for `grpcurl` and
//! friends, from the descriptor set tai-build writes, by
//! [`tai_runtime::server::reflection`]: a file comes with its imports),
//! tai-runtime's server layer (metrics, deadlines), and a graceful shutdown whose
//! drain is bounded.
//!
//! Shutting down goes in this order: health turns NOT_SERVING (so that health
//! checking clients stop sending), health Watch streams end and open
//! subscriptions end with UNAVAILABLE (so that subscribers reconnect elsewhere,
//! and the drain is not held up by streams that never finish), the listener
//! closes, in-flight calls finish, and if they have not after the drain timeout
//! the server stops anyway.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::{Layer, Service};

use crate::common::Closing;
use crate::coordinator::Coordinator;
use crate::fault::FaultInjector;
use crate::governor::Governor;
use crate::proto::coordinator_server::CoordinatorServer;
use crate::proto::governor_server::GovernorServer;
use crate::proto::scheduler_server::SchedulerServer;
use crate::scheduler::{DemoHandler, Scheduler, TaskHandler};

/// The encoded descriptor set of the mesh protos (and tai's options), for reflection.
pub const DESCRIPTOR_SET: &[u8] = tai_runtime::include_descriptor_set!();

/// How long in-flight calls get to finish after shutdown begins, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process listens on the address.
    #[error(
        "address {0} is already in use: is another `mesh serve` running? Stop it, or pick another address with --addr"
    )]
    AddrInUse(SocketAddr),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reflection could not read the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tai_runtime::server::reflection::ReflectionError),
    /// The transport failed.
    #[error("the server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr`, with an error that says what to do when it is taken.
///
/// # Errors
///
/// The largest message a mesh server accepts or sends, both ways explicit: tonic's
/// own default never limits what a server sends. 4 MiB, as the client preset.
pub const MAX_MESSAGE: usize = 4 << 20;

/// [`ServeError::AddrInUse`] or [`ServeError::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::AddrInUse(addr)
        } else {
            ServeError::Bind { addr, source }
        }
    })
}

/// How a server's shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Calls in flight when shutdown began.
    pub in_flight: usize,
    /// Whether they all finished within the drain timeout.
    pub complete: bool,
}

/// A server for some of the mesh services.
///
/// ```no_run
/// # async fn run() -> Result<(), tai_examples::server::ServeError> {
/// use tai_examples::server::{MeshServer, bind};
/// let listener = bind("127.0.0.1:50051".parse().unwrap()).await?;
/// MeshServer::all().serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MeshServer<H: TaskHandler = DemoHandler> {
    governor: Option<Governor>,
    coordinator: Option<Coordinator>,
    scheduler: Option<Scheduler<H>>,
    faults: Option<FaultInjector>,
    drain_timeout: Duration,
    in_flight: Arc<AtomicUsize>,
}

impl MeshServer<DemoHandler> {
    /// A server with no service yet.
    pub fn new() -> Self {
        Self::empty()
    }

    /// A server with all three services, fresh, the Scheduler running the demo handler.
    pub fn all() -> Self {
        Self::new()
            .governor(Governor::new())
            .coordinator(Coordinator::new())
            .scheduler(Scheduler::default())
    }
}

impl Default for MeshServer<DemoHandler> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: TaskHandler> MeshServer<H> {
    fn empty() -> Self {
        Self {
            governor: None,
            coordinator: None,
            scheduler: None,
            faults: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serves this Governor (a handle: keep a clone to look at it).
    pub fn governor(mut self, governor: Governor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Serves this Coordinator.
    pub fn coordinator(mut self, coordinator: Coordinator) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// Serves this Scheduler; give clones of one Scheduler to several servers to
    /// make them replicas.
    pub fn scheduler<H2: TaskHandler>(self, scheduler: Scheduler<H2>) -> MeshServer<H2> {
        MeshServer {
            governor: self.governor,
            coordinator: self.coordinator,
            scheduler: Some(scheduler),
            faults: self.faults,
            drain_timeout: self.drain_timeout,
            in_flight: self.in_flight,
        }
    }

    /// Puts a fault layer in front of every service, the standard ones included.
    pub fn faults(mut self, faults: FaultInjector) -> Self {
        self.faults = Some(faults);
        self
    }

    /// How long in-flight calls get to finish once shutdown begins.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Calls in flight right now (shared: read it while the server runs).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.in_flight)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the module docs).
    ///
    /// # Errors
    ///
    /// If reflection cannot be built or the transport fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Drained, ServeError> {
        let (closer, closing) = Closing::pair();
        let (health, health_service) = tonic_health::server::health_reporter();
        // tai's reflection, not tonic-reflection's: a file is sent with the imports
        // the stream has not had yet, as grpc-go does, so that clients which never
        // ask for an import by name can load the services.
        let reflection = tai_runtime::server::reflection::Reflection::from_sets([
            DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])?;

        let governor = self
            .governor
            .map(|g| GovernorServer::new(g.closing_on(closing.clone())))
            .map(|s| {
                s.max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            });
        let coordinator = self
            .coordinator
            .map(|c| CoordinatorServer::new(c.closing_on(closing.clone())))
            .map(|s| {
                s.max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            });
        let scheduler = self
            .scheduler
            .map(|s| SchedulerServer::new(s.closing_on(closing.clone())))
            .map(|s| {
                s.max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            });
        let mut names = Vec::new();
        if governor.is_some() {
            names.push(crate::governor::SERVICE_NAME);
        }
        if coordinator.is_some() {
            names.push(crate::coordinator::SERVICE_NAME);
        }
        if scheduler.is_some() {
            names.push(crate::scheduler::SERVICE_NAME);
        }
        for name in &names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }

        let faults = self.faults.unwrap_or_else(|| FaultInjector::new("server"));
        let router = Server::builder()
            .layer(CountLayer(Arc::clone(&self.in_flight)))
            // tai's server layer: per-method server metrics, and a caller's
            // deadline answered with DEADLINE_EXCEEDED (tonic says CANCELLED).
            .layer(tai_runtime::server::ServerLayer::new())
            .layer(faults.layer())
            .add_service(health_service)
            .add_service(reflection.v1())
            .add_service(reflection.v1alpha())
            .add_optional_service(governor)
            .add_optional_service(coordinator)
            .add_optional_service(scheduler);

        let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
        let at_shutdown = Arc::new(AtomicUsize::new(0));
        let signal = {
            let in_flight = Arc::clone(&self.in_flight);
            let at_shutdown = Arc::clone(&at_shutdown);
            async move {
                shutdown.await;
                at_shutdown.store(in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
                let mut health = health;
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                for name in &names {
                    health
                        .set_service_status(*name, ServingStatus::NotServing)
                        .await;
                }
                // Watchers have been sent NOT_SERVING; removing the statuses ends
                // their Watch streams, which would otherwise hold the drain open.
                health.clear_service_status("").await;
                for name in &names {
                    health.clear_service_status(name).await;
                }
                closer.close();
                let _ = began_tx.send(());
            }
        };
        // Nagle's algorithm would hold back small responses for tens of milliseconds.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        let drain_timeout = self.drain_timeout;
        let drain_expired = async move {
            match began_rx.await {
                Ok(()) => tokio::time::sleep(drain_timeout).await,
                // The signal never fired: `serve` ended on its own.
                Err(_) => std::future::pending().await,
            }
        };
        let complete = tokio::select! {
            result = serve => {
                result?;
                true
            }
            () = drain_expired => false,
        };
        Ok(Drained {
            in_flight: at_shutdown.load(Ordering::SeqCst),
            complete,
        })
    }
}

/// Counts calls in flight, for the drain report.
#[derive(Clone, Debug)]
struct CountLayer(Arc<AtomicUsize>);

impl<S> Layer<S> for CountLayer {
    type Service = CountService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountService {
            inner,
            count: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone, Debug)]
struct CountService<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, B> Service<http::Request<B>> for CountService<S>
where
    S: Service<http::Request<B>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(Arc::clone(&self.count));
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            drop(guard);
            result
        })
    }
}
