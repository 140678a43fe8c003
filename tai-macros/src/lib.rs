//! The `#[resilient]` attribute: the resilience policy of each RPC, written on a Rust
//! trait, becomes a typed gRPC client whose retry, hedging, circuit breaker and
//! deadlines are compiled in.
//!
//! Use it through `tai_runtime::resilient`, which re-exports it. `tai-build` writes
//! this same attribute from the options of a `.proto` file, so everything below holds
//! for generated code too: one grammar, one validator (`tai-model`), one expansion.
//!
//! # Example
//!
//! ```
//! use std::future::Future;
//!
//! use tai_macros::resilient; // re-exported as `tai_runtime::resilient`
//! use tai_runtime::Status;
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Policy {
//!     #[prost(string, tag = "1")]
//!     pub name: String,
//! }
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Receipt {
//!     #[prost(uint64, tag = "1")]
//!     pub version: u64,
//! }
//!
//! /// Every method inherits the service level: a 30 s deadline and a breaker.
//! #[resilient(service = "tai.v1.Governor", timeout = "30s", breaker = default)]
//! pub trait Governor {
//!     /// Safe to repeat, so it may retry on ABORTED too.
//!     #[resilient(idempotent, timeout = "2s", retry(max_attempts = 4, codes = [UNAVAILABLE, ABORTED]))]
//!     fn propose_policy(&self, request: Policy)
//!         -> impl Future<Output = Result<Receipt, Status>> + Send;
//!
//!     /// No attribute: the service level applies as is.
//!     async fn current_policy(&self, request: Receipt) -> Result<Policy, Status>;
//! }
//!
//! async fn propose() -> Result<Receipt, Box<dyn std::error::Error>> {
//!     // `GovernorClient` was generated next to the trait.
//!     let client = GovernorClient::connect("http://127.0.0.1:50051").await?;
//!     // tonic's call shape: a message or a `Request` in, a `Response` out.
//!     let mut request = tai_runtime::Request::new(Policy { name: "quota".into() });
//!     request.set_timeout(std::time::Duration::from_millis(500));
//!     Ok(client.propose_policy(request).await?.into_inner())
//! }
//! ```
//!
//! A method may also be written as tonic writes it, `Request` in and `Response`
//! out (`fn propose_policy(&self, request: Request<Policy>) -> impl Future<Output =
//! Result<Response<Receipt>, Status>> + Send`); then the trait's methods keep the
//! metadata too. The generated client's own methods have tonic's shape either
//! way: `impl IntoRequest<Policy>` in, `Response<Receipt>` out.
//!
//! # Where the attribute goes
//!
//! - **On the trait** (required): the service and the defaults of every method.
//!   `#[resilient(service = "pkg.Service", <policy keys>)]`. `service` is the fully
//!   qualified proto name; it defaults to the trait's name. `#[resilient]` alone is
//!   fine.
//! - **On a method** (optional): `#[resilient(name = "Method", <policy keys>)]`.
//!   `name` is the proto method name; it defaults to the method's name in
//!   UpperCamelCase (`propose_policy` → `ProposePolicy`, `r#type` → `Type`). A method
//!   without the attribute inherits the trait's values.
//!
//! Method values override the trait's **field by field**: a method that writes
//! `retry(max_attempts = 2)` under a trait with `retry(codes = [..])` keeps the codes.
//! `none` turns an inherited setting off. A method that turns hedging on turns an
//! inherited retry off, and the other way round.
//!
//! # Policy keys
//!
//! The same keys are accepted on the trait and on methods. Durations are strings of
//! a number and a unit — `ns`, `us`, `ms`, `s`, `m`, `h` — such as `"250ms"`, `"2s"`,
//! `"1.5m"`. Status codes are written by their spec name (`UNAVAILABLE`) or their Rust
//! variant (`Unavailable`); a string (`"UNAVAILABLE"`) works too.
//!
//! | key | forms | meaning |
//! |---|---|---|
//! | `idempotent` | `idempotent`, `idempotent = true \| false` | The method is safe to run more than once. Default `false`. |
//! | `timeout` | `timeout = "2s"`, `timeout = none` | Deadline of the whole call, all attempts included. Default none. |
//! | `max_timeout` | `max_timeout = "60s"` | Upper bound on any deadline, including one a caller asks for; also clamps `timeout`. |
//! | `retry` | `retry = 3`, `retry = default`, `retry = none`, `retry(..)` | gRFC A6 retry; `retry = N` sets `max_attempts`. |
//! | `hedging` | `hedging = default`, `hedging = none`, `hedging(..)` | gRFC A6 hedging: send again after `delay` without waiting for a failure. |
//! | `breaker` | `breaker = default`, `breaker = none`, `breaker(..)` | Circuit breaker per method. |
//! | `throttle` | `throttle = default`, `throttle = none`, `throttle(..)` | A6 retry throttling, shared by the whole client: **trait only**. |
//! | `auth` | `auth(required)`, `auth(scopes = ["kv.write"], roles = ["admin"])`, `auth(public)` | Who may call: the server checks it (`ACCESS_RULES`, below). Scopes or roles imply `required`; `public` opens a method up and takes nothing else. |
//!
//! Inside the parentheses (every field optional; an unset one is inherited, else
//! defaulted):
//!
//! | policy | field | default |
//! |---|---|---|
//! | `retry(..)` | `max_attempts = 4` (attempts including the first; at least 2; above 5 runs as 5) | `3` |
//! | | `initial_backoff = "100ms"` | `"100ms"` |
//! | | `max_backoff = "10s"` (cap before the ±20 % jitter) | `"10s"` |
//! | | `multiplier = 2.0` (growth per retry, > 0) | `2.0` |
//! | | `codes = [UNAVAILABLE, ABORTED]` (retried codes; not empty) | `[UNAVAILABLE]` |
//! | `hedging(..)` | `max_attempts = 3` (at least 2) | `2` |
//! | | `delay = "50ms"` (between starting attempts) | `"100ms"` |
//! | | `non_fatal_codes = [UNAVAILABLE]` (codes that let the other attempts go on) | `[]` |
//! | `breaker(..)` | `failure_threshold = 5` (consecutive failures that trip it) | `5` |
//! | | `open_timeout = "30s"` (open time before probing; doubles per failed probe) | `"30s"` |
//! | | `max_open_timeout = "5m"` (cap on the open time) | `"5m"` |
//! | | `half_open_max_calls = 3` (probes; all must succeed to close) | `3` |
//! | | `failure_rate = 0.5` (trip ratio in (0, 1]) or `failure_rate = none` (rule off) | `0.5` |
//! | | `window = "10s"` (sliding window of the rate rule) | `"10s"` |
//! | | `min_calls = 20` (calls in the window before the rate rule may trip) | `20` |
//! | | `failure_codes = [..]` (codes that count as failures; not empty) | `[UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED]` |
//! | `throttle(..)` | `max_tokens = 10` (bucket size, 1..=1000) | `10` |
//! | | `token_ratio = 0.5` (tokens returned per success, > 0) | `0.1` |
//!
//! Rules that tie fields together, checked once the levels are combined:
//!
//! - Retry and hedging exclude each other on one method.
//! - A method that is not `idempotent` may retry only on `UNAVAILABLE` (the code that
//!   proves the server did not run it) and may not hedge.
//! - A client-streaming or bidi method cannot retry or hedge: its requests are a
//!   stream that cannot be re-sent. One it inherits is dropped; one it asks for is an
//!   error.
//! - `initial_backoff` may not exceed `max_backoff`.
//! - A retried or hedged request is shared by its attempts (never cloned), so it
//!   needs no `Clone`.
//!
//! # Method shapes
//!
//! Every item of the trait is an RPC that takes `&self` and one request:
//!
//! ```text
//! fn name(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
//! async fn name(&self, request: Req) -> Result<Resp, Status>;
//! ```
//!
//! The `async fn` form is rewritten into the first, which promises `Send`. Paths are
//! matched by their last segment, so `std::future::Future`, `tonic::Status` and
//! `tai_runtime::Status` all work. The kind is read from the types:
//!
//! | request | response | kind |
//! |---|---|---|
//! | `Req` | `Resp` | unary |
//! | `Req` | `ResponseStream<Resp>` | server streaming |
//! | `RequestStream<Req>` | `Resp` | client streaming |
//! | `RequestStream<Req>` | `ResponseStream<Resp>` | bidi streaming |
//!
//! `Req` and `Resp` are prost messages. Generic methods, other receivers, default
//! bodies, `cfg` on methods, and associated consts or types are errors.
//!
//! # What it generates
//!
//! For `pub trait Governor`, next to the trait (written back without the attributes):
//!
//! - `pub struct GovernorClient<T = tai_runtime::Channel>`, with the trait's
//!   visibility, documented with each method's resolved policy. Cloning it is cheap;
//!   clones share breakers and the throttle.
//! - `GovernorClient::connect(address)` (with the default channel), `new(transport)`
//!   and `From<T>` for any `T: tai_runtime::Transport` (a tai or tonic `Channel`, or
//!   any tower service speaking gRPC wrapped in `tai_runtime::Tower`). An RPC
//!   named `new` or `connect` takes precedence over the constructor of that name;
//!   `From` always works.
//! - One inherent method per RPC, with the trait's name and request type, and `impl
//!   Governor for GovernorClient<T>`, so code can be generic over the trait and a
//!   test can implement it by hand.
//! - `impl tai_runtime::Resilient for GovernorClient<T>`: breaker states, retry tokens
//!   and the compiled-in policy.
//! - A hidden `static` of plain policy data, which the client reads; the methods
//!   refer to it by index.
//! - `GovernorClient::ACCESS_RULES`, a `tai_runtime::policy::AccessTable`: each
//!   method's resolved `auth(..)` rule, for the server that implements the trait.
//!   Serve it with `Server::builder().add_service_with_rules(service,
//!   GovernorClient::ACCESS_RULES)`: a call without an identity where one is
//!   required is refused UNAUTHENTICATED, one lacking a scope or role
//!   PERMISSION_DENIED naming it, and a method without a rule follows the
//!   server's default. (tai-build's `governor_server::ACCESS_RULES` is this
//!   same table.)
//!
//! # Errors
//!
//! Every mistake is reported in one compilation, at the token that is wrong: an
//! unknown key lists the valid keys, an unknown code lists the valid codes, a bad
//! duration is reported on its string, and a rule that ties two fields together on
//! the innermost level that wrote one of them. If only policies are wrong, the client is still generated (from the policies
//! as written), so that an IDE and the code using the client keep working while the
//! errors are fixed. A type the runtime cannot use (not a prost message, or not
//! `Send + Sync + 'static`) is reported at the type.

#![forbid(unsafe_code)]

mod attr;
mod client;
mod ctxt;
mod doc;
mod expand;
mod policy;
mod shape;
mod tokens;
mod values;

/// Turns a trait describing a gRPC service into a resilient client with the policy
/// written in the attribute.
///
/// ```text
/// #[resilient(service = "pkg.Service", timeout = "30s", breaker = default)]
/// pub trait Service {
///     #[resilient(idempotent, retry(max_attempts = 4, codes = [UNAVAILABLE, ABORTED]))]
///     fn method(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
/// }
/// // generates `ServiceClient`, which implements `Service`
/// ```
///
/// The whole grammar, the defaults and the rules are in the documentation of the
/// [`tai_macros`](crate) crate.
#[proc_macro_attribute]
pub fn resilient(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand::expand(args.into(), item.into()).into()
}
