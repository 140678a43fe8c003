//! The access rules of a hand-written trait: `KvClient::ACCESS_RULES` is the
//! resolved `auth(..)` of each method, in declaration order, usable in `const`
//! context (checked here at compile time and again when run).
#![deny(warnings, missing_docs)]

use std::future::Future;

use tai_runtime::Status;
use tai_runtime::policy::{AccessRule, AccessTable};

/// A message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {}

/// Reads need `kv.read`, unless a method says otherwise.
#[tai_macros::resilient(service = "demo.v1.Kv", auth(scopes = ["kv.read"]))]
pub trait Kv {
    /// Inherits the trait's rule.
    fn get(&self, request: Entry) -> impl Future<Output = Result<Entry, Status>> + Send;
    /// Its own scope and a role, replacing the inherited scope.
    #[tai_macros::resilient(auth(scopes = ["kv.write"], roles = ["admin"]))]
    fn put(&self, request: Entry) -> impl Future<Output = Result<Entry, Status>> + Send;
    /// Open to anyone.
    #[tai_macros::resilient(auth(public))]
    fn ping(&self, request: Entry) -> impl Future<Output = Result<Entry, Status>> + Send;
}

/// A trait without any `auth`: every method follows the server's default.
#[tai_macros::resilient(service = "demo.v1.Open")]
pub trait Open {
    /// No rule.
    fn echo(&self, request: Entry) -> impl Future<Output = Result<Entry, Status>> + Send;
}

const RULES: AccessTable = KvClient::ACCESS_RULES;
const _: () = assert!(RULES.methods.len() == 3);

fn main() {
    assert_eq!(RULES.service, "demo.v1.Kv");
    let paths: Vec<&str> = RULES.methods.iter().map(|m| m.path).collect();
    assert_eq!(paths, ["/demo.v1.Kv/Get", "/demo.v1.Kv/Put", "/demo.v1.Kv/Ping"]);
    assert_eq!(RULES.rule("/demo.v1.Kv/Get"), Some(AccessRule::scopes(&["kv.read"])));
    assert_eq!(
        RULES.rule("/demo.v1.Kv/Put"),
        Some(AccessRule::scopes(&["kv.write"]).with_roles(&["admin"]))
    );
    assert_eq!(RULES.rule("/demo.v1.Kv/Ping"), Some(AccessRule::PUBLIC));
    assert_eq!(OpenClient::ACCESS_RULES.rule("/demo.v1.Open/Echo"), None);
}
