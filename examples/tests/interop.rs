//! Interop with gRPC C-core (Python grpcio), both ways. tai must serve clients
//! it did not write, and call servers it did not write.
//!
//! - A grpcio client calls `mesh serve --tls-dir` (`tests/interop/grpcio_client.py`,
//!   the mesh's messages built from the descriptor set tai-build wrote): with the
//!   client certificate it succeeds, without one the handshake is refused
//!   (UNAVAILABLE). It reads the status of two calls the server refuses: an
//!   answer without messages must reach it as gRPC's Trailers-Only, or the
//!   client loses the status. A gzip-compressed request is served.
//! - tai's generated client calls a grpcio server (`tests/interop/grpcio_server.py`),
//!   its compiled policy on the wire as gRPC specifies it: the deadline as
//!   `grpc-timeout`, A6 retries with `grpc-previous-rpc-attempts`, the server's
//!   pushback obeyed (a wait, or no retry), statuses and their messages read as
//!   C-core sends them.
//! - gRFC A8 both ways: C-core's GOAWAY `too_many_pings` slows tai's client's
//!   pings; tai's keepalive police sends one a C-core client reads as such
//!   (`tests/interop/grpcio_pinger.py`).
//! - gRPC's Python reflection client builds the mesh's messages from the
//!   server's reflection (`tests/interop/grpcio_reflection.py`).
//!
//! The tests need `python3` with `grpcio`, `grpcio-reflection` and `protobuf`.
//! Without them they skip with a message, unless `TAI_REQUIRE_INTEROP` is set
//! (CI sets it, and installs them): then their absence fails them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::spawn_serve;
use tai_examples::certs::{DevCerts, files};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/grpcio_client.py"
);

const REFLECTION_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/grpcio_reflection.py"
);

const PINGER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/grpcio_pinger.py"
);

const SERVER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/grpcio_server.py"
);

/// Whether `python3` can import grpc, its reflection client and protobuf; if
/// not, whether to skip.
fn python_with_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection, google.protobuf"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("TAI_REQUIRE_INTEROP").is_none(),
            "TAI_REQUIRE_INTEROP is set but `python3 -c \"import grpc, grpc_reflection, google.protobuf\"` fails: \
             install them with `python3 -m pip install grpcio grpcio-reflection protobuf`"
        );
        eprintln!(
            "SKIPPED interop test: python3 with grpcio, grpcio-reflection and protobuf not found \
             (`python3 -m pip install grpcio grpcio-reflection protobuf` to run it; CI sets TAI_REQUIRE_INTEROP=1)"
        );
    }
    found
}

fn grpcio_client(addr: &str, descriptors: &Path, certs: &Path, with_cert: bool) -> Output {
    let path = |file: &str| certs.join(file).to_str().unwrap().to_owned();
    let mut command = Command::new("python3");
    command.args([
        SCRIPT,
        "--addr",
        addr,
        "--descriptor-set",
        descriptors.to_str().unwrap(),
        "--ca",
        &path(files::CA),
    ]);
    if with_cert {
        command.args([
            "--cert",
            &path(files::CLIENT_CERT),
            "--key",
            &path(files::CLIENT_KEY),
        ]);
    }
    command.output().expect("run python3")
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the script prints one JSON line ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn grpcio_calls_mesh_serve_over_mtls_and_is_refused_without_a_certificate() {
    if !python_with_grpcio() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    DevCerts::generate().unwrap().write(&certs).unwrap();
    let descriptors = descriptor_set_in(dir.path());
    let (_server, addr, _) = spawn_serve(&["--tls-dir", certs.to_str().unwrap()]);

    // Without a client certificate first: the server refuses the handshake, and
    // keeps serving those who present one.
    let out = grpcio_client(&addr, &descriptors, &certs, false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = report(&out);
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["code"], "UNAVAILABLE", "{refused}");

    let out = grpcio_client(&addr, &descriptors, &certs, true);
    let called = report(&out);
    assert!(
        out.status.success(),
        "{called}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(called["receipt"]["id"], "grpcio-1", "{called}");
    assert_eq!(called["receipt"]["accepted"], true, "{called}");
    assert_eq!(called["policies"][0]["id"], "from-grpcio", "{called}");

    let refused = &called["refused"];
    assert_eq!(
        refused["empty_proposal"]["code"], "INVALID_ARGUMENT",
        "{refused}"
    );
    assert!(
        refused["empty_proposal"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("request_id is empty")),
        "{refused}"
    );
    assert_eq!(
        refused["unknown_method"]["code"], "UNIMPLEMENTED",
        "{refused}"
    );
    // A request compressed with gzip is taken, not refused as UNIMPLEMENTED.
    let gzip = &called["gzip"];
    assert_eq!(gzip["code"], "OK", "{gzip}");
    assert_eq!(gzip["policies"], 1, "{gzip}");
}

/// The mesh's descriptor set, written into `dir` for a Python script to read.
fn descriptor_set_in(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tai_descriptor.bin");
    std::fs::write(&path, tai_examples::server::DESCRIPTOR_SET).unwrap();
    path
}

/// The grpcio server as a process: stopped when dropped (its stdin closes),
/// killed if it does not stop.
struct GrpcioServer {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    addr: String,
    /// Holds the descriptor set the server read.
    _dir: tempfile::TempDir,
}

impl GrpcioServer {
    fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .args([SERVER_SCRIPT, "--descriptor-set"])
            .arg(descriptor_set_in(dir.path()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the server says where").unwrap();
        let addr = first
            .strip_prefix("serving on ")
            .unwrap_or_else(|| panic!("not an address: {first:?}"))
            .to_owned();
        Self {
            child,
            lines,
            addr,
            _dir: dir,
        }
    }

    /// The next call the server logged.
    fn next_call(&mut self) -> serde_json::Value {
        let line = self.lines.next().expect("a call logged").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for GrpcioServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_client_calls_a_grpcio_server_with_its_policy() {
    use tai_examples::proto::governor_client::GovernorClient;
    use tai_examples::proto::{Policy, ProposePolicyRequest, StreamPoliciesRequest};
    use tonic::Code;

    if !python_with_grpcio() {
        return;
    }
    let mut server = GrpcioServer::start(&[]);
    let channel = tai_runtime::Channel::to(format!("http://{}", server.addr)).unwrap();
    let governor = GovernorClient::new(channel);
    let propose = |request_id: &str, name: &str| ProposePolicyRequest {
        request_id: request_id.to_owned(),
        policy: Some(Policy {
            id: "p".to_owned(),
            policy_type: "security".to_owned(),
            name: name.to_owned(),
            ..Policy::default()
        }),
    };

    // UNAVAILABLE twice, each with a 300 ms pushback, then answered:
    // ProposePolicy's retry policy takes it through, each retry numbered and
    // sent only after the pushback (its own backoff would be 50 ms), all under
    // the 3 s deadline, which each retry carries as what is left of it.
    let receipt = governor
        .propose_policy(propose("r1", "unavailable-twice"))
        .await
        .expect("answered on the third attempt")
        .into_inner();
    assert_eq!(
        (receipt.id.as_str(), receipt.message.as_str()),
        ("r1", "attempt 3")
    );
    let mut last: Option<(i64, i64)> = None;
    for previous in [None, Some("1"), Some("2")] {
        let call = server.next_call();
        assert_eq!(call["request_id"], "r1", "{call}");
        assert_eq!(call["previous_attempts"].as_str(), previous, "{call}");
        let timeout_ms = call["timeout_ms"].as_i64().expect("a deadline was sent");
        assert!((1..=3000).contains(&timeout_ms), "{call}");
        let at_ms = call["at_ms"].as_i64().unwrap();
        if let Some((last_at, last_timeout)) = last {
            assert!(
                at_ms - last_at >= 300,
                "retried before the pushback: {call}"
            );
            assert!(
                timeout_ms < last_timeout,
                "the deadline is the call's: {call}"
            );
        }
        last = Some((at_ms, timeout_ms));
    }

    // A negative pushback: the server says not to retry, and is obeyed.
    let stopped = governor
        .propose_policy(propose("r2", "pushback-stop"))
        .await
        .unwrap_err();
    assert_eq!(stopped.code(), Code::Unavailable, "{stopped}");
    assert_eq!(server.next_call()["request_id"], "r2");

    // A code the policy does not retry, its non-ASCII message decoded.
    let invalid = governor
        .propose_policy(propose("r3", "invalid"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid}");
    assert_eq!(
        invalid.message(),
        "policy \u{ab} invalid \u{bb} refus\u{e9}e: 100% wrong"
    );
    assert_eq!(server.next_call()["request_id"], "r3");

    // A stream: its messages, then the status in its trailers. No whole-call
    // timeout for a subscription: no grpc-timeout.
    let mut stream = governor
        .stream_policies(StreamPoliciesRequest {
            policy_type: "security".to_owned(),
            ..StreamPoliciesRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    for version in [1, 2] {
        let policy = stream.message().await.unwrap().expect("a policy");
        assert_eq!(
            (policy.version, policy.policy_type.as_str()),
            (version, "security")
        );
    }
    let lost = stream.message().await.unwrap_err();
    assert_eq!(lost.code(), Code::DataLoss, "{lost}");
    assert_eq!(lost.message(), "the log ends here");
    let call = server.next_call();
    assert_eq!(call["method"], "StreamPolicies", "{call}");
    assert_eq!(call["timeout_ms"], serde_json::Value::Null, "{call}");

    // Nothing else reached the server: the stopped and the invalid call were
    // not retried (the next line is the one this call makes).
    let receipt = governor
        .propose_policy(propose("r4", "fine"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.message, "attempt 1");
    assert_eq!(server.next_call()["request_id"], "r4");
}

/// gRFC A8 against C-core's own enforcement: a client pinging every 10 s while
/// idle is told GOAWAY `too_many_pings` (here at its third ping: one bad ping
/// let pass, the least C-core allows: 0 means any number), and the endpoint's
/// next connections ping half as often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_server_that_says_too_many_pings_is_pinged_half_as_often() {
    use std::time::Duration;
    use tai_runtime::config::{ClientConfig, KeepaliveConfig};

    if !python_with_grpcio() {
        return;
    }
    let server = GrpcioServer::start(&["--max-ping-strikes", "1"]);
    let mut config = ClientConfig::default();
    let every = KeepaliveConfig::MIN_TIME;
    config.connection.keepalive =
        Some(KeepaliveConfig::new(every, Duration::from_secs(20)).with_while_idle(true));
    let channel = tai_runtime::Channel::builder(tai_runtime::Endpoints::one(server.addr.clone()))
        .config(config)
        .build()
        .unwrap();
    assert!(channel.ready(Duration::from_secs(10)).await, "connected");
    let keepalive = || channel.endpoint_stats()[0].keepalive;
    assert_eq!(keepalive(), Some(every));
    // The third ping comes at 30 s; allow the machine a while more.
    let give_up = tokio::time::Instant::now() + 5 * every;
    while keepalive() == Some(every) && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(keepalive(), Some(2 * every), "doubled after the GOAWAY");
}

/// gRFC A8 the other way: tai's keepalive police tells a C-core client that
/// pings every second while idle GOAWAY `too_many_pings`, in frames C-core reads
/// as such (it logs that very GOAWAY; it would log a protocol error otherwise).
#[test]
fn a_grpcio_client_pinging_too_often_is_told_too_many_pings() {
    use std::io::BufRead;

    if !python_with_grpcio() {
        return;
    }
    let (_server, addr, _) = spawn_serve(&[]);
    let mut pinger = Command::new("python3")
        .args([PINGER_SCRIPT, "--addr", &addr])
        // C-core logs the GOAWAY at ERROR, which this level shows.
        .env("GRPC_VERBOSITY", "ERROR")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run python3");
    // C-core's log, until the GOAWAY is in it or the pinger gives up (30 s).
    let stderr = std::io::BufReader::new(pinger.stderr.take().unwrap());
    let told = stderr.lines().map_while(Result::ok).find(|line| {
        line.contains("Received a GOAWAY with error code ENHANCE_YOUR_CALM")
            && line.contains("too_many_pings")
    });
    let _ = pinger.kill();
    let _ = pinger.wait();
    assert!(told.is_some(), "C-core never logged GOAWAY too_many_pings");
}

/// gRPC's own reflection client (grpcio-reflection, as tools built on C-core use
/// it) builds a descriptor pool from what `mesh serve` sends: a service's file
/// comes with the files it imports, so a message with a field of an imported
/// type (`google.protobuf.Timestamp`) can be built and encoded.
#[test]
fn grpcios_reflection_client_builds_the_mesh_messages_from_the_server() {
    use prost::Message;

    if !python_with_grpcio() {
        return;
    }
    let (_server, addr, _) = spawn_serve(&[]);
    let out = Command::new("python3")
        .args([REFLECTION_SCRIPT, "--addr", &addr])
        .output()
        .expect("run python3");
    let seen = report(&out);
    assert!(
        out.status.success(),
        "{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for service in [
        "grpc.health.v1.Health",
        "tai.v1.mesh.Coordinator",
        "tai.v1.mesh.Governor",
        "tai.v1.mesh.Scheduler",
    ] {
        assert!(
            seen["services"]
                .as_array()
                .unwrap()
                .contains(&service.into()),
            "{service}: {seen}"
        );
    }
    assert_eq!(seen["methods"][0], "ProposePolicy", "{seen}");
    assert_eq!(seen["file"], "tai/v1/mesh/governor.proto", "{seen}");
    let dependencies = seen["dependencies"].as_array().unwrap();
    assert!(
        dependencies.contains(&"google/protobuf/timestamp.proto".into()),
        "{seen}"
    );
    // What Python encoded from the reflected descriptors is what tai's own
    // types decode.
    let bytes: Vec<u8> = (0..seen["encoded"].as_str().unwrap().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&seen["encoded"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();
    let policy = tai_examples::proto::Policy::decode(bytes.as_slice()).unwrap();
    assert_eq!((policy.id.as_str(), policy.version), ("p1", 2));
    assert_eq!(policy.created_at.map(|t| t.seconds), Some(1));
}
