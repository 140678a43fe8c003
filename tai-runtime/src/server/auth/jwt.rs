//! Validating a bearer JWT: [`JwtAuth`], built once from the server's rules
//! (audiences, issuers, the algorithm allow-list, keys, leeway), then asked on
//! every call who the token in `authorization: Bearer <jwt>` says the caller is.
//!
//! Why it is shaped so: `jsonwebtoken` checks signatures and claims well, but
//! only the claims it is told to (`aud`, `iss` and `nbf` are optional unless
//! configured), and it takes the algorithm to try from the caller. So the order
//! here is fixed and each step decides from the server's configuration alone:
//! size (over [`MAX_TOKEN_BYTES`] is refused unread), then the header is read
//! only for `alg` and `kid`; `alg` must be in the allow-list, `kid` chooses one
//! of the server's keys, and the key must be one configured for that algorithm
//! (an RSA key never verifies an HS256 token). Only then does `jsonwebtoken`
//! verify the signature and the claims, with `exp`, `aud` and `iss` required,
//! `nbf` checked when present, and a small leeway for clock skew. Every failure
//! is a [`Refusal`] whose message names the problem and never the token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::identity::Identity;
use super::keys::{JwksFile, JwtKey, KeySet, KeySource};
use super::refusal::{Reason, Refusal};

/// Tokens longer than this (8 KiB) are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The clock skew allowed on `exp` and `nbf` unless
/// [`leeway`](JwtAuthBuilder::leeway) says otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// How often a JWKS file is read again unless
/// [`jwks_reload_every`](JwtAuthBuilder::jwks_reload_every) says otherwise.
pub const DEFAULT_JWKS_RELOAD: Duration = Duration::from_secs(30);

/// The claim roles are read from unless [`roles_claim`](JwtAuthBuilder::roles_claim)
/// names another.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// A configuration the server cannot start with: what is wrong, in a sentence.
///
/// ```
/// use tai_runtime::server::auth::{Algorithm, JwtAuth, JwtKey};
///
/// let error = JwtKey::hmac(b"too short", Algorithm::HS256).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "JWT key: an HMAC secret for HS256 needs at least 32 bytes, this one has 9"
/// );
/// let error = JwtAuth::builder().issuer("https://login.example.com").build().unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "JWT: no audience: tokens must name this server (`audience`)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub(super) fn key(problem: impl fmt::Display) -> Self {
        Self::new(format!("JWT key: {problem}"))
    }

    pub(super) fn jwks(path: &Path, problem: impl fmt::Display) -> Self {
        Self::new(format!("JWKS file {}: {problem}", path.display()))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The server's rules for bearer JWTs, and its keys; see the
/// [module docs](super) for what is checked, in which order.
///
/// Clones share the keys (and the JWKS reload). Build it with
/// [`JwtAuth::builder`]:
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::server::auth::{Algorithm, JwtAuth, JwtKey};
///
/// # fn run(rsa_public_pem: &[u8]) -> Result<(), tai_runtime::server::auth::ConfigError> {
/// let auth = JwtAuth::builder()
///     .audience("scheduler")
///     .issuer("https://login.example.com")
///     .algorithms([Algorithm::RS256])
///     .key(JwtKey::rsa_pem(rsa_public_pem, Algorithm::RS256)?.with_kid("2026-11"))
///     .leeway(Duration::from_secs(10))
///     .build()?;
/// # let _ = auth; Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtAuth {
    shared: Arc<Shared>,
}

struct Shared {
    keys: Arc<ArcSwap<KeySet>>,
    algorithms: Vec<Algorithm>,
    roles_claim: String,
    audiences: Vec<String>,
    issuers: Vec<String>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("JwtAuth")
            .field("audiences", &s.audiences)
            .field("issuers", &s.issuers)
            .field("algorithms", &s.algorithms)
            .field("kids", &self.key_ids())
            .field("roles_claim", &s.roles_claim)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// A builder; `audience`, `issuer`, `algorithms` and at least one key (or a
    /// JWKS file) are required.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder::default()
    }

    /// Who the bearer token in `headers` (`authorization: Bearer <jwt>`) says
    /// the caller is, or why it is refused.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Refusal> {
        self.validate(bearer_token(headers)?)
    }

    /// Who `token` (a compact JWT) says the caller is, or why it is refused.
    ///
    /// ```
    /// use tai_runtime::server::auth::{Algorithm, JwtAuth, JwtKey, Reason};
    ///
    /// let auth = JwtAuth::builder()
    ///     .audience("scheduler")
    ///     .issuer("https://login.example.com")
    ///     .algorithms([Algorithm::HS256])
    ///     .key(JwtKey::hmac(&[7; 32], Algorithm::HS256)?)
    ///     .build()?;
    /// // {"alg":"none"}.{"sub":"mallory"}.
    /// let refused = auth.validate("eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.").unwrap_err();
    /// assert_eq!(refused.reason(), Reason::Unsigned);
    /// assert_eq!(refused.message(), "unsigned tokens (`alg: none`) are not accepted");
    /// # Ok::<(), tai_runtime::server::auth::ConfigError>(())
    /// ```
    pub fn validate(&self, token: &str) -> Result<Identity, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(too_large());
        }
        let (alg, kid) = self.read_header(token)?;
        let keys = self.shared.keys.load();
        let entry = keys.find(kid.as_deref())?;
        if !entry.key.algorithms().contains(&alg) {
            return Err(Refusal::new(
                Reason::AlgorithmNotAllowed,
                format!("token algorithm {alg:?} is not the one its key is used with"),
            ));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            entry.key.decoding(),
            &entry.validation,
        )
        .map_err(|e| match e.kind() {
            // jsonwebtoken counts a claim it cannot read as a number or string
            // as absent; say what is wrong with it.
            ErrorKind::MissingRequiredClaim(claim) if has_claim(token, claim) => {
                Refusal::wrong_type(claim)
            }
            _ => refusal_of(&e),
        })?;
        Identity::from_claims(data.claims, &self.shared.roles_claim)
    }

    /// The `kid`s of the keys in use now, sorted (after a JWKS reload, the new
    /// ones).
    pub fn key_ids(&self) -> Vec<String> {
        self.shared.keys.load().kids()
    }

    /// The token header's `alg` (allowed) and `kid`; nothing else of the header
    /// is used (`jku`, `x5u`, `jwk` are never followed).
    fn read_header(&self, token: &str) -> Result<(Algorithm, Option<String>), Refusal> {
        let malformed = |what: &'static str| Refusal::new(Reason::Malformed, what);
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                "token is not a JWT: it needs three base64url parts separated by dots",
            ));
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| malformed("token header is not base64url-encoded JSON"))?;
        let Some(Value::String(alg)) = header.get("alg") else {
            return Err(malformed("token header has no algorithm (`alg`)"));
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(Refusal::new(
                Reason::Unsigned,
                "unsigned tokens (`alg: none`) are not accepted",
            ));
        }
        // An unknown name is not echoed: it is the peer's text.
        let alg = Algorithm::from_str(alg)
            .ok()
            .filter(|a| self.shared.algorithms.contains(a))
            .ok_or_else(|| {
                Refusal::new(
                    Reason::AlgorithmNotAllowed,
                    format!(
                        "token algorithm is not one this server accepts ({})",
                        AlgorithmList(&self.shared.algorithms)
                    ),
                )
            })?;
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("token key id (`kid`) is not a string")),
        };
        Ok((alg, kid))
    }
}

/// Whether the payload of `token` (whose signature verified) has `claim`.
fn has_claim(token: &str, claim: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|claims| claims.contains_key(claim))
}

/// `RS256, ES256`: the server's allow-list, for messages.
struct AlgorithmList<'a>(&'a [Algorithm]);

impl fmt::Display for AlgorithmList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, alg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{alg:?}")?;
        }
        Ok(())
    }
}

fn too_large() -> Refusal {
    Refusal::new(
        Reason::TokenTooLarge,
        format!("bearer token is larger than {MAX_TOKEN_BYTES} bytes"),
    )
}

/// The token of `authorization: Bearer <token>`. The scheme is matched without
/// regard to case (RFC 7235); more than one `authorization` entry is refused.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::new(
            Reason::MissingToken,
            "no bearer token: send `authorization: Bearer <token>`",
        ));
    };
    if values.next().is_some() {
        return Err(Refusal::new(
            Reason::NotBearer,
            "more than one `authorization` entry: send one bearer token",
        ));
    }
    // `Bearer ` and a little whitespace may come on top of the token.
    if value.len() > MAX_TOKEN_BYTES + 64 {
        return Err(too_large());
    }
    let not_bearer = || {
        Refusal::new(
            Reason::NotBearer,
            "authorization is not a bearer token: send `authorization: Bearer <token>`",
        )
    };
    let text = value.to_str().map_err(|_| not_bearer())?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(not_bearer());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Refusal::new(Reason::EmptyToken, "bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(too_large());
    }
    Ok(token)
}

/// What a `jsonwebtoken` error means to the caller.
fn refusal_of(error: &jsonwebtoken::errors::Error) -> Refusal {
    let (reason, message): (Reason, &'static str) = match error.kind() {
        ErrorKind::ExpiredSignature => (Reason::Expired, "token expired"),
        ErrorKind::ImmatureSignature => (
            Reason::NotYetValid,
            "token is not valid yet (its `nbf` is in the future)",
        ),
        ErrorKind::InvalidAudience => (Reason::WrongAudience, "token audience is not accepted"),
        ErrorKind::InvalidIssuer => (Reason::WrongIssuer, "token issuer is not accepted"),
        ErrorKind::InvalidSignature => (Reason::BadSignature, "token signature does not verify"),
        ErrorKind::MissingRequiredClaim(claim) => (
            Reason::MissingClaim,
            match claim.as_str() {
                "exp" => "token has no expiry (`exp`)",
                "aud" => "token has no audience (`aud`)",
                "iss" => "token has no issuer (`iss`)",
                _ => "token lacks a required claim",
            },
        ),
        ErrorKind::InvalidClaimFormat(claim) => return Refusal::wrong_type(claim),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => (
            Reason::AlgorithmNotAllowed,
            "token algorithm is not the one its key is used with",
        ),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => {
            // The server's key is at fault, not the caller: say so in the log.
            tracing::warn!(error = %error, "JWT: a configured key cannot verify tokens");
            (
                Reason::BadSignature,
                "token could not be verified with this server's key",
            )
        }
        _ => (Reason::Malformed, "token is not a well-formed JWT"),
    };
    Refusal::new(reason, message)
}

/// Builds a [`JwtAuth`]; every setting has one method.
#[derive(Debug)]
pub struct JwtAuthBuilder {
    audiences: Vec<String>,
    issuers: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: Vec<JwtKey>,
    jwks: Option<PathBuf>,
    jwks_every: Duration,
    leeway: Duration,
    roles_claim: String,
}

impl Default for JwtAuthBuilder {
    fn default() -> Self {
        Self {
            audiences: Vec::new(),
            issuers: Vec::new(),
            algorithms: Vec::new(),
            keys: Vec::new(),
            jwks: None,
            jwks_every: DEFAULT_JWKS_RELOAD,
            leeway: DEFAULT_LEEWAY,
            roles_claim: DEFAULT_ROLES_CLAIM.to_owned(),
        }
    }
}

impl JwtAuthBuilder {
    /// Accepts tokens whose `aud` is (or includes) `audience`. Call it once
    /// per accepted audience; at least once.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Accepts tokens whose `iss` is `issuer`. Call it once per accepted
    /// issuer; at least once.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// The algorithms tokens may be signed with: the allow-list. A token's
    /// `alg` outside it is refused before any key is looked at, and each key
    /// verifies only its own algorithm(s) from this list.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms.extend(algorithms);
        self
    }

    /// Adds a key. Name it ([`JwtKey::with_kid`]) unless it is the only one.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Also takes keys from the JWKS document at `path`, read now and again
    /// every [`jwks_reload_every`](Self::jwks_reload_every) (on the tokio
    /// runtime `build` runs in). A key with an `alg` outside the allow-list is
    /// skipped; a key without `alg` verifies the allowed algorithms of its
    /// family. The first read must give at least one usable key. Never fetched
    /// over the network, and never taken from a token.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwks = Some(path.into());
        self
    }

    /// How often the JWKS file is read again (default [`DEFAULT_JWKS_RELOAD`]).
    /// Its keys change only when its contents do and make a valid set.
    pub fn jwks_reload_every(mut self, every: Duration) -> Self {
        self.jwks_every = every;
        self
    }

    /// The clock skew allowed on `exp` and `nbf` (default [`DEFAULT_LEEWAY`];
    /// whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The claim [`Identity::roles`] is read from (default
    /// [`DEFAULT_ROLES_CLAIM`]).
    pub fn roles_claim(mut self, claim: impl Into<String>) -> Self {
        self.roles_claim = claim.into();
        self
    }

    /// The validator, or what is missing or wrong. With a JWKS file, call it
    /// inside a tokio runtime: it starts the task that reloads the file.
    pub fn build(self) -> Result<JwtAuth, ConfigError> {
        let missing = |what: &str| ConfigError::new(format!("JWT: {what}"));
        if self.audiences.is_empty() {
            return Err(missing(
                "no audience: tokens must name this server (`audience`)",
            ));
        }
        if self.issuers.is_empty() {
            return Err(missing(
                "no issuer: say whose tokens are accepted (`issuer`)",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(missing("no algorithms: give the allow-list (`algorithms`)"));
        }
        if self.keys.is_empty() && self.jwks.is_none() {
            return Err(missing("no keys: add a `key` or a `jwks_file`"));
        }
        if self.jwks.is_some() && self.jwks_every.is_zero() {
            return Err(missing("the JWKS reload interval is zero"));
        }
        for key in &self.keys {
            if let Some(alg) = key
                .algorithms()
                .iter()
                .find(|a| !self.algorithms.contains(a))
            {
                return Err(ConfigError::key(format!(
                    "key {:?} verifies {alg:?}, which is not in the allow-list ({})",
                    key.kid().unwrap_or("(no kid)"),
                    AlgorithmList(&self.algorithms)
                )));
            }
        }
        let mut rules = Validation::new(self.algorithms[0]);
        rules.algorithms = self.algorithms.clone();
        rules.leeway = self.leeway.as_secs();
        rules.validate_exp = true;
        rules.validate_nbf = true;
        rules.validate_aud = true;
        rules.set_required_spec_claims(&["exp", "aud", "iss"]);
        rules.set_audience(&self.audiences);
        rules.set_issuer(&self.issuers);
        let source = KeySource {
            fixed: self.keys,
            jwks: self.jwks.map(|path| JwksFile {
                path,
                every: self.jwks_every,
            }),
            rules,
        };
        Ok(JwtAuth {
            shared: Arc::new(Shared {
                keys: source.start()?,
                algorithms: self.algorithms,
                roles_claim: self.roles_claim,
                audiences: self.audiences,
                issuers: self.issuers,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn reason(values: &[&[u8]]) -> Reason {
        bearer_token(&headers(values)).unwrap_err().reason()
    }

    #[test]
    fn the_bearer_token_is_found_whatever_the_scheme_case_and_spacing() {
        assert_eq!(bearer_token(&headers(&[b"Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[b"bEaReR   a.b.c  "])), Ok("a.b.c"));
    }

    #[test]
    fn anything_but_one_bearer_token_is_refused() {
        assert_eq!(reason(&[]), Reason::MissingToken);
        assert_eq!(
            reason(&[b"Bearer a.b.c", b"Bearer d.e.f"]),
            Reason::NotBearer
        );
        assert_eq!(reason(&[b"Basic YTpi"]), Reason::NotBearer);
        assert_eq!(reason(&[b"Bearera.b.c"]), Reason::NotBearer);
        assert_eq!(reason(&[b"Bearer \xffa.b.c"]), Reason::NotBearer);
        assert_eq!(reason(&[b"Bearer"]), Reason::EmptyToken);
        let huge = [b"Bearer ".as_slice(), &[b'a'; MAX_TOKEN_BYTES + 1]].concat();
        assert_eq!(reason(&[&huge]), Reason::TokenTooLarge);
    }
}
