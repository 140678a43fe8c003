//! Retry and circuit breaking, step by step, through a generated client.
//!
//! The Governor's `ProposePolicy` is declared in `proto/tai/v1/mesh/governor.proto`
//! as idempotent, retried on UNAVAILABLE (5 attempts, 50ms..1s backoff) behind a
//! breaker that opens after 5 consecutive failures for 2s. Nothing below says
//! so again: the generated client runs that policy on every call.
//!
//! ```sh
//! cargo run -p tai-examples --example retry_and_breaker
//! ```

use std::time::Duration;

use tai_examples::fault::{FaultInjector, FaultPlan};
use tai_examples::proto::governor_client::GovernorClient;
use tai_examples::proto::{Policy, ProposePolicyRequest};
use tai_examples::server::{MeshServer, bind};
use tai_runtime::{BreakerState, Resilient};

const PROPOSE: &str = "/tai.v1.mesh.Governor/ProposePolicy";

fn proposal(request_id: &str) -> ProposePolicyRequest {
    ProposePolicyRequest {
        request_id: request_id.to_owned(),
        policy: Some(Policy {
            id: "enforce-tls".to_owned(),
            policy_type: "security".to_owned(),
            name: "TLS 1.3 everywhere".to_owned(),
            rules: [("min_tls_version".to_owned(), "1.3".to_owned())].into(),
            ..Policy::default()
        }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A Governor on loopback, with a user-space fault layer in front of it.
    let faults = FaultInjector::new("governor");
    let listener = bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let server = MeshServer::new()
        .governor(tai_examples::governor::Governor::new())
        .faults(faults.clone());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = GovernorClient::connect(format!("http://{addr}")).await?;

    println!("1. The first response is lost after the server applied the proposal.");
    faults.set(FaultPlan::lose_first_responses(1, &[PROPOSE]));
    let receipt = client.propose_policy(proposal("req-1")).await?.into_inner();
    println!(
        "   the client retried and got the original receipt back: accepted={} duplicate={} ({})",
        receipt.accepted, receipt.duplicate, receipt.message
    );
    println!("   responses lost: {}", faults.counts().dropped);

    println!("2. The Governor goes down: every call is refused with UNAVAILABLE.");
    faults.set(FaultPlan::unavailable());
    for n in 2..=4 {
        let err = client
            .propose_policy(proposal(&format!("req-{n}")))
            .await
            .expect_err("the Governor is down");
        println!("   call {n}: {:?}: {}", err.code(), err.message());
    }
    println!("   server saw {} refused attempts", faults.counts().refused);
    if let Some(BreakerState::Open { reason, remaining }) = client.breaker_state("ProposePolicy") {
        println!("   breaker: open ({reason}); probing again in {remaining:.1?}");
    }

    println!(
        "3. The Governor recovers; after the open period, successful probes close the breaker."
    );
    faults.clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while client.breaker_state("ProposePolicy") != Some(BreakerState::Closed) {
        client.propose_policy(proposal("req-5")).await?;
    }
    println!(
        "   breaker: {}",
        client
            .breaker_state("ProposePolicy")
            .map_or("none", |s| s.name())
    );
    Ok(())
}
