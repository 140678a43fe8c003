//! Who the peer of a TLS connection is: its verified certificate chain and the
//! names its certificate holds.
//!
//! Made once per connection, after rustls has verified the chain against our CA
//! bundle, and shared by every request on that connection (an `Arc`, cloned into
//! each request's extensions by tonic). Authorization reads the SAN names —
//! DNS names and URIs, a SPIFFE id being a `spiffe://` URI — not the subject's
//! common name, which X.509 verification ignores.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The verified identity of a TLS peer.
///
/// On a server fed by [`ServerTls::incoming`](super::ServerTls::incoming),
/// handlers and layers find it in the request's extensions:
///
/// ```
/// use tai_runtime::tls::PeerIdentity;
///
/// fn caller(request: &tonic::Request<()>) -> Option<&str> {
///     PeerIdentity::of(request)?.spiffe_id()
/// }
/// # assert_eq!(caller(&tonic::Request::new(())), None);
/// ```
#[derive(Clone)]
pub struct PeerIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    chain: Vec<CertificateDer<'static>>,
    dns_names: Vec<String>,
    uris: Vec<String>,
    serial: String,
}

impl PeerIdentity {
    /// The identity of a verified chain (leaf first); `None` for an empty chain.
    pub(crate) fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        // rustls has verified the chain: the leaf parses. Should it not, the
        // identity still carries the chain, with no names.
        let mut serial = String::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
            serial = serial_hex(cert.raw_serial());
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                        GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                        _ => {}
                    }
                }
            }
        }
        Some(Self {
            inner: Arc::new(Inner {
                chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
                dns_names,
                uris,
                serial,
            }),
        })
    }

    /// The identity tonic put in `request`'s extensions, if the connection was
    /// accepted by [`ServerTls`](super::ServerTls) and the client presented a
    /// certificate.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
        Self::from_extensions(request.extensions())
    }

    /// The identity in `extensions` (of a `tonic::Request` or, in a tower layer,
    /// of an `http::Request`).
    pub fn from_extensions(extensions: &http::Extensions) -> Option<&PeerIdentity> {
        // tai's `Server` puts it in the connection's `ConnectInfo` (one
        // extension fewer per call: a request's fourth makes its map grow);
        // tonic's `serve_with_incoming` over `ServerTls` in `TlsConnectInfo`.
        #[cfg(feature = "server")]
        if let Some(identity) = extensions
            .get::<crate::server::ConnectInfo>()
            .and_then(crate::server::ConnectInfo::identity)
        {
            return Some(identity);
        }
        extensions
            .get::<TlsConnectInfo>()
            .and_then(|info| info.identity.as_ref())
    }

    /// The verified chain, leaf first, as the peer sent it.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    /// The DNS names of the leaf's subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.inner.dns_names
    }

    /// The URIs of the leaf's subject alternative names.
    pub fn uris(&self) -> &[String] {
        &self.inner.uris
    }

    /// The SPIFFE id (`spiffe://trust-domain/path`), if the leaf has one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.inner
            .uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .map(String::as_str)
    }

    /// The leaf's serial number in lowercase hex, without separators or leading
    /// zero bytes (`c9` for 201).
    pub fn serial(&self) -> &str {
        &self.inner.serial
    }
}

/// A serial number's value in lowercase hex: DER's sign-padding zero bytes off.
fn serial_hex(der: &[u8]) -> String {
    let start = der
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(der.len().saturating_sub(1));
    der[start..].iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("dns_names", &self.inner.dns_names)
            .field("uris", &self.inner.uris)
            .field("serial", &self.inner.serial)
            .field("chain_len", &self.inner.chain.len())
            .finish()
    }
}

/// What tonic puts in each request's extensions for a connection accepted by
/// [`ServerTls`](super::ServerTls): the addresses and the client's identity.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsConnectInfo {
    /// Our address.
    pub local_addr: Option<SocketAddr>,
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's verified identity; `None` when client certificates are
    /// optional and it sent none.
    pub identity: Option<PeerIdentity>,
}
