//! `mesh stats`: scrapes a running server's `/metrics` and prints what a person
//! asks first — per method, calls, the share that ended OK, and mean latency;
//! then whatever the rate limit refused and the channel series, if any.
//!
//! The text is read with `prometheus-parse`, a parser of the Prometheus text
//! format, not by matching lines: what `mesh stats` shows is what a Prometheus
//! server would have scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a scrape answer may be: enough for thousands of series.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// `GET /metrics` from `addr` (`host:port`): the body.
pub async fn fetch(addr: &str) -> Result<String, String> {
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    socket
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(format!("{addr}/metrics answered {status}"));
    }
    Ok(body.to_owned())
}

/// Parses a scrape.
pub fn parse(text: &str) -> Result<Scrape, String> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("not Prometheus text: {e}"))
}

/// One method's server-side numbers.
#[derive(Default)]
struct Row {
    calls: f64,
    ok: f64,
    seconds: f64,
    timed: f64,
}

/// The readable table of a scrape.
pub fn table(scrape: &Scrape) -> String {
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut other = Vec::new();
    for s in &scrape.samples {
        let key = || {
            (
                s.labels.get("service").unwrap_or_default().to_owned(),
                s.labels.get("method").unwrap_or_default().to_owned(),
            )
        };
        match (s.metric.as_str(), &s.value) {
            ("tai_server_calls_total", Value::Counter(v) | Value::Untyped(v)) => {
                let row = rows.entry(key()).or_default();
                row.calls += v;
                if s.labels.get("code") == Some("Ok") {
                    row.ok += v;
                }
            }
            ("tai_server_call_duration_seconds", Value::Histogram(buckets)) => {
                let row = rows.entry(key()).or_default();
                row.timed += buckets.last().map_or(0.0, |b| b.count);
            }
            ("tai_server_call_duration_seconds_sum", Value::Untyped(v)) => {
                rows.entry(key()).or_default().seconds += v;
            }
            (name, Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v))
                if *v != 0.0
                    && (name.starts_with("tai_server_rate_limited")
                        || name.starts_with("tai_channel_")
                        || name.starts_with("tai_server_auth")
                        || name.starts_with("tai_server_access")) =>
            {
                other.push(format!("{name}{} {v}", s.labels));
            }
            _ => {}
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<20} {:>8} {:>8} {:>10}",
        "service", "method", "calls", "ok%", "mean"
    );
    for ((service, method), row) in rows.iter().filter(|(_, r)| r.calls > 0.0) {
        let mean = if row.timed > 0.0 {
            format!("{:.3}ms", row.seconds / row.timed * 1e3)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{service:<32} {method:<20} {:>8} {:>7.2}% {mean:>10}",
            row.calls,
            row.ok / row.calls * 100.0
        );
    }
    for line in other {
        let _ = writeln!(out, "{line}");
    }
    out
}
