//! What the policy benchmarks and the allocation test share: the messages, the
//! policies (as the `#[resilient]` expansion writes them), and the calls.

#![allow(dead_code)] // each user takes what it needs

use std::time::Duration;

use http::uri::PathAndQuery;
use tai_runtime::__private::ClientCore;
use tai_runtime::bench_support::FakeTransport;
use tai_runtime::policy::{
    BreakerPolicy, CodeSet, MethodKind, MethodPolicy, RateRule, RetryPolicy, ServicePolicy,
    ThrottlePolicy,
};
use tai_runtime::{Code, Status};

/// A 100-byte payload, as in the harness.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

pub fn payload() -> Payload {
    Payload {
        data: vec![0xab; 100],
    }
}

pub const PATH: &str = "/tai.bench.Bench/Echo";

const fn codes(list: &[Code]) -> CodeSet {
    let mut bits = 0u32;
    let mut i = 0;
    while i < list.len() {
        bits |= 1 << list[i] as u32;
        i += 1;
    }
    CodeSet(bits)
}

/// tai-build's defaults: A6 retry on UNAVAILABLE.
pub const RETRY: RetryPolicy = RetryPolicy::new(
    3,
    Duration::from_millis(100),
    Duration::from_secs(10),
    2.0,
    codes(&[Code::Unavailable]),
);

/// tai-build's default breaker: 5 in a row, or 50% of at least 20 calls in 10 s.
pub const BREAKER: BreakerPolicy = BreakerPolicy::new(
    5,
    Duration::from_secs(30),
    Duration::from_secs(300),
    3,
    codes(&[
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Internal,
        Code::Unknown,
        Code::ResourceExhausted,
    ]),
)
.with_rate(RateRule::new(0.5, Duration::from_secs(10), 20));

/// The default breaker without its failure-rate rule (consecutive failures only).
pub const BREAKER_CONSECUTIVE: BreakerPolicy = {
    let mut breaker = BREAKER;
    breaker.rate = None;
    breaker
};

pub const THROTTLE: ThrottlePolicy = ThrottlePolicy::new(10, 0.1);

const fn method(
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    breaker: Option<BreakerPolicy>,
) -> MethodPolicy {
    let mut method =
        MethodPolicy::new("Echo", "echo", PATH, MethodKind::Unary).with_idempotent(true);
    method.timeout = timeout;
    method.retry = retry;
    method.breaker = breaker;
    method
}

/// Everything on: 5 s deadline, retry, default breaker, throttle.
pub static FULL: ServicePolicy = ServicePolicy::new(
    "tai.bench.Bench",
    &[method(
        Some(Duration::from_secs(5)),
        Some(RETRY),
        Some(BREAKER),
    )],
)
.with_throttle(THROTTLE);

/// Everything on, breaker without its rate rule.
pub static FULL_CONSECUTIVE: ServicePolicy = ServicePolicy::new(
    "tai.bench.BenchConsecutive",
    &[method(
        Some(Duration::from_secs(5)),
        Some(RETRY),
        Some(BREAKER_CONSECUTIVE),
    )],
)
.with_throttle(THROTTLE);

/// A deadline only: against [`BARE`], what the shared deadline timer costs a call.
pub static DEADLINE: ServicePolicy = ServicePolicy::new(
    "tai.bench.BenchDeadline",
    &[method(Some(Duration::from_secs(5)), None, None)],
);

/// Deadline and breaker, no retry (the engine's `unary` path: no `Arc`).
pub static NO_RETRY: ServicePolicy = ServicePolicy::new(
    "tai.bench.BenchNoRetry",
    &[method(Some(Duration::from_secs(5)), None, Some(BREAKER))],
);

/// No policy at all: only metrics and tracing.
pub static BARE: ServicePolicy =
    ServicePolicy::new("tai.bench.BenchBare", &[method(None, None, None)]);

pub fn transport(yield_once: bool) -> FakeTransport {
    FakeTransport::new(&payload(), yield_once)
}

/// What tonic-build's generated client does for a unary call.
pub async fn raw_call(
    grpc: &mut tonic::client::Grpc<FakeTransport>,
    request: Payload,
    timeout: Option<Duration>,
) -> Result<Payload, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Payload, Payload>::default();
    let mut req = tonic::Request::new(request);
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    req.extensions_mut()
        .insert(tonic::GrpcMethod::new("tai.bench.Bench", "Echo"));
    grpc.unary(req, PathAndQuery::from_static(PATH), codec)
        .await
        .map(tonic::Response::into_inner)
}

pub fn core(policy: &'static ServicePolicy, yield_once: bool) -> ClientCore<FakeTransport> {
    ClientCore::new(transport(yield_once), policy)
}

/// What the generated client does: `unary_retry` when the method retries.
pub async fn tai_call(
    core: &ClientCore<FakeTransport>,
    request: Payload,
) -> Result<Payload, Status> {
    let response = if core.state().policy().methods[0].retry.is_some() {
        core.unary_retry::<Payload, Payload>(0, request).await
    } else {
        core.unary::<Payload, Payload>(0, request).await
    };
    response.map(tonic::Response::into_inner)
}
