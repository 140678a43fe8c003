//! Development certificates for the mesh: a CA, a server certificate and a client
//! certificate, made with rcgen.
//!
//! `mesh certs --out DIR` writes them for `mesh serve --tls-dir` and `mesh call
//! --tls-dir`; the tour makes a fresh set in a temporary directory at every start.
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
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("tai mesh development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())?;
        server.distinguished_name = name("tai mesh server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(vec!["mesh-client".to_owned()])?;
        client.distinguished_name = name("tai mesh client");
        client
            .subject_alt_names
            .push(SanType::URI(CLIENT_SPIFFE_ID.try_into()?));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
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
