//! One server for any of the mesh services: a thin use of
//! [`tai_runtime::server::Server`], which brings what every production gRPC
//! server needs next to them (`grpc.health.v1`, reflection from the descriptor
//! set tai-build writes, metrics and deadlines, message limits, keepalive
//! enforcement, load shedding, a graceful shutdown whose drain is bounded).
//!
//! What stays here is the mesh's own: which services run, authentication and
//! a rate limit per caller when asked, a fault layer in front of them, and ending the services' subscriptions with UNAVAILABLE when
//! shutdown begins (so that subscribers reconnect elsewhere, and the drain is
//! not held up by streams that never finish).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tai_runtime::policy::AccessTable;
use tai_runtime::server::auth::{AuthLayer, Identity, JwtAuth};
use tai_runtime::server::rate_limit::RateLimitLayer;
use tai_runtime::server::{InFlight, Server};
use tai_runtime::tls::{ServerTls, TlsError};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding::{Gzip, Zstd};

use crate::common::Closing;
use crate::coordinator::Coordinator;
use crate::fault::FaultInjector;
use crate::governor::Governor;
use crate::proto::coordinator_server::{self, CoordinatorServer};
use crate::proto::governor_server::{self, GovernorServer};
use crate::proto::scheduler_server::{self, SchedulerServer};
use crate::scheduler::{DemoHandler, Scheduler, TaskHandler};

pub use tai_runtime::server::{DEFAULT_DRAIN_TIMEOUT, Drained, ServeError, bind};

/// The encoded descriptor set of the mesh protos (and tai's options), for reflection.
pub const DESCRIPTOR_SET: &[u8] = tai_runtime::include_descriptor_set!();

/// The largest message a mesh server accepts or sends: the server's default,
/// 4 MiB, as the client preset.
pub const MAX_MESSAGE: usize = tai_runtime::server::DEFAULT_MAX_MESSAGE;

/// The server's mTLS from the files of `dir` as `mesh certs` names them
/// ([`files`](crate::certs::files): `ca.pem`, `server.pem`, `server.key`), any
/// issuer's (RSA or EC keys, PKCS#8, PKCS#1 or SEC1): clients must present a
/// certificate signed by a CA of `ca.pem`; the files are polled for changes every
/// `reload`.
///
/// # Errors
///
/// A [`TlsError`] naming the file that is missing or does not load.
pub fn server_tls(dir: &Path, reload: Duration) -> Result<ServerTls, TlsError> {
    use crate::certs::files;
    ServerTls::builder()
        .ca(dir.join(files::CA))
        .certificate(dir.join(files::SERVER_CERT), dir.join(files::SERVER_KEY))
        .reload_interval(reload)
        .build()
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
    auth: Option<JwtAuth>,
    rate_limit: Option<RateLimitLayer>,
    drain_timeout: Duration,
    /// The runtime's server, services added when serving.
    server: Server,
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
            auth: None,
            rate_limit: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            server: Server::builder(),
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
            auth: self.auth,
            rate_limit: self.rate_limit,
            drain_timeout: self.drain_timeout,
            server: self.server,
        }
    }

    /// Puts a fault layer in front of every service, the standard ones included.
    pub fn faults(mut self, faults: FaultInjector) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Requires a bearer JWT that `auth` accepts, and enforces the access rules
    /// the mesh protos declare: reads need `<service>.read`, writes
    /// `<service>.write` (PERMISSION_DENIED naming the scope otherwise); health
    /// and reflection stay public (a call without a token reaches them, and
    /// nothing else: UNAUTHENTICATED).
    pub fn auth(mut self, auth: JwtAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Limits each caller's rate with `limit`, keyed by the token's subject
    /// when [`auth`](Self::auth) is on (by peer address otherwise, or for a
    /// token without `sub`).
    pub fn rate_limit(mut self, limit: RateLimitLayer) -> Self {
        self.rate_limit =
            Some(limit.key_by_extension(|identity: &Identity| identity.subject.as_deref()));
        self
    }

    /// Serves mTLS with `tls` (see [`server_tls`]) instead of plaintext.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.server = self.server.tls(tls);
        self
    }

    /// How long in-flight calls get to finish once shutdown begins.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Calls in flight right now (shared: read it while the server runs).
    pub fn in_flight(&self) -> InFlight {
        self.server.in_flight()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see
    /// [`Server`] for the order; subscriptions end as health turns NOT_SERVING).
    ///
    /// # Errors
    ///
    /// If reflection cannot be built.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Drained, ServeError> {
        let (closer, closing) = Closing::pair();
        let faults = self.faults.unwrap_or_else(|| FaultInjector::new("server"));
        let mut server = self.server;
        // The first layer added is the outermost: who calls, then how often,
        // then the faults (a refused call is not delayed or broken first).
        let rules = self.auth.is_some();
        if let Some(auth) = self.auth {
            server = server.layer(AuthLayer::new(auth).allow_anonymous());
        }
        if let Some(limit) = self.rate_limit {
            server = server.layer(limit);
        }
        // Each service takes requests compressed with gzip or zstd as well as
        // plain ones: tonic's services accept only what they are told to, and a
        // client that compresses (grpc-go's `UseCompressor`, grpcio's
        // `compression=`, tai's `send_compressed`) would be refused with
        // UNIMPLEMENTED. Answers go uncompressed: the mesh's messages are small.
        if let Some(g) = self.governor {
            let service = GovernorServer::new(g.closing_on(closing.clone()))
                .accept_compressed(Gzip)
                .accept_compressed(Zstd);
            server = add(
                server,
                service,
                rules.then_some(governor_server::ACCESS_RULES),
            );
        }
        if let Some(c) = self.coordinator {
            let service = CoordinatorServer::new(c.closing_on(closing.clone()))
                .accept_compressed(Gzip)
                .accept_compressed(Zstd);
            server = add(
                server,
                service,
                rules.then_some(coordinator_server::ACCESS_RULES),
            );
        }
        if let Some(s) = self.scheduler {
            let service = SchedulerServer::new(s.closing_on(closing.clone()))
                .accept_compressed(Gzip)
                .accept_compressed(Zstd);
            server = add(
                server,
                service,
                rules.then_some(scheduler_server::ACCESS_RULES),
            );
        }
        server
            .descriptor_set(DESCRIPTOR_SET)
            .layer(faults.layer())
            .drain_timeout(self.drain_timeout)
            .on_shutdown(move || closer.close())
            .serve_with_incoming(listener, shutdown)
            .await
    }
}

/// Adds `service`, under `rules` when authentication is on.
fn add<S>(server: Server, service: S, rules: Option<AccessTable>) -> Server
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    match rules {
        Some(rules) => server.add_service_with_rules(service, rules),
        None => server.add_service(service),
    }
}
