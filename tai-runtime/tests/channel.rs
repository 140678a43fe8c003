//! The balanced channel against real tonic servers: failover, ejection, balancers,
//! discovery, health checks, reconnect backoff, pooling and the state API.
//!
//! Most tests run on an in-process network (support::net) under paused tokio time,
//! so time-based policies are exact; one runs over loopback TCP and real DNS.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use support::net::Net;
use support::{Echo, Script, echo, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::channel::{
    BoxIo, Channel, ConnectFuture, ConnectivityState, Connector, Endpoints, Resolve, ResolveFuture,
};
use tai_runtime::config::{
    BackoffConfig, BalancerKind, ClientConfig, HealthCheckConfig, OutlierConfig,
};
use tai_runtime::policy::{CodeSet, MethodPolicy, RetryPolicy, ServicePolicy, ThrottlePolicy};
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::discover::Change;

fn retrying() -> MethodPolicy {
    unary_method().with_retry(RetryPolicy::new(
        5,
        Duration::from_millis(10),
        Duration::from_millis(50),
        2.0,
        CodeSet(1 << Code::Unavailable as u32),
    ))
}

fn test_config(balancer: BalancerKind) -> ClientConfig {
    let mut c = ClientConfig::factory();
    c.balancer = balancer;
    c.outlier = Some(OutlierConfig::new(
        3,
        Duration::from_secs(10),
        Duration::from_secs(60),
        50,
        CodeSet(1 << Code::Unavailable as u32),
    ));
    c
}

fn channel(net: &Net, addresses: &[&str], config: ClientConfig) -> Channel {
    Channel::builder(Endpoints::list(addresses.iter().copied()))
        .config(config)
        .connector(net.connector())
        .seed(7)
        .build()
        .unwrap()
}

fn ok_server() -> Script {
    Script::unary(|_, _| async { Ok(echo("ok")) })
}

fn slow_server(delay: Duration) -> Script {
    Script::unary(move |_, _| async move {
        tokio::time::sleep(delay).await;
        Ok(echo("ok"))
    })
}

fn core(channel: Channel, policy: &'static ServicePolicy) -> ClientCore<Channel> {
    ClientCore::new(channel, policy)
}

#[tokio::test(start_paused = true)]
async fn killing_an_endpoint_mid_load_fails_no_idempotent_call() {
    let net = Net::default();
    let servers: Vec<Script> = (0..3)
        .map(|_| slow_server(Duration::from_millis(5)))
        .collect();
    let addrs = ["a:1", "b:1", "c:1"];
    for (a, s) in addrs.iter().zip(&servers) {
        net.start(a, s);
    }
    let ch = channel(&net, &addrs, test_config(BalancerKind::RoundRobin));
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch.clone(), service(vec![retrying()], None));

    let mut failures = 0;
    for round in 0..20 {
        if round == 5 {
            net.kill("b:1");
        }
        if round == 12 {
            let b = ok_server();
            net.start("b:1", &b);
        }
        let calls = (0..30).map(|_| client.unary_retry::<Echo, Echo>(0, echo("x")));
        failures += join_all(calls)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        failures, 0,
        "every idempotent call succeeded while a healthy endpoint existed"
    );
    assert!(servers[1].calls() > 0);

    // b was killed mid-load; once restarted it reconnects and takes calls again.
    let b = ok_server();
    net.kill("b:1");
    net.start("b:1", &b);
    tokio::time::sleep(Duration::from_secs(61)).await;
    for _ in 0..30 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert!(b.calls() >= 5, "b is back in rotation: {} calls", b.calls());
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_and_returns() {
    let net = Net::default();
    let good = [ok_server(), ok_server()];
    let bad = Script::unary(|_, _| async { Err(Status::unavailable("sick")) });
    net.start("good1:1", &good[0]);
    net.start("good2:1", &good[1]);
    net.start("bad:1", &bad);
    let ch = channel(
        &net,
        &["good1:1", "good2:1", "bad:1"],
        test_config(BalancerKind::RoundRobin),
    );
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch.clone(), service(vec![retrying()], None));
    for _ in 0..30 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    let bad_calls = bad.calls();
    assert_eq!(bad_calls, 3, "ejected after 3 consecutive failures");
    let stats = ch.endpoint_stats();
    let bad_stats = stats.iter().find(|s| s.address == "bad:1").unwrap();
    let left = bad_stats.ejected_for.unwrap();
    assert!(
        left > Duration::from_millis(9900) && left <= Duration::from_secs(10),
        "{left:?}"
    );
    assert_eq!(bad_stats.failures, 3);

    for _ in 0..30 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(bad.calls(), bad_calls, "no calls while ejected");

    // After the ejection time it returns, fails again, and is ejected for longer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for _ in 0..30 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(bad.calls(), 6);
    let stats = ch.endpoint_stats();
    let bad_stats = stats.iter().find(|s| s.address == "bad:1").unwrap();
    let left = bad_stats.ejected_for.unwrap();
    assert!(
        left > Duration::from_millis(19900) && left <= Duration::from_secs(20),
        "second ejection is twice as long: {left:?}"
    );
}

async fn ejected_after_failures(hosts: usize) -> usize {
    let net = Net::default();
    let bad = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let addrs: Vec<String> = (0..hosts).map(|i| format!("h{i}:1")).collect();
    for a in &addrs {
        net.start(a, &bad);
    }
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let ch = channel(&net, &refs, test_config(BalancerKind::RoundRobin));
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch.clone(), service(vec![unary_method()], None));
    for _ in 0..60 {
        let _ = client.unary::<Echo, Echo>(0, echo("x")).await;
    }
    ch.endpoint_stats()
        .iter()
        .filter(|s| s.ejected_for.is_some())
        .count()
}

#[tokio::test(start_paused = true)]
async fn ejection_never_exceeds_the_percentage_cap() {
    assert_eq!(
        ejected_after_failures(3).await,
        1,
        "3 hosts at 50%: at most 1"
    );
    assert_eq!(ejected_after_failures(1).await, 0, "1 host at 50%: none");
    assert_eq!(
        ejected_after_failures(4).await,
        2,
        "4 hosts at 50%: at most 2"
    );
}

/// Closed-loop load over a fast and a slow endpoint; returns the fast one's share.
async fn fast_share(balancer: BalancerKind) -> f64 {
    let net = Net::default();
    let fast = slow_server(Duration::from_millis(10));
    let slow = slow_server(Duration::from_millis(100));
    net.start("fast:1", &fast);
    net.start("slow:1", &slow);
    let ch = channel(&net, &["fast:1", "slow:1"], test_config(balancer));
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = Arc::new(core(ch, service(vec![unary_method()], None)));
    let until = Instant::now() + Duration::from_secs(5);
    let workers = (0..16).map(|_| {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            while Instant::now() < until {
                client
                    .unary::<Echo, Echo>(0, echo("x"))
                    .await
                    .unwrap()
                    .into_inner();
            }
        })
    });
    join_all(workers).await;
    fast.calls() as f64 / (fast.calls() + slow.calls()) as f64
}

#[tokio::test(start_paused = true)]
async fn least_loaded_sends_less_to_a_slow_endpoint() {
    let round_robin = fast_share(BalancerKind::RoundRobin).await;
    let least_loaded = fast_share(BalancerKind::LeastLoaded).await;
    let peak_ewma = fast_share(BalancerKind::PeakEwma).await;
    assert!(
        (0.45..=0.55).contains(&round_robin),
        "round-robin splits evenly: {round_robin}"
    );
    assert!(
        least_loaded > 0.8,
        "least-loaded favours the fast endpoint: {least_loaded}"
    );
    assert!(
        peak_ewma > 0.8,
        "peak-EWMA favours the fast endpoint: {peak_ewma}"
    );
}

#[tokio::test(start_paused = true)]
async fn random_balancer_spreads_calls() {
    let net = Net::default();
    let servers = [ok_server(), ok_server(), ok_server()];
    for (i, s) in servers.iter().enumerate() {
        net.start(&format!("r{i}:1"), s);
    }
    let ch = channel(
        &net,
        &["r0:1", "r1:1", "r2:1"],
        test_config(BalancerKind::Random),
    );
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch, service(vec![unary_method()], None));
    for _ in 0..300 {
        client
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    for s in &servers {
        assert!((60..=140).contains(&s.calls()), "{}", s.calls());
    }
}

#[tokio::test(start_paused = true)]
async fn discover_stream_changes_keep_calls_in_flight() {
    let net = Net::default();
    let a = slow_server(Duration::from_secs(1));
    let b = ok_server();
    net.start("a:1", &a);
    net.start("b:1", &b);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(Change::Insert("a".to_owned(), "a:1".to_owned()))
        .unwrap();
    let ch = Channel::builder(Endpoints::stream(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
    ))
    .config(test_config(BalancerKind::RoundRobin))
    .connector(net.connector())
    .build()
    .unwrap();
    let client = Arc::new(core(ch.clone(), service(vec![unary_method()], None)));
    let in_flight = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.unary::<Echo, Echo>(0, echo("slow")).await })
    };
    while a.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tx.send(Change::Insert("b".to_owned(), "b:1".to_owned()))
        .unwrap();
    tx.send(Change::Remove("a".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(ch.endpoint_stats().len(), 1);
    for _ in 0..5 {
        client
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(b.calls(), 5, "new calls go to the new endpoint");
    in_flight
        .await
        .unwrap()
        .expect("the call in flight on the removed endpoint finished");
    assert_eq!(a.calls(), 1);
}

/// A resolver whose answer the test changes.
#[derive(Clone, Default)]
struct FakeDns(Arc<Mutex<Vec<std::net::SocketAddr>>>);

impl Resolve for FakeDns {
    fn resolve(&self, _target: &str) -> ResolveFuture {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test(start_paused = true)]
async fn dns_re_resolution_adds_and_removes_endpoints() {
    let net = Net::default();
    let one = slow_server(Duration::from_secs(2));
    let two = ok_server();
    net.start("10.0.0.1:7000", &one);
    net.start("10.0.0.2:7000", &two);
    let dns = FakeDns::default();
    *dns.0.lock().unwrap() = vec!["10.0.0.1:7000".parse().unwrap()];
    let ch = Channel::builder(Endpoints::resolver(
        "scheduler.svc:7000",
        dns.clone(),
        Duration::from_secs(30),
    ))
    .config(test_config(BalancerKind::RoundRobin))
    .connector(net.connector())
    .build()
    .unwrap();
    let client = Arc::new(core(ch.clone(), service(vec![unary_method()], None)));
    let in_flight = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.unary::<Echo, Echo>(0, echo("x")).await })
    };
    while one.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    *dns.0.lock().unwrap() = vec!["10.0.0.2:7000".parse().unwrap()];
    tokio::time::sleep(Duration::from_secs(30)).await;
    let addresses: Vec<String> = ch.endpoint_stats().into_iter().map(|s| s.address).collect();
    assert_eq!(addresses, ["10.0.0.2:7000"]);
    client
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.calls(), 1);
    in_flight
        .await
        .unwrap()
        .expect("call on the removed address finished");
}

/// Real DNS and real TCP: `localhost` resolves to every loopback address; the ones
/// with a server take calls.
#[tokio::test]
async fn real_dns_name_over_loopback_tcp() {
    let server = ok_server();
    let addr = server.serve_tcp().await;
    let ch = Channel::builder(Endpoints::dns(
        format!("localhost:{}", addr.port()),
        Duration::from_secs(60),
    ))
    .config(test_config(BalancerKind::RoundRobin))
    .build()
    .unwrap();
    let client = core(ch.clone(), service(vec![retrying()], None));
    for _ in 0..3 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(server.calls(), 3);
    assert!(
        ch.endpoint_stats()
            .iter()
            .any(|s| s.address == format!("127.0.0.1:{}", addr.port()))
    );
}

/// A connector that always fails and records when it was asked.
#[derive(Clone, Default)]
struct Refusing(Arc<Mutex<Vec<Instant>>>);

impl Connector for Refusing {
    fn connect(&self, _address: &str) -> ConnectFuture {
        self.0.lock().unwrap().push(Instant::now());
        Box::pin(async {
            Err::<BoxIo, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn reconnect_backoff_follows_its_schedule() {
    let refusing = Refusing::default();
    let mut config = ClientConfig::factory();
    config.connection.backoff =
        BackoffConfig::new(Duration::from_millis(100), 1.6, 0.2, Duration::from_secs(2));
    let ch = Channel::builder(Endpoints::one("down:1"))
        .config(config.clone())
        .connector(refusing.clone())
        .seed(11)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let times = refusing.0.lock().unwrap().clone();
    assert!(times.len() >= 12, "{} attempts", times.len());
    for (n, pair) in times.windows(2).enumerate() {
        let gap = (pair[1] - pair[0]).as_secs_f64();
        let nominal = (0.1 * 1.6f64.powi(n as i32)).min(2.0);
        assert!(
            gap >= nominal * 0.8 - 1e-6 && gap <= nominal * 1.2 + 1e-6,
            "gap {n}: {gap}s, nominal {nominal}s"
        );
    }
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let err = core(ch, service(vec![unary_method()], None))
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("down:1"), "{}", err.message());
}

/// An endpoint that cannot be connected to is never picked, so it costs no retry
/// attempt and no throttle token while a healthy endpoint exists.
#[tokio::test(start_paused = true)]
async fn connect_errors_burn_no_attempts_or_tokens() {
    let net = Net::default();
    let up = ok_server();
    net.start("up:1", &up);
    let ch = channel(
        &net,
        &["up:1", "down:1", "gone:1"],
        test_config(BalancerKind::RoundRobin),
    );
    assert!(ch.ready(Duration::from_secs(1)).await);
    let policy = service(vec![retrying()], Some(ThrottlePolicy::new(10, 0.1)));
    let client = core(ch, policy);
    for _ in 0..50 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(up.calls(), 50);
    assert!(
        up.seen().iter().all(|s| s.previous_attempts.is_none()),
        "no call was a retry"
    );
    assert_eq!(client.state().throttle().unwrap().tokens(), 10.0);
}

#[tokio::test(start_paused = true)]
async fn not_serving_endpoints_leave_rotation_on_the_next_update() {
    let net = Net::default();
    let (a, b) = (ok_server(), ok_server());
    let (reporter_a, health_a) = tonic_health::server::health_reporter();
    let (_reporter_b, health_b) = tonic_health::server::health_reporter();
    let router_a = tonic::transport::Server::builder()
        .add_service(health_a)
        .add_service(a.clone());
    let router_b = tonic::transport::Server::builder()
        .add_service(health_b)
        .add_service(b.clone());
    net.serve("a:1", |incoming| async move {
        let _ = router_a.serve_with_incoming(incoming).await;
    });
    net.serve("b:1", |incoming| async move {
        let _ = router_b.serve_with_incoming(incoming).await;
    });
    let mut config = test_config(BalancerKind::RoundRobin);
    config.health_check = Some(HealthCheckConfig::new(""));
    let ch = channel(&net, &["a:1", "b:1"], config);
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch.clone(), service(vec![unary_method()], None));

    reporter_a
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    while !ch.endpoint_stats().iter().any(|s| s.not_serving) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = a.calls();
    for _ in 0..20 {
        client
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(a.calls(), before, "no calls to a NOT_SERVING endpoint");

    reporter_a
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    while ch.endpoint_stats().iter().any(|s| s.not_serving) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..20 {
        client
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(a.calls(), before + 10);
}

#[tokio::test(start_paused = true)]
async fn state_api_and_non_blocking_build() {
    let net = Net::default();
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.wait_for_ready = true;
    config.connection.backoff.max = Duration::from_millis(200);
    let ch = channel(&net, &["late:1"], config);
    assert!(!ch.is_healthy());
    assert_ne!(ch.state(), ConnectivityState::Ready);

    // The first call waits for the server that starts later (wait_for_ready).
    let client = Arc::new(core(ch.clone(), service(vec![unary_method()], None)));
    let call = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.unary::<Echo, Echo>(0, echo("x")).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = ok_server();
    net.start("late:1", &server);
    call.await.unwrap().expect("waited for the connection");
    assert_eq!(ch.state(), ConnectivityState::Ready);
    assert!(ch.is_healthy());

    let deadline = Instant::now() + Duration::from_secs(5);
    net.kill("late:1");
    assert!(
        ch.wait_for_state_change(ConnectivityState::Ready, deadline)
            .await
    );
    assert_ne!(ch.state(), ConnectivityState::Ready);
    let deadline = Instant::now() + Duration::from_millis(50);
    let from = ch.state();
    let changed = ch.wait_for_state_change(from, deadline).await;
    if changed {
        assert_ne!(ch.state(), from, "a reported change is a real one");
    } else {
        assert_eq!(
            Instant::now(),
            deadline,
            "no change: it waited the whole time"
        );
        assert_eq!(ch.state(), from);
    }
}

#[tokio::test(start_paused = true)]
async fn pool_opens_n_connections_and_carries_calls_on_them() {
    let net = Net::default();
    let server = slow_server(Duration::from_millis(50));
    net.start("p:1", &server);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.pool_size = 3;
    let ch = channel(&net, &["p:1"], config);
    assert!(ch.ready(Duration::from_secs(1)).await);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(net.accepted("p:1"), 3);
    let client = core(ch.clone(), service(vec![unary_method()], None));
    let calls = (0..30).map(|_| client.unary::<Echo, Echo>(0, echo("x")));
    assert!(join_all(calls).await.iter().all(Result::is_ok));
    assert_eq!(ch.endpoint_stats()[0].connections, 3);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_and_reopen_on_demand() {
    let net = Net::default();
    let server = ok_server();
    net.start("i:1", &server);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.idle_timeout = Some(Duration::from_secs(1));
    let ch = channel(&net, &["i:1"], config);
    let client = core(ch.clone(), service(vec![unary_method()], None));
    client
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ch.connect_attempts("i:1"), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ch.state(), ConnectivityState::Idle);
    client
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ch.connect_attempts("i:1"), 2);
    assert_eq!(net.accepted("i:1"), 2);
}

#[tokio::test(start_paused = true)]
async fn message_size_limits_apply_both_ways() {
    let net = Net::default();
    let server = Script::unary(|_, req: Echo| async move {
        Ok(Echo {
            msg: req.msg.repeat(4),
            n: 0,
        })
    });
    net.start("m:1", &server);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.max_send_message_size = 1000;
    config.connection.max_receive_message_size = 2000;
    let client = core(
        channel(&net, &["m:1"], config),
        service(vec![unary_method()], None),
    );
    let err = client
        .unary::<Echo, Echo>(0, echo(&"x".repeat(1200)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("1000 byte send limit"), "{err}");
    assert_eq!(server.calls(), 0);
    let err = client
        .unary::<Echo, Echo>(0, echo(&"x".repeat(600)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    client
        .unary::<Echo, Echo>(0, echo(&"x".repeat(400)))
        .await
        .unwrap()
        .into_inner();
}

/// A transport of the application's that wraps a tai `Channel` says so through
/// `Transport::channel`, and its clients take the channel's limits; the same
/// channel behind `Tower`, which names no channel, gets the 4 MiB defaults.
#[tokio::test(start_paused = true)]
async fn a_transport_naming_its_channel_gets_the_channel_limits() {
    #[derive(Clone)]
    struct Wrapped(Channel);

    impl tower::Service<http::Request<tonic::body::Body>> for Wrapped {
        type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
        type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
        type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            self.0.call(request)
        }
    }

    impl tai_runtime::Transport for Wrapped {
        fn channel(&self) -> Option<&Channel> {
            Some(&self.0)
        }
    }

    let net = Net::default();
    let server = Script::unary(|_, req: Echo| async move { Ok(req) });
    net.start("w:1", &server);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.max_send_message_size = 1000;
    let ch = channel(&net, &["w:1"], config);
    let policy = service(vec![unary_method()], None);

    let wrapped = ClientCore::new(Wrapped(ch.clone()), policy);
    let err = wrapped
        .unary::<Echo, Echo>(0, echo(&"x".repeat(1200)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("1000 byte send limit"), "{err}");
    assert_eq!(server.calls(), 0);
    assert_eq!(wrapped.state().snapshot().endpoints.len(), 1);

    let hidden = ClientCore::new(tai_runtime::Tower(ch), policy);
    let reply = hidden
        .unary::<Echo, Echo>(0, echo(&"x".repeat(1200)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg.len(), 1200);
    assert_eq!(server.calls(), 1);
    assert!(hidden.state().snapshot().endpoints.is_empty());
}

/// The generated `connect_lazy` (and so `connect`) builds its channel with the
/// service's balancer.
#[tokio::test]
async fn generated_connect_uses_the_service_balancer() {
    static POLICY: ServicePolicy =
        ServicePolicy::new("test.Echo", &[]).with_balancer(BalancerKind::PeakEwma);
    let channel = tai_runtime::__private::connect_lazy("127.0.0.1:1".to_owned(), &POLICY).unwrap();
    assert_eq!(channel.config().balancer, BalancerKind::PeakEwma);
    let err = tai_runtime::__private::connect_lazy("no port".to_owned(), &POLICY).unwrap_err();
    assert!(err.to_string().contains("no port"), "{err}");
}

/// What a [`NotHttp2`] peer does once it has read the client's preface.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// Closes the connection: a proxy with no backend.
    Closes,
    /// Answers in HTTP/1.1 and closes: a port that is not HTTP/2.
    Garbage,
    /// Says nothing and keeps the connection open.
    Silent,
}

/// Accepts every connection and never sends an HTTP/2 SETTINGS frame; records
/// when it was asked to connect.
#[derive(Clone)]
struct NotHttp2 {
    peer: Peer,
    dials: Arc<Mutex<Vec<Instant>>>,
}

impl Connector for NotHttp2 {
    fn connect(&self, _address: &str) -> ConnectFuture {
        let peer = self.peer;
        let dials = {
            let mut dials = self.dials.lock().unwrap();
            dials.push(Instant::now());
            dials.len()
        };
        Box::pin(async move {
            if dials > 100 {
                // A client that re-dials at once never lets paused time advance, so
                // the test would hang instead of failing: stop answering after 100.
                return std::future::pending().await;
            }
            let (client, mut server) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut preface = [0u8; 1024];
                let _ = server.read(&mut preface).await;
                match peer {
                    Peer::Closes => {}
                    Peer::Garbage => {
                        let _ = server
                            .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                            .await;
                    }
                    Peer::Silent => std::future::pending::<()>().await,
                }
            });
            Ok(Box::new(client) as BoxIo)
        })
    }
}

/// A connection is Ready only once the server's SETTINGS frame has arrived; a peer
/// that accepts and closes, or is not HTTP/2, is re-dialled on the reconnect
/// backoff, not at once forever.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_sends_settings_is_redialled_on_the_backoff() {
    for peer in [Peer::Closes, Peer::Garbage] {
        let connector = NotHttp2 {
            peer,
            dials: Arc::default(),
        };
        let config = ClientConfig::development();
        let ch = Channel::builder(Endpoints::one("proxy:1"))
            .config(config.clone())
            .connector(connector.clone())
            .seed(3)
            .build()
            .unwrap();
        assert!(
            !ch.ready(Duration::from_secs(5)).await,
            "{peer:?}: never Ready"
        );
        let times = connector.dials.lock().unwrap().clone();
        // 500ms × 1.6^n ± 20%: 4 or 5 dials in 5 s.
        assert!(
            (4..=5).contains(&times.len()),
            "{peer:?}: {} dials in 5 s",
            times.len()
        );
        assert_eq!(ch.connect_attempts("proxy:1"), times.len() as u64);
        for (n, pair) in times.windows(2).enumerate() {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            let nominal = config.connection.backoff.delay(n as u32, 0.5).as_secs_f64();
            assert!(
                gap >= nominal * 0.8 - 1e-6 && gap <= nominal * 1.2 + 1e-6,
                "{peer:?}: gap {n}: {gap}s, nominal {nominal}s"
            );
        }
        let err = core(ch, service(vec![unary_method()], None))
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("SETTINGS"), "{}", err.message());
    }

    // A peer that says nothing is Connecting until the connect timeout, not Ready.
    let connector = NotHttp2 {
        peer: Peer::Silent,
        dials: Arc::default(),
    };
    let ch = Channel::builder(Endpoints::one("silent:1"))
        .config(ClientConfig::development())
        .connector(connector.clone())
        .build()
        .unwrap();
    assert!(!ch.ready(Duration::from_secs(4)).await);
    assert_eq!(ch.state(), ConnectivityState::Connecting);
    // The 5 s connect timeout covers the wait for SETTINGS; the backoff follows.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    assert_eq!(connector.dials.lock().unwrap().len(), 1);
}

/// Finds the frame headers in one direction of an HTTP/2 byte stream.
struct Frames {
    /// Bytes of the client's connection preface still to skip.
    preface: usize,
    header: Vec<u8>,
    payload: usize,
}

impl Frames {
    fn new(preface: usize) -> Self {
        Self {
            preface,
            header: Vec::with_capacity(9),
            payload: 0,
        }
    }

    /// Feeds bytes; calls `frame(type, flags)` at each frame header.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8)) {
        while !bytes.is_empty() {
            let skip = if self.preface > 0 {
                &mut self.preface
            } else {
                &mut self.payload
            };
            if *skip > 0 {
                let n = (*skip).min(bytes.len());
                *skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if let [l0, l1, l2, kind, flags, _, _, _, _] = self.header[..] {
                self.payload = u32::from_be_bytes([0, l0, l1, l2]) as usize;
                frame(kind, flags);
                self.header.clear();
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.preface == 0 && self.payload == 0 && self.header.is_empty()
    }
}

/// The server half of a connection, policing keepalive pings as grpc-go and
/// grpc-java servers do: after `limit` pings it answers GOAWAY ENHANCE_YOUR_CALM
/// with debug data `too_many_pings` (written between two of the h2 server's own
/// frames: h2 has no API for GOAWAY debug data) and closes the connection.
struct PingPolice {
    io: tokio::io::DuplexStream,
    inbound: Frames,
    outbound: Frames,
    pings: Arc<Mutex<Vec<Vec<Instant>>>>,
    connection: usize,
    limit: usize,
    goaway: Option<Vec<u8>>,
    closed: bool,
}

impl tokio::io::AsyncRead for PingPolice {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return std::task::Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        let (pings, connection) = (&this.pings, this.connection);
        let mut count = 0;
        this.inbound.feed(&buf.filled()[before..], |kind, flags| {
            // PING (0x6) without ACK: a keepalive ping from the client.
            if kind == 0x6 && flags & 0x1 == 0 {
                let mut pings = pings.lock().unwrap();
                pings[connection].push(Instant::now());
                count = pings[connection].len();
            }
        });
        if count >= this.limit && this.goaway.is_none() {
            let debug = b"too_many_pings";
            let mut frame = Vec::new();
            frame.extend_from_slice(&(8 + debug.len() as u32).to_be_bytes()[1..]);
            frame.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]); // GOAWAY on stream 0
            frame.extend_from_slice(&0u32.to_be_bytes()); // last stream id
            frame.extend_from_slice(&0xbu32.to_be_bytes()); // ENHANCE_YOUR_CALM
            frame.extend_from_slice(debug);
            this.goaway = Some(frame);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for PingPolice {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if this.outbound.at_boundary()
            && let Some(frame) = this.goaway.as_mut()
            && !frame.is_empty()
        {
            while !frame.is_empty() {
                match std::pin::Pin::new(&mut this.io).poll_write(cx, frame) {
                    Poll::Ready(Ok(n)) => drop(frame.drain(..n)),
                    other => return other,
                }
            }
            // Closed after the GOAWAY, as grpc-go does: h2 fails and drops the pipe.
            this.closed = true;
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let written = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.outbound.feed(&buf[..n], |_, _| {});
        }
        written
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// gRFC A8: a server that says `too_many_pings` gets half as many pings from the
/// endpoint's next connection, and half as many again after that.
#[tokio::test(start_paused = true)]
async fn too_many_pings_doubles_the_keepalive_time_of_the_next_connection() {
    use futures_util::StreamExt;

    let net = Net::default();
    let pings: Arc<Mutex<Vec<Vec<Instant>>>> = Arc::default();
    {
        let pings = Arc::clone(&pings);
        net.serve("policed:1", move |mut incoming| async move {
            while let Some(Ok(io)) = incoming.next().await {
                let connection = {
                    let mut pings = pings.lock().unwrap();
                    pings.push(Vec::new());
                    pings.len() - 1
                };
                let io = PingPolice {
                    io,
                    inbound: Frames::new(24),
                    outbound: Frames::new(0),
                    pings: Arc::clone(&pings),
                    connection,
                    limit: 3,
                    goaway: None,
                    closed: false,
                };
                tokio::spawn(async move {
                    let Ok(mut h2) = h2::server::handshake(io).await else {
                        return;
                    };
                    while let Some(Ok(_request)) = h2.accept().await {}
                });
            }
        });
    }
    let mut config = ClientConfig::factory();
    config.connection.keepalive = Some(
        tai_runtime::config::KeepaliveConfig::new(Duration::from_secs(10), Duration::from_secs(20))
            .with_while_idle(true),
    );
    let ch = channel(&net, &["policed:1"], config);
    assert!(ch.ready(Duration::from_secs(1)).await);
    // Pings every 10 s, GOAWAY at the third (30 s); then every 20 s (GOAWAY at
    // 90 s), then every 40 s (GOAWAY at 210 s).
    tokio::time::sleep(Duration::from_secs(215)).await;

    let pings = pings.lock().unwrap().clone();
    assert!(pings.len() >= 3, "{} connections", pings.len());
    for (n, expected) in [10, 20, 40].into_iter().enumerate() {
        let times = &pings[n];
        assert_eq!(times.len(), 3, "connection {n}: {} pings", times.len());
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(expected) && gap < Duration::from_secs(expected + 1),
                "connection {n}: pings {gap:?} apart, expected {expected}s"
            );
        }
    }
    assert_eq!(
        ch.endpoint_stats()[0].keepalive,
        Some(Duration::from_secs(80))
    );
}

/// gRFC A8: no keepalive time below 10 s.
#[tokio::test]
async fn a_keepalive_below_ten_seconds_is_refused_at_build() {
    let mut config = ClientConfig::factory();
    config.connection.keepalive = Some(tai_runtime::config::KeepaliveConfig::new(
        Duration::from_secs(5),
        Duration::from_secs(20),
    ));
    let err = Channel::builder(Endpoints::one("a:1"))
        .config(config)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("keepalive.time"), "{err}");
}

/// A far deadline is no deadline: `Duration::MAX` (or any time past what `Instant`
/// holds) waits forever instead of panicking, wherever the channel takes one.
#[tokio::test(start_paused = true)]
async fn durations_past_what_instant_holds_saturate() {
    let net = Net::default();
    let server = ok_server();
    net.start("up:1", &server);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.connection.idle_timeout = Some(Duration::MAX);
    let ch = channel(&net, &["up:1"], config);
    assert!(ch.ready(Duration::MAX).await);
    let client = core(ch.clone(), service(vec![unary_method()], None));
    client
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    client
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ch.connect_attempts("up:1"), 1, "never idle");

    // Nothing to connect to: waits forever (cut short here), does not panic.
    let down = channel(&net, &["down:1"], test_config(BalancerKind::RoundRobin));
    let waited = tokio::time::timeout(Duration::from_secs(60), down.ready(Duration::MAX)).await;
    assert!(waited.is_err(), "still waiting after 60 s");

    // Ejection times past what Instant holds: ejected for as long as it can be.
    let bad = Script::unary(|_, _| async { Err(Status::unavailable("sick")) });
    net.start("bad:1", &bad);
    let mut config = test_config(BalancerKind::RoundRobin);
    config.outlier = Some(OutlierConfig::new(
        1,
        Duration::MAX,
        Duration::MAX,
        100,
        CodeSet(1 << Code::Unavailable as u32),
    ));
    let ch = channel(&net, &["bad:1"], config);
    assert!(ch.ready(Duration::from_secs(1)).await);
    let client = core(ch.clone(), service(vec![unary_method()], None));
    let err = client.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let ejected = ch.endpoint_stats()[0].ejected_for.expect("ejected");
    assert!(
        ejected > Duration::from_secs(365 * 24 * 3600),
        "{ejected:?}"
    );
}

/// The client's connection bytes, counting the writes that carry some.
struct CountedIo {
    io: BoxIo,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountedIo {
    fn count(&self, written: &std::task::Poll<std::io::Result<usize>>) {
        if matches!(written, std::task::Poll::Ready(Ok(n)) if *n > 0) {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl tokio::io::AsyncRead for CountedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(task, buf)
    }
}

impl tokio::io::AsyncWrite for CountedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write(task, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write_vectored(task, bufs);
        self.count(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(task)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(task)
    }
}

/// [`Net`], with the client's writes counted.
struct CountingNet {
    net: Net,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Connector for CountingNet {
    fn connect(&self, address: &str) -> ConnectFuture {
        let (connecting, writes) = (self.net.connect(address), Arc::clone(&self.writes));
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Box::new(CountedIo { io, writes }) as BoxIo)
        })
    }
}

/// Calls started together by separate tasks (a server's request handlers) share
/// the connection's writes, as tonic's buffer makes them do. tokio runs the
/// connection task right after the caller that woke it; polled at once, it would
/// write each call on its own (at least one write per call). Needs the
/// multi-thread scheduler (whose "woken next" slot this is about), so real time;
/// the count does not depend on timing (one worker runs every task) as long as
/// the server's answer takes longer than starting the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calls_started_together_share_their_writes() {
    const CALLS: usize = 32;
    let net = Net::default();
    // Slow enough that every call is in flight before the first one ends.
    net.start("a:1", &slow_server(Duration::from_millis(200)));
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ch = Channel::builder(Endpoints::list(["a:1"]))
        .config(ClientConfig::factory())
        .connector(CountingNet {
            net: net.clone(),
            writes: Arc::clone(&writes),
        })
        .build()
        .unwrap();
    let client = Arc::new(core(ch, service(vec![unary_method()], None)));
    client.unary::<Echo, Echo>(0, echo("warm")).await.unwrap();
    let before = writes.load(std::sync::atomic::Ordering::SeqCst);
    // Spawned from a worker, the callers queue on that worker, in order.
    let used = tokio::spawn(async move {
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let client = Arc::clone(&client);
                tokio::spawn(async move { client.unary::<Echo, Echo>(0, echo("x")).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
    });
    used.await.unwrap();
    let used = writes.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        used <= CALLS / 4,
        "{CALLS} calls started together took {used} writes"
    );
}

/// A unary call's request goes as HEADERS and one DATA frame that ends the
/// stream: no empty DATA frame after the message (what tonic's body alone makes
/// hyper send), which costs both sides a frame and keeps a server that waits for
/// the request's end (tonic's, for its trailers) from starting the handler.
#[tokio::test]
async fn a_unary_request_ends_its_stream_with_its_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            // Each DATA frame as it arrives: its length, and whether the stream
            // had ended with it.
            let mut body = request.into_body();
            let mut seen = Vec::new();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
                seen.push((data.len(), body.is_end_stream()));
            }
            frames_tx.send(seen).unwrap();
            let head = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "5".parse().unwrap());
            let mut send = respond.send_response(head, false).unwrap();
            let _ = send.send_trailers(trailers);
        }
    });
    let channel = Channel::builder(Endpoints::one(addr.to_string()))
        .build()
        .unwrap();
    let core = ClientCore::new(channel, service(vec![unary_method()], None));
    let message = echo("hello");
    let err = core
        .unary::<Echo, Echo>(0, message.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the server's answer: {err}");
    let framed = 5 + prost::Message::encoded_len(&message);
    assert_eq!(
        frames.recv().await.unwrap(),
        [(framed, true)],
        "one DATA frame, ending the stream"
    );
}

/// The writes a connection made: the bytes of each, in order.
type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

/// Loopback TCP whose writes are recorded.
struct RecordedWrites {
    tcp: tokio::net::TcpStream,
    writes: Writes,
}

impl tokio::io::AsyncRead for RecordedWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for RecordedWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = std::task::ready!(std::pin::Pin::new(&mut this.tcp).poll_write(cx, buf))?;
        this.writes.lock().unwrap().push(buf[..written].to_vec());
        std::task::Poll::Ready(Ok(written))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The HTTP/2 frame types in `bytes` (whole frames), in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// A call made alone goes out in one write: its HEADERS wait for its DATA
/// rather than being written on their own (h2 gives the body send capacity only
/// once the connection has opened the stream, in the poll that writes the
/// HEADERS), so the server reads and wakes once per call, not twice.
#[tokio::test]
async fn a_lone_call_is_written_once_headers_and_data_together() {
    let addr = Script::unary(|_, request| async move { Ok(request) })
        .serve_tcp()
        .await;
    let writes: Writes = Arc::default();
    let connector = {
        let writes = Arc::clone(&writes);
        move |address: String| {
            let writes = Arc::clone(&writes);
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                Ok(Box::new(RecordedWrites { tcp, writes }) as BoxIo)
            }
        }
    };
    let channel = Channel::builder(Endpoints::one(addr.to_string()))
        .connector(connector)
        .build()
        .unwrap();
    let core = ClientCore::new(channel, service(vec![unary_method()], None));
    // The first call also acknowledges the server's SETTINGS.
    core.unary::<Echo, Echo>(0, echo("warm-up")).await.unwrap();
    let before = writes.lock().unwrap().len();
    for _ in 0..3 {
        core.unary::<Echo, Echo>(0, echo("alone")).await.unwrap();
    }
    let calls: Vec<Vec<u8>> = writes.lock().unwrap()[before..]
        .iter()
        .map(|w| frame_types(w))
        .collect();
    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    assert_eq!(calls, vec![vec![HEADERS, DATA]; 3], "one write per call");
}
