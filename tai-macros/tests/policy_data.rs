//! The expansion's `static` policy holds the resolved values: method-level fields
//! override the service level one by one, and unset fields are inherited.

#![allow(missing_docs)]

use std::time::Duration;

use tai_macros::resilient;
use tai_runtime::Status;
use tai_runtime::policy::{CodeSet, MethodKind, ServicePolicy};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    #[prost(uint64, tag = "1")]
    pub version: u64,
}

/// The governance service.
#[resilient(
    service = "tai.v1.Governor",
    timeout = "30s",
    breaker = default,
    throttle(max_tokens = 20, token_ratio = 0.5),
    balancer = "least_loaded"
)]
pub trait Governor {
    /// Proposes a policy.
    #[resilient(idempotent, timeout = "2s", retry(max_attempts = 4, initial_backoff = "50ms", codes = [UNAVAILABLE, ABORTED]))]
    fn propose_policy(
        &self,
        request: Policy,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send;

    /// Reads the current policy.
    fn current(&self, request: Receipt) -> impl Future<Output = Result<Policy, Status>> + Send;

    #[resilient(name = "WatchPolicies", idempotent, hedging(max_attempts = 3, delay = "25ms"), breaker(failure_threshold = 9, failure_rate = none), max_timeout = "1s")]
    async fn watch(&self, request: Receipt) -> Result<tai_runtime::ResponseStream<Policy>, Status>;

    #[resilient(timeout = none, breaker = none)]
    fn upload(
        &self,
        request: tai_runtime::RequestStream<Policy>,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send;
}

fn policy() -> &'static ServicePolicy {
    &__TAI_SERVICE_GOVERNOR
}

#[test]
fn service() {
    let service = policy();
    assert_eq!(service.name, "tai.v1.Governor");
    assert_eq!(service.methods.len(), 4);
    let throttle = service.throttle.expect("throttle");
    assert_eq!(throttle.max_tokens, 20);
    assert_eq!(throttle.token_ratio, 0.5);
    assert_eq!(service.method_index("ProposePolicy"), Some(0));
    assert_eq!(service.method_index("watch"), Some(2));
    assert_eq!(
        service.balancer,
        Some(tai_runtime::config::BalancerKind::LeastLoaded)
    );
    assert!(std::ptr::eq(GovernorClient::SERVICE_POLICY, service));
}

#[test]
fn method_overrides_service() {
    let m = &policy().methods[0];
    assert_eq!(m.name, "ProposePolicy");
    assert_eq!(m.rust_name, "propose_policy");
    assert_eq!(m.path, "/tai.v1.Governor/ProposePolicy");
    assert_eq!(m.kind, MethodKind::Unary);
    assert!(m.idempotent);
    assert_eq!(m.timeout, Some(Duration::from_secs(2)));
    assert_eq!(m.max_timeout, None);
    let retry = m.retry.expect("retry");
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.initial_backoff, Duration::from_millis(50));
    assert_eq!(retry.max_backoff, Duration::from_secs(10));
    assert_eq!(retry.multiplier, 2.0);
    assert_eq!(retry.retryable, CodeSet((1 << 14) | (1 << 10)));
    assert!(m.hedging.is_none());
    let breaker = m.breaker.expect("breaker inherited from the service");
    assert_eq!(breaker.failure_threshold, 5);
    assert_eq!(breaker.open_timeout, Duration::from_secs(30));
    assert_eq!(breaker.max_open_timeout, Duration::from_secs(300));
    assert_eq!(breaker.half_open_max_calls, 3);
    let rate = breaker.rate.expect("rate rule on by default");
    assert_eq!(
        (rate.threshold, rate.window, rate.min_calls),
        (0.5, Duration::from_secs(10), 20)
    );
}

#[test]
fn method_without_attribute_inherits() {
    let m = &policy().methods[1];
    assert_eq!(m.name, "Current");
    assert_eq!(m.path, "/tai.v1.Governor/Current");
    assert!(!m.idempotent);
    assert_eq!(m.timeout, Some(Duration::from_secs(30)));
    assert!(m.retry.is_none() && m.hedging.is_none());
    assert_eq!(m.breaker.expect("breaker").failure_threshold, 5);
}

#[test]
fn async_server_streaming_with_hedging_and_a_clamped_timeout() {
    let m = &policy().methods[2];
    assert_eq!(m.name, "WatchPolicies");
    assert_eq!(m.rust_name, "watch");
    assert_eq!(m.kind, MethodKind::ServerStreaming);
    // 30s inherited, clamped by the method's max_timeout.
    assert_eq!(m.timeout, Some(Duration::from_secs(1)));
    assert_eq!(m.max_timeout, Some(Duration::from_secs(1)));
    let hedging = m.hedging.expect("hedging");
    assert_eq!(
        (hedging.max_attempts, hedging.delay),
        (3, Duration::from_millis(25))
    );
    assert_eq!(hedging.non_fatal, CodeSet(0));
    let breaker = m.breaker.expect("breaker");
    assert_eq!(breaker.failure_threshold, 9);
    assert_eq!(breaker.rate, None);
}

#[test]
fn client_streaming_turns_things_off() {
    let m = &policy().methods[3];
    assert_eq!(m.kind, MethodKind::ClientStreaming);
    assert_eq!(m.timeout, None);
    assert!(m.breaker.is_none());
    assert!(m.retry.is_none());
}

/// The client is a `Governor`, and `Resilient` reaches the same static.
#[test]
fn client_implements_the_trait() {
    fn is_governor<G: Governor + tai_runtime::Resilient + Clone + Send + Sync>() {}
    is_governor::<GovernorClient>();
    is_governor::<GovernorClient<tai_runtime::Channel>>();
}

/// A client built over a lazy channel (nothing is sent) reads the same static
/// through `Resilient`.
#[tokio::test]
async fn resilient_reads_the_static() {
    use tai_runtime::Resilient;
    // Lazy: nothing connects until a call is made.
    let channel = tai_runtime::Channel::to("http://127.0.0.1:1").expect("valid address");
    let client = GovernorClient::new(channel);
    assert!(std::ptr::eq(client.service_policy(), policy()));
    assert_eq!(
        client.service_policy().methods[0]
            .retry
            .map(|r| r.max_attempts),
        Some(4)
    );
}
