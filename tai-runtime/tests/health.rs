//! Health that reflects reality: the application drives a tai server's health
//! by its dependencies ([`DependencyHealth`]), and tai's health-checked channel
//! follows it (grpc.health.v1 Watch) under load.
//!
//! Real tai servers on loopback TCP, each serving a scripted tonic service; the
//! script's call counter is what reached each server. Time is real (loopback
//! I/O), so every step waits on observable state (the channel's endpoint
//! statistics, the counters, health answers), never on a sleep.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{Echo, Script, echo, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::channel::{Channel, Endpoints};
use tai_runtime::config::{BalancerKind, ClientConfig, HealthCheckConfig};
use tai_runtime::policy::{CodeSet, MethodPolicy, RetryPolicy};
use tai_runtime::server::{DependencyHealth, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long any awaited state may take before the test fails (it normally
/// takes milliseconds).
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `done` holds, checking every millisecond; fails after
/// [`PATIENCE`] saying what it waited for.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"));
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

/// A tai server on loopback whose `test.Echo` needs a database: while the
/// database is down, the handler fails with UNAVAILABLE (as a real one
/// would) and health says NOT_SERVING. Stops when dropped.
struct Backend {
    addr: SocketAddr,
    script: Script,
    database: DependencyHealth,
    _stop: oneshot::Sender<()>,
}

async fn backend() -> Backend {
    // The handler asks the same dependency health the server reports.
    let database = Arc::new(OnceLock::<DependencyHealth>::new());
    let script = {
        let database = Arc::clone(&database);
        Script::unary(move |_, request| {
            let up = database.get().is_none_or(DependencyHealth::is_up);
            async move {
                if up {
                    Ok(request)
                } else {
                    Err(Status::unavailable("database down"))
                }
            }
        })
    };
    let server = Server::builder().add_service(script.clone());
    let handle = server
        .dependency("database", ["test.Echo"])
        .expect("health is on");
    database.set(handle.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_with_incoming(listener, async move {
        let _ = stopped.await;
    }));
    Backend {
        addr,
        script,
        database: handle,
        _stop: stop,
    }
}

/// `/test.Echo/Unary`, idempotent, retried on UNAVAILABLE.
fn retrying() -> MethodPolicy {
    unary_method().with_retry(RetryPolicy::new(
        5,
        Duration::from_millis(1),
        Duration::from_millis(5),
        2.0,
        CodeSet::of(&[Code::Unavailable]),
    ))
}

fn not_serving(channel: &Channel, addr: SocketAddr) -> bool {
    let address = addr.to_string();
    channel
        .endpoint_stats()
        .iter()
        .any(|s| s.address == address && s.not_serving)
}

#[tokio::test]
async fn a_dependency_down_takes_its_endpoint_out_under_load_and_back() {
    let backends = [backend().await, backend().await, backend().await];
    let mut config = ClientConfig::factory();
    config.balancer = BalancerKind::RoundRobin;
    // Only health takes an endpoint out here, not failures.
    config.outlier = None;
    config.health_check = Some(HealthCheckConfig::new("test.Echo"));
    let addresses: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let channel = Channel::builder(Endpoints::list(addresses.iter().map(String::as_str)))
        .config(config)
        .seed(7)
        .build()
        .unwrap();
    assert!(channel.ready(PATIENCE).await);
    let client = Arc::new(ClientCore::new(
        channel.clone(),
        service(vec![retrying()], None),
    ));

    // A steady stream of idempotent calls from four workers; each counts the
    // calls it finished, so "every call begun before X has ended" is
    // observable.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<Status>::new()));
    let finished: Arc<[AtomicUsize; 4]> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
            let (failures, finished) = (Arc::clone(&failures), Arc::clone(&finished));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Err(status) = client.unary_retry::<Echo, Echo>(0, echo("x")).await {
                        failures.lock().unwrap().push(status);
                    }
                    finished[i].fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let finished_now =
        || -> Vec<usize> { finished.iter().map(|n| n.load(Ordering::SeqCst)).collect() };
    let calls = |i: usize| backends[i].script.calls();
    until("every backend to take calls", || {
        (0..3).all(|i| calls(i) > 10)
    })
    .await;

    // b's database goes down: b leaves the rotation with the next health update.
    let b = &backends[1];
    b.database.down().await;
    until("the channel to see b NOT_SERVING", || {
        not_serving(&channel, b.addr)
    })
    .await;
    // Every call begun before that has ended once each worker finished one more.
    let before = finished_now();
    until("each worker to finish a call", || {
        finished_now()
            .iter()
            .zip(&before)
            .all(|(now, then)| now > then)
    })
    .await;
    let b_calls = calls(1);
    let (a_calls, c_calls) = (calls(0), calls(2));
    until("a and c to take 200 more calls each", || {
        calls(0) >= a_calls + 200 && calls(2) >= c_calls + 200
    })
    .await;
    assert_eq!(calls(1), b_calls, "no call reached b while NOT_SERVING");

    // The database is back: b returns to the rotation.
    b.database.up().await;
    until("the channel to see b SERVING", || {
        !not_serving(&channel, b.addr)
    })
    .await;
    until("b to take calls again", || calls(1) >= b_calls + 50).await;

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        within("a worker to stop", worker).await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "no idempotent call failed: {} did, first {:?}",
        failures.len(),
        failures.first()
    );
}

async fn check(addr: SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}

/// Only the services that name a dependency follow it; a service needing two
/// is SERVING only when both are up; one down before the server starts keeps
/// them NOT_SERVING from the first answer.
#[tokio::test]
async fn a_dependency_changes_exactly_the_services_that_need_it() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Server::builder().add_service(script);
    let database = server.dependency("database", ["test.Echo"]).unwrap();
    let cache = server
        .dependency("cache", ["test.Echo", "test.Other"])
        .unwrap();
    database.down().await;
    assert!(!database.is_up());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_with_incoming(listener, async move {
        let _ = stopped.await;
    }));
    // The server sets the statuses before it accepts the first connection.
    let echo_status = || check(addr, "test.Echo");
    assert_eq!(echo_status().await, ServingStatus::NotServing);
    assert_eq!(check(addr, "").await, ServingStatus::Serving);
    assert_eq!(check(addr, "test.Other").await, ServingStatus::Serving);

    cache.down().await;
    database.up().await;
    assert_eq!(
        echo_status().await,
        ServingStatus::NotServing,
        "cache still down"
    );
    assert_eq!(check(addr, "test.Other").await, ServingStatus::NotServing);
    cache.up().await;
    assert_eq!(echo_status().await, ServingStatus::Serving);
    assert_eq!(check(addr, "test.Other").await, ServingStatus::Serving);
    assert_eq!(check(addr, "").await, ServingStatus::Serving);
}
