//! The keys tokens are verified with: [`JwtKey`] (an HMAC secret, an RSA, EC or
//! Ed25519 public key, each bound to the algorithms it may verify), the set of
//! them by `kid`, and a JWKS file that is read again when it changes.
//!
//! Why it is shaped so: the classic JWT attacks pick the algorithm or the key
//! through the token (`alg: none`, HS256 "signed" with an RSA public key as the
//! secret, a `jku`/`x5u`/`jwk` header pointing at the attacker's key). Here a
//! key is configured *with* its algorithms, a token's `kid` only chooses among
//! keys the server already has, and nothing is ever fetched: the JWKS document
//! is a local file, polled on an interval and swapped in whole (`ArcSwap`), so a
//! call reads the current set without a lock and a half-written file never
//! replaces a good one.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwt::ConfigError;
use super::refusal::{Reason, Refusal};

/// JWKS files larger than this are not read (a key set is a few KiB).
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// A key tokens may be signed with, bound to the one algorithm it verifies.
///
/// ```
/// use tai_runtime::server::auth::{Algorithm, JwtKey};
///
/// let key = JwtKey::hmac(b"a secret of at least thirty-two bytes!!", Algorithm::HS256)?
///     .with_kid("2026-11");
/// # Ok::<(), tai_runtime::server::auth::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<String>,
    /// One for keys configured in code; for a JWKS key without `alg`, every
    /// allowed algorithm of its family.
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`. The secret must be at
    /// least as long as the hash (32, 48, 64 bytes; RFC 7518 §3.2).
    pub fn hmac(secret: &[u8], algorithm: Algorithm) -> Result<Self, ConfigError> {
        let min = match algorithm {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        };
        if secret.len() < min {
            return Err(ConfigError::key(format!(
                "an HMAC secret for {algorithm:?} needs at least {min} bytes, this one has {}",
                secret.len()
            )));
        }
        Self::bound(DecodingKey::from_secret(secret), algorithm)
    }

    /// An RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`, or a
    /// certificate) for `RS256`..`RS512` or `PS256`..`PS512`.
    pub fn rsa_pem(pem: &[u8], algorithm: Algorithm) -> Result<Self, ConfigError> {
        Self::bound(DecodingKey::from_rsa_pem(pem), algorithm)
    }

    /// An EC public key in PEM (P-256 for `ES256`, P-384 for `ES384`).
    pub fn ec_pem(pem: &[u8], algorithm: Algorithm) -> Result<Self, ConfigError> {
        Self::bound(DecodingKey::from_ec_pem(pem), algorithm)
    }

    /// An Ed25519 public key in PEM, for `EdDSA`.
    pub fn ed_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        Self::bound(DecodingKey::from_ed_pem(pem), Algorithm::EdDSA)
    }

    /// Names the key: tokens choose it by this `kid` in their header. A server
    /// with one key may leave it unnamed; then tokens without `kid` use it.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithms tokens verified with this key may use.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    pub(super) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    fn bound(
        decoding: jsonwebtoken::errors::Result<DecodingKey>,
        algorithm: Algorithm,
    ) -> Result<Self, ConfigError> {
        let decoding =
            decoding.map_err(|e| ConfigError::key(format!("the key cannot be read: {e}")))?;
        if decoding.family() != algorithm.family() {
            return Err(ConfigError::key(format!(
                "a {:?} key cannot verify {algorithm:?}",
                decoding.family()
            )));
        }
        Ok(Self {
            kid: None,
            algorithms: vec![algorithm],
            decoding,
        })
    }

    /// A key of a JWKS document: its `alg` if it names one (it must be
    /// allowed), else every allowed algorithm of its family.
    fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Self, String> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err("its `use` is not `sig`".into());
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("it cannot be read: {e}"))?;
        let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
            Some(named) => {
                let alg = Algorithm::try_from(named)
                    .map_err(|_| format!("its `alg` {named} is not a signing algorithm"))?;
                if !allowed.contains(&alg) || alg.family() != decoding.family() {
                    return Err(format!("its `alg` {alg:?} is not allowed"));
                }
                vec![alg]
            }
            None => allowed
                .iter()
                .copied()
                .filter(|a| a.family() == decoding.family())
                .collect(),
        };
        if algorithms.is_empty() {
            return Err(format!(
                "no allowed algorithm is of its family ({:?})",
                decoding.family()
            ));
        }
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            algorithms,
            decoding,
        })
    }
}

/// A key and what verifying with it checks.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: JwtKey,
    pub(super) validation: Validation,
}

/// The keys by `kid`. Read on every call through an `ArcSwap` snapshot.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    by_kid: HashMap<String, Arc<Entry>>,
    /// The only key, when there is exactly one: tokens without `kid` use it.
    sole: Option<Arc<Entry>>,
}

impl KeySet {
    /// The set of `keys`, each checked with `rules` restricted to its
    /// algorithms. Two keys with one `kid`, or an unnamed key beside others,
    /// are an error: a token could not say which it means.
    pub(super) fn new(keys: Vec<JwtKey>, rules: &Validation) -> Result<Self, ConfigError> {
        let count = keys.len();
        let mut set = KeySet::default();
        for key in keys {
            let mut validation = rules.clone();
            validation.algorithms = key.algorithms.clone();
            let kid = key.kid.clone();
            let entry = Arc::new(Entry { key, validation });
            if count == 1 {
                set.sole = Some(Arc::clone(&entry));
            }
            match kid {
                Some(kid) => {
                    if set.by_kid.insert(kid.clone(), entry).is_some() {
                        return Err(ConfigError::key(format!("two keys have the kid {kid:?}")));
                    }
                }
                None if count == 1 => {}
                None => {
                    return Err(ConfigError::key(
                        "a key without a kid beside other keys: name every key with `with_kid`",
                    ));
                }
            }
        }
        Ok(set)
    }

    /// The key a token with `kid` (or none) is verified with.
    pub(super) fn find(&self, kid: Option<&str>) -> Result<&Entry, Refusal> {
        let found = match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.sole.as_ref(),
        };
        found.map(|e| &**e).ok_or_else(|| match kid {
            Some(_) => Refusal::new(
                Reason::UnknownKey,
                "token key id (`kid`) names no key this server has",
            ),
            None => Refusal::new(
                Reason::UnknownKey,
                "token has no key id (`kid`) and this server has several keys",
            ),
        })
    }

    /// The `kid`s of the keys, sorted.
    pub(super) fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }
}

/// A JWKS file and how often it is read again.
#[derive(Clone, Debug)]
pub(super) struct JwksFile {
    pub(super) path: PathBuf,
    pub(super) every: Duration,
}

/// What builds a key set: the keys configured in code, the JWKS file, and the
/// rules every key checks.
#[derive(Debug)]
pub(super) struct KeySource {
    pub(super) fixed: Vec<JwtKey>,
    pub(super) jwks: Option<JwksFile>,
    pub(super) rules: Validation,
}

impl KeySource {
    /// The set from the fixed keys and the JWKS document `bytes`.
    fn build(&self, jwks: Option<&[u8]>) -> Result<KeySet, ConfigError> {
        let mut keys = self.fixed.clone();
        if let (Some(bytes), Some(file)) = (jwks, &self.jwks) {
            keys.extend(parse_jwks(bytes, &self.rules.algorithms, &file.path)?);
        }
        KeySet::new(keys, &self.rules)
    }

    /// Reads the JWKS file (if any) and builds the first set; with a JWKS file,
    /// also starts the task that reads it again (on the current tokio runtime).
    pub(super) fn start(self) -> Result<Arc<ArcSwap<KeySet>>, ConfigError> {
        let Some(file) = self.jwks.clone() else {
            return Ok(Arc::new(ArcSwap::from_pointee(self.build(None)?)));
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::jwks(
                &file.path,
                "reloading it needs a tokio runtime: build inside one",
            )
        })?;
        let bytes = read_jwks(&file.path).map_err(|e| ConfigError::jwks(&file.path, e))?;
        let first = self.build(Some(&bytes))?;
        if first.by_kid.is_empty() && first.sole.is_none() {
            return Err(ConfigError::jwks(
                &file.path,
                "it has no key this server can use",
            ));
        }
        let set = Arc::new(ArcSwap::from_pointee(first));
        runtime.spawn(watch(Arc::downgrade(&set), self, file, bytes));
        Ok(set)
    }
}

/// Reads `file` every `file.every` and swaps in the keys when its contents
/// change and make a valid set; a file that cannot be read or used leaves the
/// keys as they were (and is logged once per change). Ends when the set is
/// dropped.
async fn watch(set: Weak<ArcSwap<KeySet>>, source: KeySource, file: JwksFile, mut last: Vec<u8>) {
    let start = tokio::time::Instant::now() + file.every;
    let mut ticks = tokio::time::interval_at(start, file.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        ticks.tick().await;
        if set.strong_count() == 0 {
            return;
        }
        let path = file.path.clone();
        let read = tokio::task::spawn_blocking(move || read_jwks(&path))
            .await
            .unwrap_or_else(|e| Err(format!("the reading task failed: {e}")));
        let outcome = match read {
            Ok(bytes) if bytes == last => Ok(None),
            Ok(bytes) => source
                .build(Some(&bytes))
                .map(|keys| Some((keys, bytes)))
                .map_err(|e| e.to_string()),
            Err(e) => Err(ConfigError::jwks(&file.path, e).to_string()),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some((keys, bytes))) => {
                let Some(set) = set.upgrade() else { return };
                tracing::info!(path = %file.path.display(), kids = ?keys.kids(), "JWKS reloaded");
                set.store(Arc::new(keys));
                last = bytes;
                last_error = None;
            }
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "JWKS not reloaded; keeping the keys in use");
                    last_error = Some(e);
                }
            }
        }
    }
}

fn read_jwks(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("it cannot be opened: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("it is larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The usable keys of a JWKS document. Keys this server cannot or may not use
/// (encryption keys, algorithms outside the allow-list, unknown key types) are
/// skipped with a warning, as other JWKS consumers do; a document that is not
/// `{"keys": [...]}` is an error.
fn parse_jwks(
    bytes: &[u8],
    allowed: &[Algorithm],
    path: &Path,
) -> Result<Vec<JwtKey>, ConfigError> {
    let not_jwks = |e: &dyn fmt::Display| {
        ConfigError::jwks(
            path,
            format!("it is not a JWKS document ({{\"keys\": [...]}}): {e}"),
        )
    };
    let mut document: Value = serde_json::from_slice(bytes).map_err(|e| not_jwks(&e))?;
    let Some(Value::Array(entries)) = document.get_mut("keys").map(Value::take) else {
        return Err(not_jwks(&"it has no `keys` array"));
    };
    let mut keys = Vec::with_capacity(entries.len());
    for (i, value) in entries.into_iter().enumerate() {
        let key = match serde_json::from_value::<Jwk>(value) {
            Err(e) => Err(format!("key {i} is not a JWK: {e}")),
            Ok(jwk) => JwtKey::from_jwk(&jwk, allowed).map_err(|e| {
                let kid = jwk.common.key_id.as_deref().unwrap_or("(none)");
                format!("key {i} (kid {kid:?}) is skipped: {e}")
            }),
        };
        match key {
            Ok(key) => keys.push(key),
            Err(e) => tracing::warn!(path = %path.display(), "JWKS: {e}"),
        }
    }
    Ok(keys)
}
