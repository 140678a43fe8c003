//! The Governor's semantics, over the wire through the generated client.

mod common;

use std::collections::HashMap;

use common::{TestServer, assert_status, next};
use tai_examples::fault::{FaultInjector, FaultPlan};
use tai_examples::governor::Governor;
use tai_examples::proto::{
    EnforcePolicyRequest, GetPoliciesRequest, HealthCheckRequest, Policy, PolicyState,
    ProposePolicyRequest, RevokePolicyRequest, ServingStatus, StreamPoliciesRequest,
};
use tai_examples::server::MeshServer;
use tonic::Code;

fn proposal(request_id: &str, id: &str, policy_type: &str, version: u64) -> ProposePolicyRequest {
    ProposePolicyRequest {
        request_id: request_id.to_owned(),
        policy: Some(Policy {
            id: id.to_owned(),
            policy_type: policy_type.to_owned(),
            name: format!("{id} policy"),
            version,
            rules: [("min_tls".to_owned(), "1.3".to_owned())].into(),
            ..Policy::default()
        }),
    }
}

fn enforce(request_id: &str, id: &str, version: u64) -> EnforcePolicyRequest {
    EnforcePolicyRequest {
        request_id: request_id.to_owned(),
        policy_id: id.to_owned(),
        version,
    }
}

fn revoke(request_id: &str, id: &str, version: u64) -> RevokePolicyRequest {
    RevokePolicyRequest {
        request_id: request_id.to_owned(),
        policy_id: id.to_owned(),
        version,
        reason: "test".to_owned(),
    }
}

async fn server() -> TestServer {
    TestServer::start(MeshServer::new().governor(Governor::new())).await
}

#[tokio::test]
async fn versions_grow_and_a_stale_version_is_rejected() {
    let server = server().await;
    let c = server.governor();
    let r = c
        .propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted);
    assert_eq!(
        (r.id.as_str(), r.version, r.resource.as_str()),
        ("r1", 1, "policies/p1")
    );
    let r = c
        .propose_policy(proposal("r2", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 2, "0 means the next version");
    assert_status(
        c.propose_policy(proposal("r3", "p1", "security", 2)).await,
        Code::FailedPrecondition,
        "stale version: policy `p1` is already at version 2",
    );
    assert_status(
        c.propose_policy(proposal("r4", "p1", "security", 1)).await,
        Code::FailedPrecondition,
        "stale version",
    );
    let r = c
        .propose_policy(proposal("r5", "p1", "security", 7))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 7, "any higher version is fine");
    let p = c
        .get_policies(GetPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].version, p[0].state),
        (7, PolicyState::Proposed as i32)
    );
    assert!(!p[0].enabled);
    let time =
        |t: Option<prost_types::Timestamp>| std::time::SystemTime::try_from(t.unwrap()).unwrap();
    assert!(time(p[0].updated_at) >= time(p[0].created_at));
}

#[tokio::test]
async fn enforce_and_revoke_follow_the_current_version() {
    let server = server().await;
    let c = server.governor();
    c.propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap();
    c.propose_policy(proposal("r2", "p1", "security", 0))
        .await
        .unwrap();

    assert_status(
        c.enforce_policy(enforce("e1", "p1", 1)).await,
        Code::FailedPrecondition,
        "stale version: policy `p1` is at version 2, not 1",
    );
    assert_status(
        c.enforce_policy(enforce("e2", "p1", 0)).await,
        Code::InvalidArgument,
        "version is required",
    );
    assert_status(
        c.enforce_policy(enforce("e3", "nope", 1)).await,
        Code::NotFound,
        "no policy `nope`",
    );

    let r = c
        .enforce_policy(enforce("e4", "p1", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted, "{}", r.message);
    let again = c
        .enforce_policy(enforce("e5", "p1", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.accepted);
    assert!(
        again.message.contains("already enforced"),
        "{}",
        again.message
    );
    let enabled = c
        .get_policies(GetPoliciesRequest {
            enabled_only: true,
            ..GetPoliciesRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(enabled.len(), 1);
    assert!(enabled[0].enabled);
    assert_eq!(enabled[0].state, PolicyState::Enforced as i32);

    let r = c
        .revoke_policy(revoke("v1", "p1", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted);
    assert!(r.message.contains("revoked: test"), "{}", r.message);
    let again = c
        .revoke_policy(revoke("v2", "p1", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.accepted);
    assert_status(
        c.enforce_policy(enforce("e6", "p1", 2)).await,
        Code::FailedPrecondition,
        "is revoked; propose a new version",
    );
    let visible = c
        .get_policies(GetPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert!(
        visible.is_empty(),
        "revoked policies are left out by default"
    );
    let all = c
        .get_policies(GetPoliciesRequest {
            include_revoked: true,
            ..GetPoliciesRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, PolicyState::Revoked as i32);
    assert!(!all[0].enabled);

    // A revoked policy can come back as a new version.
    let r = c
        .propose_policy(proposal("r3", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 3);
    assert!(
        c.enforce_policy(enforce("e7", "p1", 3))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
}

#[tokio::test]
async fn get_policies_filters_by_type_state_and_id() {
    let server = server().await;
    let c = server.governor();
    for (i, (id, t)) in [
        ("a", "security"),
        ("b", "security"),
        ("c", "performance"),
        ("d", "compliance"),
    ]
    .iter()
    .enumerate()
    {
        c.propose_policy(proposal(&format!("r{i}"), id, t, 0))
            .await
            .unwrap();
    }
    c.enforce_policy(enforce("e1", "b", 1)).await.unwrap();
    c.enforce_policy(enforce("e2", "c", 1)).await.unwrap();
    let ids = |policies: Vec<Policy>| policies.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let query = |policy_type: &str, enabled_only: bool, only: &[&str]| GetPoliciesRequest {
        policy_type: policy_type.to_owned(),
        enabled_only,
        ids: only.iter().map(|s| (*s).to_owned()).collect(),
        include_revoked: false,
    };
    assert_eq!(
        ids(c
            .get_policies(query("", false, &[]))
            .await
            .unwrap()
            .into_inner()
            .policies),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        ids(c
            .get_policies(query("security", false, &[]))
            .await
            .unwrap()
            .into_inner()
            .policies),
        ["a", "b"]
    );
    assert_eq!(
        ids(c
            .get_policies(query("", true, &[]))
            .await
            .unwrap()
            .into_inner()
            .policies),
        ["b", "c"]
    );
    assert_eq!(
        ids(c
            .get_policies(query("security", true, &[]))
            .await
            .unwrap()
            .into_inner()
            .policies),
        ["b"]
    );
    assert_eq!(
        ids(c
            .get_policies(query("", false, &["d", "a", "zz"]))
            .await
            .unwrap()
            .into_inner()
            .policies),
        ["a", "d"]
    );
}

#[tokio::test]
async fn stream_policies_sends_the_current_state_then_every_matching_change() {
    let server = server().await;
    let c = server.governor();
    c.propose_policy(proposal("r1", "s1", "security", 0))
        .await
        .unwrap();
    c.propose_policy(proposal("r2", "x1", "performance", 0))
        .await
        .unwrap();
    let mut stream = c
        .stream_policies(StreamPoliciesRequest {
            policy_type: "security".to_owned(),
            include_existing: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!((first.id.as_str(), first.version), ("s1", 1));

    // A change of another type is not sent; the next matching one is.
    c.propose_policy(proposal("r3", "x1", "performance", 0))
        .await
        .unwrap();
    c.enforce_policy(enforce("e1", "s1", 1)).await.unwrap();
    let update = next(&mut stream).await;
    assert_eq!(
        (update.id.as_str(), update.state),
        ("s1", PolicyState::Enforced as i32)
    );
    assert!(update.enabled);
    c.propose_policy(proposal("r4", "s2", "security", 0))
        .await
        .unwrap();
    c.revoke_policy(revoke("v1", "s1", 1)).await.unwrap();
    let a = next(&mut stream).await;
    let b = next(&mut stream).await;
    assert_eq!(
        (a.id.as_str(), a.state),
        ("s2", PolicyState::Proposed as i32)
    );
    assert_eq!(
        (b.id.as_str(), b.state),
        ("s1", PolicyState::Revoked as i32)
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let server = server().await;
    let c = server.governor();
    assert_status(
        c.propose_policy(proposal("", "p1", "security", 0)).await,
        Code::InvalidArgument,
        "request_id is empty",
    );
    assert_status(
        c.propose_policy(proposal("r1", "", "security", 0)).await,
        Code::InvalidArgument,
        "policy.id is empty",
    );
    assert_status(
        c.propose_policy(proposal("r2", "p1", "", 0)).await,
        Code::InvalidArgument,
        "policy.policy_type is empty",
    );
    assert_status(
        c.propose_policy(ProposePolicyRequest {
            request_id: "r3".to_owned(),
            policy: None,
        })
        .await,
        Code::InvalidArgument,
        "policy is required",
    );
    let mut oversize = proposal("r4", "p1", "security", 0);
    oversize.policy.as_mut().unwrap().rules = (0..65)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect::<HashMap<_, _>>();
    assert_status(
        c.propose_policy(oversize).await,
        Code::InvalidArgument,
        "policy.rules has 65 entries; at most 64 are allowed",
    );
    let mut long_value = proposal("r5", "p1", "security", 0);
    long_value.policy.as_mut().unwrap().rules = [("k".to_owned(), "v".repeat(1025))].into();
    assert_status(
        c.propose_policy(long_value).await,
        Code::InvalidArgument,
        "policy.rules[k] is 1025 bytes",
    );
    assert_status(
        c.propose_policy(proposal(&"r".repeat(129), "p1", "security", 0))
            .await,
        Code::InvalidArgument,
        "request_id is 129 bytes long; at most 128",
    );
    assert!(
        c.get_policies(GetPoliciesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .policies
            .is_empty()
    );

    // A failed request is not remembered: the same request_id works once fixed.
    let r = c
        .propose_policy(proposal("r4", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && !r.duplicate);
}

#[tokio::test]
async fn a_repeated_request_id_gets_the_first_receipt_and_a_reused_one_is_refused() {
    let governor = Governor::new();
    let server = TestServer::start(MeshServer::new().governor(governor.clone())).await;
    let c = server.governor();
    let first = c
        .propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    let repeat = c
        .propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate && repeat.duplicate);
    assert_eq!(
        (repeat.version, &repeat.message, repeat.timestamp),
        (1, &first.message, first.timestamp)
    );
    assert_eq!((governor.applied(), governor.duplicates()), (1, 1));
    assert_status(
        c.propose_policy(proposal("r1", "p2", "security", 0)).await,
        Code::AlreadyExists,
        "request_id `r1` was already used for a different ProposePolicy request",
    );
}

/// The dedup rule under retries: the first response of ProposePolicy is lost
/// after the server applied it; the client's retry (its policy retries on
/// UNAVAILABLE) must get the first receipt back, not apply it again.
#[tokio::test]
async fn a_retry_after_a_lost_response_is_not_applied_twice() {
    let governor = Governor::new();
    let faults = FaultInjector::new("governor");
    faults.set(FaultPlan::lose_first_responses(
        1,
        &[
            "/tai.v1.mesh.Governor/ProposePolicy",
            "/tai.v1.mesh.Governor/EnforcePolicy",
        ],
    ));
    let server = TestServer::start(
        MeshServer::new()
            .governor(governor.clone())
            .faults(faults.clone()),
    )
    .await;
    let c = server.governor();

    // Version 0 ("next"): applied twice it would become version 2.
    let r = c
        .propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.accepted && r.duplicate,
        "the retry was answered from the dedup log: {r:?}"
    );
    assert_eq!(r.version, 1);
    // An explicit version: applied twice the retry would be rejected as stale.
    let r = c
        .propose_policy(proposal("r2", "p1", "security", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.duplicate && r.version == 2, "{r:?}");
    let r = c
        .enforce_policy(enforce("e1", "p1", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.duplicate, "{r:?}");

    assert_eq!(faults.counts().dropped, 3, "each first response was lost");
    assert_eq!((governor.applied(), governor.duplicates()), (3, 3));
    let p = c
        .get_policies(GetPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!((p[0].version, p[0].enabled), (2, true));
}

#[tokio::test]
async fn health_check_reports_serving_and_counts() {
    let server = server().await;
    let c = server.governor();
    c.propose_policy(proposal("r1", "p1", "security", 0))
        .await
        .unwrap();
    let h = c
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, ServingStatus::Serving as i32);
    assert_eq!(h.service, "tai.v1.mesh.Governor");
    assert_eq!(h.details.get("policies").map(String::as_str), Some("1"));
    assert!(h.uptime.is_some() && !h.version.is_empty());
}
