//! A mesh server with JWTs on, called by the generated clients with
//! `TokenSource` tokens: the protos' access rules hold (reads need
//! `<service>.read`, writes `<service>.write`, health is public), and the rate
//! limit counts each token subject apart, not each address.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{TestServer, assert_status};
use tai_examples::auth::JwtSettings;
use tai_examples::proto::governor_client::GovernorClient;
use tai_examples::proto::{GetPoliciesRequest, HealthCheckRequest, Policy, ProposePolicyRequest};
use tai_examples::server::MeshServer;
use tai_runtime::auth::TokenSource;
use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
use tonic::Code;

const SECRET: &str = "a development secret of 32+ bytes!";

/// A Governor client of `server` whose calls carry a token for `subject` with `scopes`.
fn governor(server: &TestServer, subject: &str, scopes: &[&str]) -> GovernorClient {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let token = JwtSettings::secret(SECRET)
        .mint(subject, &scopes, Duration::from_secs(600))
        .unwrap();
    GovernorClient::with_interceptor(server.channel(), TokenSource::fixed(token).unwrap())
}

fn proposal(id: &str) -> ProposePolicyRequest {
    ProposePolicyRequest {
        request_id: id.to_owned(),
        policy: Some(Policy {
            id: id.to_owned(),
            policy_type: "security".to_owned(),
            ..Policy::default()
        }),
    }
}

#[tokio::test]
async fn the_protos_access_rules_hold_and_the_rate_limit_is_per_subject() {
    let jwt = JwtSettings::secret(SECRET).build().unwrap();
    // One call a minute per caller: a second one is refused whatever the machine's speed.
    let limit = RateLimitLayer::per_client(Quota::per_minute(NonZeroU32::MIN));
    let server = TestServer::start(MeshServer::all().auth(jwt).rate_limit(limit)).await;

    // Health needs no token.
    server
        .governor()
        .health_check(HealthCheckRequest::default())
        .await
        .unwrap();

    let reader = governor(&server, "reader", &["governor.read"]);
    reader
        .get_policies(GetPoliciesRequest::default())
        .await
        .unwrap();
    // Its second call is over its quota...
    assert_status(
        reader.get_policies(GetPoliciesRequest::default()).await,
        Code::ResourceExhausted,
        "reader",
    );

    // ...not another subject's, from the same address; whose write scope is missing.
    let other_reader = governor(&server, "other-reader", &["governor.read"]);
    assert_status(
        other_reader.propose_policy(proposal("p1")).await,
        Code::PermissionDenied,
        "governor.write",
    );

    let writer = governor(&server, "writer", &["governor.write"]);
    writer.propose_policy(proposal("p2")).await.unwrap();

    // A scope of another service does not count.
    let scheduler_reader = governor(&server, "scheduler-reader", &["scheduler.read"]);
    assert_status(
        scheduler_reader
            .get_policies(GetPoliciesRequest::default())
            .await,
        Code::PermissionDenied,
        "governor.read",
    );
}

#[tokio::test]
async fn a_call_without_a_token_or_with_a_forged_one_is_refused() {
    let jwt = JwtSettings::secret(SECRET).build().unwrap();
    let server = TestServer::start(MeshServer::all().auth(jwt)).await;
    assert_status(
        server
            .governor()
            .get_policies(GetPoliciesRequest::default())
            .await,
        Code::Unauthenticated,
        "bearer token",
    );
    // The same with a token of another secret.
    let forged = JwtSettings::secret("another secret, also at least 32 bytes")
        .mint(
            "mallory",
            &["governor.read".to_owned()],
            Duration::from_secs(600),
        )
        .unwrap();
    let client =
        GovernorClient::with_interceptor(server.channel(), TokenSource::fixed(forged).unwrap());
    assert_status(
        client.get_policies(GetPoliciesRequest::default()).await,
        Code::Unauthenticated,
        "",
    );
}
