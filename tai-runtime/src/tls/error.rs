//! What went wrong with TLS, in words a person acts on.
//!
//! One opaque [`TlsError`] with a small public [`TlsErrorKind`] to match on: each
//! failure people actually meet (a missing file, a PEM without a certificate, a
//! key of another certificate, an expired certificate, a peer from another CA, a
//! name mismatch, a plaintext peer) is its own kind, and the message names the
//! file or the peer it is about, so the fix is obvious from the log line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use tokio_rustls::rustls;

use crate::BoxError;

/// The kind of a [`TlsError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// A file is missing or cannot be read.
    Unreadable,
    /// A file is not valid PEM (cut short, bad base64, a broken marker line).
    InvalidPem,
    /// A PEM file holds no `CERTIFICATE` section.
    NoCertificate,
    /// A PEM file holds no private key (PKCS#8, RSA or EC).
    NoPrivateKey,
    /// A certificate's DER is not a valid X.509 certificate.
    InvalidCertificate,
    /// A private key the crypto provider cannot use.
    InvalidKey,
    /// The private key is not the key of the certificate.
    KeyMismatch,
    /// A certificate is past its `notAfter` time.
    Expired,
    /// A certificate is before its `notBefore` time.
    NotYetValid,
    /// The peer's certificate is not signed by a CA of our bundle.
    UnknownCa,
    /// The server's certificate is not valid for the name we connected to.
    HostnameMismatch,
    /// The client presented no certificate and one is required.
    NoPeerCertificate,
    /// The peer refused our certificate (it sent a TLS alert).
    RefusedByPeer,
    /// The peer does not speak TLS (a plaintext client, say).
    NotTls,
    /// The server name to verify is neither a DNS name nor an IP address.
    InvalidServerName,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other handshake failure.
    Handshake,
    /// The connection failed (refused, reset).
    Io,
    /// The configuration cannot be built (an empty CA bundle, no tokio runtime).
    Config,
}

/// A TLS failure: its [`kind`](TlsError::kind), and the file or peer it is about.
///
/// ```
/// use tai_runtime::tls::{ServerTls, TlsErrorKind};
///
/// let err = ServerTls::from_pem("/nowhere/ca.crt", "/nowhere/tls.crt", "/nowhere/tls.key")
///     .unwrap_err();
/// assert_eq!(err.kind(), TlsErrorKind::Unreadable);
/// assert!(err.to_string().contains("/nowhere/"), "{err}");
/// ```
pub struct TlsError {
    inner: Box<Inner>,
}

struct Inner {
    kind: TlsErrorKind,
    subject: Subject,
    detail: String,
    source: Option<BoxError>,
}

enum Subject {
    File(PathBuf),
    Peer(String),
    None,
}

impl TlsError {
    fn new(kind: TlsErrorKind, subject: Subject, detail: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                subject,
                detail: detail.into(),
                source: None,
            }),
        }
    }

    /// An error about the file at `path`.
    pub(crate) fn file(kind: TlsErrorKind, path: &Path, detail: impl Into<String>) -> Self {
        Self::new(kind, Subject::File(path.to_owned()), detail)
    }

    /// An error about the peer at `peer` (an address or a server name).
    pub(crate) fn peer(kind: TlsErrorKind, peer: &str, detail: impl Into<String>) -> Self {
        Self::new(kind, Subject::Peer(peer.to_owned()), detail)
    }

    /// An error about the configuration as a whole.
    pub(crate) fn config(detail: impl Into<String>) -> Self {
        Self::new(TlsErrorKind::Config, Subject::None, detail)
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// A failed handshake or connection with `peer`, classified.
    pub(crate) fn handshake(peer: &str, error: io::Error) -> Self {
        let tls = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .cloned();
        match tls {
            Some(tls) => {
                let (kind, detail) = classify(&tls);
                Self::peer(kind, peer, detail).with_source(tls)
            }
            None if error.kind() == io::ErrorKind::UnexpectedEof => Self::peer(
                TlsErrorKind::Handshake,
                peer,
                "the connection closed during the handshake",
            )
            .with_source(error),
            None => Self::peer(TlsErrorKind::Io, peer, "connection failed").with_source(error),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> TlsErrorKind {
        self.inner.kind
    }

    /// The file the error is about, if it is about a file.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.subject {
            Subject::File(path) => Some(path),
            _ => None,
        }
    }

    /// The peer (address or server name) the error is about, if any.
    pub fn peer_name(&self) -> Option<&str> {
        match &self.inner.subject {
            Subject::Peer(peer) => Some(peer),
            _ => None,
        }
    }
}

/// The kind and a sentence for a rustls handshake error.
fn classify(error: &rustls::Error) -> (TlsErrorKind, String) {
    use TlsErrorKind as K;
    use rustls::CertificateError as C;
    use rustls::Error as E;
    let kind = match error {
        E::NoCertificatesPresented => {
            return (
                K::NoPeerCertificate,
                "presented no client certificate, and one is required".into(),
            );
        }
        E::InvalidCertificate(cert) => match cert {
            C::Expired | C::ExpiredContext { .. } => K::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => K::NotYetValid,
            C::UnknownIssuer | C::BadSignature => K::UnknownCa,
            C::NotValidForName | C::NotValidForNameContext { .. } => K::HostnameMismatch,
            _ => K::Handshake,
        },
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            return (
                K::NotTls,
                "sent something other than TLS (a plaintext client?)".into(),
            );
        }
        E::AlertReceived(alert) => {
            return (
                K::RefusedByPeer,
                format!("refused the handshake ({alert:?})"),
            );
        }
        _ => K::Handshake,
    };
    let detail = match kind {
        K::UnknownCa => format!("presented a certificate not signed by a trusted CA: {error}"),
        K::Expired => format!("presented an expired certificate: {error}"),
        K::NotYetValid => format!("presented a certificate that is not valid yet: {error}"),
        K::HostnameMismatch => format!("presented a certificate for another name: {error}"),
        _ => format!("handshake failed: {error}"),
    };
    (kind, detail)
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.subject {
            Subject::File(path) => write!(f, "{}: {}", path.display(), self.inner.detail),
            Subject::Peer(peer) => write!(f, "peer {peer}: {}", self.inner.detail),
            Subject::None => write!(f, "TLS: {}", self.inner.detail),
        }
    }
}

impl fmt::Debug for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsError")
            .field("kind", &self.inner.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<TlsError> for io::Error {
    /// Keeps the `TlsError` as the source, so a channel's connection error reads
    /// as the TLS reason and can be downcast back.
    fn from(error: TlsError) -> Self {
        match error.kind() {
            TlsErrorKind::Timeout => io::Error::new(io::ErrorKind::TimedOut, error),
            _ => io::Error::other(error),
        }
    }
}
