//! The mesh's authentication: which JWTs a mesh server accepts, and the
//! development tokens `mesh token` and the tour mint.
//!
//! A server verifies with one of three key sources (an HS256 secret, a PEM
//! public key, or a JWKS file) and requires the configured audience and
//! issuer. What a caller may do is not decided here: the mesh protos declare
//! it per method (reads need `<service>.read`, writes `<service>.write`,
//! health is public), and [`MeshServer`](crate::server::MeshServer) enforces
//! those rules once authentication is on.
//!
//! Minting exists for development only: a token signed with the shared secret
//! the server was started with. Production tokens come from an identity
//! provider, verified with `--jwt-public-key` or `--jwks`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use tai_runtime::server::auth::{Algorithm, ConfigError, JwtAuth, JwtKey};

/// The audience mesh servers accept and `mesh token` writes, unless told otherwise.
pub const DEFAULT_AUDIENCE: &str = "tai-mesh";

/// The issuer mesh servers accept and `mesh token` writes, unless told otherwise.
pub const DEFAULT_ISSUER: &str = "mesh-dev";

/// What a mesh server verifies tokens with.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// An HS256 shared secret (at least 32 bytes): development, and the tour.
    Secret(String),
    /// A PEM public key (RSA for RS256, EC P-256 for ES256, Ed25519 for EdDSA).
    PublicKey(PathBuf),
    /// A JWKS document, read again when it changes.
    Jwks(PathBuf),
}

/// Which tokens a mesh server accepts.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// The keys.
    pub keys: KeySource,
    /// The `aud` required.
    pub audience: String,
    /// The `iss` required.
    pub issuer: String,
}

impl JwtSettings {
    /// Settings for an HS256 `secret`, with the default audience and issuer.
    pub fn secret(secret: impl Into<String>) -> Self {
        Self {
            keys: KeySource::Secret(secret.into()),
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
        }
    }

    /// The validator. With a JWKS file, call it inside a tokio runtime (the
    /// file is watched from it).
    ///
    /// # Errors
    ///
    /// A key that does not load (named with its file), or a secret too short.
    pub fn build(&self) -> Result<JwtAuth, AuthSetupError> {
        let builder = JwtAuth::builder()
            .audience(&self.audience)
            .issuer(&self.issuer);
        match &self.keys {
            KeySource::Secret(secret) => builder
                .algorithms([Algorithm::HS256])
                .key(JwtKey::hmac(secret.as_bytes(), Algorithm::HS256)?),
            KeySource::PublicKey(path) => {
                let key = public_key(path)?;
                builder.algorithms(key.algorithms().to_vec()).key(key)
            }
            KeySource::Jwks(path) => builder
                .algorithms([
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::ES256,
                    Algorithm::ES384,
                    Algorithm::EdDSA,
                ])
                .jwks_file(path),
        }
        .build()
        .map_err(AuthSetupError::from)
    }

    /// A development token for `subject` with `scopes`, living `ttl`, signed
    /// with the secret; `None` unless the keys are a secret (a server that
    /// verifies with a public key cannot mint).
    pub fn mint(&self, subject: &str, scopes: &[String], ttl: Duration) -> Option<String> {
        let KeySource::Secret(secret) = &self.keys else {
            return None;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = serde_json::json!({
            "sub": subject,
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now.as_secs(),
            "exp": (now + ttl).as_secs(),
            "scope": scopes.join(" "),
        });
        let key = EncodingKey::from_secret(secret.as_bytes()).ok()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).ok()
    }
}

/// A server's authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The settings are incomplete or a key is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The public key file cannot be read.
    #[error("cannot read the public key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a public key tai can verify with.
    #[error("{0} is not a PEM public key of RSA, EC P-256 or Ed25519")]
    NotAKey(String),
}

/// The PEM public key at `path`, of whichever kind it is.
fn public_key(path: &std::path::Path) -> Result<JwtKey, AuthSetupError> {
    let pem = std::fs::read(path).map_err(|source| AuthSetupError::Read {
        path: path.display().to_string(),
        source,
    })?;
    JwtKey::rsa_pem(&pem, Algorithm::RS256)
        .or_else(|_| JwtKey::ec_pem(&pem, Algorithm::ES256))
        .or_else(|_| JwtKey::ed_pem(&pem))
        .map_err(|_| AuthSetupError::NotAKey(path.display().to_string()))
}

/// The scopes that let a caller read and write every mesh service.
pub fn all_scopes() -> Vec<String> {
    ["governor", "coordinator", "scheduler"]
        .iter()
        .flat_map(|s| [format!("{s}.read"), format!("{s}.write")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a development secret of 32+ bytes!";

    #[test]
    fn a_minted_token_passes_the_servers_check_with_its_scopes() {
        let settings = JwtSettings::secret(SECRET);
        let token = settings
            .mint(
                "ada",
                &["governor.read".to_owned()],
                Duration::from_secs(60),
            )
            .unwrap();
        let identity = settings.build().unwrap().validate(&token).unwrap();
        assert_eq!(identity.subject.as_deref(), Some("ada"));
        assert_eq!(identity.scopes, ["governor.read"]);
    }

    #[test]
    fn another_secret_or_audience_refuses_it() {
        let token = JwtSettings::secret(SECRET)
            .mint("ada", &[], Duration::from_secs(60))
            .unwrap();
        let other = JwtSettings::secret("another secret, also 32 bytes long");
        assert!(other.build().unwrap().validate(&token).is_err());
        let elsewhere = JwtSettings {
            audience: "elsewhere".to_owned(),
            ..JwtSettings::secret(SECRET)
        };
        assert!(elsewhere.build().unwrap().validate(&token).is_err());
    }

    #[test]
    fn a_short_secret_is_refused_at_start() {
        let err = JwtSettings::secret("short").build().unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[test]
    fn a_public_key_file_loads_whatever_its_kind_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&pem, key.public_key_pem()).unwrap();
        let settings = |path: &std::path::Path| JwtSettings {
            keys: KeySource::PublicKey(path.to_owned()),
            ..JwtSettings::secret(SECRET)
        };
        assert!(settings(&pem).build().is_ok());

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        let err = settings(&junk).build().unwrap_err();
        assert!(
            err.to_string().contains("junk.pem is not a PEM public key"),
            "{err}"
        );
        let err = settings(&dir.path().join("missing.pem"))
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot read the public key"),
            "{err}"
        );
    }

    #[test]
    fn a_public_key_source_cannot_mint() {
        let settings = JwtSettings {
            keys: KeySource::PublicKey("key.pem".into()),
            ..JwtSettings::secret(SECRET)
        };
        assert!(settings.mint("ada", &[], Duration::from_secs(60)).is_none());
    }
}
