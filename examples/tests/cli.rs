//! The `mesh` binary: `serve`, `call`, `--help` and the errors a person sees.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use common::process::{MESH, spawn_serve};
use common::redis::RedisServer;
use tai_examples::proto::SubmitTaskRequest;
use tai_examples::proto::scheduler_client::SchedulerClient;
use tai_examples::server::MeshServer;

fn mesh(args: &[&str]) -> std::process::Output {
    Command::new(MESH).args(args).output().expect("run mesh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_commands_and_each_has_its_own() {
    let out = mesh(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["tour", "serve", "call", "token", "certs"] {
        assert!(help.contains(command), "{help}");
    }
    for (command, flag) in [
        ("tour", "--fast"),
        ("tour", "--no-tls"),
        ("tour", "--no-jwt"),
        ("serve", "--drain-timeout"),
        ("serve", "--tls-dir"),
        ("serve", "--tls-reload"),
        ("call", "--json"),
        ("call", "--tls-dir"),
        ("serve", "--jwt-secret"),
        ("serve", "--jwt-public-key"),
        ("serve", "--jwks"),
        ("serve", "--rate-limit"),
        ("serve", "--redis"),
        ("call", "--token"),
        ("token", "--scope"),
    ] {
        let out = mesh(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help");
        assert!(
            text(&out.stdout).contains(flag),
            "{command} --help lacks {flag}"
        );
    }
}

#[tokio::test]
async fn call_prints_the_reply_as_json() {
    let server = TestServer::start(MeshServer::all()).await;
    let addr = server.addr.to_string();
    let json = r#"{"requestId": "r1", "policy": {"id": "p1", "policyType": "security", "rules": {"min_tls": "1.3"}}}"#;
    let out = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || propose_policy(&addr, json, &[])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(reply["id"], "r1");
    assert_eq!(reply["accepted"], true);
    assert_eq!(reply["duplicate"], false, "defaults are printed too");
    assert_eq!(reply["version"], "1", "uint64 is a string in proto3 JSON");

    let out = tokio::task::spawn_blocking(move || {
        mesh(&["call", "governor", "get_policies", "--addr", &addr])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["policies"][0]["rules"]["min_tls"], "1.3");
    assert_eq!(reply["policies"][0]["state"], "POLICY_STATE_PROPOSED");
}

#[tokio::test]
async fn call_errors_say_what_is_wrong() {
    let server = TestServer::start(MeshServer::all()).await;
    let addr = server.addr.to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(MESH).args(&args).output().expect("run mesh")
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let out = run(args(&[
        "call",
        "governor",
        "ProposePolicy",
        "--addr",
        &addr,
        "--json",
        "{\"requestId\": ",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad JSON for tai.v1.mesh.ProposePolicyRequest") && err.contains("column"),
        "{err}"
    );

    let out = run(args(&[
        "call",
        "governor",
        "ProposePolicy",
        "--addr",
        &addr,
        "--json",
        "{\"nope\": 1}",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    let out = run(args(&["call", "governor", "Frobnicate", "--addr", &addr]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "unknown method `Frobnicate` of Governor; its methods are: ProposePolicy, EnforcePolicy"
        ),
        "{err}"
    );

    let out = run(args(&["call", "janitor", "Sweep", "--addr", &addr]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown service `janitor`"),
        "{}",
        text(&out.stderr)
    );

    // The server answers with an error status: shown with its code.
    let out = run(args(&[
        "call",
        "scheduler",
        "GetTaskStatus",
        "--addr",
        &addr,
        "--json",
        "{\"taskId\": \"ghost\"}",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("NotFound: no task `ghost`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_on_an_address_in_use_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = mesh(&["serve", "--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("address {addr} is already in use")),
        "{err}"
    );
}

/// `mesh serve` until Ctrl-C (SIGINT) or SIGTERM, then drain: a call in flight
/// when the signal comes is answered, and the process exits 0.
#[tokio::test]
async fn serve_drains_an_in_flight_call_on_ctrl_c() {
    serve_drains_an_in_flight_call_on("-INT").await;
}

#[tokio::test]
async fn serve_drains_an_in_flight_call_on_sigterm() {
    serve_drains_an_in_flight_call_on("-TERM").await;
}

async fn serve_drains_an_in_flight_call_on(signal: &str) {
    let (mut child, addr, lines) = spawn_serve(&["--latency", "3s", "--drain-timeout", "10s"]);
    let client = SchedulerClient::new(tai_runtime::Channel::to(addr).unwrap());
    let started = Instant::now();
    let submit = SubmitTaskRequest {
        request_id: "r1".to_owned(),
        task_type: "echo".to_owned(),
        ..SubmitTaskRequest::default()
    };
    // SubmitTask's deadline (4s) is past the server's 3s delay.
    let call = tokio::spawn(async move { client.submit_task(submit).await });
    // The call is held 3s by the server; signal well inside that window, leaving
    // a loaded 2-core CI machine a second to get the call there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );

    let receipt = call
        .await
        .unwrap()
        .expect("the in-flight call is answered")
        .into_inner();
    assert!(receipt.accepted, "{receipt:?}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let rest = rest.join("\n");
    assert!(rest.contains("draining 1 in-flight call(s)"), "{rest}");
    assert!(rest.contains("drained 1 in-flight call(s); bye"), "{rest}");
}

#[test]
fn certs_writes_a_development_ca_and_key_pairs() {
    let dir = std::env::temp_dir().join(format!("mesh-certs-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = mesh(&["certs", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (file, header) in [
        ("ca.pem", "-----BEGIN CERTIFICATE-----"),
        ("server.pem", "-----BEGIN CERTIFICATE-----"),
        ("server.key", "-----BEGIN PRIVATE KEY-----"),
        ("client.pem", "-----BEGIN CERTIFICATE-----"),
        ("client.key", "-----BEGIN PRIVATE KEY-----"),
    ] {
        let pem = std::fs::read_to_string(dir.join(file)).expect(file);
        assert!(pem.starts_with(header), "{file}: {pem}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are readable by their owner only");
    }
    // A second run replaces the set.
    let before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert!(
        mesh(&["certs", "--out", dir.to_str().unwrap()])
            .status
            .success()
    );
    assert_ne!(before, std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `mesh call governor ProposePolicy --json JSON` at `addr` with `extra`.
fn propose_policy(addr: &str, json: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "call",
        "governor",
        "ProposePolicy",
        "--addr",
        addr,
        "--json",
        json,
    ];
    args.extend_from_slice(extra);
    mesh(&args)
}

/// `mesh call governor GetPolicies` at `addr` with `extra`.
fn get_policies(addr: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["call", "governor", "GetPolicies", "--addr", addr];
    args.extend_from_slice(extra);
    mesh(&args)
}

/// `serve --tls-dir` and `call --tls-dir` with the files of `mesh certs`: the
/// call succeeds; without `--tls-dir` it fails at once, saying TLS is required
/// (not after the connect timeout, and not as "unreachable").
#[test]
fn serve_and_call_with_tls_dir() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    assert!(mesh(&["certs", "--out", certs]).status.success());
    let (_server, addr, _) = spawn_serve(&["--tls-dir", certs, "--tls-reload", "1s"]);

    let out = get_policies(&addr, &["--tls-dir", certs]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(reply["policies"], serde_json::json!([]));

    let started = Instant::now();
    let out = get_policies(&addr, &["--connect-timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the server at {addr} requires TLS: call it with --tls-dir DIR"
        )),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a plaintext call to a TLS server fails at once, not at the connect timeout: {:?}",
        started.elapsed()
    );

    // A server of another CA is refused by name.
    let other = tempfile::tempdir().unwrap();
    let other = other.path().to_str().unwrap();
    assert!(mesh(&["certs", "--out", other]).status.success());
    let out = get_policies(&addr, &["--tls-dir", other]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("presented a certificate not signed by a trusted CA"),
        "{err}"
    );
}

/// Any issuer's files serve, not only `mesh certs`': OpenSSL's, with an RSA key
/// in PKCS#1 for the server and an EC key in SEC1 for the client.
#[test]
fn serve_tls_dir_takes_rsa_pkcs1_and_ec_sec1_files() {
    let dir = tempfile::tempdir().unwrap();
    common::foreign_certs::write_to(dir.path());
    let fixtures = dir.path().to_str().unwrap();
    let (_server, addr, _) = spawn_serve(&["--tls-dir", fixtures]);
    let out = get_policies(&addr, &["--tls-dir", fixtures]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A TLS call to a plaintext server says so.
    let (_plain, plain_addr, _) = spawn_serve(&[]);
    let out = get_policies(&plain_addr, &["--tls-dir", fixtures]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("the server at {plain_addr} does not speak TLS")),
        "{err}"
    );
}

#[test]
fn tls_dir_without_its_files_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().to_str().unwrap();
    let out = mesh(&["serve", "--addr", "127.0.0.1:0", "--tls-dir", empty]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ca.pem: no such file"), "{err}");
    let out = get_policies("127.0.0.1:1", &["--tls-dir", empty]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ca.pem: no such file"),
        "{}",
        text(&out.stderr)
    );
}

const SECRET: &str = "a development secret of 32+ bytes!";

/// `mesh token --jwt-secret SECRET` with `extra`: the token it prints.
fn token(extra: &[&str]) -> String {
    let mut args = vec!["token", "--jwt-secret", SECRET, "--ttl", "10m"];
    args.extend_from_slice(extra);
    let out = mesh(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// `serve --jwt-secret`: a call without a token is refused, one with a token
/// of `mesh token` passes when it has the method's scope and is refused
/// naming the scope when not; health needs no token.
#[test]
fn serve_with_jwt_secret_and_call_with_token() {
    let (_server, addr, _) = spawn_serve(&["--jwt-secret", SECRET, "--rate-limit", "100/s"]);

    let out = get_policies(&addr, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");

    let reader = token(&["--sub", "ada", "--scope", "governor.read"]);
    let out = get_policies(&addr, &["--token", &reader]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let json = r#"{"requestId": "r1", "policy": {"id": "p1", "policyType": "security"}}"#;
    let propose = |token: &str| propose_policy(&addr, json, &["--token", token]);
    let out = propose(&reader);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(err.contains("governor.write"), "{err}");
    let writer = token(&["--sub", "ada", "--scope", "governor.write"]);
    let out = propose(&writer);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Health is public.
    let out = mesh(&["call", "governor", "HealthCheck", "--addr", &addr]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A token of another secret is refused.
    let out = mesh(&[
        "token",
        "--jwt-secret",
        "another secret, also at least 32 bytes",
        "--scope",
        "governor.read",
    ]);
    let forged = text(&out.stdout).trim().to_owned();
    let out = get_policies(&addr, &["--token", &forged]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Unauthenticated"));
}

#[test]
fn token_and_serve_refuse_a_short_secret() {
    let out = mesh(&["token", "--jwt-secret", "short"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at least 32 bytes"),
        "{}",
        text(&out.stderr)
    );
    let out = mesh(&["serve", "--addr", "127.0.0.1:0", "--jwt-secret", "short"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("at least 32 bytes"),
        "{}",
        text(&out.stderr)
    );
    let out = mesh(&["serve", "--jwt-secret", SECRET, "--jwks", "jwks.json"]);
    assert_eq!(out.status.code(), Some(2), "one key source at a time");
}

/// A token for `mesh serve --jwks` (default audience and issuer, `governor.read`),
/// signed ES256 with `key` and naming `kid`.
fn es256_token(key: &rcgen::KeyPair, kid: &str) -> String {
    use tai_examples::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": "ada", "aud": DEFAULT_AUDIENCE, "iss": DEFAULT_ISSUER,
        "exp": now + 600, "scope": "governor.read",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &signing).unwrap()
}

/// `serve --jwks FILE`, with a JWKS written here holding the public half of an
/// EC P-256 key made here: a token that key signed under its kid passes; the
/// same token under another kid, or signed by another key under the right kid,
/// is refused.
#[test]
fn serve_with_jwks_and_call_with_a_token_of_its_key() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let point = key.public_key_raw(); // 0x04, x, y
    assert_eq!(point.len(), 65);
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "mesh-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let (_server, addr, _) = spawn_serve(&["--jwks", path.to_str().unwrap()]);

    let out = get_policies(&addr, &["--token", &es256_token(&key, "mesh-1")]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = get_policies(&addr, &["--token", &es256_token(&key, "mesh-2")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(err.contains("names no key this server has"), "{err}");

    let other = rcgen::KeyPair::generate().unwrap();
    let out = get_policies(&addr, &["--token", &es256_token(&other, "mesh-1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out.stderr)
    );
}

/// `serve --redis URL --rate-limit N/s`: two servers sharing one real Redis
/// share one quota. Calls from one client (one peer address) alternate between
/// them as fast as they answer; together they accept at most what GCRA admits
/// for one quota over the measured time (N·t + N). Two separate quotas would
/// accept more at once (each its own burst) and twice as much over time: with
/// `--redis` left out this test fails (`[2, 2] accepted in 0.03s`). A check
/// Redis does not answer within the store's 50 ms is decided by the server's
/// own quota (the documented fallback), so a machine too loaded for loopback
/// Redis to answer in 50 ms could see one extra call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_redis_shares_the_rate_limit_between_servers() {
    const RATE: u32 = 2;
    const CALLS: usize = 20;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let rate = format!("{RATE}/s");
    let servers: Vec<_> = (0..2)
        .map(|_| spawn_serve(&["--rate-limit", &rate, "--redis", &url]))
        .collect();
    let mut clients = Vec::new();
    for (_, addr, _) in &servers {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        clients.push(tonic_health::pb::health_client::HealthClient::new(channel));
    }
    let started = Instant::now();
    let mut accepted = [0u32; 2];
    for call in 0..CALLS {
        let server = call % 2;
        let request = tonic_health::pb::HealthCheckRequest::default();
        match clients[server].check(request).await {
            Ok(_) => accepted[server] += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            }
        }
        if call < 2 {
            // The first call to each is within the one burst.
            assert_eq!(accepted[server], 1, "call {call} was refused");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = accepted[0] + accepted[1];
    let bound = f64::from(RATE) * elapsed + f64::from(RATE);
    assert!(
        f64::from(total) <= bound,
        "{accepted:?} accepted in {elapsed:.2}s: more than one quota's {bound:.1}"
    );
}
