//! [`Server`]'s builder: what a server serves (services, health, reflection,
//! access rules) and how (layers, message limits, connection and stream limits,
//! keepalive enforcement, drain timeout, acceptor), one documented method per
//! knob, every part on by default and switchable.
//!
//! Why a builder that owns its parts until `serve`: the routes, the layers and
//! the acceptor are assembled once, in the order the accept loop (`serve.rs`)
//! needs them, and nothing about a running server changes under it.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::ServerLayer;
use super::accept::{Accept, DynAccept, PlainTcp};
use super::auth::{AccessLayer, DefaultAccess};
use super::health::{DependencyHealth, Health};
use super::keepalive::KeepalivePolicy;
use super::limits::DEFAULT_MAX_MESSAGE;
use super::shed::InFlight;
use crate::policy::AccessTable;

/// Concurrent calls (HTTP/2 streams) a connection may have, by default.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Connections a server holds at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Calls a server runs at once, by default, before it sheds.
pub const DEFAULT_CONCURRENCY_LIMIT: usize = 4096;
/// How long calls in flight get to finish once shutdown begins, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC server: your tonic services, with health, reflection, deadlines,
/// metrics, message limits, keepalive enforcement, connection and stream
/// limits, load shedding and a graceful shutdown.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let my_service = tonic_health::server::health_reporter().1;
/// use tai_runtime::server::Server;
///
/// // `my_service` is a tonic-generated server, e.g. `GovernorServer::new(..)`.
/// let drained = Server::builder()
///     .add_service(my_service)
///     // For reflection: the descriptor set tai-build wrote.
///     // .descriptor_set(tai_runtime::include_descriptor_set!())
///     .serve("127.0.0.1:50051".parse()?) // until SIGINT or SIGTERM
///     .await?;
/// println!("drained {} call(s)", drained.in_flight);
/// # Ok(()) }
/// ```
pub struct Server {
    pub(super) routes: RoutesBuilder,
    pub(super) health: Option<Health>,
    pub(super) reflection: Option<Vec<&'static [u8]>>,
    pub(super) layer: Option<ServerLayer>,
    pub(super) max_receive: usize,
    pub(super) max_send: usize,
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) max_connections: Option<usize>,
    pub(super) concurrency_limit: Option<usize>,
    pub(super) keepalive: Option<KeepalivePolicy>,
    pub(super) drain_timeout: Duration,
    pub(super) acceptor: Arc<dyn DynAccept>,
    pub(super) layers: Vec<Box<dyn FnOnce(Routed) -> Routed + Send>>,
    pub(super) access: Option<AccessLayer>,
    pub(super) on_shutdown: Vec<Box<dyn FnOnce() + Send>>,
    pub(super) in_flight: InFlight,
}

/// The routes as layers added with [`Server::layer`] see them: boxed (a boxed
/// future per call, the price of a server type that does not change with its
/// services and layers).
pub type Routed = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("health", &self.health.is_some())
            .field("reflection", &self.reflection.as_ref().map(Vec::len))
            .field("layer", &self.layer)
            .field("max_receive", &self.max_receive)
            .field("max_send", &self.max_send)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("max_connections", &self.max_connections)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("keepalive", &self.keepalive)
            .field("drain_timeout", &self.drain_timeout)
            .field("layers", &self.layers.len())
            .field("access", &self.access.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::builder()
    }
}

impl Server {
    /// A server with no service yet, everything built in on, limits at their
    /// defaults.
    pub fn builder() -> Self {
        Self {
            routes: RoutesBuilder::default(),
            health: Some(Health::new()),
            reflection: Some(Vec::new()),
            layer: Some(ServerLayer::new()),
            max_receive: DEFAULT_MAX_MESSAGE,
            max_send: DEFAULT_MAX_MESSAGE,
            max_concurrent_streams: Some(DEFAULT_MAX_CONCURRENT_STREAMS),
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            concurrency_limit: Some(DEFAULT_CONCURRENCY_LIMIT),
            keepalive: Some(KeepalivePolicy::DEFAULT),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            acceptor: Arc::new(PlainTcp),
            layers: Vec::new(),
            access: None,
            on_shutdown: Vec::new(),
            in_flight: InFlight::default(),
        }
    }

    /// Serves a tonic service (a generated `FooServer`, or any named service);
    /// its health is reported under its name.
    ///
    /// A service's own tonic message limits (`max_decoding_message_size`, 4 MiB
    /// by default) apply too: raise them if you raise
    /// [`max_receive_message_size`](Self::max_receive_message_size).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        if let Some(health) = &mut self.health {
            health.add(S::NAME);
        }
        self.routes.add_service(service);
        self
    }

    /// Serves a tonic service and enforces `rules`, the access rules its
    /// `.proto` file or `#[resilient]` trait declares (`#[resilient]` writes them
    /// as `FooClient::ACCESS_RULES`, and tai-build names the same table
    /// `foo_server::ACCESS_RULES` in the generated server module): a call without an identity to a method that
    /// needs one is refused as UNAUTHENTICATED, one whose identity lacks a
    /// listed scope or role as PERMISSION_DENIED naming them, before the
    /// handler runs. See [`AccessLayer`] for the audit events.
    ///
    /// Once a service is added with rules, every call is checked: a method with
    /// no rule (of this service or any other) follows
    /// [`default_access`](Self::default_access), `Deny` unless set; health and
    /// reflection are public. The identity comes from a layer you add, usually
    /// [`AuthLayer`](super::auth::AuthLayer) with
    /// [`allow_anonymous`](super::auth::AuthLayer::allow_anonymous) so that
    /// public methods take calls without a token.
    ///
    /// ```no_run
    /// # async fn run(auth: tai_runtime::server::auth::JwtAuth) -> Result<(), Box<dyn std::error::Error>> {
    /// # let governor = tonic_health::server::health_reporter().1;
    /// # mod governor_server { pub const ACCESS_RULES: tai_runtime::policy::AccessTable =
    /// #     tai_runtime::policy::AccessTable::new("tai.v1.Governor", &[]); }
    /// use tai_runtime::server::Server;
    /// use tai_runtime::server::auth::AuthLayer;
    ///
    /// Server::builder()
    ///     .layer(AuthLayer::new(auth).allow_anonymous())
    ///     // `governor` is `GovernorServer::new(..)`; its rules come from the .proto.
    ///     .add_service_with_rules(governor, governor_server::ACCESS_RULES)
    ///     .serve("127.0.0.1:50051".parse()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn add_service_with_rules<S>(mut self, service: S, rules: AccessTable) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let access = self
            .access
            .take()
            .unwrap_or_else(|| AccessLayer::new(DefaultAccess::default()));
        self.access = Some(access.table(rules));
        self.add_service(service)
    }

    /// What a call to a method with no access rule gets once access rules are
    /// on ([`add_service_with_rules`](Self::add_service_with_rules)):
    /// [`DefaultAccess::Deny`] (the default) or [`DefaultAccess::Allow`].
    /// Setting it turns access rules on even without a table, so that `Deny`
    /// alone refuses every method but health and reflection.
    pub fn default_access(mut self, default: DefaultAccess) -> Self {
        let access = self
            .access
            .take()
            .unwrap_or_else(|| AccessLayer::new(default));
        self.access = Some(access.default_access(default));
        self
    }

    /// Serves `service` if there is one.
    pub fn add_optional_service<S>(self, service: Option<S>) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        match service {
            Some(service) => self.add_service(service),
            None => self,
        }
    }

    /// Whether to serve `grpc.health.v1.Health` (on by default). Turning it off
    /// forgets the services added so far.
    pub fn health(mut self, on: bool) -> Self {
        self.health = on.then(|| self.health.take().unwrap_or_else(Health::new));
        self
    }

    /// The reporter behind the health service, to report a service NOT_SERVING
    /// while it cannot work (`None` with health off). The server sets every
    /// added service SERVING when it starts, and NOT_SERVING when it shuts down.
    pub fn health_reporter(&self) -> Option<HealthReporter> {
        self.health.as_ref().map(Health::reporter)
    }

    /// Declares a dependency that `services` (by their names, `""` for the
    /// whole server) need: while the handle says it is down they report
    /// NOT_SERVING (see [`DependencyHealth`]; `None` with health off, and
    /// [`health(false)`](Self::health) forgets the dependencies declared).
    pub fn dependency(
        &self,
        name: &str,
        services: impl IntoIterator<Item = &'static str>,
    ) -> Option<DependencyHealth> {
        Some(self.health.as_ref()?.dependency(name, services))
    }

    /// Whether to serve reflection, `grpc.reflection.v1` and `v1alpha` (on by
    /// default); it describes the [descriptor sets](Self::descriptor_set) given.
    pub fn reflection(mut self, on: bool) -> Self {
        self.reflection = on.then(|| self.reflection.take().unwrap_or_default());
        self
    }

    /// A descriptor set for reflection to describe, such as
    /// [`include_descriptor_set!`](crate::include_descriptor_set) gives. A set
    /// may import files of the sets given before it. The health service's own
    /// set is added when health is on.
    pub fn descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.reflection.get_or_insert_with(Vec::new).push(encoded);
        self
    }

    /// Puts `layer` around the routes (every service, health and reflection
    /// included), inside tai's [`server_layer`](Self::server_layer); the first
    /// added is the outermost.
    ///
    /// ```
    /// use tai_runtime::server::Server;
    ///
    /// let server = Server::builder().layer(tower::layer::layer_fn(|routes| routes));
    /// # drop(server);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Routed> + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// tai's deadline and metrics layer ([`ServerLayer::new`] by default;
    /// `ServerLayer::new().without_metrics()` keeps deadlines only; `None`
    /// turns both off).
    pub fn server_layer(mut self, layer: Option<ServerLayer>) -> Self {
        self.layer = layer;
        self
    }

    /// The largest request message accepted, in bytes (4 MiB by default);
    /// larger ones fail the call with RESOURCE_EXHAUSTED.
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.max_receive = bytes;
        self
    }

    /// The largest response message sent, in bytes (4 MiB by default); a call
    /// answering with a larger one fails with RESOURCE_EXHAUSTED instead.
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.max_send = bytes;
        self
    }

    /// Concurrent calls per connection, announced to clients in HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS ([`DEFAULT_MAX_CONCURRENT_STREAMS`];
    /// `None`: unlimited).
    pub fn max_concurrent_streams(mut self, max: Option<u32>) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// Connections held at once ([`DEFAULT_MAX_CONNECTIONS`]; `None`:
    /// unlimited). A connection over the limit is closed as soon as accepted.
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// Calls run at once over all connections ([`DEFAULT_CONCURRENCY_LIMIT`];
    /// `None`: unlimited). A call over it is refused at once with
    /// RESOURCE_EXHAUSTED, never queued. A streaming call counts until it ends.
    pub fn concurrency_limit(mut self, max: Option<usize>) -> Self {
        self.concurrency_limit = max;
        self
    }

    /// How often clients may ping ([`KeepalivePolicy::DEFAULT`]: gRPC's 5
    /// minutes, not while idle; `None`: not enforced). A client that pings more
    /// often is sent GOAWAY ENHANCE_YOUR_CALM `too_many_pings` (gRFC A8).
    pub fn keepalive(mut self, policy: Option<KeepalivePolicy>) -> Self {
        self.keepalive = policy;
        self
    }

    /// How long calls in flight get to finish once shutdown begins
    /// ([`DEFAULT_DRAIN_TIMEOUT`]); then they are cut off.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// What turns each accepted TCP connection into the IO HTTP/2 runs on
    /// ([`PlainTcp`] by default; TLS is one).
    pub fn acceptor(mut self, acceptor: impl Accept) -> Self {
        self.acceptor = Arc::new(acceptor);
        self
    }

    /// Serves (m)TLS with `tls`: certificates reloaded as they change on disk,
    /// the client's verified identity in every request
    /// ([`PeerIdentity::of`](crate::tls::PeerIdentity::of)).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tai_runtime::server::Server;
    /// use tai_runtime::tls::ServerTls;
    ///
    /// let tls = ServerTls::from_pem("ca.pem", "server.pem", "server.key")?;
    /// Server::builder()
    ///     .tls(tls)
    ///     .serve("127.0.0.1:50051".parse()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(self, tls: crate::tls::ServerTls) -> Self {
        self.acceptor(tls)
    }

    /// Runs `hook` when shutdown begins, after health turned NOT_SERVING and
    /// before connections are sent GOAWAY: the place to end streams that would
    /// never finish by themselves (subscriptions), so that the drain is not held
    /// up by them.
    pub fn on_shutdown(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_shutdown.push(Box::new(hook));
        self
    }

    /// The server's count of calls in flight, readable while it runs.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }
}
