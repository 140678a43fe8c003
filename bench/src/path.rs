//! `tai-bench path`: the whole per-call path in-process, over the same fake
//! transport as the criterion benchmarks (`tai-runtime/benches/policy.rs`, whose
//! policies and calls this shares), for instruction and allocation counts.

use std::time::Instant;

#[path = "../../tai-runtime/benches/support/mod.rs"]
mod support;

use support::*;

/// Runs `variant` `iters` times on a current-thread runtime; prints per-call figures.
pub fn run(variant: &str, iters: u64, pending: bool) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let request = payload();
    let policy = match variant {
        "raw" | "raw_deadline" => None,
        "tai_bare" => Some(&BARE),
        "tai_deadline" => Some(&DEADLINE),
        "tai_no_retry" => Some(&NO_RETRY),
        "tai_full" => Some(&FULL),
        "tai_full_consecutive" => Some(&FULL_CONSECUTIVE),
        other => return Err(format!("unknown path variant `{other}`").into()),
    };
    let (elapsed, allocs) = rt.block_on(async {
        let timeout = (variant == "raw_deadline").then_some(crate::client::DEADLINE);
        let mut grpc = tonic::client::Grpc::new(transport(pending));
        let core = policy.map(|p| core(p, pending));
        let call = async |grpc: &mut tonic::client::Grpc<_>| match &core {
            Some(core) => tai_call(core, request.clone()).await,
            None => raw_call(grpc, request.clone(), timeout).await,
        };
        for _ in 0..iters.min(10_000) {
            call(&mut grpc).await?; // warm-up: metric handles, buffers
        }
        let allocs = crate::GLOBAL.stats().allocations;
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(call(&mut grpc).await?);
        }
        Ok::<_, tonic::Status>((start.elapsed(), crate::GLOBAL.stats().allocations - allocs))
    })?;
    println!(
        "{variant}{}: {iters} calls, {:.1} ns/call, {:.2} allocations/call",
        if pending { " (pending once)" } else { "" },
        elapsed.as_nanos() as f64 / iters as f64,
        allocs as f64 / iters as f64
    );
    Ok(())
}
