//! A certificate set as another issuer writes it, made at test time.
//!
//! `mesh serve --tls-dir` and `mesh call --tls-dir` must take any issuer's PEM
//! files, not only the EC P-256 PKCS#8 ones `mesh certs` writes. OpenSSL's
//! defaults are the common other shape: an RSA CA, an RSA server key in PKCS#1
//! (`BEGIN RSA PRIVATE KEY`) and an EC client key in SEC1 (`BEGIN EC PRIVATE
//! KEY`). The keys are generated here (from a fixed seed, so a failure
//! reproduces) rather than checked in: no private key lives in the repository.

use std::path::Path;

use rand_chacha_10::SeedableRng;
use rand_chacha_10::rngs::ChaCha8Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SanType,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// The client certificate's identity.
pub const CLIENT_SPIFFE_ID: &str = "spiffe://tai.local/openssl/client";

/// Writes `ca.pem`, `server.pem` + `server.key` (RSA 2048, PKCS#1, for
/// `localhost` and `127.0.0.1`) and `client.pem` + `client.key` (EC P-256,
/// SEC1) into `dir`, the way `openssl genrsa -traditional` / `openssl ecparam
/// -genkey` and `openssl x509 -req` would. The CA's key is thrown away.
pub fn write_to(dir: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7a1);

    let ca_rsa = rsa::PrivateKey::new(&mut rng, 2048).expect("CA RSA key");
    let ca_key = rsa_key_pair(&ca_rsa);
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = name("openssl test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca, &ca_key);

    let server_rsa = rsa::PrivateKey::new(&mut rng, 2048).expect("server RSA key");
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server.distinguished_name = name("openssl test server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&rsa_key_pair(&server_rsa), &issuer)
        .unwrap();
    let server_key = server_rsa.to_pkcs1_pem(LineEnding::LF).unwrap();

    let client_ec = {
        use p256::elliptic_curve::Generate;
        p256::SecretKey::generate_from_rng(&mut rng)
    };
    let client_pkcs8 = client_ec.to_pkcs8_pem(LineEnding::LF).unwrap();
    let client_pair = KeyPair::from_pkcs8_pem_and_sign_algo(&client_pkcs8, &PKCS_ECDSA_P256_SHA256)
        .expect("client key for rcgen");
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name = name("openssl test client");
    client
        .subject_alt_names
        .push(SanType::URI(CLIENT_SPIFFE_ID.try_into().unwrap()));
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_pair, &issuer).unwrap();
    let client_key = client_ec.to_sec1_pem(LineEnding::LF).unwrap();

    assert!(server_key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(client_key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    for (file, text) in [
        ("ca.pem", ca_pem.as_str()),
        ("server.pem", &server_cert.pem()),
        ("server.key", &server_key),
        ("client.pem", &client_cert.pem()),
        ("client.key", &client_key),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// An RSA key as rcgen signs with it (rcgen on ring reads RSA keys, but
/// cannot make them).
fn rsa_key_pair(key: &rsa::PrivateKey) -> KeyPair {
    let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &PKCS_RSA_SHA256).expect("RSA key for rcgen")
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
