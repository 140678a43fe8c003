//! The built `mesh` binary as a process: `mesh serve` started on a free port,
//! its address read from its first line, killed when dropped.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

/// The `mesh` binary of this build.
pub const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// A `mesh serve` process, killed (and reaped) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mesh serve --addr 127.0.0.1:0` with `extra`: the process, the address it
/// says it serves on, and its further lines.
pub fn spawn_serve(extra: &[&str]) -> (Server, String, Lines<BufReader<ChildStdout>>) {
    let mut child = Server(
        Command::new(MESH)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mesh serve"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("mesh serve prints where it serves")
        .unwrap();
    let addr = first
        .split(" on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    (child, addr, lines)
}
