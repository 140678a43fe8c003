//! Bearer tokens on the client: a [`TokenSource`] puts `authorization: Bearer
//! <token>` on every attempt of every call, as the generated client's
//! interceptor.
//!
//! Why it is shaped so: tonic's `Interceptor` is synchronous (it runs inside
//! the attempt, and cannot await a token service). So the interceptor never
//! fetches: it reads the current token from an [`ArcSwap`] (one atomic load,
//! no lock, no await), and a refreshing source keeps that value fresh from one
//! background task, which fetches a new token shortly *before* the current one
//! expires. Consequences, each on purpose:
//! - concurrent calls never fetch: one task does, one fetch at a time (no
//!   thundering herd when a token nears its expiry under load);
//! - a failed refresh is retried with backoff while the old token, still
//!   valid, keeps being sent; only once it has expired are calls refused here,
//!   as UNAUTHENTICATED naming the refresh error (a refusal is final: the
//!   engine never retries UNAUTHENTICATED);
//! - the first token is fetched before [`TokenSource::refreshing`] returns, so
//!   a source that exists has a token (or its construction failed, loudly);
//! - the task ends when the last clone of the source is dropped.
//!
//! The client never verifies its own token: it only reads the JWT's `exp` to
//! know when to refresh ([`Token::jwt`]); the server verifies.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::BoxError;

/// How long before its expiry a token is replaced, by default (at most half
/// its lifetime, so a short-lived token is not refreshed in a loop).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// The least time between two fetches, so a token service handing out tokens
/// that are already expired is not asked in a loop.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to fetch a token after failures
/// (they start at [`MIN_REFRESH_INTERVAL`] and double).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";

/// A bearer token and how long it lives, as a refreshing [`TokenSource`]'s
/// fetch function returns it.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::auth::Token;
///
/// // An opaque token the token service said lives ten minutes.
/// let token = Token::expiring_in("opaque-token", Duration::from_secs(600));
/// // A JWT: its `exp` claim says (read, not verified: the server verifies).
/// let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl";
/// assert!(Token::jwt(jwt).is_ok());
/// ```
#[derive(Clone)]
pub struct Token {
    value: String,
    expires: SystemTime,
}

impl Token {
    /// A token that expires at `exp` (wall clock).
    pub fn expiring_at(value: impl Into<String>, exp: SystemTime) -> Self {
        Self {
            value: value.into(),
            expires: exp,
        }
    }

    /// A token that expires `lifetime` from now.
    pub fn expiring_in(value: impl Into<String>, lifetime: Duration) -> Self {
        Self::expiring_at(value, SystemTime::now() + lifetime)
    }

    /// A JWT, expiring at its `exp` claim. The token is not verified (the
    /// client has no key to verify it with, and need not: the server does);
    /// it fails only when it is not a JWT with a numeric `exp`.
    pub fn jwt(value: impl Into<String>) -> Result<Self, TokenError> {
        let value = value.into();
        let exp = jwt_exp(&value).ok_or_else(|| {
            TokenError::new(
                "the token is not a JWT with a numeric `exp` claim, so when to refresh it is unknown",
            )
        })?;
        Ok(Self::expiring_at(
            value,
            UNIX_EPOCH + Duration::from_secs(exp),
        ))
    }

    /// What is left of its life, zero if it has expired.
    fn lifetime(&self) -> Duration {
        self.expires
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself: debug output ends up in logs.
        f.debug_struct("Token")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The `exp` claim of a JWT's payload, unverified.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    // NumericDate may carry a fraction of a second.
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// `Bearer <token>` as a metadata value, marked sensitive (HPACK never
/// indexes it, and it is not printed with the request's metadata).
fn bearer(token: &str) -> Result<AsciiMetadataValue, TokenError> {
    let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        TokenError::new("the token has characters a header cannot carry (it must be visible ASCII)")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A token could not be made or fetched.
#[derive(Debug)]
pub struct TokenError {
    message: &'static str,
    source: Option<BoxError>,
}

impl TokenError {
    fn new(message: &'static str) -> Self {
        Self {
            message,
            source: None,
        }
    }

    fn fetch(source: BoxError) -> Self {
        Self {
            message: "fetching the first bearer token failed",
            source: Some(source),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// What the interceptor sends: the header, until when, and why there is no
/// newer one (the last refresh's error).
struct Current {
    header: AsciiMetadataValue,
    /// `None` for a fixed token (the server decides when it has expired).
    expires: Option<Instant>,
    refresh_error: Option<String>,
}

impl Current {
    fn of(token: &Token) -> Result<Self, TokenError> {
        Ok(Self {
            header: bearer(&token.value)?,
            expires: Some(Instant::now() + token.lifetime()),
            refresh_error: None,
        })
    }
}

/// What the clones of a source share; the last one dropped stops the refresh.
struct Shared {
    current: Arc<ArcSwap<Current>>,
    refresher: Option<AbortHandle>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

/// Bearer tokens for a client's calls: a fixed token, or one refreshed ahead
/// of its expiry. It is an [`Interceptor`]: give it to the generated client's
/// `with_interceptor`, and every attempt of every call carries
/// `authorization: Bearer <token>`; retries and hedges included (each attempt
/// reads the current token).
///
/// A call whose request already has `authorization` metadata keeps it: that
/// is the per-call override.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tai_runtime::auth::{Token, TokenSource};
/// use tai_runtime::{Interceptor, Request};
///
/// // A token from the environment or a file, sent as is.
/// let fixed = TokenSource::fixed("a-static-token")?;
///
/// // Or one fetched from a token service, and again shortly before it expires.
/// let refreshing = TokenSource::refreshing(|| async {
///     let jwt = fetch_from_token_service().await?;
///     Token::jwt(jwt)
/// })
/// .await?;
///
/// // With a generated client:
/// // `SchedulerClient::with_interceptor(channel, refreshing.clone())`.
/// // What it does to each attempt:
/// let mut interceptor = fixed.clone();
/// let sent = interceptor.call(Request::new(()))?;
/// assert_eq!(sent.metadata().get("authorization").unwrap(), "Bearer a-static-token");
///
/// // One call as someone else: its own `authorization` wins.
/// let mut request = Request::new(());
/// request.metadata_mut().insert("authorization", "Bearer other".parse()?);
/// let sent = interceptor.call(request)?;
/// assert_eq!(sent.metadata().get("authorization").unwrap(), "Bearer other");
/// # drop(refreshing);
/// # Ok(()) }
/// # async fn fetch_from_token_service() -> Result<String, tai_runtime::auth::TokenError> {
/// #     Ok("e30.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln".to_owned())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenSource {
    shared: Arc<Shared>,
}

impl TokenSource {
    /// A token sent as is on every call, never refreshed. Fails when the token
    /// cannot be a header value (control characters, non-ASCII).
    pub fn fixed(token: impl AsRef<str>) -> Result<Self, TokenError> {
        let current = Current {
            header: bearer(token.as_ref())?,
            expires: None,
            refresh_error: None,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(current)),
                refresher: None,
            }),
        })
    }

    /// Tokens from `fetch`, fetched once now and again
    /// [`DEFAULT_REFRESH_MARGIN`] before each expires, by one task on the
    /// current tokio runtime. Fails when the first fetch does.
    pub async fn refreshing<F, Fut, E>(fetch: F) -> Result<Self, TokenError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Token, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        Self::refreshing_before(DEFAULT_REFRESH_MARGIN, fetch).await
    }

    /// [`refreshing`](Self::refreshing), replacing each token `margin` before
    /// it expires (at most half its lifetime before).
    pub async fn refreshing_before<F, Fut, E>(
        margin: Duration,
        fetch: F,
    ) -> Result<Self, TokenError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Token, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let first = fetch().await.map_err(|e| TokenError::fetch(e.into()))?;
        let current = Arc::new(ArcSwap::from_pointee(Current::of(&first)?));
        let task = tokio::spawn(refresh(
            Arc::clone(&current),
            first.lifetime(),
            margin,
            fetch,
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                current,
                refresher: Some(task.abort_handle()),
            }),
        })
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("refreshing", &self.shared.refresher.is_some())
            .finish_non_exhaustive()
    }
}

impl Interceptor for TokenSource {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if request.metadata().contains_key(AUTHORIZATION) {
            return Ok(request);
        }
        let current = self.shared.current.load();
        if current.expires.is_some_and(|at| at <= Instant::now()) {
            let why = current
                .refresh_error
                .as_deref()
                .unwrap_or("no new one has been fetched yet");
            return Err(Status::unauthenticated(format!(
                "the bearer token expired and was not refreshed: {why}"
            )));
        }
        request
            .metadata_mut()
            .insert(AUTHORIZATION, current.header.clone());
        Ok(request)
    }
}

/// The refresh task: sleeps until `margin` before the current token expires,
/// fetches, publishes; after a failure, tries again with backoff while the old
/// token is still sent.
async fn refresh<F, Fut, E>(
    current: Arc<ArcSwap<Current>>,
    mut lifetime: Duration,
    margin: Duration,
    fetch: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Token, E>>,
    E: Into<BoxError>,
{
    let mut wait = refresh_after(lifetime, margin);
    let mut backoff = MIN_REFRESH_INTERVAL;
    loop {
        tokio::time::sleep(wait).await;
        let fetched = fetch()
            .await
            .map_err(Into::into)
            .and_then(|token| Ok((Current::of(&token)?, token.lifetime())));
        match fetched {
            Ok((next, next_lifetime)) => {
                current.store(Arc::new(next));
                lifetime = next_lifetime;
                wait = refresh_after(lifetime, margin);
                backoff = MIN_REFRESH_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(%error, ?backoff, "refreshing the bearer token failed; trying again");
                let old = current.load();
                current.store(Arc::new(Current {
                    header: old.header.clone(),
                    expires: old.expires,
                    refresh_error: Some(error.to_string()),
                }));
                wait = backoff;
                backoff = (backoff * 2).min(MAX_FAILURE_BACKOFF);
            }
        }
    }
}

/// How long to keep a token of `lifetime` before fetching the next.
fn refresh_after(lifetime: Duration, margin: Duration) -> Duration {
    lifetime
        .saturating_sub(margin.min(lifetime / 2))
        .max(MIN_REFRESH_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt_with(payload: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn exp_is_read_from_the_payload_unverified() {
        assert_eq!(
            jwt_exp(&jwt_with(r#"{"exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_exp(&jwt_with(r#"{"exp":1700000000.5}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(jwt_exp(&jwt_with(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_exp(&jwt_with(r#"{"sub":"ada"}"#)), None);
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp("a.b.c.d"), None);
        assert!(Token::jwt("opaque").is_err());
    }

    #[test]
    fn refresh_comes_before_expiry_but_not_in_a_loop() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(3600), s(30)), s(3570));
        // Short-lived: at half its life.
        assert_eq!(refresh_after(s(40), s(30)), s(20));
        // Already expired: not again at once.
        assert_eq!(refresh_after(s(0), s(30)), MIN_REFRESH_INTERVAL);
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        let err = TokenSource::fixed("bad\ntoken").unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let token = Token::expiring_in("secret-value", Duration::from_secs(1));
        assert!(!format!("{token:?}").contains("secret-value"));
        let source = TokenSource::fixed("secret-value").unwrap();
        assert!(!format!("{source:?}").contains("secret-value"));
    }
}
