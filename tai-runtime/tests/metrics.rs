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
use tai_runtime::channel::{Channel, Endpoints};
use tai_runtime::metrics::Metrics;
use tai_runtime::policy::{BreakerPolicy, CodeSet, MethodPolicy};
use tai_runtime::server::ServerLayer;
use tai_runtime::server::metrics::MetricsLayer;
use tai_runtime::{BreakerState, Code, Status, resilient};

use support::net::Net;
use support::{Echo, Script, echo, service, unary_method};

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

/// A channel over `net` to `address`.
fn channel(net: &Net, address: &str) -> Channel {
    Channel::builder(Endpoints::one(address))
        .connector(net.connector())
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

    let client_a = EchoServiceClient::with_metrics(channel(&net, "a:1"), &metrics_a);
    for _ in 0..2 {
        assert_eq!(
            client_a.unary(echo("hi")).await.unwrap().into_inner().msg,
            "hi"
        );
    }
    // B's breaker trips after two NOT_FOUNDs and refuses the third call itself.
    let breaker = BreakerPolicy {
        failure_threshold: 2,
        open_timeout: Duration::from_secs(30),
        max_open_timeout: Duration::from_secs(30),
        half_open_max_calls: 1,
        rate: None,
        failure_codes: CodeSet::of(&[Code::NotFound]),
    };
    let policy = service(
        vec![MethodPolicy {
            breaker: Some(breaker),
            ..unary_method()
        }],
        None,
    );
    let client_b = ClientCore::with_metrics(channel(&net, "b:1"), policy, &metrics_b);
    for code in [Code::NotFound, Code::NotFound, Code::Unavailable] {
        let status = client_b
            .unary::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    // The same policy to the same target, recording into A: its own breaker,
    // whose gauge is A's.
    let other = ClientCore::with_metrics(channel(&net, "b:1"), policy, &metrics_a);
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
