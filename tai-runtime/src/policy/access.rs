//! The access rules a server enforces: [`AccessRule`] (who may call a method),
//! gathered per service into an [`AccessTable`] of [`MethodAccess`] entries.
//!
//! Why plain `const` data: tai-build writes one table per service from the
//! `.proto` file's resolved rules (`ACCESS_RULES`), and the server's
//! `AccessLayer` looks a call's path up in it; nothing here runs a check.

/// Who may call a method: the access rule a `.proto` file or `#[resilient]`
/// attribute declares (`auth: { required: true, scopes: ["policies.write"] }`),
/// enforced by the server's [`AccessLayer`](crate::server::auth::AccessLayer).
///
/// A `public` rule lets every call through, with or without an identity.
/// Otherwise a call without an identity is refused as UNAUTHENTICATED (if
/// `required`, which scopes and roles imply), and one whose identity lacks a
/// listed scope or role as PERMISSION_DENIED.
///
/// ```
/// use tai_runtime::policy::AccessRule;
///
/// const WRITE: AccessRule = AccessRule::scopes(&["policies.write"]);
/// assert!(WRITE.required && !WRITE.public);
/// assert!(AccessRule::PUBLIC.public);
///
/// const ADMIN_WRITE: AccessRule = AccessRule::scopes(&["policies.write"]).with_roles(&["admin"]);
/// assert_eq!(ADMIN_WRITE.roles, ["admin"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessRule {
    /// A caller must present an identity.
    pub required: bool,
    /// Anyone may call; the other fields are then empty.
    pub public: bool,
    /// Scopes the caller's identity must all hold.
    pub scopes: &'static [&'static str],
    /// Roles the caller's identity must all hold.
    pub roles: &'static [&'static str],
}

impl AccessRule {
    /// Anyone may call.
    pub const PUBLIC: AccessRule = AccessRule {
        required: false,
        public: true,
        scopes: &[],
        roles: &[],
    };

    /// Any caller with an identity may call.
    pub const AUTHENTICATED: AccessRule = AccessRule {
        required: true,
        public: false,
        scopes: &[],
        roles: &[],
    };

    /// A caller need not present an identity (`auth: { required: false }`): calls
    /// pass as under [`PUBLIC`](Self::PUBLIC), but the rule does not open the
    /// method to anyone over an outer rule the way `public` does.
    pub const OPTIONAL: AccessRule = AccessRule {
        required: false,
        ..AccessRule::AUTHENTICATED
    };

    /// A caller with an identity holding every scope in `scopes`.
    pub const fn scopes(scopes: &'static [&'static str]) -> AccessRule {
        AccessRule {
            scopes,
            ..AccessRule::AUTHENTICATED
        }
    }

    /// A caller with an identity holding every role in `roles`.
    pub const fn roles(roles: &'static [&'static str]) -> AccessRule {
        AccessRule {
            roles,
            ..AccessRule::AUTHENTICATED
        }
    }

    /// This rule, also asking for every scope in `scopes` (which needs an identity).
    pub const fn with_scopes(mut self, scopes: &'static [&'static str]) -> AccessRule {
        self.scopes = scopes;
        self.required = true;
        self.public = false;
        self
    }

    /// This rule, also asking for every role in `roles` (which needs an identity).
    pub const fn with_roles(mut self, roles: &'static [&'static str]) -> AccessRule {
        self.roles = roles;
        self.required = true;
        self.public = false;
        self
    }
}

/// One method's entry in an [`AccessTable`].
///
/// ```
/// use tai_runtime::policy::{AccessRule, MethodAccess};
///
/// const PING: MethodAccess = MethodAccess::new("/demo.Kv/Ping").with_rule(AccessRule::PUBLIC);
/// assert_eq!(PING.rule, Some(AccessRule::PUBLIC));
/// assert_eq!(MethodAccess::new("/demo.Kv/Get").rule, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodAccess {
    /// The HTTP/2 path, e.g. `"/tai.v1.Governor/ProposePolicy"`.
    pub path: &'static str,
    /// The method's rule; `None` follows the server's default.
    pub rule: Option<AccessRule>,
}

impl MethodAccess {
    /// The method at `path`, with no rule of its own (the server's default applies).
    pub const fn new(path: &'static str) -> MethodAccess {
        MethodAccess { path, rule: None }
    }

    /// This method, under `rule`.
    pub const fn with_rule(mut self, rule: AccessRule) -> MethodAccess {
        self.rule = Some(rule);
        self
    }
}

/// The access rules of one service, by method: `#[resilient]` writes one per trait
/// as `GovernorClient::ACCESS_RULES` (from its `auth(..)`), tai-build names it
/// `governor_server::ACCESS_RULES` in the generated server module, and
/// [`Server::add_service_with_rules`](crate::server::Server::add_service_with_rules)
/// enforces it.
///
/// ```
/// use tai_runtime::policy::{AccessRule, AccessTable, MethodAccess};
///
/// const RULES: AccessTable = AccessTable::new(
///     "demo.Kv",
///     &[
///         MethodAccess::new("/demo.Kv/Get").with_rule(AccessRule::scopes(&["kv.read"])),
///         MethodAccess::new("/demo.Kv/Ping").with_rule(AccessRule::PUBLIC),
///     ],
/// );
/// assert_eq!(RULES.rule("/demo.Kv/Ping"), Some(AccessRule::PUBLIC));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessTable {
    /// The fully qualified service name, e.g. `"tai.v1.Governor"`.
    pub service: &'static str,
    /// Every method, in declaration order.
    pub methods: &'static [MethodAccess],
}

impl AccessTable {
    /// The table of `service` (its fully qualified name), one entry per method.
    /// See the type's example.
    pub const fn new(service: &'static str, methods: &'static [MethodAccess]) -> AccessTable {
        AccessTable { service, methods }
    }

    /// The rule of the method at `path`, if the table has one.
    pub fn rule(&self, path: &str) -> Option<AccessRule> {
        self.methods
            .iter()
            .find(|m| m.path == path)
            .and_then(|m| m.rule)
    }
}
