//! Access rules against tai's own server on loopback, with real JWTs (HS256,
//! signed with `jsonwebtoken`): a public method takes calls without a token, a
//! method that needs an identity refuses them as UNAUTHENTICATED, a missing
//! scope or role is PERMISSION_DENIED naming it, and a method with no rule
//! follows the server's default; a hand-written `#[resilient]` trait's `auth(..)`
//! is enforced the same way. The handler's call counter proves a refused call
//! never ran.

mod support;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::{Echo, Script, echo};
use tai_runtime::policy::{AccessRule, AccessTable, MethodAccess};
use tai_runtime::server::Server;
use tai_runtime::server::auth::{Algorithm, AuthLayer, DefaultAccess, JwtAuth, JwtKey};
use tai_runtime::{ResponseStream, resilient};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

const AUDIENCE: &str = "scheduler";
const ISSUER: &str = "https://login.tai.test";
const SECRET: &[u8] = b"a test secret of thirty-two bytes or more";
const METHOD: &str = "/test.Echo/Unary";

fn auth() -> JwtAuth {
    JwtAuth::builder()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .algorithms([Algorithm::HS256])
        .key(
            JwtKey::hmac(SECRET, Algorithm::HS256)
                .unwrap()
                .with_kid("hmac"),
        )
        .build()
        .expect("config")
}

/// A token for `sub` holding `scope` (space-separated) and `roles`.
fn token(scope: &str, roles: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "sub": "ada", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 3600,
        "scope": scope, "roles": roles,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".to_owned());
    let key = EncodingKey::from_secret(SECRET).unwrap();
    format!(
        "Bearer {}",
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    )
}

/// The table of `test.Echo` with `rule` for its unary method.
fn table(rule: Option<AccessRule>) -> AccessTable {
    let mut method = MethodAccess::new(METHOD);
    method.rule = rule;
    let methods: &'static [MethodAccess] = Box::leak(Box::new([method]));
    AccessTable::new("test.Echo", methods)
}

/// tai's server on loopback: JWT auth letting token-less calls through, and
/// `test.Echo` served with `rules`; stops when dropped.
struct Running {
    script: Script,
    channel: Channel,
    _stop: oneshot::Sender<()>,
}

async fn serve(rules: AccessTable, default: Option<DefaultAccess>) -> Running {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let mut server = Server::builder()
        .layer(AuthLayer::new(auth()).allow_anonymous())
        .add_service_with_rules(script.clone(), rules);
    if let Some(default) = default {
        server = server.default_access(default);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_with_incoming(listener, async move {
        let _ = stopped.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    Running {
        script,
        channel,
        _stop: stop,
    }
}

/// A ready gRPC client over `channel`, and a request carrying `authorization`.
async fn prepare(
    channel: &Channel,
    authorization: Option<&str>,
) -> Result<(tonic::client::Grpc<Channel>, tonic::Request<Echo>), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(echo("hello"));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    Ok((grpc, request))
}

async fn call(channel: &Channel, authorization: Option<&str>) -> Result<Echo, Status> {
    let (mut grpc, request) = prepare(channel, authorization).await?;
    grpc.unary(
        request,
        PathAndQuery::from_static(METHOD),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A call of the server-streaming `/test.Echo/Stream`, up to its first message.
async fn call_stream(channel: &Channel, authorization: Option<&str>) -> Result<(), Status> {
    let (mut grpc, request) = prepare(channel, authorization).await?;
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let response = grpc
        .server_streaming(
            request,
            PathAndQuery::from_static("/test.Echo/Stream"),
            codec,
        )
        .await?;
    response.into_inner().message().await.map(drop)
}

/// The call is refused with `code` and `message`, and the handler did not run.
async fn refused(running: &Running, authorization: Option<&str>, code: Code, message: &str) {
    let status = call(&running.channel, authorization)
        .await
        .expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message);
    assert_eq!(running.script.calls(), 0, "the handler ran");
}

#[tokio::test]
async fn a_public_method_takes_calls_without_a_token() {
    let running = serve(table(Some(AccessRule::PUBLIC)), None).await;
    // A token that is there is still checked: a bad one is refused.
    refused(
        &running,
        Some("Bearer not.a.token"),
        Code::Unauthenticated,
        "token header is not base64url-encoded JSON",
    )
    .await;
    assert_eq!(call(&running.channel, None).await.unwrap().msg, "hello");
}

#[tokio::test]
async fn a_method_needing_an_identity_refuses_a_call_without_one() {
    let running = serve(table(Some(AccessRule::AUTHENTICATED)), None).await;
    refused(
        &running,
        None,
        Code::Unauthenticated,
        "this method needs an identity: send a bearer token",
    )
    .await;
    let good = token("", &[]);
    assert_eq!(
        call(&running.channel, Some(&good)).await.unwrap().msg,
        "hello"
    );
}

#[tokio::test]
async fn a_missing_scope_or_role_is_permission_denied_naming_it() {
    const RULE: AccessRule =
        AccessRule::scopes(&["policies.write", "policies.read"]).with_roles(&["admin"]);
    let running = serve(table(Some(RULE)), None).await;
    let reader = token("policies.read", &["operator"]);
    refused(
        &running,
        Some(&reader),
        Code::PermissionDenied,
        "the caller lacks scope policies.write and role admin",
    )
    .await;
    let writer = token("policies.read policies.write", &["admin"]);
    assert_eq!(
        call(&running.channel, Some(&writer)).await.unwrap().msg,
        "hello"
    );
    assert_eq!(running.script.calls(), 1);
}

#[tokio::test]
async fn a_method_without_a_rule_follows_the_default() {
    let denied = serve(table(None), None).await;
    refused(
        &denied,
        Some(&token("policies.write", &[])),
        Code::PermissionDenied,
        "this method declares no access rule, and the server refuses such calls",
    )
    .await;
    let allowed = serve(table(None), Some(DefaultAccess::Allow)).await;
    assert_eq!(call(&allowed.channel, None).await.unwrap().msg, "hello");
}

#[tokio::test]
async fn health_is_public_under_default_deny() {
    let running = serve(table(None), Some(DefaultAccess::Deny)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(running.channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is public");
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// `test.Echo` as a service owner writes it by hand: a write scope for the
/// whole service, and a public unary method. `#[resilient]` turns the `auth(..)`
/// into `EchoServiceClient::ACCESS_RULES`, which the server enforces as it
/// would a table tai-build wrote.
#[resilient(service = "test.Echo", auth(scopes = ["echo.write"]))]
pub trait EchoService {
    /// Open to anyone.
    #[resilient(auth(public))]
    fn unary(&self, request: Echo) -> impl Future<Output = Result<Echo, Status>> + Send;
    /// Needs `echo.write`, from the trait.
    fn stream(
        &self,
        request: Echo,
    ) -> impl Future<Output = Result<ResponseStream<Echo>, Status>> + Send;
}

#[tokio::test]
async fn a_hand_written_traits_rules_are_enforced() {
    let running = serve(EchoServiceClient::ACCESS_RULES, None).await;
    let status = call_stream(&running.channel, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "this method needs an identity: send a bearer token"
    );
    let reader = token("echo.read", &[]);
    let status = call_stream(&running.channel, Some(&reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "the caller lacks scope echo.write");
    assert_eq!(
        running.script.calls(),
        0,
        "a refused call reached the handler"
    );

    // With the scope the call reaches the handler (which streams nothing here).
    let writer = token("echo.write", &[]);
    let status = call_stream(&running.channel, Some(&writer))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unimplemented, "no stream")
    );
    assert_eq!(running.script.calls(), 1);

    // The public method takes a call without a token.
    assert_eq!(call(&running.channel, None).await.unwrap().msg, "hello");
}
