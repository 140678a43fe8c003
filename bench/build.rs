//! Generates the benchmark service twice from `proto/bench.proto`: tai's messages,
//! server and resilient client (tai-build), and tonic's own generated client over
//! the same messages (tonic-prost-build), which is what the `raw` variants call.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tai_build::Builder::new()
        .include("proto")
        .include("../proto")
        .file("proto/bench.proto")
        .build_server(true)
        .build_client(true)
        .compile()
        .map_err(|e| e.to_string())?;

    // tonic's generated client, on the messages tai-build generated (`crate::pb`).
    let fds = protox::compile(["bench.proto"], ["proto", "../proto"])?;
    let mut fds = fds;
    fds.file.retain(|f| f.name() == "bench.proto");
    let tonic_out = out.join("tonic");
    std::fs::create_dir_all(&tonic_out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .extern_path(".tai.bench", "crate::pb")
        .out_dir(&tonic_out)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/bench.proto");
    Ok(())
}
