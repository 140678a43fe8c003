//! `mesh serve --metrics-addr`'s endpoint, scraped over TCP and read by a real
//! Prometheus text parser (`prometheus-parse`), as `mesh stats` reads it.

use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::Value;
use tai_examples::{metrics, stats};

#[tokio::test]
async fn the_metrics_endpoint_parses_and_shows_channel_series() {
    // A channel to a port nobody listens on: its connect failures are recorded
    // in the process's metrics, which the endpoint serves.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let channel = tai_runtime::Channel::to(address.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scrape_addr = listener.local_addr().unwrap().to_string();
    let (_url, task) = metrics::serve(listener, Arc::new(|| "mesh_extra_total 3\n".to_owned()));
    let mut failures = 0.0;
    for _ in 0..100 {
        let scrape = stats::parse(&stats::fetch(&scrape_addr).await.unwrap()).unwrap();
        failures = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "tai_channel_connect_failures_total")
            .filter(|s| s.labels.get("endpoint") == Some(address.as_str()))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) => v,
                _ => panic!("a counter: {s:?}"),
            })
            .sum();
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "mesh_extra_total"),
            "the extra text is part of the scrape"
        );
        if failures >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failures >= 1.0, "a refused dial is counted");
    let table = stats::table(&stats::parse(&stats::fetch(&scrape_addr).await.unwrap()).unwrap());
    assert!(
        table.contains("tai_channel_connect_failures_total"),
        "{table}"
    );
    assert!(stats::fetch("127.0.0.1:1").await.is_err());
    drop(channel);
    task.abort();
}
