//! Connecting the generated clients.
//!
//! The per-call policy (retry, breaker, deadline) is compiled into each client
//! from the .proto; what is chosen here is the connection: which preset, and for
//! the replicated Scheduler, how replicas are balanced and when one is taken out
//! of rotation. Per-replica state (ejected, not serving, failures) is read from
//! the channel: [`tai_runtime::Channel::endpoint_stats`].

use std::time::Duration;

use tai_runtime::Code;
use tai_runtime::channel::Endpoints;
use tai_runtime::config::{BalancerKind, ClientConfig, HealthCheckConfig, OutlierConfig};
use tai_runtime::policy::CodeSet;
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
    base.health_check = Some(HealthCheckConfig {
        service: service.to_owned(),
    });
    let one_replica = 100 / u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
    base.outlier = Some(OutlierConfig {
        consecutive_failures: policy.eject_after,
        base_ejection_time: policy.base_ejection,
        max_ejection_time: policy.max_ejection,
        // Round up to one replica: with three, 34% lets one be ejected at a time.
        max_ejection_percent: (one_replica + 1).min(100),
        failure_codes: CodeSet::of(&[Code::Unavailable]),
    });
    base.connection.backoff.base = base.connection.backoff.base.min(Duration::from_millis(100));
    base.connection.backoff.max = policy.max_reconnect_backoff;
    base.connection.connect_timeout = base.connection.connect_timeout.min(Duration::from_secs(2));
    base
}

/// A channel to the Scheduler replicas at `addrs` (see [`replicated_config`]).
///
/// # Errors
///
/// If an address is not valid.
pub fn scheduler_channel(
    addrs: &[String],
    base: ClientConfig,
    policy: ReplicaPolicy,
) -> Result<Channel, ConnectError> {
    let config = replicated_config(base, crate::scheduler::SERVICE_NAME, addrs.len(), policy);
    Channel::builder(Endpoints::list(addrs.iter().cloned()))
        .config(config)
        .build()
}

/// A Scheduler client over the replicas at `addrs`, with the default preset and
/// [`ReplicaPolicy`].
///
/// # Errors
///
/// If an address is not valid.
pub fn scheduler_client(addrs: &[String]) -> Result<SchedulerClient, ConnectError> {
    scheduler_channel(addrs, ClientConfig::default(), ReplicaPolicy::default())
        .map(SchedulerClient::new)
}

/// A channel to one server, from a preset.
///
/// # Errors
///
/// If the address is not valid.
pub fn channel(addr: &str, config: ClientConfig) -> Result<Channel, ConnectError> {
    Channel::builder(Endpoints::one(addr))
        .config(config)
        .build()
}
