//! Client configuration and its presets.
//!
//! Every value has a documented default and can be overridden one field at a time:
//!
//! ```
//! use std::time::Duration;
//! use tai_runtime::config::{BalancerKind, ClientConfig};
//!
//! let mut config = ClientConfig::high_throughput();
//! config.connection.connect_timeout = Duration::from_secs(3);
//! config.balancer = BalancerKind::LeastLoaded;
//! assert_eq!(config.connection.pool_size, 10);
//! ```
//!
//! The presets are connection-level settings only (`connection`, `balancer`,
//! `outlier`, `health_check`); retry, hedging, breaker and timeouts are per-method
//! policies, compiled into a generated client (see [`crate::policy`]).

use std::time::Duration;

use tonic::Code;

use crate::policy::CodeSet;

/// How a client picks an endpoint for each call: the same type a policy names
/// (`balancer = "least_loaded"`), so the two never drift apart.
pub use tai_model::Balancer as BalancerKind;

/// Exponential reconnect backoff (the gRPC connection-backoff algorithm).
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::config::{BackoffConfig, ClientConfig};
///
/// let mut config = ClientConfig::default();
/// config.connection.backoff =
///     BackoffConfig::new(Duration::from_millis(200), 2.0, 0.1, Duration::from_secs(5));
/// assert_eq!(config.connection.backoff.delay(1, 0.5).as_millis(), 400);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// First delay.
    pub base: Duration,
    /// Growth per failed attempt.
    pub multiplier: f64,
    /// Random spread, as a fraction: 0.2 means ±20%.
    pub jitter: f64,
    /// Cap on the delay (before jitter).
    pub max: Duration,
}

impl BackoffConfig {
    /// A first delay of `base`, growing by `multiplier` per failed attempt up to
    /// `max`, spread by ±`jitter` (a fraction). See the type's example.
    pub const fn new(base: Duration, multiplier: f64, jitter: f64, max: Duration) -> BackoffConfig {
        BackoffConfig {
            base,
            multiplier,
            jitter,
            max,
        }
    }

    /// The delay before reconnect attempt `n` (0-based), with `unit` in [0, 1) as the
    /// random draw: `min(base * multiplier^n, max) * (1 + jitter * (2 * unit - 1))`.
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let raw = self.base.as_secs_f64() * self.multiplier.powi(n.min(64) as i32);
        let capped = raw.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit - 1.0);
        Duration::try_from_secs_f64(capped * spread).unwrap_or(self.max)
    }
}

/// HTTP/2 keepalive pings (gRFC A8).
///
/// gRPC servers police pings: grpc-go and grpc-java allow one every 5 minutes by
/// default (and none without calls in flight) and close a connection that pings
/// more often with GOAWAY ENHANCE_YOUR_CALM `too_many_pings`. When that happens the
/// channel doubles `time` for that endpoint's next connections, as A8 specifies.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::config::{ClientConfig, KeepaliveConfig};
///
/// let mut config = ClientConfig::default();
/// config.connection.keepalive =
///     Some(KeepaliveConfig::new(Duration::from_secs(300), Duration::from_secs(20)));
/// assert_eq!(config.validate(), Ok(()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeepaliveConfig {
    /// Ping after this long without frames; at least [`KeepaliveConfig::MIN_TIME`].
    pub time: Duration,
    /// Close the connection if the ping is not answered within this.
    pub timeout: Duration,
    /// Ping even when no call is in flight (most servers forbid it by default).
    pub while_idle: bool,
}

impl KeepaliveConfig {
    /// The shortest keepalive time accepted (gRFC A8's floor).
    pub const MIN_TIME: Duration = Duration::from_secs(10);
    /// The longest keepalive time or timeout accepted, and the cap of the doubling
    /// on `too_many_pings` (longer would overflow the HTTP/2 layer's clock).
    pub const MAX_TIME: Duration = Duration::from_secs(7 * 24 * 3600);

    /// A ping after `time` without frames, answered within `timeout`, only while
    /// calls are in flight. See the type's example.
    pub const fn new(time: Duration, timeout: Duration) -> KeepaliveConfig {
        KeepaliveConfig {
            time,
            timeout,
            while_idle: false,
        }
    }

    /// These pings, sent (or not) also when no call is in flight.
    pub const fn with_while_idle(mut self, while_idle: bool) -> KeepaliveConfig {
        self.while_idle = while_idle;
        self
    }
}

/// One endpoint's connections.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Time allowed for TCP (and TLS) connection set-up.
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// HTTP/2 keepalive; `None` (the default of every preset but high-throughput)
    /// sends no pings, as gRFC A8 recommends.
    pub keepalive: Option<KeepaliveConfig>,
    /// Close a connection after this long with no call; `None` keeps it open.
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 connections per endpoint; calls spread by in-flight count.
    pub pool_size: usize,
    /// HTTP/2 initial stream window, bytes.
    pub initial_stream_window: u32,
    /// HTTP/2 initial connection window, bytes.
    pub initial_connection_window: u32,
    /// Disable Nagle's algorithm (lower latency for small messages).
    pub tcp_nodelay: bool,
    /// Largest message this client sends, bytes.
    pub max_send_message_size: usize,
    /// Largest message this client accepts, bytes.
    pub max_receive_message_size: usize,
    /// Whether a call waits for an endpoint that is reconnecting instead of failing
    /// with UNAVAILABLE at once (bounded by the call's deadline).
    pub wait_for_ready: bool,
}

/// Passive outlier ejection: endpoints that keep failing leave the rotation.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::config::OutlierConfig;
/// use tai_runtime::policy::CodeSet;
///
/// let outlier = OutlierConfig::new(
///     3,
///     Duration::from_secs(10),
///     Duration::from_secs(60),
///     50,
///     CodeSet::of(&[Code::Unavailable, Code::Internal]),
/// );
/// assert_eq!(outlier.consecutive_failures, 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// Ejection time after the first ejection; the n-th is n times this.
    pub base_ejection_time: Duration,
    /// Cap on the ejection time.
    pub max_ejection_time: Duration,
    /// At most this percentage of endpoints is ejected at once (rounded down), so a
    /// cluster-wide failure never empties the rotation.
    pub max_ejection_percent: u32,
    /// Codes that count as endpoint failures (connection failures always do).
    pub failure_codes: CodeSet,
}

/// Active `grpc.health.v1` health checking.
///
/// ```
/// use tai_runtime::config::{ClientConfig, HealthCheckConfig};
///
/// let mut config = ClientConfig::default();
/// config.health_check = Some(HealthCheckConfig::new("demo.Kv"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HealthCheckConfig {
    /// The service name to check (`""` is the whole server).
    pub service: String,
}

impl HealthCheckConfig {
    /// Checks of `service` (`""` checks the whole server).
    pub fn new(service: impl Into<String>) -> HealthCheckConfig {
        HealthCheckConfig {
            service: service.into(),
        }
    }
}

impl OutlierConfig {
    /// Ejects an endpoint after `consecutive_failures` failures (connection
    /// failures, and calls failing with a code in `failure_codes`) for
    /// `base_ejection_time` times the number of its ejections, at most
    /// `max_ejection_time`, with at most `max_ejection_percent` of endpoints out at
    /// once. See the type's example.
    pub const fn new(
        consecutive_failures: u32,
        base_ejection_time: Duration,
        max_ejection_time: Duration,
        max_ejection_percent: u32,
        failure_codes: CodeSet,
    ) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
            failure_codes,
        }
    }
}

/// Everything about how a client connects and balances.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Connections.
    pub connection: ConnectionConfig,
    /// Endpoint choice.
    pub balancer: BalancerKind,
    /// Outlier ejection; `None` disables it.
    pub outlier: Option<OutlierConfig>,
    /// Active health checks; `None` disables them.
    pub health_check: Option<HealthCheckConfig>,
}

const MIB: usize = 1 << 20;

fn unavailable() -> CodeSet {
    CodeSet::of(&[Code::Unavailable])
}

impl Default for OutlierConfig {
    /// 5 consecutive failures, 30s base ejection (growing, max 5 min), at most 50%.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            failure_codes: unavailable(),
        }
    }
}

impl ClientConfig {
    /// The connection-factory defaults: 100ms/1.6x/±0.2/2s reconnect backoff, 20s
    /// connect timeout, no keepalive, 4 MiB messages, one connection per
    /// endpoint, round-robin, outlier ejection on.
    pub fn factory() -> Self {
        Self {
            connection: ConnectionConfig {
                connect_timeout: Duration::from_secs(20),
                backoff: BackoffConfig {
                    base: Duration::from_millis(100),
                    multiplier: 1.6,
                    jitter: 0.2,
                    max: Duration::from_secs(2),
                },
                // gRFC A8: no keepalive unless asked for; servers police pings.
                keepalive: None,
                idle_timeout: Some(Duration::from_secs(30 * 60)),
                pool_size: 1,
                initial_stream_window: 1 << 20,
                initial_connection_window: 2 << 20,
                tcp_nodelay: true,
                max_send_message_size: 4 * MIB,
                max_receive_message_size: 4 * MIB,
                wait_for_ready: false,
            },
            balancer: BalancerKind::RoundRobin,
            outlier: Some(OutlierConfig::default()),
            health_check: None,
        }
    }

    /// Production: 30s connect timeout, 1s/1.6x/±0.2/120s reconnect backoff, no
    /// keepalive, 30 min idle timeout, 4 MiB messages, no pooling.
    pub fn production() -> Self {
        let mut c = Self::factory();
        c.connection.connect_timeout = Duration::from_secs(30);
        c.connection.backoff = BackoffConfig {
            base: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        };
        c
    }

    /// Development: 5s connect timeout, 500ms..10s reconnect backoff, 5 min idle
    /// timeout — fast feedback.
    pub fn development() -> Self {
        let mut c = Self::production();
        c.connection.connect_timeout = Duration::from_secs(5);
        c.connection.backoff.base = Duration::from_millis(500);
        c.connection.backoff.max = Duration::from_secs(10);
        c.connection.idle_timeout = Some(Duration::from_secs(5 * 60));
        c
    }

    /// High throughput: 10s connect timeout, a keepalive ping every 5 min (20s to
    /// answer) while calls are in flight — the most grpc-go and grpc-java servers
    /// allow by default — no idle timeout, 16 MiB messages, a pool of 10
    /// connections per endpoint.
    pub fn high_throughput() -> Self {
        let mut c = Self::production();
        c.connection.connect_timeout = Duration::from_secs(10);
        c.connection.keepalive = Some(KeepaliveConfig {
            time: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(20),
            while_idle: false,
        });
        c.connection.idle_timeout = None;
        c.connection.max_send_message_size = 16 * MIB;
        c.connection.max_receive_message_size = 16 * MIB;
        c.connection.pool_size = 10;
        c
    }

    /// High reliability: production with least-loaded balancing (P2C on in-flight
    /// counts), so a struggling endpoint gets fewer calls.
    pub fn high_reliability() -> Self {
        let mut c = Self::production();
        c.balancer = BalancerKind::LeastLoaded;
        c
    }

    /// Low latency: production with a random pick (no shared cursor or load reads).
    pub fn low_latency() -> Self {
        let mut c = Self::production();
        c.balancer = BalancerKind::Random;
        c
    }

    /// A preset by name: `default`/`production`, `development`, `high-throughput`,
    /// `high-reliability`, `low-latency`, `factory`.
    pub fn preset(name: &str) -> Option<Self> {
        match name.replace('_', "-").as_str() {
            "default" | "production" => Some(Self::production()),
            "development" => Some(Self::development()),
            "high-throughput" => Some(Self::high_throughput()),
            "high-reliability" => Some(Self::high_reliability()),
            "low-latency" => Some(Self::low_latency()),
            "factory" => Some(Self::factory()),
            _ => None,
        }
    }
}

/// A [`ClientConfig`] that cannot work: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidConfig {
    field: &'static str,
    problem: String,
}

impl InvalidConfig {
    /// The field at fault, e.g. `connection.keepalive.time`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid client config: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidConfig {}

impl ClientConfig {
    /// Checks what would otherwise fail at run time; `Channel`'s builder calls it.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if let Some(k) = &self.connection.keepalive {
            let (min, max) = (KeepaliveConfig::MIN_TIME, KeepaliveConfig::MAX_TIME);
            if k.time < min || k.time > max {
                return Err(InvalidConfig {
                    field: "connection.keepalive.time",
                    problem: format!(
                        "is {:?}, must be between {min:?} and {max:?} (gRFC A8: servers close connections that ping more often)",
                        k.time
                    ),
                });
            }
            if k.timeout.is_zero() || k.timeout > max {
                return Err(InvalidConfig {
                    field: "connection.keepalive.timeout",
                    problem: format!(
                        "is {:?}, must be more than zero and at most {max:?}",
                        k.timeout
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    /// The production preset.
    fn default() -> Self {
        Self::production()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_hold_their_documented_values() {
        let p = ClientConfig::default();
        assert_eq!(p.connection.connect_timeout, Duration::from_secs(30));
        assert_eq!(p.connection.backoff.base, Duration::from_secs(1));
        assert_eq!(p.connection.backoff.max, Duration::from_secs(120));
        assert_eq!(p.connection.keepalive, None);
        assert_eq!(p.connection.idle_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(p.connection.max_receive_message_size, 4 << 20);

        let d = ClientConfig::development();
        assert_eq!(d.connection.connect_timeout, Duration::from_secs(5));
        assert_eq!(d.connection.backoff.base, Duration::from_millis(500));
        assert_eq!(d.connection.backoff.max, Duration::from_secs(10));

        let h = ClientConfig::high_throughput();
        assert_eq!(h.connection.pool_size, 10);
        assert_eq!(h.connection.idle_timeout, None);
        assert_eq!(h.connection.max_send_message_size, 16 << 20);
        assert_eq!(
            h.connection.keepalive,
            Some(KeepaliveConfig {
                time: Duration::from_secs(300),
                timeout: Duration::from_secs(20),
                while_idle: false
            })
        );

        let r = ClientConfig::high_reliability();
        assert_eq!(r.balancer, BalancerKind::LeastLoaded);

        let l = ClientConfig::low_latency();
        assert_eq!(l.balancer, BalancerKind::Random);

        let f = ClientConfig::factory();
        assert_eq!(
            f.connection.backoff,
            BackoffConfig {
                base: Duration::from_millis(100),
                multiplier: 1.6,
                jitter: 0.2,
                max: Duration::from_secs(2)
            }
        );
    }

    /// gRFC A8: no preset pings more than once a minute, or while idle.
    #[test]
    fn presets_keep_keepalive_within_what_servers_allow() {
        for name in [
            "production",
            "development",
            "high-throughput",
            "high-reliability",
            "low-latency",
            "factory",
        ] {
            let c = ClientConfig::preset(name).unwrap();
            assert_eq!(c.validate(), Ok(()), "{name}");
            if let Some(k) = c.connection.keepalive {
                assert!(k.time >= Duration::from_secs(60), "{name}: {k:?}");
                assert!(!k.while_idle, "{name}: {k:?}");
            }
        }
    }

    #[test]
    fn keepalive_out_of_bounds_is_invalid() {
        let mut c = ClientConfig::default();
        let k = |time, timeout| {
            Some(KeepaliveConfig {
                time,
                timeout,
                while_idle: false,
            })
        };
        c.connection.keepalive = k(Duration::from_secs(9), Duration::from_secs(20));
        let e = c.validate().unwrap_err();
        assert_eq!(e.field(), "connection.keepalive.time");
        assert!(e.to_string().contains("10s"), "{e}");
        c.connection.keepalive = k(Duration::MAX, Duration::from_secs(20));
        assert_eq!(
            c.validate().unwrap_err().field(),
            "connection.keepalive.time"
        );
        c.connection.keepalive = k(Duration::from_secs(10), Duration::ZERO);
        assert_eq!(
            c.validate().unwrap_err().field(),
            "connection.keepalive.timeout"
        );
        c.connection.keepalive = k(Duration::from_secs(10), Duration::MAX);
        assert!(c.validate().is_err());
        c.connection.keepalive = k(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn backoff_schedule() {
        let b = ClientConfig::factory().connection.backoff;
        let ms = |n| b.delay(n, 0.5).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(9)],
            [100, 160, 256, 409, 655, 2000]
        );
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(80));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(120));
    }

    #[test]
    fn names() {
        assert_eq!(
            BalancerKind::from_name("least-loaded"),
            Some(BalancerKind::LeastLoaded)
        );
        assert_eq!(
            ClientConfig::preset("high_throughput"),
            Some(ClientConfig::high_throughput())
        );
        assert_eq!(ClientConfig::preset("nope"), None);
    }
}
