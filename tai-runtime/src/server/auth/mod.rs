//! Authentication for tai servers: bearer JWTs checked before a call reaches
//! its handler, and the caller's [`Identity`] handed to the handler.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use tai_runtime::server::auth::{Algorithm, AuthLayer, JwtAuth};
//!
//! let auth = JwtAuth::builder()
//!     .audience("scheduler")
//!     .issuer("https://login.example.com")
//!     .algorithms([Algorithm::RS256, Algorithm::ES256])
//!     // The identity provider's keys, read again when the file changes.
//!     .jwks_file("/etc/tai/jwks.json")
//!     .build()?;
//!
//! tonic::transport::Server::builder()
//!     .layer(AuthLayer::new(auth))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A handler reads who called with [`Identity::of`]: subject, issuer,
//! audience, scopes (`scope` or `scp`), roles, expiry, every claim, and the
//! client certificate's names when the TLS layer proved one.
//!
//! # What is checked
//!
//! In this order, each failure answering UNAUTHENTICATED with a sentence that
//! names the problem ("token expired", "token audience is not accepted", "no
//! bearer token") and never the token or a key, with a `www-authenticate`
//! entry in the form of RFC 6750; the handler does not run:
//! - one `authorization: Bearer <token>` entry, the token at most
//!   [`MAX_TOKEN_BYTES`] (larger ones are not parsed);
//! - the header's `alg`: never `none`, and in the server's allow-list
//!   ([`JwtAuthBuilder::algorithms`]); the server never lets the token choose;
//! - the header's `kid`: one of the server's keys ([`JwtKey`], or a JWKS file),
//!   configured for that algorithm — so an HS256 token "signed" with an RSA
//!   public key as its secret is refused; `jku`, `x5u` and `jwk` headers are
//!   ignored, nothing is fetched;
//! - the signature;
//! - `exp` (required), `nbf` (when present), each with a small leeway
//!   ([`DEFAULT_LEEWAY`]), and as numbers: `"exp": "soon"` is refused;
//! - `aud` and `iss` (required), against the configured audiences and issuers;
//! - `sub`, `scope`, `scp` and the roles claim, when present, of the right type.
//!
//! # Refusals
//!
//! Each is logged at `info` level (method, [`Reason`], peer address; never the
//! token) and counted in `tai_server_auth_refusals{reason}`, whose label set is
//! [`Reason::ALL`]. Put [`ServerLayer`](super::ServerLayer) outside this layer
//! (add it first) to see them among the calls, as UNAUTHENTICATED.
//!
//! # Access rules
//!
//! Who may call which method is declared with the method's policy
//! (`auth: { scopes: ["policies.write"] }` in the `.proto` file) and enforced
//! by [`AccessLayer`], inside this layer: see [`access`](AccessLayer) and
//! [`Server::add_service_with_rules`](crate::server::Server::add_service_with_rules).
//!
//! # Layout
//!
//! `jwt.rs` holds the rules and the validation, `keys.rs` the keys and the JWKS
//! reload, `identity.rs` the [`Identity`], `refusal.rs` the reasons,
//! `layer.rs` the layer, its service and its future, and `access.rs` the
//! access rules.

mod access;
mod identity;
mod jwt;
mod keys;
mod layer;
mod refusal;

pub use access::{AccessLayer, AccessReason, CheckAccess, DefaultAccess};
pub use identity::Identity;
pub use jsonwebtoken::Algorithm;
pub use jwt::{
    ConfigError, DEFAULT_JWKS_RELOAD, DEFAULT_LEEWAY, DEFAULT_ROLES_CLAIM, JwtAuth, JwtAuthBuilder,
    MAX_TOKEN_BYTES,
};
pub use keys::JwtKey;
pub use layer::{AuthLayer, Authenticate, ResponseFuture};
pub use refusal::{Reason, Refusal};
