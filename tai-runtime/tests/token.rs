//! The client's bearer tokens (`tai_runtime::auth::TokenSource`) against a real
//! tonic server behind `AuthLayer`, in memory, on paused time: every attempt
//! carries the token, a call's own `authorization` wins, a refreshing source
//! fetches once ahead of expiry whatever the number of callers, and a token
//! that expired unrefreshed is refused here, once, without reaching the server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::{Echo, Script, echo, in_memory, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::auth::{Token, TokenSource};
use tai_runtime::policy::{CodeSet, RetryPolicy};
use tai_runtime::server::auth::{Algorithm, AuthLayer, JwtAuth, JwtKey};
use tai_runtime::{Request, Status};
use tonic::Code;
use tonic::transport::{Channel, Server};

const SECRET: &[u8] = b"a test secret of thirty-two bytes or more";

/// An HS256 token the server accepts, for `sub`, living `lifetime`.
fn token(sub: &str, lifetime: Duration) -> String {
    let exp = (SystemTime::now() + lifetime)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({ "sub": sub, "aud": "echo", "iss": "tests", "exp": exp });
    let key = EncodingKey::from_secret(SECRET).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The scripted echo server behind an `AuthLayer` for `SECRET`: it answers
/// UNAVAILABLE `failures` times, then echoes.
fn serve(failures: usize) -> (Script, Channel) {
    let auth = JwtAuth::builder()
        .audience("echo")
        .issuer("tests")
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(SECRET, Algorithm::HS256).unwrap())
        .build()
        .unwrap();
    let script = Script::unary(move |i, e| async move {
        if i < failures {
            Err(Status::unavailable("not yet"))
        } else {
            Ok(e)
        }
    });
    let router = Server::builder()
        .layer(AuthLayer::new(auth))
        .add_service(script.clone());
    (
        script,
        in_memory(move |incoming| router.serve_with_incoming(incoming)),
    )
}

/// A client of `channel` retrying UNAVAILABLE (and, uselessly, UNAUTHENTICATED)
/// three times, with `source` as its interceptor.
fn client(channel: Channel, source: &TokenSource) -> ClientCore<Channel> {
    let retrying = unary_method().with_retry(RetryPolicy::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        CodeSet::of(&[Code::Unavailable, Code::Unauthenticated]),
    ));
    let mut core = ClientCore::new(channel, service(vec![retrying], None));
    core.set_interceptor(source.clone());
    core
}

/// The bearer tokens the server saw, in order.
fn tokens_seen(script: &Script) -> Vec<String> {
    script
        .seen()
        .iter()
        .map(|s| {
            s.header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .expect("a bearer token")
                .to_owned()
        })
        .collect()
}

async fn call(core: &ClientCore<Channel>, request: Request<Echo>) -> Result<Echo, Status> {
    core.unary_retry::<Echo, Echo>(0, request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(start_paused = true)]
async fn a_fixed_token_is_on_every_attempt() {
    let (script, channel) = serve(2);
    let good = token("ada", Duration::from_secs(3600));
    let core = client(channel, &TokenSource::fixed(&good).unwrap());
    call(&core, Request::new(echo("x"))).await.unwrap();
    assert_eq!(tokens_seen(&script), [good.clone(), good.clone(), good]);
}

#[tokio::test(start_paused = true)]
async fn a_calls_own_authorization_wins() {
    let (script, channel) = serve(0);
    let core = client(channel, &TokenSource::fixed("not-a-valid-token").unwrap());

    // The source's token alone is refused, once: a refusal is not retried.
    let refused = call(&core, Request::new(echo("x"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The call's own token is sent instead, and accepted.
    let other = token("grace", Duration::from_secs(3600));
    let mut request = Request::new(echo("x"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {other}").parse().unwrap());
    call(&core, request).await.unwrap();
    assert_eq!(tokens_seen(&script), [other]);
}

/// A token service handing out numbered tokens living two minutes; it fails
/// while `down` is set.
struct TokenService {
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl TokenService {
    fn new() -> Self {
        Self {
            fetches: Arc::default(),
            down: Arc::default(),
        }
    }

    async fn source(&self) -> TokenSource {
        let (fetches, down) = (Arc::clone(&self.fetches), Arc::clone(&self.down));
        TokenSource::refreshing_before(Duration::from_secs(30), move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            let down = down.load(Ordering::SeqCst);
            async move {
                // Slow enough that a herd of callers would pile up behind it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if down {
                    return Err("token service unavailable");
                }
                Ok(Token::jwt(token(&format!("token-{n}"), Duration::from_secs(120))).unwrap())
            }
        })
        .await
        .expect("first token")
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn subject(jwt: &str) -> String {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_refreshing_source_fetches_once_ahead_of_expiry() {
    let (script, channel) = serve(0);
    let tokens = TokenService::new();
    let core = client(channel, &tokens.source().await);
    assert_eq!(tokens.fetches(), 1);

    // Fifty concurrent calls: no fetch of their own.
    let calls = (0..50).map(|_| call(&core, Request::new(echo("x"))));
    for result in futures_util::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(tokens.fetches(), 1);

    // Still the first token just before the refresh (120 s - 30 s).
    tokio::time::sleep(Duration::from_secs(89)).await;
    call(&core, Request::new(echo("x"))).await.unwrap();
    assert_eq!(tokens.fetches(), 1);

    // Past it: one fetch, and the next calls carry the new token.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tokens.fetches(), 2);
    call(&core, Request::new(echo("x"))).await.unwrap();
    let subjects: Vec<_> = tokens_seen(&script).iter().map(|t| subject(t)).collect();
    assert!(
        subjects[..51].iter().all(|s| s == "token-0"),
        "{subjects:?}"
    );
    assert_eq!(subjects[51], "token-1");
}

#[tokio::test(start_paused = true)]
async fn a_token_that_expired_unrefreshed_is_refused_here_until_a_refresh_works() {
    let (script, channel) = serve(0);
    let tokens = TokenService::new();
    let core = client(channel, &tokens.source().await);
    tokens.down.store(true, Ordering::SeqCst);

    // Failed refreshes from 90 s on: the old token, still valid, is sent.
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(tokens.fetches() > 2, "retried with backoff");
    call(&core, Request::new(echo("x"))).await.unwrap();
    assert_eq!(script.calls(), 1);

    // Past its expiry: refused before sending, naming the refresh error.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let refused = call(&core, Request::new(echo("x"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "the bearer token expired and was not refreshed: token service unavailable"
    );
    assert_eq!(script.calls(), 1, "an expired token was sent");

    // The service is back: the next attempt (at most 30 s later) gets a token.
    tokens.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(31)).await;
    call(&core, Request::new(echo("x"))).await.unwrap();
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_source_stops_its_refresh() {
    let tokens = TokenService::new();
    let source = tokens.source().await;
    let clone = source.clone();
    drop(source);
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(tokens.fetches(), 2, "a clone keeps it refreshing");
    drop(clone);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(tokens.fetches(), 2);
}
