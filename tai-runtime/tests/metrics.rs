//! Metrics in registries of the user's own: clients and server layers given a
//! [`Metrics`] made over a registry record there, and only there; the global
//! metrics see none of it.
//!
//! Nothing else in this test binary records into the global metrics, so they must
//! read the same before and after.

mod support;

use std::future::Future;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tai_runtime::__private::ClientCore;
use tai_runtime::ConnectivityState;
use tai_runtime::channel::{Channel, Endpoints};
use tai_runtime::config::{BalancerKind, ClientConfig, OutlierConfig};
use tai_runtime::metrics::Metrics;
use tai_runtime::policy::{BreakerPolicy, CodeSet, RetryPolicy};
use tai_runtime::server::ServerLayer;
use tai_runtime::server::metrics::MetricsLayer;
use tai_runtime::{BreakerState, Code, Status, resilient};

use support::net::Net;
use support::{Echo, Script, echo, open_stream, service, stream_method, unary_method};

/// `test.Echo` as a service owner declares it: the generated client.
#[resilient(service = "test.Echo")]
pub trait EchoService {
    /// Answers with the request.
    fn unary(&self, request: Echo) -> impl Future<Output = Result<Echo, Status>> + Send;
}

/// The text exposition of a whole registry, as a scraper reads it.
fn text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

/// The value of the series `name{labels}` in `text`, if it is there.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().unwrap())
}

const UNARY: &str = r#"service="test.Echo",method="Unary""#;

/// The calls of `test.Echo/Unary` that ended with `code`, in the family
/// `{family}_calls_total`.
fn calls(text: &str, family: &str, code: &str) -> Option<f64> {
    value(
        text,
        &format!("{family}_calls_total"),
        &format!(r#"{UNARY},code="{code}""#),
    )
}

/// A channel over `net` to `address`, recording into `metrics`.
fn channel(net: &Net, address: &str, metrics: &Metrics) -> Channel {
    Channel::builder(Endpoints::one(address))
        .connector(net.connector())
        .metrics(metrics)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_registry_holds_only_the_series_of_what_was_given_it() {
    let global_before = Metrics::global().encode();

    // Registry A also holds a series of the application's own.
    let mut registry_a = Registry::default();
    let own = Counter::<u64>::default();
    registry_a.register("app_requests", "The application's own", own.clone());
    own.inc();
    let metrics_a = Metrics::new(&mut registry_a);
    let mut registry_b = Registry::with_prefix("svc");
    let metrics_b = Metrics::new(&mut registry_b);

    // A: answers; the combined server layer and the generated client record into A.
    // B: refuses; the metrics layer alone and the engine's client core record into B.
    let net = Net::default();
    let server_a = tonic::transport::Server::builder()
        .layer(ServerLayer::with_metrics(&metrics_a))
        .add_service(Script::unary(|_, e| async move { Ok(e) }));
    net.serve("a:1", |incoming| async move {
        let _ = server_a.serve_with_incoming(incoming).await;
    });
    let server_b = tonic::transport::Server::builder()
        .layer(MetricsLayer::with_metrics(&metrics_b))
        .add_service(Script::unary(|_, _| async {
            Err(Status::not_found("no such echo"))
        }));
    net.serve("b:1", |incoming| async move {
        let _ = server_b.serve_with_incoming(incoming).await;
    });

    let client_a = EchoServiceClient::with_metrics(channel(&net, "a:1", &metrics_a), &metrics_a);
    for _ in 0..2 {
        assert_eq!(
            client_a.unary(echo("hi")).await.unwrap().into_inner().msg,
            "hi"
        );
    }
    // B's breaker trips after two NOT_FOUNDs and refuses the third call itself.
    let breaker = BreakerPolicy::new(
        2,
        Duration::from_secs(30),
        Duration::from_secs(30),
        1,
        CodeSet::of(&[Code::NotFound]),
    );
    let policy = service(vec![unary_method().with_breaker(breaker)], None);
    let client_b = ClientCore::with_metrics(channel(&net, "b:1", &metrics_b), policy, &metrics_b);
    for code in [Code::NotFound, Code::NotFound, Code::Unavailable] {
        let status = client_b
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    // The same policy to the same target, recording into A: its own breaker,
    // whose gauge is A's.
    let other = ClientCore::with_metrics(channel(&net, "b:1", &metrics_a), policy, &metrics_a);
    let state = |core: &ClientCore<Channel>| core.state().breaker("Unary").unwrap().state();
    assert!(matches!(state(&client_b), BreakerState::Open { .. }));
    assert_eq!(state(&other), BreakerState::Closed);

    let a = text(&registry_a);
    assert!(
        a.contains("\napp_requests_total 1\n"),
        "the app's own series stays: {a}"
    );
    assert_eq!(calls(&a, "tai_client", "Ok"), Some(2.0), "{a}");
    assert_eq!(calls(&a, "tai_server", "Ok"), Some(2.0), "{a}");
    assert_eq!(calls(&a, "tai_client", "NotFound"), Some(0.0), "{a}");
    assert_eq!(calls(&a, "tai_server", "NotFound"), Some(0.0), "{a}");
    assert_eq!(
        value(&a, "tai_client_call_duration_seconds_count", UNARY),
        Some(2.0),
        "{a}"
    );
    assert_eq!(value(&a, "tai_breaker_open", UNARY), Some(0.0), "{a}");
    assert_eq!(
        value(&a, "tai_breaker_rejections_total", UNARY),
        Some(0.0),
        "{a}"
    );
    let tai_part: String = a
        .lines()
        .filter(|l| !l.contains("app_requests"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        metrics_a.encode(),
        tai_part,
        "encode: the tai series of A alone"
    );

    let b = text(&registry_b);
    assert!(!b.contains("app_requests"), "{b}");
    assert!(
        !b.lines().any(|l| l.starts_with("tai_")),
        "B's series carry B's prefix: {b}"
    );
    assert_eq!(calls(&b, "svc_tai_client", "NotFound"), Some(2.0), "{b}");
    assert_eq!(calls(&b, "svc_tai_client", "Unavailable"), Some(1.0), "{b}");
    assert_eq!(calls(&b, "svc_tai_client", "Ok"), Some(0.0), "{b}");
    assert_eq!(calls(&b, "svc_tai_server", "NotFound"), Some(2.0), "{b}");
    assert_eq!(calls(&b, "svc_tai_server", "Ok"), Some(0.0), "{b}");
    assert_eq!(value(&b, "svc_tai_breaker_open", UNARY), Some(1.0), "{b}");
    assert_eq!(
        value(&b, "svc_tai_breaker_rejections_total", UNARY),
        Some(1.0),
        "{b}"
    );

    assert_eq!(
        Metrics::global().encode(),
        global_before,
        "nothing recorded into the global metrics"
    );
}

/// A retry policy: 3 attempts on UNAVAILABLE, 10ms backoff.
const RETRY: RetryPolicy = RetryPolicy::new(
    3,
    Duration::from_millis(10),
    Duration::from_millis(10),
    1.0,
    CodeSet::of(&[Code::Unavailable]),
);

#[tokio::test(start_paused = true)]
async fn channel_series_and_client_stats_by_endpoint() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let net = Net::default();
    net.start(
        "bad:1",
        &Script::unary(|_, _| async { Err(Status::unavailable("down")) }),
    );
    net.start("good:1", &Script::unary(|_, e| async move { Ok(e) }));
    let mut config = ClientConfig::default();
    config.balancer = BalancerKind::RoundRobin;
    config.outlier = Some(OutlierConfig::new(
        1,
        Duration::from_secs(600),
        Duration::from_secs(600),
        50,
        CodeSet::of(&[Code::Unavailable]),
    ));
    let channel = Channel::builder(Endpoints::list(["bad:1", "good:1"]))
        .connector(net.connector())
        .config(config)
        .metrics(&metrics)
        .build()
        .unwrap();
    for _ in 0..100 {
        if channel
            .endpoint_stats()
            .iter()
            .all(|e| e.state == ConnectivityState::Ready)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let policy = service(vec![unary_method().with_retry(RETRY)], None);
    let client = ClientCore::with_metrics(channel, policy, &metrics);
    for _ in 0..4 {
        client
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap();
    }

    // Round robin sends one attempt to bad:1, which is ejected at once; its call
    // is retried on good:1 and every later call goes there.
    let text = metrics.encode();
    let series =
        |name: &str, endpoint: &str| value(&text, name, &format!(r#"endpoint="{endpoint}""#));
    assert_eq!(
        series("tai_channel_ejections_total", "bad:1"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series("tai_channel_ejected", "bad:1"), Some(1.0), "{text}");
    assert_eq!(
        series("tai_channel_ejections_total", "good:1"),
        Some(0.0),
        "{text}"
    );
    for endpoint in ["bad:1", "good:1"] {
        assert_eq!(
            series("tai_channel_connections_created_total", endpoint),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_connections_open", endpoint),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_connections_closed_total", endpoint),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_connect_duration_seconds_count", endpoint),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_pool_size", endpoint),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_pool_busy", endpoint),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_in_flight", endpoint),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            series("tai_channel_connect_failures_total", endpoint),
            Some(0.0),
            "{text}"
        );
    }
    assert_eq!(
        value(&text, "tai_client_retries_total", UNARY),
        Some(1.0),
        "{text}"
    );

    let stats = client.state().snapshot();
    let unary = stats.method("Unary").unwrap();
    assert_eq!((unary.calls, unary.ok, unary.retries), (4, 4, 1), "{stats}");
    assert_eq!(unary.success_rate(), Some(1.0));
    assert!(unary.p50.is_some() && unary.p99 >= unary.p50, "{stats}");
    let calls: Vec<(String, u64, bool)> = stats
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.calls, e.ejected_for.is_some()))
        .collect();
    assert_eq!(
        calls,
        [
            ("bad:1".to_owned(), 1, true),
            ("good:1".to_owned(), 4, false)
        ]
    );
    let table = stats.to_string();
    assert!(table.starts_with("test.Echo"), "{table}");
    assert!(table.contains("Unary"), "{table}");
    assert!(table.contains("100.00%"), "{table}");
    assert!(table.contains("good:1"), "{table}");
}

/// The snapshot's latencies are the calls' own (paused time: exact, within the
/// histogram's 1%): nine calls of 40 ms and one of 200 ms.
#[tokio::test(start_paused = true)]
async fn the_snapshot_reports_the_calls_latencies() {
    let script = Script::unary(|n, message| async move {
        let ms = if n == 9 { 200 } else { 40 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(message)
    });
    // Its own registry: `each_registry_holds_only_the_series_of_what_was_given_it`
    // checks, in parallel, that nothing records into the global one.
    let client = ClientCore::with_metrics(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
        &Metrics::new(&mut Registry::default()),
    );
    for _ in 0..10 {
        client.unary::<Echo, Echo>(0, echo("x")).await.unwrap();
    }
    let stats = client.state().snapshot();
    let unary = stats.method("Unary").unwrap();
    let near = |got: Option<Duration>, ms: f64| {
        let got = got.expect("a latency").as_secs_f64() * 1e3;
        assert!(
            (got - ms).abs() <= ms * 0.01,
            "{got} ms, not {ms} ms: {stats}"
        );
    };
    near(unary.p50, 40.0);
    near(unary.p99, 200.0);
    near(unary.mean, 56.0);
}

#[tokio::test(start_paused = true)]
async fn retry_stops_are_counted_by_why() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let net = Net::default();
    net.start(
        "a:1",
        &Script::unary(|_, e: Echo| async move {
            match e.msg.as_str() {
                "missing" => Err(Status::not_found("no such thing")),
                "stop" => {
                    let mut status = Status::unavailable("go away");
                    status
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
                    Err(status)
                }
                _ => Err(Status::unavailable("down")),
            }
        }),
    );
    let policy = service(vec![unary_method().with_retry(RETRY)], None);
    let client = ClientCore::with_metrics(channel(&net, "a:1", &metrics), policy, &metrics);
    for msg in ["down", "missing", "stop"] {
        client
            .unary_retry::<Echo, Echo>(0, echo(msg))
            .await
            .unwrap_err();
    }
    let text = metrics.encode();
    let stops = |reason: &str| {
        value(
            &text,
            "tai_client_retry_stops_total",
            &format!(r#"{UNARY},reason="{reason}""#),
        )
    };
    assert_eq!(stops("exhausted"), Some(1.0), "{text}");
    assert_eq!(stops("not_retryable"), Some(1.0), "{text}");
    assert_eq!(stops("pushback"), Some(1.0), "{text}");
    assert_eq!(stops("throttled"), Some(0.0), "{text}");
    assert_eq!(stops("deadline"), Some(0.0), "{text}");
    let unary = client.state().snapshot().methods[0].clone();
    assert_eq!((unary.calls, unary.ok, unary.retries), (3, 0, 2));
    assert_eq!(unary.success_rate(), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn every_reconnect_backoff_is_observed() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let net = Net::default();
    let channel = channel(&net, "nobody:1", &metrics);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let text = metrics.encode();
    let series = |name: &str| value(&text, name, r#"endpoint="nobody:1""#).unwrap();
    let failures = series("tai_channel_connect_failures_total");
    assert!(failures >= 2.0, "{text}");
    assert_eq!(
        series("tai_channel_reconnect_backoff_seconds_count"),
        failures,
        "{text}"
    );
    assert_eq!(
        series("tai_channel_connections_created_total"),
        0.0,
        "{text}"
    );
    assert_eq!(
        channel.connect_attempts("nobody:1") as f64,
        failures,
        "one failure counted per attempt"
    );
}

#[tokio::test]
async fn a_method_policy_prints_in_the_attribute_grammar() {
    let policy = service(
        vec![
            unary_method()
                .with_timeout(Duration::from_secs(2))
                .with_retry(RETRY),
        ],
        None,
    );
    let net = Net::default();
    let client = ClientCore::with_metrics(
        channel(&net, "a:1", &Metrics::new(&mut Registry::default())),
        policy,
        &Metrics::new(&mut Registry::default()),
    );
    let view = client.state().method_policy_view("unary").unwrap();
    assert!(!view.configured);
    assert_eq!(
        view.to_string(),
        "test.Echo/Unary (compiled)\n\
         \x20 idempotent = true\n\
         \x20 timeout = \"2s\"\n\
         \x20 retry(max_attempts) = 3\n\
         \x20 retry(initial_backoff) = \"10ms\"\n\
         \x20 retry(max_backoff) = \"10ms\"\n\
         \x20 retry(multiplier) = 1.0\n\
         \x20 retry(codes) = [UNAVAILABLE]\n\
         \x20 hedging = none\n\
         \x20 breaker = none\n"
    );
    let config: tai_runtime::ServiceConfig =
        r#"{"methodConfig": [{"name": [{"service": "test.Echo"}], "timeout": "5s"}]}"#
            .parse()
            .unwrap();
    client.state().set_service_config(&config).unwrap();
    let view = client.state().method_policy_view("Unary").unwrap();
    assert!(view.configured);
    let text = view.to_string();
    assert!(
        text.starts_with("test.Echo/Unary (service config)\n"),
        "{text}"
    );
    assert!(text.contains("  timeout = \"5s\"\n"), "{text}");
    assert!(client.state().method_policy_view("Nope").is_none());
}

const STREAM: &str = r#"service="test.Echo",method="Stream""#;

/// A server counts a call under the status its response ends with. A stream
/// that fails after its messages carries its status in the trailers, after the
/// headers: it counts under that error, not as OK. A stream the client abandons
/// counts as CANCELLED, and a stream is timed to its end, not to its headers.
#[tokio::test(start_paused = true)]
async fn server_streams_are_counted_by_how_they_end() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let net = Net::default();
    let failing = tonic::transport::Server::builder()
        .layer(ServerLayer::with_metrics(&metrics))
        .add_service(Script::streaming(|_| async {
            Ok(vec![
                Ok(echo("1")),
                Ok(echo("2")),
                Err(Status::data_loss("disk gone")),
            ])
        }));
    net.serve("failing:1", |incoming| async move {
        let _ = failing.serve_with_incoming(incoming).await;
    });
    let open = tonic::transport::Server::builder()
        .layer(ServerLayer::with_metrics(&metrics))
        .add_service(Script::streaming_held_open(|_| async {
            Ok(vec![Ok(echo("1"))])
        }));
    net.serve("open:1", |incoming| async move {
        let _ = open.serve_with_incoming(incoming).await;
    });
    let policy = service(vec![stream_method()], None);
    let stream_from = |address: &str| {
        ClientCore::with_metrics(channel(&net, address, &metrics), policy, &metrics)
    };

    let failing = stream_from("failing:1");
    let mut stream = open_stream(&failing).await;
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "1");
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "2");
    assert_eq!(stream.message().await.unwrap_err().code(), Code::DataLoss);

    let open = stream_from("open:1");
    let mut stream = open_stream(&open).await;
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(stream);
    // The reset reaches the server, which drops the response.
    let family = "tai_server_calls_total";
    let stream_calls = |code: &str| {
        value(
            &text(&registry),
            family,
            &format!(r#"{STREAM},code="{code}""#),
        )
    };
    for _ in 0..100 {
        if stream_calls("Cancelled") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let text = text(&registry);
    assert_eq!(stream_calls("DataLoss"), Some(1.0), "{text}");
    assert_eq!(stream_calls("Cancelled"), Some(1.0), "{text}");
    assert_eq!(stream_calls("Ok"), Some(0.0), "{text}");
    let seconds = value(&text, "tai_server_call_duration_seconds_sum", STREAM).unwrap();
    assert!(
        seconds >= 3.0,
        "the held stream is timed to its end: {seconds} s; {text}"
    );
}

/// A call its client abandons before the handler answers counts as CANCELLED:
/// under its method once the method has answered a call, and as
/// `unknown/unknown` before that (nothing shows yet that a peer's path is
/// served, so it takes no place in the table of methods).
#[tokio::test(start_paused = true)]
async fn calls_abandoned_before_their_answer_count_as_cancelled() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let net = Net::default();
    let slow_after_one = tonic::transport::Server::builder()
        .layer(ServerLayer::with_metrics(&metrics))
        .add_service(Script::unary(|i, e| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(e)
        }));
    net.serve("unary:1", |incoming| async move {
        let _ = slow_after_one.serve_with_incoming(incoming).await;
    });
    let never_answers = tonic::transport::Server::builder()
        .layer(ServerLayer::with_metrics(&metrics))
        .add_service(Script::streaming(|_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(vec![])
        }));
    net.serve("stream:1", |incoming| async move {
        let _ = never_answers.serve_with_incoming(incoming).await;
    });
    // The clients record elsewhere: only the servers' series are in `registry`.
    let client_metrics = Metrics::new(&mut Registry::default());
    let unary = ClientCore::with_metrics(
        channel(&net, "unary:1", &client_metrics),
        service(vec![unary_method()], None),
        &client_metrics,
    );
    let stream = ClientCore::with_metrics(
        channel(&net, "stream:1", &client_metrics),
        service(vec![stream_method()], None),
        &client_metrics,
    );

    unary
        .unary::<Echo, Echo>(0, echo("answered"))
        .await
        .unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_secs(1),
        unary.unary::<Echo, Echo>(0, echo("abandoned")),
    );
    assert!(abandoned.await.is_err(), "still waiting when abandoned");
    let abandoned = tokio::time::timeout(Duration::from_secs(1), open_stream(&stream));
    assert!(abandoned.await.is_err(), "still waiting when abandoned");

    let unknown = r#"service="unknown",method="unknown",code="Cancelled""#;
    let counted = |text: &str| {
        (
            calls(text, "tai_server", "Cancelled"),
            value(text, "tai_server_calls_total", unknown),
        )
    };
    for _ in 0..100 {
        if counted(&text(&registry)) == (Some(1.0), Some(1.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let text = text(&registry);
    assert_eq!(counted(&text), (Some(1.0), Some(1.0)), "{text}");
    assert_eq!(calls(&text, "tai_server", "Ok"), Some(1.0), "{text}");
    assert!(!text.contains(r#"method="Stream""#), "{text}");
}
