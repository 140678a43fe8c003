//! Quotas shared by replicas through a real `redis-server`, started by the test
//! on a free port (no persistence), killed and restarted by it. Redis keeps its
//! own clock, so these run on real time: calls are paced at ten times the quota
//! and the admitted count is held to the GCRA bound over the measured interval
//! (quota·t + burst), never to a timing.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tai_runtime::server::rate_limit::{Quota, RateLimitLayer, RedisStore};
use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::{CLIENT_ID, Served, nz};

/// 20 calls/s in bursts of 5; driven at 200 calls/s.
const RATE: u32 = 20;
const BURST: u32 = 5;
const STEP: Duration = Duration::from_millis(5);

fn quota() -> Quota {
    Quota::per_second(nz(RATE)).allow_burst(nz(BURST))
}

/// The most GCRA admits over `t`: quota·t + burst.
fn bound(t: Duration) -> f64 {
    f64::from(RATE) * t.as_secs_f64() + f64::from(BURST)
}

/// A `redis-server` of the test's own, on loopback.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// Whether these tests may run: with `redis-server` on the PATH. Without it they
/// say so and pass, so that `cargo test --workspace` works on a fresh machine as
/// the README promises, unless `TAI_REQUIRE_REDIS` is set, as `.ci/run` sets it
/// after installing redis-server: there they must run.
fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("TAI_REQUIRE_REDIS").is_none(),
            "TAI_REQUIRE_REDIS is set but redis-server is not on the PATH"
        );
        eprintln!(
            "skipped: redis-server is not installed (Debian: apt-get install redis-server); \
             .ci/run installs it and sets TAI_REQUIRE_REDIS=1"
        );
    }
    found
}

impl RedisServer {
    async fn start() -> Self {
        // A free port: the kernel picks one, the listener closes, Redis takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on the same port, and waits until it answers PING.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is needed for the Redis rate limit tests: install it \
                 (Debian: apt-get install redis-server; .ci/run does so when it is missing)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.pong().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers PING (in Redis' inline protocol).
    async fn pong(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut answer).await.is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A key prefix no other test uses.
fn prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tai-test:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A replica: the health service behind a Redis-backed layer, keyed by
/// `x-client-id`.
async fn replica(redis: &RedisServer, prefix: &str) -> (Served, RateLimitLayer) {
    let store = RedisStore::open(&redis.url())
        .unwrap()
        .prefix(prefix)
        // Generous: a loaded machine must not turn a slow answer into a fallback.
        .timeout(Duration::from_millis(500))
        .retry_every(Duration::from_millis(100));
    let layer = RateLimitLayer::per_client(quota())
        .key_by_header(CLIENT_ID)
        .shared_in(store);
    (Served::start(layer.clone()).await, layer)
}

/// Admitted calls per replica over one paced run.
struct Run {
    admitted: [u32; 2],
    elapsed: Duration,
}

impl Run {
    fn total(&self) -> u32 {
        self.admitted[0] + self.admitted[1]
    }
}

/// Calls as client "alice" every `STEP` (ten times the quota) for `duration`,
/// alternating between the replicas; every call is admitted or refused with
/// RESOURCE_EXHAUSTED, nothing else. Stops early when `until` holds.
async fn drive(replicas: [&Served; 2], duration: Duration, until: impl Fn() -> bool) -> Run {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut admitted = [0; 2];
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < duration && !until() {
        tick.tick().await;
        match replicas[i % 2].call(Some("alice")).await {
            Ok(()) => admitted[i % 2] += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        i += 1;
    }
    Run {
        admitted,
        elapsed: start.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_quota() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let prefix = prefix();
    let (a, layer_a) = replica(&redis, &prefix).await;
    let (b, layer_b) = replica(&redis, &prefix).await;
    let run = drive([&a, &b], Duration::from_millis(1500), || false).await;
    let total = run.total();
    assert!(
        f64::from(total) <= bound(run.elapsed),
        "{total} admitted in {:?}: over the shared quota",
        run.elapsed
    );
    assert!(total >= BURST, "the burst is admitted: {total}");
    assert!(
        run.admitted.iter().all(|&n| n > 0),
        "both replicas admitted calls: {:?}",
        run.admitted
    );
    assert_eq!(
        layer_a.redis_fallbacks(),
        0,
        "every call was decided in Redis"
    );
    assert!(!layer_a.redis_is_down() && !layer_b.redis_is_down());
    // A refusal from Redis reads like a local one (a few calls: the bucket may
    // have refilled by one since the run).
    let mut refused = None;
    for _ in 0..BURST + 2 {
        if let Err(status) = a.call(Some("alice")).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("refused within a burst");
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded for client id \"alice\": the limit is 20 calls/s"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_local_quotas_and_recovers() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let prefix = prefix();
    let (a, layer_a) = replica(&redis, &prefix).await;
    let (b, layer_b) = replica(&redis, &prefix).await;

    let run = drive([&a, &b], Duration::from_millis(500), || false).await;
    assert!(
        f64::from(run.total()) <= bound(run.elapsed),
        "shared: {}",
        run.total()
    );
    assert_eq!(layer_a.redis_fallbacks(), 0);

    // Redis dies: each replica holds its own local quota, and no call fails for
    // any other reason (`drive` checks every refusal's code).
    redis.kill();
    let run = drive([&a, &b], Duration::from_millis(1000), || false).await;
    for (replica, admitted) in run.admitted.iter().enumerate() {
        assert!(
            f64::from(*admitted) <= bound(run.elapsed),
            "replica {replica}: {admitted} admitted in {:?} without Redis",
            run.elapsed
        );
        assert!(
            *admitted >= BURST,
            "replica {replica} admits on its own: {admitted}"
        );
    }
    assert!(layer_a.redis_is_down() && layer_b.redis_is_down());
    let fell_back = layer_a.redis_fallbacks();
    assert!(fell_back > 0);

    // Redis returns (empty: no persistence); the replicas find it by themselves.
    redis.restart().await;
    let waited = drive([&a, &b], Duration::from_secs(10), || {
        !layer_a.redis_is_down() && !layer_b.redis_is_down()
    })
    .await;
    assert!(
        !layer_a.redis_is_down() && !layer_b.redis_is_down(),
        "still on local quotas {:?} after Redis returned",
        waited.elapsed
    );

    // Shared again: the two together are held to one quota, all in Redis.
    let fell_back = layer_a.redis_fallbacks();
    let run = drive([&a, &b], Duration::from_millis(1000), || false).await;
    assert!(
        f64::from(run.total()) <= bound(run.elapsed),
        "{} admitted in {:?} after recovery: over the shared quota",
        run.total(),
        run.elapsed
    );
    assert!(run.total() >= BURST);
    assert_eq!(
        layer_a.redis_fallbacks(),
        fell_back,
        "no call decided locally"
    );
}
