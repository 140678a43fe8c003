//! The Governor service: versioned policies, proposed, enforced and revoked.
//!
//! Versions only grow, and every change names one, so that a caller acting on a
//! stale read gets FAILED_PRECONDITION instead of overriding a newer proposal.
//! Every mutation is deduplicated on its request_id (see [`crate::storage`]): a
//! retried ProposePolicy whose first response was lost gets its first receipt
//! back, where without deduplication it would be rejected as stale — or, with a
//! version of 0 ("next"), would propose a second version.

use std::sync::{Arc, MutexGuard};

use futures_util::stream;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::common::{
    self, BoxStream, Closing, DEDUP_CAPACITY, Deduplicated, Ledger, check_map, check_text,
    require_id,
};
use crate::proto::governor_server::{self, GovernorServer};
use crate::proto::{
    EnforcePolicyRequest, GetPoliciesRequest, GetPoliciesResponse, HealthCheckRequest,
    HealthStatus, Policy, PolicyState, ProposePolicyRequest, Receipt, RevokePolicyRequest,
    StreamPoliciesRequest,
};
use crate::storage::{DedupLog, MemoryStorage, Storage};

/// How many policies the default in-memory store holds.
pub const DEFAULT_MAX_POLICIES: usize = 10_000;
/// The fully qualified service name.
pub const SERVICE_NAME: &str = "tai.v1.mesh.Governor";
/// Changes a slow StreamPolicies subscriber may fall behind before it is resynced.
const UPDATE_BUFFER: usize = 1024;

/// The Governor: a cheap handle; clones share one state.
#[derive(Clone)]
pub struct Governor {
    /// The policies; a mutation publishes the policy it changed.
    ledger: Arc<Ledger<State, Policy>>,
    closing: Closing,
}

struct State {
    policies: Box<dyn Storage<Policy>>,
    dedup: DedupLog,
}

impl Deduplicated for State {
    fn dedup_log(&mut self) -> &mut DedupLog {
        &mut self.dedup
    }
}

impl Default for Governor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("applied", &self.applied())
            .field("duplicates", &self.duplicates())
            .finish_non_exhaustive()
    }
}

impl Governor {
    /// A Governor keeping up to [`DEFAULT_MAX_POLICIES`] policies in memory.
    pub fn new() -> Self {
        Self::with_storage(Box::new(MemoryStorage::new("policy", DEFAULT_MAX_POLICIES)))
    }

    /// A Governor keeping its policies in `storage`.
    pub fn with_storage(storage: Box<dyn Storage<Policy>>) -> Self {
        let state = State {
            policies: storage,
            dedup: DedupLog::new(DEDUP_CAPACITY),
        };
        Self {
            ledger: Arc::new(Ledger::new(state, UPDATE_BUFFER)),
            closing: Closing::never(),
        }
    }

    /// This handle, with streams that end when `closing` fires.
    pub fn closing_on(mut self, closing: Closing) -> Self {
        self.closing = closing;
        self
    }

    /// The tonic service.
    pub fn into_server(self) -> GovernorServer<Self> {
        GovernorServer::new(self)
    }

    /// Mutations applied (duplicates not counted).
    pub fn applied(&self) -> u64 {
        self.ledger.applied()
    }

    /// Mutations answered from the dedup log without being applied.
    pub fn duplicates(&self) -> u64 {
        self.ledger.duplicates()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.ledger.lock()
    }

    /// The current policy `id`, for Enforce and Revoke: exists, and at `version`.
    fn current(state: &State, id: &str, version: u64, verb: &str) -> Result<Policy, Status> {
        let policy = state
            .policies
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no policy `{id}`")))?;
        if version == 0 {
            return Err(Status::invalid_argument(format!(
                "version is required: the version of `{id}` you mean to {verb} (the current one is {})",
                policy.version
            )));
        }
        if version != policy.version {
            return Err(Status::failed_precondition(format!(
                "stale version: policy `{id}` is at version {}, not {version}; read it again before you {verb} it",
                policy.version
            )));
        }
        Ok(policy)
    }

    fn snapshot(&self, matches: impl Fn(&Policy) -> bool) -> Vec<Policy> {
        let state = self.lock();
        let mut out = Vec::new();
        state.policies.for_each(&mut |_, p| {
            if matches(p) {
                out.push(p.clone());
            }
        });
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn receipt(accepted: bool, message: String, policy: &Policy) -> Receipt {
    let resource = format!("policies/{}", policy.id);
    common::receipt(accepted, message, resource, policy.version)
}

#[tonic::async_trait]
impl governor_server::Governor for Governor {
    async fn propose_policy(
        &self,
        request: Request<ProposePolicyRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.ledger.mutate(&request, |state| {
            let Some(proposal) = request.policy.clone() else {
                return Err(Status::invalid_argument("policy is required"));
            };
            let id = require_id("policy.id", &proposal.id)?;
            require_id("policy.policy_type", &proposal.policy_type)?;
            check_text("policy.name", &proposal.name, 256)?;
            check_map("policy.rules", &proposal.rules)?;
            let current = state.policies.get(id);
            let version = match (&current, proposal.version) {
                (None, 0) => 1,
                (Some(c), 0) => c.version + 1,
                (Some(c), v) if v <= c.version => {
                    return Err(Status::failed_precondition(format!(
                        "stale version: policy `{id}` is already at version {}; propose a version \
                         greater than {} (or 0 for the next one)",
                        c.version, c.version
                    )));
                }
                (_, v) => v,
            };
            let now = common::now();
            let policy = Policy {
                id: id.to_owned(),
                policy_type: proposal.policy_type,
                name: proposal.name,
                version,
                rules: proposal.rules,
                enabled: false,
                created_at: current.and_then(|c| c.created_at).or(Some(now)),
                updated_at: Some(now),
                state: PolicyState::Proposed as i32,
            };
            state.policies.put(id, policy.clone())?;
            let message = format!("policy `{id}` proposed at version {version}");
            Ok((receipt(true, message, &policy), Some(policy)))
        })?;
        Ok(Response::new(receipt))
    }

    async fn enforce_policy(
        &self,
        request: Request<EnforcePolicyRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.ledger.mutate(&request, |state| {
            let id = require_id("policy_id", &request.policy_id)?;
            let mut policy = Self::current(state, id, request.version, "enforce")?;
            match PolicyState::try_from(policy.state) {
                Ok(PolicyState::Enforced) => {
                    let message = format!("policy `{id}` version {} is already enforced", policy.version);
                    return Ok((receipt(false, message, &policy), None));
                }
                Ok(PolicyState::Revoked) => {
                    return Err(Status::failed_precondition(format!(
                        "policy `{id}` version {} is revoked; propose a new version to enforce it again",
                        policy.version
                    )));
                }
                _ => {}
            }
            policy.state = PolicyState::Enforced as i32;
            policy.enabled = true;
            policy.updated_at = Some(common::now());
            state.policies.put(id, policy.clone())?;
            let message = format!("policy `{id}` version {} enforced", policy.version);
            Ok((receipt(true, message, &policy), Some(policy)))
        })?;
        Ok(Response::new(receipt))
    }

    async fn revoke_policy(
        &self,
        request: Request<RevokePolicyRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.ledger.mutate(&request, |state| {
            let id = require_id("policy_id", &request.policy_id)?;
            check_text("reason", &request.reason, 1024)?;
            let mut policy = Self::current(state, id, request.version, "revoke")?;
            if policy.state == PolicyState::Revoked as i32 {
                let message = format!(
                    "policy `{id}` version {} is already revoked",
                    policy.version
                );
                return Ok((receipt(false, message, &policy), None));
            }
            policy.state = PolicyState::Revoked as i32;
            policy.enabled = false;
            policy.updated_at = Some(common::now());
            state.policies.put(id, policy.clone())?;
            let mut message = format!("policy `{id}` version {} revoked", policy.version);
            if !request.reason.is_empty() {
                message.push_str(": ");
                message.push_str(&request.reason);
            }
            Ok((receipt(true, message, &policy), Some(policy)))
        })?;
        Ok(Response::new(receipt))
    }

    async fn get_policies(
        &self,
        request: Request<GetPoliciesRequest>,
    ) -> Result<Response<GetPoliciesResponse>, Status> {
        let r = request.into_inner();
        check_text("policy_type", &r.policy_type, 128)?;
        if r.ids.len() > 1000 {
            return Err(Status::invalid_argument(format!(
                "ids has {} entries; at most 1000 are allowed",
                r.ids.len()
            )));
        }
        let policies = self.snapshot(|p| {
            (r.policy_type.is_empty() || p.policy_type == r.policy_type)
                && (!r.enabled_only || p.enabled)
                && (r.ids.is_empty() || r.ids.contains(&p.id))
                && (r.include_revoked || p.state != PolicyState::Revoked as i32)
        });
        Ok(Response::new(GetPoliciesResponse { policies }))
    }

    type StreamPoliciesStream = BoxStream<Policy>;

    async fn stream_policies(
        &self,
        request: Request<StreamPoliciesRequest>,
    ) -> Result<Response<Self::StreamPoliciesStream>, Status> {
        let r = request.into_inner();
        check_text("policy_type", &r.policy_type, 128)?;
        let policy_type = r.policy_type;
        let matches = move |p: &Policy| policy_type.is_empty() || p.policy_type == policy_type;
        // Subscribe and snapshot under one lock: no change falls between the two.
        let (rx, first) = {
            let state = self.lock();
            let rx = self.ledger.subscribe();
            let mut first = Vec::new();
            if r.include_existing {
                state.policies.for_each(&mut |_, p| {
                    if matches(p) {
                        first.push(p.clone());
                    }
                });
                first.sort_by(|a, b| a.id.cmp(&b.id));
            }
            (rx, first)
        };
        let governor = self.clone();
        let updates = stream::unfold(
            (
                first.into_iter().collect::<std::collections::VecDeque<_>>(),
                rx,
            ),
            move |(mut queue, mut rx)| {
                let governor = governor.clone();
                let matches = matches.clone();
                async move {
                    loop {
                        if let Some(p) = queue.pop_front() {
                            return Some((Ok(p), (queue, rx)));
                        }
                        match rx.recv().await {
                            Ok(p) if matches(&p) => return Some((Ok(p), (queue, rx))),
                            Ok(_) => {}
                            // Too slow to keep up: policies are state, so the current
                            // state of every matching policy is a correct resync.
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                queue.extend(governor.snapshot(&matches));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        );
        Ok(Response::new(common::until_closing(
            updates,
            self.closing.clone(),
        )))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthStatus>, Status> {
        let (total, enforced) = {
            let state = self.lock();
            let mut enforced = 0;
            state
                .policies
                .for_each(&mut |_, p| enforced += usize::from(p.enabled));
            (state.policies.len(), enforced)
        };
        let details = [
            ("policies".to_owned(), total.to_string()),
            ("enforced".to_owned(), enforced.to_string()),
            ("applied".to_owned(), self.applied().to_string()),
            ("duplicates".to_owned(), self.duplicates().to_string()),
        ];
        Ok(Response::new(common::health_status(
            SERVICE_NAME,
            self.ledger.started(),
            &self.closing,
            details.into(),
        )))
    }
}
