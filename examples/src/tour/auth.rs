//! The tour's authentication: every server requires a bearer JWT signed with
//! a secret made at start, and each generated client carries a token with the
//! scopes of its service (`<service>.read` and `<service>.write`), as the
//! mesh protos' access rules ask. The workload's calls all pass that check.
//!
//! So that the check is seen to be on, the tour ends with two calls that must
//! be refused, made outside the workload's counts: one without a token
//! (UNAUTHENTICATED) and one whose token may read the Governor but not write
//! it (PERMISSION_DENIED naming `governor.write`). Both refused is a passing
//! check in the summary; either let through fails the tour.

use rand::Rng as _;
use std::time::Duration;

use tai_runtime::auth::TokenSource;
use tai_runtime::server::auth::JwtAuth;
use tai_runtime::{Code, Status};

use super::TourError;
use super::servers::Mesh;
use crate::auth::JwtSettings;
use crate::client;
use crate::proto::governor_client::GovernorClient;
use crate::proto::{GetPoliciesRequest, Policy, ProposePolicyRequest};

/// How long the tour's tokens live: longer than any tour.
const TTL: Duration = Duration::from_secs(3600);

/// The secret the tour's servers check tokens with, and its validator.
pub(super) struct TourAuth {
    settings: JwtSettings,
    /// What every server verifies with.
    pub(super) jwt: JwtAuth,
}

impl TourAuth {
    /// A fresh random secret (32 random bytes, hex), never written anywhere.
    pub(super) fn start() -> Result<Self, TourError> {
        let bytes: [u8; 32] = rand::rng().random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let settings = JwtSettings::secret(secret);
        let jwt = settings
            .build()
            .map_err(|e| TourError::Auth(e.to_string()))?;
        Ok(Self { settings, jwt })
    }

    /// A token with `scopes`, for the subject `subject`.
    fn token(&self, subject: &str, scopes: &[&str]) -> Result<TokenSource, TourError> {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let token = self
            .settings
            .mint(subject, &scopes, TTL)
            .ok_or_else(|| TourError::Auth("cannot sign a token".to_owned()))?;
        TokenSource::fixed(token).map_err(|e| TourError::Auth(e.to_string()))
    }

    /// The token of `service`'s client: may read and write it.
    pub(super) fn client_token(&self, service: &str) -> Result<TokenSource, TourError> {
        let (read, write) = (format!("{service}.read"), format!("{service}.write"));
        self.token(&format!("tour-{service}"), &[&read, &write])
    }

    /// Makes the two calls that must be refused, against the Governor.
    pub(super) async fn refusals(&self, mesh: &Mesh) -> Result<Refusals, TourError> {
        let tls = mesh.tls.as_ref().map(|t| &t.client);
        let channel = client::channel(
            &mesh.governor_addr.to_string(),
            tai_runtime::config::ClientConfig::development(),
            tls,
        )?;
        let no_token = GovernorClient::new(channel.clone())
            .get_policies(GetPoliciesRequest::default())
            .await
            .err();
        let reader = self.token("tour-reader", &["governor.read"])?;
        let wrong_scope = GovernorClient::with_interceptor(channel, reader)
            .propose_policy(ProposePolicyRequest {
                request_id: "tour-refused-proposal".to_owned(),
                policy: Some(Policy {
                    id: "refused".to_owned(),
                    policy_type: "security".to_owned(),
                    ..Policy::default()
                }),
            })
            .await
            .err();
        Ok(Refusals {
            no_token,
            wrong_scope,
        })
    }
}

/// How the two calls that must be refused ended (`None`: they succeeded).
pub(super) struct Refusals {
    no_token: Option<Status>,
    wrong_scope: Option<Status>,
}

impl Refusals {
    /// The summary's check: both refused, each with its code.
    pub(super) fn check(&self) -> (bool, String) {
        let said = |status: &Option<Status>, expected: Code| match status {
            Some(s) if s.code() == expected => {
                (true, format!("refused, {expected:?}: {}", s.message()))
            }
            Some(s) => (
                false,
                format!(
                    "failed with {:?} instead of {expected:?}: {}",
                    s.code(),
                    s.message()
                ),
            ),
            None => (false, "LET THROUGH".to_owned()),
        };
        let (no_token_ok, no_token) = said(&self.no_token, Code::Unauthenticated);
        let (wrong_scope_ok, wrong_scope) = said(&self.wrong_scope, Code::PermissionDenied);
        (
            no_token_ok && wrong_scope_ok,
            format!(
                "JWT required on every call, each client carrying its service's scopes; \
                 expected refusals: a call without a token {no_token}; \
                 a Governor write with a read-only token {wrong_scope}"
            ),
        )
    }
}
