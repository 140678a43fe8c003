//! Loading PEM files into what rustls needs, refusing bad input with the file's
//! name.
//!
//! Everything that can be checked without a peer is checked here, when a pair is
//! loaded (at build time, and on every reload): the file exists, it is PEM, it
//! holds a certificate (or a key), each certificate is X.509, the leaf is within
//! its validity dates, and the key is the certificate's. A mistake then stops the
//! build — or, on reload, keeps the last good pair — instead of failing every
//! handshake later with a vaguer message.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::sign::CertifiedKey;

use super::error::{TlsError, TlsErrorKind};

/// Reads a whole file, naming it if it cannot.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| unreadable(path, e))
}

/// The same as [`read`], without blocking the runtime's thread.
pub(crate) async fn read_async(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path).await.map_err(|e| unreadable(path, e))
}

fn unreadable(path: &Path, e: std::io::Error) -> TlsError {
    let detail = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => format!("cannot read the file: {e}"),
    };
    TlsError::file(TlsErrorKind::Unreadable, path, detail).with_source(e)
}

fn invalid_pem(path: &Path, e: pem::Error) -> TlsError {
    TlsError::file(
        TlsErrorKind::InvalidPem,
        path,
        format!("not valid PEM (half-written?): {e}"),
    )
}

/// Every certificate of a PEM file, in order; at least one, each valid X.509.
pub(crate) fn certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            TlsErrorKind::NoCertificate,
            path,
            "no certificate in this PEM file (expected a `-----BEGIN CERTIFICATE-----` section)",
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert) {
            return Err(TlsError::file(
                TlsErrorKind::InvalidCertificate,
                path,
                format!(
                    "certificate #{} is not a valid X.509 certificate: {e}",
                    i + 1
                ),
            ));
        }
    }
    Ok(certs)
}

/// The private key of a PEM file: PKCS#8, RSA (PKCS#1) or EC (SEC1).
pub(crate) fn private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::file(
            TlsErrorKind::NoPrivateKey,
            path,
            "no private key in this PEM file (expected a PRIVATE KEY, RSA PRIVATE KEY \
             or EC PRIVATE KEY section)",
        ),
        e => invalid_pem(path, e),
    })
}

/// A CA bundle as rustls' trust anchors.
pub(crate) fn roots(path: &Path, bytes: &[u8]) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certificates(path, bytes)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            TlsError::file(
                TlsErrorKind::InvalidCertificate,
                path,
                format!("certificate #{} cannot be a trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and its key, checked to belong together and to be valid
/// now.
pub(crate) fn certified_key(
    (cert_path, cert_bytes): (&Path, &[u8]),
    (key_path, key_bytes): (&Path, &[u8]),
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert_path, cert_bytes)?;
    check_validity(cert_path, &chain[0], SystemTime::now())?;
    let key = private_key(key_path, key_bytes)?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        TlsError::file(
            TlsErrorKind::InvalidKey,
            key_path,
            format!("the private key cannot be used: {e}"),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::file(
                TlsErrorKind::KeyMismatch,
                key_path,
                format!(
                    "this private key is not the key of the certificate in {}",
                    cert_path.display()
                ),
            ))
        }
        // `Unknown`: the provider cannot tell; rustls accepts that too.
        _ => Ok(Arc::new(certified)),
    }
}

/// Refuses a leaf certificate outside its validity dates at `now`.
pub(crate) fn check_validity(
    path: &Path,
    cert: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
        TlsError::file(
            TlsErrorKind::InvalidCertificate,
            path,
            format!("not a valid X.509 certificate: {e}"),
        )
    })?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = parsed.validity();
    if now > validity.not_after.timestamp() {
        return Err(TlsError::file(
            TlsErrorKind::Expired,
            path,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if now < validity.not_before.timestamp() {
        return Err(TlsError::file(
            TlsErrorKind::NotYetValid,
            path,
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    struct Made {
        cert: String,
        key: String,
    }

    fn made(params: rcgen::CertificateParams) -> Made {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Made {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn good() -> Made {
        made(rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap())
    }

    fn load(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        certified_key(
            (Path::new("/etc/tls/tls.crt"), cert.as_bytes()),
            (Path::new("/etc/tls/tls.key"), key.as_bytes()),
            &crate::tls::provider(),
        )
    }

    fn assert_names(err: &TlsError, kind: TlsErrorKind, file: &str) {
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.path(), Some(Path::new(file)), "{err}");
        assert!(err.to_string().starts_with(file), "names the file: {err}");
    }

    #[test]
    fn a_good_pair_loads() {
        let pair = good();
        assert!(load(&pair.cert, &pair.key).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("ca.crt");
        let err = read(&path).unwrap_err();
        assert_eq!(err.kind(), TlsErrorKind::Unreadable);
        assert!(err.to_string().contains("ca.crt: no such file"), "{err}");
    }

    #[test]
    fn a_pem_without_certificate_is_named() {
        let pair = good();
        // A key where the certificate should be.
        let err = load(&pair.key, &pair.key).unwrap_err();
        assert_names(&err, TlsErrorKind::NoCertificate, "/etc/tls/tls.crt");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn a_pem_without_key_is_named() {
        let pair = good();
        let err = load(&pair.cert, &pair.cert).unwrap_err();
        assert_names(&err, TlsErrorKind::NoPrivateKey, "/etc/tls/tls.key");
    }

    #[test]
    fn a_half_written_pem_is_named() {
        let pair = good();
        let half = &pair.cert[..pair.cert.len() / 2];
        let err = load(half, &pair.key).unwrap_err();
        assert_names(&err, TlsErrorKind::InvalidPem, "/etc/tls/tls.crt");
    }

    #[test]
    fn a_certificate_that_is_not_x509_is_named() {
        let pair = good();
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let err = load(junk, &pair.key).unwrap_err();
        assert_names(&err, TlsErrorKind::InvalidCertificate, "/etc/tls/tls.crt");
    }

    #[test]
    fn an_unusable_key_is_named() {
        let pair = good();
        let junk = "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n";
        let err = load(&pair.cert, junk).unwrap_err();
        assert_names(&err, TlsErrorKind::InvalidKey, "/etc/tls/tls.key");
    }

    #[test]
    fn a_key_of_another_certificate_is_named() {
        let (one, other) = (good(), good());
        let err = load(&one.cert, &other.key).unwrap_err();
        assert_names(&err, TlsErrorKind::KeyMismatch, "/etc/tls/tls.key");
        assert!(
            err.to_string().contains("/etc/tls/tls.crt"),
            "names both: {err}"
        );
    }

    #[test]
    fn an_expired_certificate_is_named() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let pair = made(params);
        let err = load(&pair.cert, &pair.key).unwrap_err();
        assert_names(&err, TlsErrorKind::Expired, "/etc/tls/tls.crt");
        assert!(err.to_string().contains("2001"), "says when: {err}");
    }

    #[test]
    fn a_certificate_not_yet_valid_is_named() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(4000, 1, 1);
        params.not_after = rcgen::date_time_ymd(4001, 1, 1);
        let pair = made(params);
        let err = load(&pair.cert, &pair.key).unwrap_err();
        assert_names(&err, TlsErrorKind::NotYetValid, "/etc/tls/tls.crt");
    }

    #[test]
    fn pkcs8_rsa_and_ec_key_sections_are_read() {
        let pair = good();
        let key = private_key(Path::new("k"), pair.key.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let key = private_key(Path::new("k"), rsa.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs1(_)));
        let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let key = private_key(Path::new("k"), ec.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKeyDer::Sec1(_)));
    }

    #[test]
    fn an_empty_ca_bundle_is_named() {
        let err = roots(Path::new("/etc/tls/ca.crt"), b"").unwrap_err();
        assert_names(&err, TlsErrorKind::NoCertificate, "/etc/tls/ca.crt");
    }
}
