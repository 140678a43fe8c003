//! The tour, run by the built binary in fast mode: exit code 0 and an honest
//! summary; with mTLS and JWTs (the default: the server certificate rotated
//! midway, two calls refused on purpose) and in plaintext without tokens.

use std::process::{Command, Output};

fn tour(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["tour", "--fast", "--live", "lines"])
        .args(extra)
        .output()
        .expect("run mesh tour")
}

#[test]
fn the_fast_tour_passes_and_says_so() {
    let out = tour(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "security: mTLS on every connection",
        "metrics: http://127.0.0.1:",
        "replica-1 starts answering every call UNAVAILABLE",
        "replica-2 is stopped",
        "replica-3 starts answering 150ms late",
        "the server certificate is rotated",
        "ok   mTLS on every connection; the server certificate rotated without a failed call",
        "1 reload(s) applied",
        "auth: a bearer JWT on every call",
        "ok   JWT required on every call",
        "a call without a token refused, Unauthenticated",
        "a Governor write with a read-only token refused, PermissionDenied: the caller lacks scope governor.write",
        "summary after",
        "Scheduler/SubmitTask",
        "idempotent calls succeeded",
        "every mutation applied exactly once",
        "every action acknowledged",
        "every task ended",
        "PASS",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn the_fast_tour_passes_in_plaintext_without_tokens_too() {
    let out = tour(&["--no-tls", "--no-jwt"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("security: plaintext (--no-tls)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("rotated"),
        "no rotation in plaintext: {stdout}"
    );
    assert!(stdout.contains("auth: none (--no-jwt)"), "{stdout}");
    assert!(!stdout.contains("JWT required"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
}
