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
pub const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(10),
    multiplier: 2.0,
    retryable: codes(&[Code::Unavailable]),
};

/// tai-build's default breaker: 5 in a row, or 50% of at least 20 calls in 10 s.
pub const BREAKER: BreakerPolicy = BreakerPolicy {
    failure_threshold: 5,
    open_timeout: Duration::from_secs(30),
    max_open_timeout: Duration::from_secs(300),
    half_open_max_calls: 3,
    rate: Some(RateRule {
        threshold: 0.5,
        window: Duration::from_secs(10),
        min_calls: 20,
    }),
    failure_codes: codes(&[
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Internal,
        Code::Unknown,
        Code::ResourceExhausted,
    ]),
};

/// The default breaker without its failure-rate rule (consecutive failures only).
pub const BREAKER_CONSECUTIVE: BreakerPolicy = BreakerPolicy {
    rate: None,
    ..BREAKER
};

pub const THROTTLE: ThrottlePolicy = ThrottlePolicy {
    max_tokens: 10,
    token_ratio: 0.1,
};

const fn method(
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    breaker: Option<BreakerPolicy>,
) -> MethodPolicy {
    MethodPolicy {
        name: "Echo",
        rust_name: "echo",
        path: PATH,
        kind: MethodKind::Unary,
        idempotent: true,
        timeout,
        max_timeout: None,
        retry,
        hedging: None,
        breaker,
    }
}

/// Everything on: 5 s deadline, retry, default breaker, throttle.
pub static FULL: ServicePolicy = ServicePolicy {
    name: "tai.bench.Bench",
    methods: &[method(
        Some(Duration::from_secs(5)),
        Some(RETRY),
        Some(BREAKER),
    )],
    throttle: Some(THROTTLE),
    balancer: None,
};

/// Everything on, breaker without its rate rule.
pub static FULL_CONSECUTIVE: ServicePolicy = ServicePolicy {
    name: "tai.bench.BenchConsecutive",
    methods: &[method(
        Some(Duration::from_secs(5)),
        Some(RETRY),
        Some(BREAKER_CONSECUTIVE),
    )],
    throttle: Some(THROTTLE),
    balancer: None,
};

/// A deadline only: against [`BARE`], what the shared deadline timer costs a call.
pub static DEADLINE: ServicePolicy = ServicePolicy {
    name: "tai.bench.BenchDeadline",
    methods: &[method(Some(Duration::from_secs(5)), None, None)],
    throttle: None,
    balancer: None,
};

/// Deadline and breaker, no retry (the engine's `unary` path: no `Arc`).
pub static NO_RETRY: ServicePolicy = ServicePolicy {
    name: "tai.bench.BenchNoRetry",
    methods: &[method(Some(Duration::from_secs(5)), None, Some(BREAKER))],
    throttle: None,
    balancer: None,
};

/// No policy at all: only metrics and tracing.
pub static BARE: ServicePolicy = ServicePolicy {
    name: "tai.bench.BenchBare",
    methods: &[method(None, None, None)],
    throttle: None,
    balancer: None,
};

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
