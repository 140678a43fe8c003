//! Micro-benchmarks of tai's policy hot path.
//!
//! ```text
//! cargo bench -p tai-runtime --bench policy              # all
//! cargo bench -p tai-runtime --bench policy -- --quick   # a short run
//! cargo bench -p tai-runtime --bench policy -- path/     # the whole per-call path only
//! ```
//!
//! The `path/*` group runs a whole unary call through tonic's `Grpc` and through
//! tai's `ClientCore` over the same in-process transport (it answers at once with
//! a canned response), so the difference between `path/raw` and `path/tai_*` is
//! what tai's policies cost per call. Each iteration clones the 100-byte request in
//! both, so the clone cancels out. `*_yield` variants are pending once per call, as
//! a network call is, so that timers armed around the call really register: the
//! cost of a deadline is `path/raw_deadline_yield` minus `path/raw_yield` for
//! tonic's timer per call, and `path/tai_deadline_yield` minus `path/tai_bare_yield`
//! for tai's attempt on the client's shared deadline timer.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tai_runtime::Code;
use tai_runtime::bench_support::{
    Fake, MethodMetrics, Picker, RetryDecider, deadline_for_call, deadline_remaining,
};
use tai_runtime::breaker::CircuitBreaker;
use tai_runtime::config::BalancerKind;
#[cfg(feature = "server")]
use tai_runtime::server::rate_limit::{ClientKey, Quota, RateLimitLayer};
use tai_runtime::throttle::RetryThrottle;
use tonic::metadata::MetadataMap;

use support::*;

fn breaker(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker");
    for (name, policy) in [("consecutive", BREAKER_CONSECUTIVE), ("default", BREAKER)] {
        let b = CircuitBreaker::new(policy);
        g.bench_function(BenchmarkId::new("admit", name), |bench| {
            bench.iter(|| black_box(black_box(&b).admit()))
        });
        // As the engine records: with the instant the attempt ended, which it has
        // read anyway for the call's metrics.
        let end = tokio::time::Instant::now();
        g.bench_function(BenchmarkId::new("admit_record_ok", name), |bench| {
            bench.iter(|| {
                let b = black_box(&b);
                if let Ok(p) = b.admit() {
                    b.record_at(p, b.classify(black_box(Code::Ok)), black_box(end));
                }
            })
        });
    }
    g.finish();
}

fn throttle(c: &mut Criterion) {
    let mut g = c.benchmark_group("throttle");
    let t = RetryThrottle::new(&THROTTLE);
    g.bench_function("record_success_full", |b| {
        b.iter(|| black_box(&t).record_success())
    });
    let t = RetryThrottle::new(&THROTTLE);
    g.bench_function("record_failure_then_success", |b| {
        b.iter(|| {
            let t = black_box(&t);
            black_box(t.record_failure());
            for _ in 0..10 {
                t.record_success(); // ratio 0.1: ten successes repay one failure
            }
        })
    });
    g.finish();
}

fn retry(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry");
    let decider = RetryDecider::new(7);
    let empty = MetadataMap::new();
    let mut pushback = MetadataMap::new();
    pushback.insert("grpc-retry-pushback-ms", "250".parse().unwrap());
    g.bench_function("backoff_delay", |b| {
        b.iter(|| decider.backoff(black_box(&RETRY), black_box(2)))
    });
    g.bench_function("pushback_parse_absent", |b| {
        b.iter(|| RetryDecider::pushback(black_box(&empty)))
    });
    g.bench_function("pushback_parse_present", |b| {
        b.iter(|| RetryDecider::pushback(black_box(&pushback)))
    });
    let unavailable = tonic::Status::unavailable("down");
    let invalid = tonic::Status::invalid_argument("bad");
    g.bench_function("decide_unavailable", |b| {
        b.iter(|| decider.decide(&RETRY, black_box(&unavailable), 0))
    });
    g.bench_function("decide_not_retryable", |b| {
        b.iter(|| decider.decide(&RETRY, black_box(&invalid), 0))
    });
    g.finish();
}

fn balancer(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer");
    for n in [3usize, 16] {
        let endpoints: Vec<Fake> = (0..n)
            .map(|i| Fake {
                load: (i % 4).into(),
                eligible: true,
            })
            .collect();
        for kind in [BalancerKind::RoundRobin, BalancerKind::LeastLoaded] {
            let picker = Picker::new(kind, 1);
            g.bench_function(BenchmarkId::new(kind.name(), n), |b| {
                b.iter(|| {
                    let i = picker.pick(black_box(&endpoints)).unwrap();
                    // What a call does with its pick: in flight until it ends.
                    endpoints[i].load.fetch_add(1, Ordering::Relaxed);
                    endpoints[i].load.fetch_sub(1, Ordering::Relaxed);
                    i
                })
            });
        }
    }
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let m = MethodMetrics::new("tai.bench.Bench", "Echo");
    c.bench_function("metrics/record", |b| {
        b.iter(|| m.record(black_box(Code::Ok), black_box(Duration::from_micros(80))))
    });
}

fn deadline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let policy = &FULL.methods[0];
    c.bench_function("deadline/for_call_and_check", |b| {
        b.iter(|| deadline_for_call(black_box(policy)).and_then(deadline_remaining))
    });
}

/// What the rate limit layer adds to an admitted call once it knows the client's key
/// (a peer address already in the table; about half of it is SipHash, kept because
/// keys come from peers). The quota is so high nothing is refused.
#[cfg(feature = "server")]
fn rate_limit(c: &mut Criterion) {
    let layer = RateLimitLayer::per_client(Quota::per_second(std::num::NonZeroU32::MAX));
    let key = ClientKey::peer(std::net::IpAddr::from([10, 0, 0, 7]));
    layer.check(&key).unwrap();
    c.bench_function("rate limit check (known key, admitted)", |b| {
        b.iter(|| black_box(&layer).check(black_box(&key)).is_ok())
    });
}

/// Without the `server` feature there is no rate limit layer to measure.
#[cfg(not(feature = "server"))]
fn rate_limit(_: &mut Criterion) {}

/// The whole per-call path.
fn path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("path");
    let request = payload();
    for yield_once in [false, true] {
        let suffix = if yield_once { "_yield" } else { "" };
        for (name, timeout) in [
            ("raw", None),
            ("raw_deadline", Some(Duration::from_secs(5))),
        ] {
            let _guard = rt.enter();
            let mut grpc = tonic::client::Grpc::new(transport(yield_once));
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(raw_call(&mut grpc, request.clone(), timeout).await.unwrap());
                        }
                        start.elapsed()
                    })
                })
            });
        }
        for (name, policy) in [
            ("tai_bare", &BARE),
            ("tai_deadline", &DEADLINE),
            ("tai_no_retry", &NO_RETRY),
            ("tai_full", &FULL),
            ("tai_full_consecutive", &FULL_CONSECUTIVE),
        ] {
            let _guard = rt.enter();
            let core = core(policy, yield_once);
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(tai_call(&core, request.clone()).await.unwrap());
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches, breaker, throttle, retry, balancer, metrics, deadline, rate_limit, path
);
criterion_main!(benches);
