//! Compiles `proto/greeter.proto` twice: with tonic-prost-build (tonic's client
//! and server, as a tonic user has them) and with tai-build (tai's client). Neither
//! needs `protoc`: protox parses the proto for both.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["proto/greeter.proto"], ["proto"])?;
    let tonic_out = out.join("tonic");
    std::fs::create_dir_all(&tonic_out)?;
    tonic_prost_build::configure()
        .out_dir(&tonic_out)
        .compile_fds(fds)?;
    let tai_out = out.join("tai");
    std::fs::create_dir_all(&tai_out)?;
    tai_build::Builder::new()
        .include("proto")
        .out_dir(&tai_out)
        .compile()?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
