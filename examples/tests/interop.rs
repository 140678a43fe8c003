//! Interop: a gRPC C-core client (Python grpcio) calls `mesh serve --tls-dir`.
//!
//! tai's server must serve clients it did not write, over mTLS: the script
//! `tests/interop/grpcio_client.py` builds the mesh's messages from the
//! descriptor set tai-build wrote and calls the Governor with the client
//! certificate (it succeeds), and without one (the server refuses the
//! handshake: UNAVAILABLE). It also reads the status of two calls the server
//! refuses: an answer without messages must reach a client it did not write
//! as gRPC's Trailers-Only, or the client loses the status.
//!
//! The test needs `python3` with `grpcio` and `protobuf`. Without them it skips
//! with a message, unless `TAI_REQUIRE_INTEROP` is set (CI sets it, and
//! installs them): then their absence fails the test.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::spawn_serve;
use tai_examples::certs::{DevCerts, files};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/grpcio_client.py"
);

/// Whether `python3` can import grpc and protobuf; if not, whether to skip.
fn python_with_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc, google.protobuf"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("TAI_REQUIRE_INTEROP").is_none(),
            "TAI_REQUIRE_INTEROP is set but `python3 -c \"import grpc, google.protobuf\"` fails: \
             install them with `python3 -m pip install grpcio protobuf`"
        );
        eprintln!(
            "SKIPPED interop test: python3 with grpcio and protobuf not found \
             (`python3 -m pip install grpcio protobuf` to run it; CI sets TAI_REQUIRE_INTEROP=1)"
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
    let descriptors = dir.path().join("tai_descriptor.bin");
    std::fs::write(&descriptors, tai_examples::server::DESCRIPTOR_SET).unwrap();
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
}
