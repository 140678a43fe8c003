use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Req {}

// Access rules: each malformed name at its string, and `public` beside a rule
// that asks for an identity, or scopes on a rule that needs none, at the key.
#[resilient(service = "x.v1.Svc", auth(scopes = ["policies.read"]))]
pub trait Svc {
    #[resilient(auth(scopes = ["", "policies write", "ok"], roles = [admin]))]
    fn bad_names(&self, request: Req) -> impl Future<Output = Result<Req, Status>> + Send;
    #[resilient(auth(public, scopes = ["policies.write"]))]
    fn public_with_scopes(&self, request: Req) -> impl Future<Output = Result<Req, Status>> + Send;
    #[resilient(auth(required = false, roles = ["admin"]))]
    fn roles_without_identity(&self, request: Req) -> impl Future<Output = Result<Req, Status>> + Send;
    // Fine: `public` on a method replaces the service's rule.
    #[resilient(auth(public))]
    fn health(&self, request: Req) -> impl Future<Output = Result<Req, Status>> + Send;
}

fn main() {}
