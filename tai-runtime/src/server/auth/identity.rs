//! Who a call is from: one [`Identity`] type that handlers read from the
//! request's extensions, whatever proved it (a JWT, a client certificate, both).
//!
//! Why it is shaped so: handlers should not care how a caller authenticated,
//! only who it is and what it may do. So the JWT layer and the TLS layer each
//! produce an `Identity` and [`merge`](Identity::merge) them into the one the
//! handler sees; the raw claims stay available for what the fixed fields do not
//! cover.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::refusal::Refusal;

/// The authenticated caller of a call, in the request's extensions.
///
/// ```
/// use tai_runtime::server::auth::Identity;
/// use tonic::{Request, Response, Status};
///
/// async fn whoami(request: Request<()>) -> Result<Response<String>, Status> {
///     // The auth layer put it there; without the layer there is none.
///     let identity = Identity::of(&request)
///         .ok_or_else(|| Status::unauthenticated("no identity"))?;
///     if !identity.has_scope("whoami:read") {
///         return Err(Status::permission_denied("needs scope whoami:read"));
///     }
///     Ok(Response::new(identity.subject.clone().unwrap_or_default()))
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Identity {
    /// The token's `sub`.
    pub subject: Option<String>,
    /// The token's `iss`.
    pub issuer: Option<String>,
    /// The token's `aud` (one string or several).
    pub audience: Vec<String>,
    /// From `scope` (space-separated, RFC 8693) or `scp` (an array).
    pub scopes: Vec<String>,
    /// From the roles claim (`roles` unless configured otherwise): an array of
    /// strings, or one space-separated string.
    pub roles: Vec<String>,
    /// The token's `exp`.
    pub expires_at: Option<SystemTime>,
    /// Subject alternative names of the client's certificate (DNS names, URIs,
    /// IP addresses, as text). Filled by the TLS layer when the connection is
    /// mutual TLS; empty otherwise.
    pub certificate_sans: Vec<String>,
    /// Every claim of the token, for what the fields above do not cover.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The identity [`AuthLayer`](super::AuthLayer) put in `request`'s
    /// extensions, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Identity> {
        request.extensions().get::<Identity>()
    }

    /// An identity proved by a client certificate alone: its subject
    /// alternative names. For the TLS layer.
    ///
    /// ```
    /// use tai_runtime::server::auth::Identity;
    ///
    /// let peer = Identity::from_certificate_sans(["spiffe://mesh/scheduler"]);
    /// assert_eq!(peer.certificate_sans, ["spiffe://mesh/scheduler"]);
    /// assert_eq!(peer.subject, None);
    /// ```
    pub fn from_certificate_sans<I, S>(sans: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            certificate_sans: sans.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Adds what `other` knows and `self` does not: fields `self` lacks are
    /// taken from `other`, lists are joined without repeats, claims `self` has
    /// are kept. The JWT layer merges the TLS layer's identity into the token's
    /// this way, so one `Identity` carries both.
    ///
    /// ```
    /// use tai_runtime::server::auth::Identity;
    ///
    /// let mut identity = Identity::from_certificate_sans(["scheduler.mesh"]);
    /// identity.merge(Identity::from_certificate_sans(["10.0.0.7", "scheduler.mesh"]));
    /// assert_eq!(identity.certificate_sans, ["scheduler.mesh", "10.0.0.7"]);
    /// ```
    pub fn merge(&mut self, other: Identity) {
        fn join(mine: &mut Vec<String>, theirs: Vec<String>) {
            for item in theirs {
                if !mine.contains(&item) {
                    mine.push(item);
                }
            }
        }
        self.subject = self.subject.take().or(other.subject);
        self.issuer = self.issuer.take().or(other.issuer);
        self.expires_at = self.expires_at.or(other.expires_at);
        join(&mut self.audience, other.audience);
        join(&mut self.scopes, other.scopes);
        join(&mut self.roles, other.roles);
        join(&mut self.certificate_sans, other.certificate_sans);
        for (name, value) in other.claims {
            self.claims.entry(name).or_insert(value);
        }
    }

    /// Whether the caller was granted `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The identity of a validated token's claims. `roles_claim` names the
    /// claim roles are read from. A claim of the wrong type refuses the token
    /// (a `sub` that is a number is not silently dropped).
    pub(super) fn from_claims(
        claims: Map<String, Value>,
        roles_claim: &str,
    ) -> Result<Self, Refusal> {
        let text = |name: &'static str| match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Refusal::wrong_type(name)),
        };
        let subject = text("sub")?;
        let issuer = text("iss")?;
        // Validation checked `aud` is a string or strings.
        let audience =
            strings(claims.get("aud"), false).ok_or_else(|| Refusal::wrong_type("aud"))?;
        let mut scopes =
            strings(claims.get("scope"), true).ok_or_else(|| Refusal::wrong_type("scope"))?;
        let scp = strings(claims.get("scp"), true).ok_or_else(|| Refusal::wrong_type("scp"))?;
        scopes.extend(
            scp.into_iter()
                .filter(|s| !scopes.contains(s))
                .collect::<Vec<_>>(),
        );
        let roles = strings(claims.get(roles_claim), true)
            .ok_or_else(|| Refusal::wrong_type(roles_claim))?;
        // Validation checked `exp` is a number.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs_f64(s.min(1e15))));
        Ok(Self {
            subject,
            issuer,
            audience,
            scopes,
            roles,
            expires_at,
            certificate_sans: Vec::new(),
            claims,
        })
    }
}

/// A claim that is one string or an array of strings; `split`: a string is a
/// space-separated list. `None`: another type.
fn strings(value: Option<&Value>, split: bool) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) if split => Some(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Reason;
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn scopes_from_scope_and_scp_roles_from_the_configured_claim() {
        let identity = Identity::from_claims(
            claims(json!({
                "sub": "ada", "iss": "https://issuer", "aud": ["a", "b"], "exp": 2_000_000_000u64,
                "scope": "read write", "scp": ["write", "admin"], "groups": ["ops"],
            })),
            "groups",
        )
        .unwrap();
        assert_eq!(identity.subject.as_deref(), Some("ada"));
        assert_eq!(identity.audience, ["a", "b"]);
        assert_eq!(identity.scopes, ["read", "write", "admin"]);
        assert_eq!(identity.roles, ["ops"]);
        assert_eq!(
            identity.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_refused() {
        let refused = Identity::from_claims(claims(json!({"sub": 7})), "roles").unwrap_err();
        assert_eq!(refused.reason(), Reason::InvalidClaim);
        assert_eq!(refused.message(), "token claim `sub` is not a string");
        let refused =
            Identity::from_claims(claims(json!({"roles": {"a": 1}})), "roles").unwrap_err();
        assert_eq!(
            refused.message(),
            "token claim `roles` is not a string or a list of strings"
        );
    }

    #[test]
    fn merge_keeps_the_tokens_fields_and_adds_the_certificates() {
        let mut jwt = Identity {
            subject: Some("ada".into()),
            scopes: vec!["read".into()],
            ..Identity::default()
        };
        jwt.merge(Identity::from_certificate_sans(["ada.mesh"]));
        assert_eq!(jwt.subject.as_deref(), Some("ada"));
        assert_eq!(jwt.scopes, ["read"]);
        assert_eq!(jwt.certificate_sans, ["ada.mesh"]);
    }
}
