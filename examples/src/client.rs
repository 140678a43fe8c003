//! Connecting the generated clients.
//!
//! The per-call policy (retry, breaker, deadline) is compiled into each client
//! from the .proto; what is chosen here is the connection: which preset, and for
//! the replicated Scheduler, how replicas are balanced and when one is taken out
//! of rotation. Per-replica state (ejected, not serving, failures) is read from
//! the channel: [`tai_runtime::Channel::endpoint_stats`]. With a [`ClientTls`]
//! (see [`client_tls`]) every connection is mTLS and addresses are `https://`.

use std::path::Path;
use std::time::Duration;

use tai_runtime::Code;
use tai_runtime::channel::Endpoints;
use tai_runtime::config::{BalancerKind, ClientConfig, HealthCheckConfig, OutlierConfig};
use tai_runtime::policy::CodeSet;
use tai_runtime::tls::{ClientTls, TlsError};
use tai_runtime::{Channel, ConnectError};

use crate::proto::scheduler_client::SchedulerClient;

/// How replicas of a service are balanced and ejected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicaPolicy {
    /// Consecutive UNAVAILABLE answers (or connection failures) that take a replica
    /// out of rotation.
    pub eject_after: u32,
    /// How long the first ejection lasts; the n-th lasts n times this.
    pub base_ejection: Duration,
    /// Cap on an ejection.
    pub max_ejection: Duration,
    /// Cap on the reconnect backoff, so a restarted replica is back soon.
    pub max_reconnect_backoff: Duration,
}

impl Default for ReplicaPolicy {
    /// Eject after 2 failures in a row, for 1s (growing to 4s); reconnect within 1s.
    fn default() -> Self {
        Self {
            eject_after: 2,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(4),
            max_reconnect_backoff: Duration::from_secs(1),
        }
    }
}

impl ReplicaPolicy {
    /// Every duration multiplied by `factor` (the tour's fast mode).
    pub fn scaled(self, factor: f64) -> Self {
        let s = |d: Duration| d.mul_f64(factor).max(Duration::from_millis(50));
        Self {
            eject_after: self.eject_after,
            base_ejection: s(self.base_ejection),
            max_ejection: s(self.max_ejection),
            max_reconnect_backoff: s(self.max_reconnect_backoff),
        }
    }
}

/// The configuration of a channel to `replicas` replicas of `service`, from a
/// preset: the service's own balancer (peak-EWMA for the Scheduler, so a slow
/// replica gets fewer calls), the standard
/// health service watched (a replica that reports NOT_SERVING — one shutting
/// down — leaves the rotation at once), and outlier ejection of at most one
/// replica in three (a replica answering UNAVAILABLE leaves it after a couple
/// of failures, and the retries of the calls it failed go to the others).
pub fn replicated_config(
    mut base: ClientConfig,
    service: &str,
    replicas: usize,
    policy: ReplicaPolicy,
) -> ClientConfig {
    base.balancer = SchedulerClient::SERVICE_POLICY
        .balancer
        .unwrap_or(BalancerKind::PeakEwma);
    base.health_check = Some(HealthCheckConfig::new(service));
    let one_replica = 100 / u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
    base.outlier = Some(OutlierConfig::new(
        policy.eject_after,
        policy.base_ejection,
        policy.max_ejection,
        // Round up to one replica: with three, 34% lets one be ejected at a time.
        (one_replica + 1).min(100),
        CodeSet::of(&[Code::Unavailable]),
    ));
    base.connection.backoff.base = base.connection.backoff.base.min(Duration::from_millis(100));
    base.connection.backoff.max = policy.max_reconnect_backoff;
    base.connection.connect_timeout = base.connection.connect_timeout.min(Duration::from_secs(2));
    base
}

/// The client's mTLS from the files of `dir` as `mesh certs` names them
/// ([`files`](crate::certs::files): `ca.pem`, `client.pem`, `client.key`):
/// servers must present a certificate signed by a CA of `ca.pem` for the host
/// connected to; the files are polled for changes every `reload`.
///
/// # Errors
///
/// A [`TlsError`] naming the file that is missing or does not load.
pub fn client_tls(dir: &Path, reload: Duration) -> Result<ClientTls, TlsError> {
    use crate::certs::files;
    ClientTls::builder()
        .ca(dir.join(files::CA))
        .certificate(dir.join(files::CLIENT_CERT), dir.join(files::CLIENT_KEY))
        .reload_interval(reload)
        .build()
}

/// A channel to the Scheduler replicas at `addrs` (see [`replicated_config`]),
/// over `tls` if given.
///
/// # Errors
///
/// If an address is not valid.
pub fn scheduler_channel(
    addrs: &[String],
    base: ClientConfig,
    policy: ReplicaPolicy,
    tls: Option<&ClientTls>,
) -> Result<Channel, ConnectError> {
    let config = replicated_config(base, crate::scheduler::SERVICE_NAME, addrs.len(), policy);
    let tls_on = tls.is_some();
    let endpoints = Endpoints::list(addrs.iter().map(|a| with_scheme(a, tls_on)));
    build(endpoints, config, tls)
}

/// A Scheduler client over the replicas at `addrs`, with the default preset and
/// [`ReplicaPolicy`], in plaintext.
///
/// # Errors
///
/// If an address is not valid.
pub fn scheduler_client(addrs: &[String]) -> Result<SchedulerClient, ConnectError> {
    scheduler_channel(
        addrs,
        ClientConfig::default(),
        ReplicaPolicy::default(),
        None,
    )
    .map(SchedulerClient::new)
}

/// The interceptor of a generated client: `authorization: Bearer <token>` on
/// every attempt when `token` is given, nothing otherwise.
///
/// ```
/// use tai_runtime::auth::TokenSource;
/// use tai_runtime::{Interceptor, Request};
///
/// let mut none = tai_examples::client::bearer(None);
/// assert!(none.call(Request::new(())).unwrap().metadata().is_empty());
/// let mut some = tai_examples::client::bearer(Some(TokenSource::fixed("t").unwrap()));
/// assert_eq!(some.call(Request::new(())).unwrap().metadata().get("authorization").unwrap(), "Bearer t");
/// ```
pub fn bearer(
    mut token: Option<tai_runtime::auth::TokenSource>,
) -> impl tai_runtime::Interceptor + Send + 'static {
    move |request| match &mut token {
        Some(token) => tai_runtime::Interceptor::call(token, request),
        None => Ok(request),
    }
}

/// A channel to one server, from a preset, over `tls` if given.
///
/// # Errors
///
/// If the address is not valid.
pub fn channel(
    addr: &str,
    config: ClientConfig,
    tls: Option<&ClientTls>,
) -> Result<Channel, ConnectError> {
    build(
        Endpoints::one(with_scheme(addr, tls.is_some())),
        config,
        tls,
    )
}

fn build(
    endpoints: Endpoints,
    config: ClientConfig,
    tls: Option<&ClientTls>,
) -> Result<Channel, ConnectError> {
    let builder = Channel::builder(endpoints).config(config);
    match tls {
        Some(tls) => builder.connector(tls.clone()).build(),
        None => builder.build(),
    }
}

/// `host:port` as `https://host:port` when calling over TLS; an address with a
/// scheme as it is.
fn with_scheme(addr: &str, tls: bool) -> String {
    if tls && !addr.contains("://") {
        format!("https://{addr}")
    } else {
        addr.to_owned()
    }
}
