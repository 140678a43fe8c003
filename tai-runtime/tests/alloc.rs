//! Heap allocations on the policy hot path, counted (not timed) by a counting
//! global allocator. The allocator counts the whole process, so this is its own
//! test binary without libtest's harness (`harness = false`): the harness's main
//! thread keeps allocating for its own bookkeeping after it starts a test, and on a
//! busy machine that landed inside a counted region (4 allocations in 1000 breaker
//! calls, none of them the breaker's). Here `main` is the only thread, and the
//! breaker is given explicit instants, so nothing depends on how fast it runs.

#[path = "../benches/support/mod.rs"]
mod support;

use std::alloc::System;
use std::cell::Cell;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tai_runtime::Code;
use tai_runtime::bench_support::{Fake, MethodMetrics, Picker};
use tai_runtime::breaker::CircuitBreaker;
use tai_runtime::config::BalancerKind;
use tai_runtime::context::{self, CallContext, TraceContext};
use tai_runtime::throttle::RetryThrottle;
use tokio::time::Instant;

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

const NAME: &str = "policy_hot_path_allocations";

/// Just enough of libtest's command line for `cargo test`: a name filter
/// (`--exact` for equality), `--ignored` (this test is not), `--list`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                NAME == *f
            } else {
                NAME.contains(f.as_str())
            }
        });
    if !selected || args.iter().any(|a| a == "--ignored") {
        println!("\nrunning 0 tests\n");
        return;
    }
    println!("\nrunning 1 test");
    policy_hot_path_allocations();
    println!("test {NAME} ... ok\n");
}

fn policy_hot_path_allocations() {
    // The breaker is driven through `record_at` (as the call engine records) on a
    // clock the test moves: 10 ms a call, so each run of 1000 calls crosses ten
    // 1 s buckets and resets every bucket of the 10 s window once. A bucket
    // rotation, like a per-call cost, would show here on any machine.
    let step = Duration::from_millis(10);
    for policy in [BREAKER, BREAKER_CONSECUTIVE] {
        let b = CircuitBreaker::new(policy);
        let now = Cell::new(Instant::now());
        let tick = || {
            now.set(now.get() + step);
            now.get()
        };
        let per_call = allocations(1000, || {
            let permit = b.admit().expect("closed");
            b.record_at(permit, b.classify(Code::Ok), tick());
        });
        assert_eq!(
            per_call,
            0.0,
            "breaker admit + record (rate rule: {:?})",
            policy.rate.is_some()
        );
        let per_call = allocations(1000, || {
            let permit = b.admit().expect("closed");
            b.record_at(permit, b.classify(Code::InvalidArgument), tick()); // not a failure code
        });
        assert_eq!(
            per_call, 0.0,
            "breaker admit + record of a non-failure code"
        );
        // One call in four fails: the locked path, the failure run and its reset,
        // the window's failure count and rate check; 25% never trips either rule.
        let calls = Cell::new(0u32);
        let per_call = allocations(1000, || {
            calls.set(calls.get() + 1);
            let code = if calls.get().is_multiple_of(4) {
                Code::Unavailable
            } else {
                Code::Ok
            };
            let permit = b.admit().expect("closed");
            b.record_at(permit, b.classify(code), tick());
        });
        assert_eq!(
            per_call,
            0.0,
            "breaker admit + record, one call in four failing (rate rule: {:?})",
            policy.rate.is_some()
        );
        // `record` reads the clock itself: no cost of its own either.
        let per_call = allocations(1000, || {
            let permit = b.admit().expect("closed");
            b.record(permit, b.classify(Code::Ok));
        });
        assert_eq!(per_call, 0.0, "breaker admit + record (own clock)");
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
        // The same call made by a handler: the trace headers it sends (a child
        // `traceparent`, `x-trace-id`) are the only heap bytes the context adds.
        let _guard = rt.enter();
        let core = core(&FULL, pending);
        let handling = CallContext::new(TraceContext::new_root(), None);
        let n = allocations(200, || {
            rt.block_on(context::scope(
                handling.clone(),
                tai_call(&core, request.clone()),
            ))
            .unwrap();
        });
        per_call.push(("tai (all on, in a handler)", pending, n));
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
        // The handler's context: two header values (`traceparent`, `x-trace-id`).
        let in_handler = get("tai (all on, in a handler)", pending);
        assert!(
            in_handler <= get("tai (all on)", pending) + 2.0,
            "a call in a handler's context: {in_handler} allocations"
        );
        assert!(
            get("tai (all on)", pending) <= get("raw+deadline", pending),
            "tai with every policy allocates no more than tonic's client with a deadline"
        );
    }
}
