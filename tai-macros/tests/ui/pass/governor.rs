//! The reference example: service defaults, a method override, shorthands.
#![deny(warnings, missing_docs)]

use std::future::Future;

use tai_macros::resilient;
use tai_runtime::{Resilient, Status};

/// A proposed policy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    #[prost(string, tag = "1")]
    name: String,
}

/// The receipt of a proposal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    #[prost(uint64, tag = "1")]
    version: u64,
}

/// Governance of policies.
#[resilient(service = "tai.v1.Governor", timeout = "30s", breaker = default)]
pub trait Governor {
    /// Proposes a policy.
    #[resilient(idempotent, timeout = "250ms", retry = 3)]
    fn propose_policy(&self, request: Policy) -> impl Future<Output = Result<Receipt, Status>> + Send;

    /// Withdraws a policy; not idempotent, so retried only on UNAVAILABLE.
    #[resilient(name = "Withdraw", retry(max_attempts = 2, codes = [Unavailable]), breaker(failure_threshold = 3, failure_rate = none))]
    async fn withdraw_policy(&self, request: Policy) -> Result<Receipt, Status>;

    /// Reads a policy, hedged.
    #[resilient(idempotent, hedging(max_attempts = 3, delay = "50ms", non_fatal_codes = [UNAVAILABLE]), max_timeout = "1m")]
    fn read(&self, request: Receipt) -> impl Future<Output = Result<Policy, Status>> + Send;

    /// Inherits everything.
    fn audit(&self, request: Receipt) -> impl Future<Output = Result<Receipt, Status>> + Send;
}

/// Uses the client generically and directly.
pub async fn run<G: Governor>(governor: &G) -> Result<Receipt, Status> {
    governor.propose_policy(Policy::default()).await
}

async fn calls(client: GovernorClient) -> Result<(), Box<dyn std::error::Error>> {
    let receipt = client.propose_policy(Policy::default()).await?.into_inner();
    let _ = client.withdraw_policy(Policy::default()).await?;
    let _ = client.read(receipt.clone()).await?;
    let _ = run(&client).await?;
    let _ = client.clone().audit(receipt).await?;
    let _ = client.service_policy().method_index("Withdraw");
    let _ = client.breaker_state("ProposePolicy");
    let connected = GovernorClient::connect("http://127.0.0.1:50051").await?;
    let _ = GovernorClient::connect_lazy("http://127.0.0.1:50051")?;
    let _ = GovernorClient::new(tai_runtime::Channel::to("http://127.0.0.1:50051")?);
    drop(connected);
    Ok(())
}

fn main() {
    let _ = calls;
}
