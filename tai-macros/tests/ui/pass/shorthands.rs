//! Every shorthand and toggle of the grammar.
#![deny(warnings, missing_docs)]

use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

/// A message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {}

/// Service defaults that methods turn off or override.
#[resilient(
    service = "short.v1.Hands",
    idempotent = true,
    timeout = "250ms",
    max_timeout = "1.5s",
    retry(max_attempts = 4, initial_backoff = "10ms", max_backoff = "1s", multiplier = 1.5, codes = [UNAVAILABLE, ABORTED, "RESOURCE_EXHAUSTED"]),
    breaker(failure_threshold = 5, open_timeout = "30s", max_open_timeout = "5m", half_open_max_calls = 3, failure_rate = 0.5, window = "10s", min_calls = 20, failure_codes = [UNAVAILABLE, INTERNAL]),
    throttle(max_tokens = 10, token_ratio = 0.5),
)]
pub trait Hands {
    /// Turns off what it inherits.
    #[resilient(idempotent = false, timeout = none, retry = none, breaker = none)]
    fn off(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// Defaults.
    #[resilient(retry = default, breaker = default)]
    fn defaults(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// Hedging replaces the inherited retry.
    #[resilient(hedging = default)]
    fn hedged(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// An empty attribute changes nothing.
    #[resilient]
    fn plain(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// Overrides one retry field and keeps the others.
    #[resilient(retry(max_attempts = 2), breaker(failure_rate = none))]
    fn tweak(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
}

async fn calls() -> Result<(), Box<dyn std::error::Error>> {
    let client = HandsClient::connect("http://127.0.0.1:50051").await?;
    let _: Msg = client.tweak(Msg {}).await?.into_inner();
    Ok(())
}

fn main() {
    let _ = calls;
}
