//! Generates the mesh services' messages, servers and resilient clients from
//! `proto/` (the repository's `proto/` folder), with tai-build.

fn main() {
    if let Err(e) = tai_build::compile("../proto") {
        // tai-build's errors name the .proto file and line; show them as they are.
        eprintln!("{e}");
        std::process::exit(1);
    }
}
