//! The harness end to end at its smallest: one pair of 0.2 s, three scenarios
//! (closed loop, open loop, stream), every variant but the A/A one and tai on
//! tonic's channel (tai and tonic with tower-resilience; the tai servers, plain
//! and mTLS, and the tonic servers beside them), unpinned. Checks that it runs
//! and writes the JSON it documents; the figures of so short a run mean nothing.

use std::process::Command;

#[test]
fn quick_run_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tai-bench"))
        .args([
            "--quick",
            "--pairs",
            "1",
            "--secs",
            "0.2",
            "--warmup",
            "0.05",
            "--scenarios",
            "unary_c1,fixed_rate,stream",
            "--rate",
            "400",
            "--variants",
            "tai,raw+deadline,tonic+resilience,tonic-server,tai-server-builder,tonic-tls,tai-server-tls",
            "--no-pin",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| tai |"), "{stdout}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for variant in [
        "raw",
        "raw+deadline",
        "tai",
        "tonic+resilience",
        "tonic-server",
        "tai-server-builder",
        "tonic-tls",
        "tai-server-tls",
    ] {
        let v = &results["variants"][variant];
        assert!(
            v["throughput_per_s"].as_f64().unwrap() > 0.0,
            "{variant}: {v}"
        );
        assert!(v["p99_us"].as_f64().is_some(), "{variant}: {v}");
        assert_eq!(v["errors"], 0, "{variant}: {v}");
    }
    for ratio in [
        "tai/raw",
        "raw+deadline/raw",
        "tai/raw+deadline",
        "tai/tonic+resilience",
        "tai-server-builder/tonic-server",
        "tai-server-tls/tonic-tls",
    ] {
        assert!(
            results["ratios"][ratio].as_f64().is_some(),
            "{ratio}: {results}"
        );
    }
    let open_loop = &results["scenarios"]["fixed_rate"];
    assert_eq!(open_loop["rate_per_s"], 400.0, "{open_loop}");
    let sent = open_loop["variants"]["tai"]["throughput_per_s"]
        .as_f64()
        .unwrap();
    assert!(
        (100.0..=800.0).contains(&sent),
        "the open loop sends at about its rate: {sent}/s"
    );
    let stream = &results["scenarios"]["stream"]["variants"];
    for variant in ["tai", "tai-server-builder", "tai-server-tls"] {
        let v = &stream[variant];
        assert_eq!(v["unit"], "msg", "{variant}: {v}");
        assert_eq!(v["errors"], 0, "{variant}: {v}");
        assert!(
            v["throughput_per_s"].as_f64().unwrap() > 0.0,
            "{variant}: {v}"
        );
    }
}
