//! Heap allocations on the policy hot path, counted (not timed) by a counting
//! global allocator; this is its own test binary so that the allocator counts
//! nothing else. One test function, so no other test runs on another thread while
//! it counts.

#[path = "../benches/support/mod.rs"]
mod support;

use std::alloc::System;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tai_runtime::Code;
use tai_runtime::bench_support::{Fake, MethodMetrics, Picker};
use tai_runtime::breaker::CircuitBreaker;
use tai_runtime::config::BalancerKind;
use tai_runtime::throttle::RetryThrottle;

use support::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (and reallocations) made by `f`, run `n` times, per run.
fn allocations(n: usize, mut f: impl FnMut()) -> f64 {
    f(); // first use: lazily built state is not the hot path
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        f();
    }
    let change = region.change();
    (change.allocations + change.reallocations) as f64 / n as f64
}

#[test]
fn policy_hot_path_allocations() {
    for policy in [BREAKER, BREAKER_CONSECUTIVE] {
        let b = CircuitBreaker::new(policy);
        let per_call = allocations(1000, || {
            let permit = b.admit().expect("closed");
            b.record(permit, b.classify(Code::Ok));
        });
        assert_eq!(
            per_call,
            0.0,
            "breaker admit + record (rate rule: {:?})",
            policy.rate.is_some()
        );
        let per_call = allocations(1000, || {
            let permit = b.admit().expect("closed");
            b.record(permit, b.classify(Code::InvalidArgument)); // not a failure code
        });
        assert_eq!(
            per_call, 0.0,
            "breaker admit + record of a non-failure code"
        );
    }

    let t = RetryThrottle::new(&THROTTLE);
    let per_call = allocations(1000, || {
        t.record_failure();
        t.record_success();
        t.record_success();
    });
    assert_eq!(per_call, 0.0, "throttle accounting");

    let m = MethodMetrics::new("tai.bench.Bench", "Echo");
    assert_eq!(
        allocations(1000, || m.record(Code::Ok, Duration::from_micros(80))),
        0.0,
        "metrics record"
    );

    let endpoints: Vec<Fake> = (0..16)
        .map(|i| Fake {
            load: AtomicUsize::new(i % 3),
            eligible: i != 5,
        })
        .collect();
    for kind in [BalancerKind::RoundRobin, BalancerKind::LeastLoaded] {
        let p = Picker::new(kind, 1);
        assert_eq!(
            allocations(1000, || {
                std::hint::black_box(p.pick(&endpoints));
            }),
            0.0,
            "balancer pick ({kind:?})"
        );
    }

    // The whole call, over the in-process transport. Reported, and bounded by what
    // tonic's own generated client allocates for the same call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let request = payload();
    let mut per_call = Vec::new();
    for pending in [false, true] {
        for (name, timeout) in [
            ("raw", None),
            ("raw+deadline", Some(Duration::from_secs(5))),
        ] {
            let _guard = rt.enter();
            let mut grpc = tonic::client::Grpc::new(transport(pending));
            let n = allocations(200, || {
                rt.block_on(raw_call(&mut grpc, request.clone(), timeout))
                    .unwrap();
            });
            per_call.push((name, pending, n));
        }
        for (name, policy) in [
            ("tai (metrics only)", &BARE),
            ("tai (deadline + breaker)", &NO_RETRY),
            ("tai (all on)", &FULL),
        ] {
            let _guard = rt.enter();
            let core = core(policy, pending);
            let n = allocations(200, || {
                rt.block_on(tai_call(&core, request.clone())).unwrap();
            });
            per_call.push((name, pending, n));
        }
    }
    for (name, pending, n) in &per_call {
        let how = if *pending {
            "pending once"
        } else {
            "answered at once"
        };
        eprintln!("{name:>26} ({how}): {n:.2} allocations per call");
    }
    let get = |name: &str, pending: bool| {
        per_call
            .iter()
            .find(|(n, p, _)| *n == name && *p == pending)
            .map(|(_, _, v)| *v)
            .unwrap()
    };
    for pending in [false, true] {
        // Deadline (the header is encoded once per client, the timer is shared)
        // and breaker allocate nothing per call.
        assert_eq!(
            get("tai (deadline + breaker)", pending),
            get("tai (metrics only)", pending)
        );
        // Every single-request call shares its request between attempts (retries,
        // hedges, a transparent retry) through one Arc: a retry policy costs no
        // allocation more, and never a clone.
        assert_eq!(
            get("tai (all on)", pending),
            get("tai (deadline + breaker)", pending)
        );
        assert!(
            get("tai (all on)", pending) <= get("raw+deadline", pending),
            "tai with every policy allocates no more than tonic's client with a deadline"
        );
    }
}
