//! Mutual TLS on rustls, both sides, with certificates reloaded while serving.
//!
//! Certificates come from PEM files (a CA bundle, a certificate chain, a private
//! key) because that is what every issuer writes — cert-manager, Vault, SPIRE's
//! helper, `openssl`. The files are *polled*, not watched: Kubernetes rotates a
//! mounted secret by swapping a symlinked directory, which file watches miss, and
//! a poll every few seconds costs nothing. Each side keeps its rustls
//! configuration in an [`ArcSwap`](arc_swap::ArcSwap): a handshake takes the
//! configuration of the moment, so new handshakes use a new pair as soon as it is
//! loaded and open connections are never touched. A pair that does not load (a
//! half-written file, a key that does not match its certificate) is refused,
//! logged and counted (`tai_tls_reloads_total{outcome="rejected"}`), and the last
//! good pair keeps serving.
//!
//! - [`ServerTls`]: the server's acceptor; [`ServerTls::incoming`] feeds tonic's
//!   `serve_with_incoming`, and handlers read the client's [`PeerIdentity`] from
//!   the request's extensions.
//! - [`ClientTls`]: a [`Connector`](crate::channel::Connector) for
//!   [`Channel`](crate::Channel): TCP, then TLS with ALPN `h2` and the server's
//!   name (by default the host of the address).
//! - [`TlsError`]: what went wrong, as a [`TlsErrorKind`] plus the file or the
//!   peer it is about.
//!
//! rustls' safe defaults hold throughout: TLS 1.3 and 1.2 only, its default
//! cipher suites, the WebPKI verifier on both sides; there is no way to turn
//! verification off.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tai_runtime::channel::{Channel, Endpoints};
//! use tai_runtime::tls::ClientTls;
//!
//! let tls = ClientTls::from_pem("/etc/tls/ca.crt", "/etc/tls/tls.crt", "/etc/tls/tls.key")?;
//! let channel = Channel::builder(Endpoints::one("https://scheduler.internal:7000"))
//!     .connector(tls)
//!     .build()?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod identity;
mod pem;
mod reload;
mod server;

use std::sync::Arc;

use tokio_rustls::rustls;

pub use client::{ClientTls, ClientTlsBuilder};
pub use error::{TlsError, TlsErrorKind};
pub use identity::{PeerIdentity, TlsConnectInfo};
pub use reload::ReloadStats;
pub use server::{ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT, ServerTls, ServerTlsBuilder};
#[cfg(feature = "server")]
pub use server::{MAX_HANDSHAKES, TlsIncoming, TlsIo};

/// How often certificate files are polled unless configured otherwise.
pub const DEFAULT_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The ALPN protocol both sides offer: gRPC runs on HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// The crypto provider: ring, which builds with a C compiler alone (aws-lc-rs
/// brings the much larger aws-lc-sys C build). rustls 0.23.48 deprecates it for lacking post-quantum key
/// exchange (X25519MLKEM768); the classical groups it has are rustls' defaults
/// before that. Moving to aws-lc-rs changes this one function.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2, nothing older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
