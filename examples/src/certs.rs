//! Development certificates for the mesh: a CA, a server certificate and a client
//! certificate, made with rcgen.
//!
//! `mesh certs --out DIR` writes them for `mesh serve --tls-dir` and `mesh call
//! --tls-dir`; the tour makes a fresh set in a temporary directory at every start
//! and keeps the CA ([`DevCa`]) to sign a new server pair mid-tour
//! ([`rotate_server_pair`]).
//! They are for development only: a one-day-old throwaway CA whose key sits next
//! to the certificates it signed. The client certificate carries a SPIFFE id, as a
//! mesh workload's would, so the server can show whose call it is.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The SPIFFE id in the client certificate.
pub const CLIENT_SPIFFE_ID: &str = "spiffe://tai.local/mesh/client";

/// The file names [`DevCerts::write`] uses, as `mesh serve --tls-dir` reads them.
pub mod files {
    /// The CA certificate (the trust bundle of both sides).
    pub const CA: &str = "ca.pem";
    /// The server's certificate chain.
    pub const SERVER_CERT: &str = "server.pem";
    /// The server's private key (PKCS#8).
    pub const SERVER_KEY: &str = "server.key";
    /// The client's certificate chain.
    pub const CLIENT_CERT: &str = "client.pem";
    /// The client's private key (PKCS#8).
    pub const CLIENT_KEY: &str = "client.key";
}

/// A development CA and the certificates it signed, as PEM text.
#[derive(Clone)]
pub struct DevCerts {
    /// The CA certificate.
    pub ca: String,
    /// The server certificate (for [`SERVER_NAMES`]).
    pub server_cert: String,
    /// The server key.
    pub server_key: String,
    /// The client certificate (with [`CLIENT_SPIFFE_ID`]).
    pub client_cert: String,
    /// The client key.
    pub client_key: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

impl DevCerts {
    /// A new CA and a server and a client certificate signed by it.
    ///
    /// ```
    /// let certs = tai_examples::certs::DevCerts::generate().unwrap();
    /// assert!(certs.ca.starts_with("-----BEGIN CERTIFICATE-----"));
    /// ```
    pub fn generate() -> Result<Self, rcgen::Error> {
        DevCa::generate()?.certs()
    }

    /// Writes the five files (see [`files`]) into `dir`, creating it; keys are
    /// readable by their owner only. Returns the paths written.
    pub fn write(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for (file, text, secret) in [
            (files::CA, &self.ca, false),
            (files::SERVER_CERT, &self.server_cert, false),
            (files::SERVER_KEY, &self.server_key, true),
            (files::CLIENT_CERT, &self.client_cert, false),
            (files::CLIENT_KEY, &self.client_key, true),
        ] {
            let path = dir.join(file);
            write_file(&path, text, secret)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// A development CA that can go on signing: the tour keeps it to rotate the
/// server certificate while serving.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, as PEM text.
#[derive(Clone)]
pub struct DevPair {
    /// The certificate.
    pub cert: String,
    /// The certificate, DER (to recognise it in a handshake).
    pub cert_der: Vec<u8>,
    /// The private key (PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for DevPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPair").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed CA.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("tai mesh development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key)?.pem();
        Ok(Self { params, key, pem })
    }

    /// The CA certificate.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA and a server and a client pair it signed, as [`DevCerts`].
    pub fn certs(&self) -> Result<DevCerts, rcgen::Error> {
        let server = self.server_pair()?;
        let client = self.client_pair()?;
        Ok(DevCerts {
            ca: self.pem.clone(),
            server_cert: server.cert,
            server_key: server.key,
            client_cert: client.cert,
            client_key: client.key,
        })
    }

    /// A new server pair (for [`SERVER_NAMES`], new key) signed by this CA.
    ///
    /// ```
    /// let ca = tai_examples::certs::DevCa::generate().unwrap();
    /// let (one, two) = (ca.server_pair().unwrap(), ca.server_pair().unwrap());
    /// assert_ne!(one.cert, two.cert);
    /// ```
    pub fn server_pair(&self) -> Result<DevPair, rcgen::Error> {
        let mut server = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())?;
        server.distinguished_name = name("tai mesh server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(server)
    }

    /// A new client pair (with [`CLIENT_SPIFFE_ID`]) signed by this CA.
    pub fn client_pair(&self) -> Result<DevPair, rcgen::Error> {
        let mut client = CertificateParams::new(vec!["mesh-client".to_owned()])?;
        client.distinguished_name = name("tai mesh client");
        client
            .subject_alt_names
            .push(SanType::URI(CLIENT_SPIFFE_ID.try_into()?));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(client)
    }

    fn sign(&self, params: CertificateParams) -> Result<DevPair, rcgen::Error> {
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(DevPair {
            cert: cert.pem(),
            cert_der: cert.der().to_vec(),
            key: key.serialize_pem(),
        })
    }
}

/// Replaces the server pair in `dir` with `pair`, each file by an atomic
/// rename (so a reader sees the old file or the new one, never half of one):
/// the key first, then the certificate. A reload polled between the two sees
/// a key of another certificate, refuses it and keeps the old pair, and takes
/// the new pair at the next poll.
pub fn rotate_server_pair(dir: &Path, pair: &DevPair) -> io::Result<()> {
    for (file, text, secret) in [
        (files::SERVER_KEY, &pair.key, true),
        (files::SERVER_CERT, &pair.cert, false),
    ] {
        let staged = dir.join(format!(".{file}.new"));
        write_file(&staged, text, secret)?;
        std::fs::rename(&staged, dir.join(file))?;
    }
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(unix)]
fn write_file(path: &Path, text: &str, secret: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_file(path: &Path, text: &str, _secret: bool) -> io::Result<()> {
    std::fs::write(path, text)
}
