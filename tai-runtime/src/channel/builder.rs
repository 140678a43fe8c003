//! Building a [`Channel`]: its endpoints, configuration, connector (TLS or any
//! byte stream), seed and metrics, checked before anything starts.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::connection::DriverContext;
use super::connector::{Connector, TcpConnector};
use super::discovery::Endpoints;
use super::endpoint::EjectionBudget;
use super::endpoint_set::EndpointSet;
use super::{Channel, Shared, rng};
use crate::config::ClientConfig;
use crate::metrics::Metrics;

/// Builds a [`Channel`].
pub struct ChannelBuilder {
    pub(super) endpoints: Endpoints,
    pub(super) config: ClientConfig,
    pub(super) connector: Option<Arc<dyn Connector>>,
    pub(super) seed: Option<u64>,
    pub(super) metrics: Metrics,
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
