//! Access rules enforced by request path: [`AccessLayer`] and the
//! [`CheckAccess`] service.
//!
//! Why it is shaped so: the rules are the `.proto` file's (`auth: { .. }`),
//! resolved at build time into one [`AccessTable`] per service, so at run time
//! a rule is one lookup in a map built once and never written again (shared by
//! an `Arc`, read without a lock) and a check of the [`Identity`] that
//! [`AuthLayer`](super::AuthLayer) put in the request. It sits inside the auth
//! layer: authentication says who calls, this says whether they may.
//!
//! A call is refused, before its handler runs, as:
//! - UNAUTHENTICATED when the method's rule needs an identity and the call
//!   has none;
//! - PERMISSION_DENIED naming every scope and role the rule lists that the
//!   caller lacks (the names are the server's, from its own table);
//! - PERMISSION_DENIED when the method has no rule and the server's
//!   [`DefaultAccess`] is `Deny`.
//!
//! Health (`/grpc.health.v1.Health/`) and reflection
//! (`/grpc.reflection.`) are public unless a table says otherwise.
//!
//! Each refusal is an audit event: a `tracing` event at `info` (method,
//! reason, subject, peer) and one count in
//! `tai_server_access_refusals{reason}`, whose label set is
//! [`AccessReason::ALL`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tonic::Status;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use super::identity::Identity;
use crate::metrics::Metrics;
use crate::policy::{AccessRule, AccessTable};
pub use crate::server::decided::ResponseFuture;

/// Path prefixes of the services that are public by default: health checks and
/// reflection come from load balancers and tools that hold no token.
const PUBLIC_BY_DEFAULT: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// What happens to a call whose method has no rule (not in any table, or
/// declared without `auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DefaultAccess {
    /// Refused as PERMISSION_DENIED: a method must declare who may call it.
    #[default]
    Deny,
    /// Let through, identity or not, as if there were no access rules.
    Allow,
}

/// Why the access rules refused a call: the `reason` label of
/// `tai_server_access_refusals` and the log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessReason {
    /// The rule needs an identity and the call has none (UNAUTHENTICATED).
    NoIdentity,
    /// The identity lacks a scope the rule lists (PERMISSION_DENIED).
    MissingScope,
    /// The identity lacks a role the rule lists, and no scope is missing
    /// (PERMISSION_DENIED).
    MissingRole,
    /// The method has no rule and the server denies by default
    /// (PERMISSION_DENIED).
    NoRule,
}

impl AccessReason {
    /// Every reason, in declaration order (the metric's label set).
    pub const ALL: [AccessReason; 4] = [
        AccessReason::NoIdentity,
        AccessReason::MissingScope,
        AccessReason::MissingRole,
        AccessReason::NoRule,
    ];

    /// The reason as the metric label and log field: `"missing_scope"`.
    ///
    /// ```
    /// use tai_runtime::server::auth::AccessReason;
    ///
    /// assert_eq!(AccessReason::MissingScope.as_str(), "missing_scope");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessReason::NoIdentity => "no_identity",
            AccessReason::MissingScope => "missing_scope",
            AccessReason::MissingRole => "missing_role",
            AccessReason::NoRule => "no_rule",
        }
    }
}

impl fmt::Display for AccessReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Enforces access rules by request path: UNAUTHENTICATED when the rule needs
/// an identity and the call has none, PERMISSION_DENIED naming the missing
/// scopes and roles, the [`DefaultAccess`] for a method without a rule; health
/// and reflection public; each refusal logged at `info` and counted in
/// `tai_server_access_refusals{reason}` ([`AccessReason`]).
///
/// Usually made by [`Server::add_service_with_rules`](crate::server::Server::add_service_with_rules);
/// on a tonic server, put it inside [`AuthLayer`](super::AuthLayer) (add it
/// after), whose [`allow_anonymous`](super::AuthLayer::allow_anonymous) lets
/// calls without a token reach the public methods.
///
/// ```
/// use tai_runtime::policy::{AccessRule, AccessTable, MethodAccess};
/// use tai_runtime::server::auth::{AccessLayer, DefaultAccess};
///
/// const RULES: AccessTable = AccessTable::new(
///     "demo.Kv",
///     &[MethodAccess::new("/demo.Kv/Put").with_rule(AccessRule::scopes(&["kv.write"]))],
/// );
/// let layer = AccessLayer::new(DefaultAccess::Deny).table(RULES);
/// assert_eq!(layer.rule("/demo.Kv/Put"), Some(AccessRule::scopes(&["kv.write"])));
/// assert_eq!(layer.rule("/grpc.health.v1.Health/Check"), Some(AccessRule::PUBLIC));
/// assert_eq!(layer.rule("/demo.Kv/Get"), None);
/// ```
#[derive(Clone, Debug)]
pub struct AccessLayer {
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
struct Shared {
    rules: HashMap<&'static str, AccessRule>,
    default: DefaultAccess,
    refusals: Box<[Counter; AccessReason::ALL.len()]>,
}

impl AccessLayer {
    /// No rules yet; a method without one is treated as `default` says.
    pub fn new(default: DefaultAccess) -> Self {
        Self {
            shared: Arc::new(Shared {
                rules: HashMap::new(),
                default,
                refusals: Box::new(
                    AccessReason::ALL.map(|r| Metrics::global().server_access_refusals(r.as_str())),
                ),
            }),
        }
    }

    /// Adds the rules of one service; a method already ruled keeps its first rule.
    #[must_use]
    pub fn table(mut self, table: AccessTable) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        for method in table.methods {
            if let Some(rule) = method.rule {
                shared.rules.entry(method.path).or_insert(rule);
            }
        }
        self
    }

    /// What a method without a rule gets.
    #[must_use]
    pub fn default_access(mut self, default: DefaultAccess) -> Self {
        Arc::make_mut(&mut self.shared).default = default;
        self
    }

    /// The rule applied to `path`: its table's, public for health and
    /// reflection, else `None` (the [`DefaultAccess`]).
    pub fn rule(&self, path: &str) -> Option<AccessRule> {
        self.shared.rule(path)
    }
}

impl Shared {
    fn rule(&self, path: &str) -> Option<AccessRule> {
        self.rules.get(path).copied().or_else(|| {
            PUBLIC_BY_DEFAULT
                .iter()
                .any(|prefix| path.starts_with(prefix))
                .then_some(AccessRule::PUBLIC)
        })
    }

    /// The refusal of a call to `path` by `identity`, if it is refused.
    fn check(&self, path: &str, identity: Option<&Identity>) -> Option<(AccessReason, Status)> {
        let Some(rule) = self.rule(path) else {
            return match self.default {
                DefaultAccess::Allow => None,
                DefaultAccess::Deny => Some((
                    AccessReason::NoRule,
                    Status::permission_denied(
                        "this method declares no access rule, and the server refuses such calls",
                    ),
                )),
            };
        };
        if rule.public {
            return None;
        }
        let needs_identity = rule.required || !rule.scopes.is_empty() || !rule.roles.is_empty();
        let Some(identity) = identity else {
            return needs_identity.then(|| {
                (
                    AccessReason::NoIdentity,
                    Status::unauthenticated("this method needs an identity: send a bearer token"),
                )
            });
        };
        let missing = |wanted: &'static [&'static str], held: &[String]| -> Vec<&'static str> {
            wanted
                .iter()
                .copied()
                .filter(|w| !held.iter().any(|h| h == w))
                .collect()
        };
        let scopes = missing(rule.scopes, &identity.scopes);
        let roles = missing(rule.roles, &identity.roles);
        if scopes.is_empty() && roles.is_empty() {
            return None;
        }
        let mut lacks = Vec::new();
        if !scopes.is_empty() {
            lacks.push(format!("scope {}", scopes.join(", ")));
        }
        if !roles.is_empty() {
            lacks.push(format!("role {}", roles.join(", ")));
        }
        let reason = if scopes.is_empty() {
            AccessReason::MissingRole
        } else {
            AccessReason::MissingScope
        };
        Some((
            reason,
            Status::permission_denied(format!("the caller lacks {}", lacks.join(" and "))),
        ))
    }

    /// Counts and logs a refusal (the audit event).
    #[cold]
    #[inline(never)]
    fn audit<B>(
        &self,
        request: &http::Request<B>,
        identity: Option<&Identity>,
        reason: AccessReason,
        status: &Status,
    ) {
        self.refusals[reason as usize].inc();
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let subject = identity.and_then(|i| i.subject.as_deref());
        tracing::info!(
            method = request.uri().path(),
            reason = reason.as_str(),
            subject = subject,
            peer = ?peer,
            "call refused as {:?}: {}",
            status.code(),
            status.message()
        );
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = CheckAccess<S>;

    fn layer(&self, inner: S) -> CheckAccess<S> {
        CheckAccess {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`AccessLayer`] wraps around a server (or one service: it
/// keeps the service's name for tonic's router).
#[derive(Clone)]
pub struct CheckAccess<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for CheckAccess<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckAccess")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: NamedService> NamedService for CheckAccess<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CheckAccess<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let identity = request.extensions().get::<Identity>();
        match self.shared.check(request.uri().path(), identity) {
            None => ResponseFuture::admitted(self.inner.call(request)),
            Some((reason, status)) => {
                self.shared.audit(&request, identity, reason, &status);
                ResponseFuture::refused(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MethodAccess;

    const RULES: AccessTable = AccessTable {
        service: "demo.Kv",
        methods: &[
            MethodAccess {
                path: "/demo.Kv/Put",
                rule: Some(AccessRule {
                    scopes: &["kv.write", "kv.read"],
                    roles: &["writer"],
                    ..AccessRule::AUTHENTICATED
                }),
            },
            MethodAccess {
                path: "/demo.Kv/Get",
                rule: None,
            },
        ],
    };

    fn identity(scopes: &[&str], roles: &[&str]) -> Identity {
        Identity {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            ..Identity::default()
        }
    }

    #[test]
    fn names_every_missing_scope_and_role() {
        let layer = AccessLayer::new(DefaultAccess::Deny).table(RULES);
        let who = identity(&["kv.read"], &[]);
        let (reason, status) = layer.shared.check("/demo.Kv/Put", Some(&who)).unwrap();
        assert_eq!(reason, AccessReason::MissingScope);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "the caller lacks scope kv.write and role writer"
        );
        let who = identity(&["kv.read", "kv.write"], &["writer"]);
        assert!(layer.shared.check("/demo.Kv/Put", Some(&who)).is_none());
        let (reason, _) = layer.shared.check("/demo.Kv/Put", None).unwrap();
        assert_eq!(reason, AccessReason::NoIdentity);
    }

    #[test]
    fn no_rule_follows_the_default() {
        let deny = AccessLayer::new(DefaultAccess::Deny).table(RULES);
        let (reason, _) = deny.shared.check("/demo.Kv/Get", None).unwrap();
        assert_eq!(reason, AccessReason::NoRule);
        assert!(
            deny.shared
                .check("/grpc.health.v1.Health/Check", None)
                .is_none()
        );
        let allow = deny.default_access(DefaultAccess::Allow);
        assert!(allow.shared.check("/demo.Kv/Get", None).is_none());
        assert!(allow.shared.check("/made.Up/Path", None).is_none());
    }

    #[test]
    fn labels_are_in_order() {
        for (i, r) in AccessReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
