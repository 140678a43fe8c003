//! Bearer JWT authentication against a real tonic server in memory: every bad
//! token is refused as UNAUTHENTICATED with a readable reason, and the handler's
//! call counter proves it never ran. Keys are made here from a seeded RNG (no
//! private key is checked in); tokens are signed with `jsonwebtoken`.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::uri::PathAndQuery;
use jsonwebtoken::{EncodingKey, Header};
use rand_chacha_10::SeedableRng;
use rand_chacha_10::rngs::ChaCha8Rng;
use serde_json::{Map, Value, json};
use support::{Echo, Script, echo, in_memory};
use tai_runtime::server::auth::{Algorithm, AuthLayer, Identity, JwtAuth, JwtKey};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};

const AUDIENCE: &str = "scheduler";
const ISSUER: &str = "https://login.tai.test";
const HMAC_SECRET: &[u8] = b"a test secret of thirty-two bytes or more";

/// A key pair as PEM: the private half signs test tokens, the public half is
/// what the server is configured with.
struct Pair {
    private: String,
    public: String,
}

fn rsa_pair(seed: u64) -> Pair {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = rsa::PrivateKey::new(&mut rng, 2048).expect("RSA key");
    Pair {
        private: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn ec_pair(seed: u64) -> Pair {
    use p256::elliptic_curve::Generate;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = p256::SecretKey::generate_from_rng(&mut rng);
    Pair {
        private: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

/// The server's RSA key, and another one the server does not know. Made once:
/// RSA key generation is slow in debug builds.
fn rsa() -> &'static (Pair, Pair) {
    static KEYS: OnceLock<(Pair, Pair)> = OnceLock::new();
    KEYS.get_or_init(|| (rsa_pair(1), rsa_pair(2)))
}

fn ec() -> &'static Pair {
    static KEY: OnceLock<Pair> = OnceLock::new();
    KEY.get_or_init(|| ec_pair(3))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass: the right audience and issuer, an hour to live.
fn claims() -> Value {
    json!({
        "sub": "ada",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": now() + 3600,
        "iat": now(),
        "scope": "jobs:read jobs:write",
        "roles": ["operator"],
    })
}

/// `claims` with `change` applied to the object.
fn claims_with(change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut value = claims();
    change(value.as_object_mut().unwrap());
    value
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(rsa().0.private.as_bytes()).unwrap();
    sign(Algorithm::RS256, Some("rsa"), claims, &key)
}

fn hs256(kid: &str, claims: &Value) -> String {
    sign(Algorithm::HS256, Some(kid), claims, &hmac_key())
}

fn hmac_key() -> EncodingKey {
    EncodingKey::from_secret(HMAC_SECRET).unwrap()
}

/// base64url(JSON) of `value`, one part of a hand-made token.
fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// The server's rules: RS256, ES256 and HS256 allowed, one key of each.
fn auth() -> JwtAuth {
    JwtAuth::builder()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .algorithms([Algorithm::RS256, Algorithm::ES256, Algorithm::HS256])
        .key(
            JwtKey::rsa_pem(rsa().0.public.as_bytes(), Algorithm::RS256)
                .unwrap()
                .with_kid("rsa"),
        )
        .key(
            JwtKey::ec_pem(ec().public.as_bytes(), Algorithm::ES256)
                .unwrap()
                .with_kid("ec"),
        )
        .key(
            JwtKey::hmac(HMAC_SECRET, Algorithm::HS256)
                .unwrap()
                .with_kid("hmac"),
        )
        .build()
        .expect("config")
}

/// The scripted `test.Echo` server behind an [`AuthLayer`], in memory.
fn serve(auth: JwtAuth) -> (Script, Channel) {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let router = Server::builder()
        .layer(AuthLayer::new(auth))
        .add_service(script.clone());
    let channel = in_memory(move |incoming| router.serve_with_incoming(incoming));
    (script, channel)
}

/// One unary call with `authorization` set to `value` (none if `None`).
async fn call(channel: &Channel, authorization: Option<&str>) -> Result<Echo, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(echo("hello"));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("metadata value"));
    }
    grpc.unary(
        request,
        PathAndQuery::from_static("/test.Echo/Unary"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Sends `authorization` to a fresh server and checks the call was refused with
/// `message`, and that the handler never ran.
async fn assert_refused(authorization: Option<&str>, message: &str) -> Status {
    let (script, channel) = serve(auth());
    let status = call(&channel, authorization)
        .await
        .expect_err("the call must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), message);
    assert_eq!(script.calls(), 0, "the handler ran");
    status
}

/// `Bearer <token>` is refused with `message`, the handler not run.
async fn refused_token(token: &str, message: &str) -> Status {
    assert_refused(Some(&bearer(token)), message).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_good_token_reaches_the_handler_with_its_claims() {
    let (script, channel) = serve(auth());
    // One set of claims: `iat` is the current second, which may tick over.
    let sent = claims();
    let answer = call(&channel, Some(&bearer(&rs256(&sent))))
        .await
        .expect("admitted");
    assert_eq!(answer.msg, "hello");
    assert_eq!(script.calls(), 1);
    let seen = script.seen();
    let identity = seen[0].extensions.get::<Identity>().expect("identity");
    assert_eq!(identity.subject.as_deref(), Some("ada"));
    assert_eq!(identity.issuer.as_deref(), Some(ISSUER));
    assert_eq!(identity.audience, [AUDIENCE]);
    assert_eq!(identity.scopes, ["jobs:read", "jobs:write"]);
    assert_eq!(identity.roles, ["operator"]);
    assert!(identity.expires_at.unwrap() > SystemTime::now());
    assert!(identity.certificate_sans.is_empty());
    assert_eq!(identity.claims["iat"], sent["iat"]);
}

#[tokio::test]
async fn ec_and_hmac_keys_verify_their_own_tokens() {
    let (script, channel) = serve(auth());
    let es256 = sign(
        Algorithm::ES256,
        Some("ec"),
        &claims(),
        &EncodingKey::from_ec_pem(ec().private.as_bytes()).unwrap(),
    );
    call(&channel, Some(&bearer(&es256))).await.expect("ES256");
    call(&channel, Some(&bearer(&hs256("hmac", &claims()))))
        .await
        .expect("HS256");
    // The scheme is case-insensitive (RFC 7235).
    call(&channel, Some(&format!("bearer {es256}")))
        .await
        .expect("lower-case scheme");
    assert_eq!(script.calls(), 3);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let token = format!(
        "{}.{}.",
        part(&json!({"alg": "none", "kid": "rsa"})),
        part(&claims())
    );
    refused_token(&token, "unsigned tokens (`alg: none`) are not accepted").await;
}

#[tokio::test]
async fn an_algorithm_outside_the_allow_list_is_refused() {
    // A correct HS512 signature with the server's own secret: still refused.
    let token = sign(Algorithm::HS512, Some("hmac"), &claims(), &hmac_key());
    refused_token(
        &token,
        "token algorithm is not one this server accepts (RS256, ES256, HS256)",
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: HS256 is allowed (for the HMAC key), and the "secret"
    // is the RSA public key every client can read.
    let token = sign(
        Algorithm::HS256,
        Some("rsa"),
        &claims(),
        &EncodingKey::from_secret(rsa().0.public.as_bytes()).unwrap(),
    );
    refused_token(
        &token,
        "token algorithm HS256 is not the one its key is used with",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    refused_token(
        &hs256("retired-2025", &claims()),
        "token key id (`kid`) names no key this server has",
    )
    .await;
}

#[tokio::test]
async fn no_kid_with_several_keys_is_refused() {
    let token = sign(Algorithm::HS256, None, &claims(), &hmac_key());
    refused_token(
        &token,
        "token has no key id (`kid`) and this server has several keys",
    )
    .await;
}

#[tokio::test]
async fn exp_past_the_leeway_is_refused() {
    // The default leeway is 30 s; 10 s past is still accepted.
    let (_, channel) = serve(auth());
    let recent = claims_with(|c| {
        c.insert("exp".into(), json!(now() - 10));
    });
    call(&channel, Some(&bearer(&rs256(&recent))))
        .await
        .expect("within the leeway");
    refused_with_claims(
        |c| drop(c.insert("exp".into(), json!(now() - 120))),
        "token expired",
    )
    .await;
}

/// An RS256 token with `claims()` changed by `change` is refused with `message`.
async fn refused_with_claims(change: impl FnOnce(&mut Map<String, Value>), message: &str) {
    assert_refused(Some(&bearer(&rs256(&claims_with(change)))), message).await;
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let message = "token is not valid yet (its `nbf` is in the future)";
    refused_with_claims(
        |c| drop(c.insert("nbf".into(), json!(now() + 600))),
        message,
    )
    .await;
}

#[tokio::test]
async fn exp_as_a_string_is_refused() {
    let soon = json!((now() + 3600).to_string());
    refused_with_claims(
        |c| drop(c.insert("exp".into(), soon)),
        "token claim `exp` is not a number",
    )
    .await;
}

#[tokio::test]
async fn a_missing_exp_is_refused() {
    refused_with_claims(|c| drop(c.remove("exp")), "token has no expiry (`exp`)").await;
}

#[tokio::test]
async fn a_missing_audience_is_refused() {
    refused_with_claims(|c| drop(c.remove("aud")), "token has no audience (`aud`)").await;
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let elsewhere = json!(["governor", "coordinator"]);
    refused_with_claims(
        |c| drop(c.insert("aud".into(), elsewhere)),
        "token audience is not accepted",
    )
    .await;
}

#[tokio::test]
async fn a_missing_issuer_is_refused() {
    refused_with_claims(|c| drop(c.remove("iss")), "token has no issuer (`iss`)").await;
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let stranger = json!("https://evil.test");
    refused_with_claims(
        |c| drop(c.insert("iss".into(), stranger)),
        "token issuer is not accepted",
    )
    .await;
}

#[tokio::test]
async fn a_sub_that_is_not_a_string_is_refused() {
    refused_with_claims(
        |c| drop(c.insert("sub".into(), json!(42))),
        "token claim `sub` is not a string",
    )
    .await;
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    // Signed by a key the server does not have, under the server's kid.
    let forged = sign(
        Algorithm::RS256,
        Some("rsa"),
        &claims(),
        &EncodingKey::from_rsa_pem(rsa().1.private.as_bytes()).unwrap(),
    );
    refused_token(&forged, "token signature does not verify").await;
    // And a good token whose claims were changed after signing.
    let good = rs256(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let admin = part(&claims_with(|c| {
        c.insert("roles".into(), json!(["admin"]));
    }));
    parts[1] = &admin;
    refused_token(&parts.join("."), "token signature does not verify").await;
}

#[tokio::test]
async fn a_truncated_token_is_refused() {
    let token = rs256(&claims());
    let without_signature = &token[..token.rfind('.').unwrap()];
    refused_token(
        without_signature,
        "token is not a JWT: it needs three base64url parts separated by dots",
    )
    .await;
    // Cut inside the header: not base64url JSON any more.
    let cut = token.find('.').unwrap() - 3;
    let mangled = format!("{}{}", &token[..cut], &token[cut + 3..]);
    refused_token(&mangled, "token header is not base64url-encoded JSON").await;
}

#[tokio::test]
async fn an_oversized_token_is_refused_unread() {
    // 9 KiB of base64url: never parsed, so what it says does not matter.
    let token = "A".repeat(9 * 1024);
    refused_token(&token, "bearer token is larger than 8192 bytes").await;
}

#[tokio::test]
async fn no_authorization_is_refused_with_a_challenge() {
    let status = assert_refused(
        None,
        "no bearer token: send `authorization: Bearer <token>`",
    )
    .await;
    assert_eq!(status.metadata().get("www-authenticate").unwrap(), "Bearer");
}

#[tokio::test]
async fn bearer_with_an_empty_token_is_refused() {
    assert_refused(Some("Bearer"), "bearer token is empty").await;
    assert_refused(Some("Bearer    "), "bearer token is empty").await;
}

#[tokio::test]
async fn another_scheme_is_refused() {
    assert_refused(
        Some("Basic YWRhOmxvdmVsYWNl"),
        "authorization is not a bearer token: send `authorization: Bearer <token>`",
    )
    .await;
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let expired = claims_with(|c| {
        c.insert("exp".into(), json!(now() - 3600));
    });
    let status = refused_token(&rs256(&expired), "token expired").await;
    assert_eq!(
        status.metadata().get("www-authenticate").unwrap(),
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
    let metrics = tai_runtime::metrics::Metrics::global().encode();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tai_server_auth_refusals_total{reason=\"expired\"}"))
        .unwrap_or_else(|| panic!("no refusal counter:\n{metrics}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "{line}");
}

#[tokio::test]
async fn a_certificate_identity_from_an_earlier_layer_is_merged() {
    // Stands in for the TLS layer: it puts the client certificate's names in.
    let script = Script::unary(|_, request| async move { Ok(request) });
    let router = Server::builder()
        .layer(tower::util::MapRequestLayer::new(
            |mut request: http::Request<tonic::body::Body>| {
                request
                    .extensions_mut()
                    .insert(Identity::from_certificate_sans(["ada.mesh.test"]));
                request
            },
        ))
        .layer(AuthLayer::new(auth()))
        .add_service(script.clone());
    let channel = in_memory(move |incoming| router.serve_with_incoming(incoming));
    call(&channel, Some(&bearer(&rs256(&claims()))))
        .await
        .expect("admitted");
    let seen = script.seen();
    let identity = seen[0].extensions.get::<Identity>().expect("identity");
    assert_eq!(identity.subject.as_deref(), Some("ada"));
    assert_eq!(identity.certificate_sans, ["ada.mesh.test"]);
}

fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// The server's RSA public key as a JWK named `kid`.
fn rsa_jwk(kid: &str, pair: &Pair) -> Value {
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(pair.public.as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_decoding_key(&public, Some(Algorithm::RS256)).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

#[tokio::test(start_paused = true)]
async fn a_jwks_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[rsa_jwk("old", &rsa().1)])).unwrap();
    let every = Duration::from_secs(5);
    let auth = JwtAuth::builder()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .algorithms([Algorithm::RS256])
        .jwks_file(&path)
        .jwks_reload_every(every)
        .build()
        .expect("config");
    assert_eq!(auth.key_ids(), ["old"]);
    let (script, channel) = serve(auth.clone());
    let token = sign(
        Algorithm::RS256,
        Some("new"),
        &claims(),
        &EncodingKey::from_rsa_pem(rsa().0.private.as_bytes()).unwrap(),
    );
    let refused = call(&channel, Some(&bearer(&token))).await.unwrap_err();
    assert_eq!(
        refused.message(),
        "token key id (`kid`) names no key this server has"
    );

    // A half-written file keeps the keys in use.
    std::fs::write(&path, b"{\"keys\": [").unwrap();
    tokio::time::sleep(every * 2).await;
    assert_eq!(auth.key_ids(), ["old"]);

    std::fs::write(&path, jwks(&[rsa_jwk("new", &rsa().0)])).unwrap();
    // Paused time: each sleep lets the reload task take one turn.
    for _ in 0..3 {
        if auth.key_ids() == ["new"] {
            break;
        }
        tokio::time::sleep(every).await;
    }
    assert_eq!(auth.key_ids(), ["new"]);
    call(&channel, Some(&bearer(&token)))
        .await
        .expect("the new key verifies");
    assert_eq!(script.calls(), 1);
}

#[tokio::test]
async fn a_jwks_file_without_a_usable_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    // Its only key is for HS256, which the allow-list does not have.
    let oct =
        json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET)});
    std::fs::write(&path, jwks(&[oct])).unwrap();
    let error = JwtAuth::builder()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .algorithms([Algorithm::RS256])
        .jwks_file(&path)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "JWKS file {}: it has no key this server can use",
            path.display()
        )
    );
}
