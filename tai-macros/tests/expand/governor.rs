#[resilient(service = "tai.v1.Governor", timeout = "30s", breaker = default, throttle(max_tokens = 20), auth(scopes = ["policies.read"]))]
pub trait Governor {
    /// Proposes a policy.
    #[resilient(idempotent, timeout = "2s", retry(max_attempts = 4, codes = [UNAVAILABLE, ABORTED]), auth(scopes = ["policies.write"], roles = ["admin"]))]
    fn propose_policy(&self, request: Policy) -> impl Future<Output = Result<Receipt, Status>> + Send;

    /// Streams the policies as they change.
    #[resilient(idempotent, hedging(delay = "50ms"), breaker(failure_rate = none), auth(public))]
    async fn watch_policies(&self, request: Receipt) -> Result<ResponseStream<Policy>, Status>;

    fn upload(&self, request: RequestStream<Policy>) -> impl Future<Output = Result<Receipt, Status>> + Send;
}
