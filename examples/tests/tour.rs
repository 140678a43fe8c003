//! The tour, run by the built binary in fast mode: exit code 0 and an honest
//! summary.

use std::process::Command;

#[test]
fn the_fast_tour_passes_and_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["tour", "--fast", "--live", "lines"])
        .output()
        .expect("run mesh tour");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "metrics: http://127.0.0.1:",
        "replica-1 starts answering every call UNAVAILABLE",
        "replica-2 is stopped",
        "replica-3 starts answering 150ms late",
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
