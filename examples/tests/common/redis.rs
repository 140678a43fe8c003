//! A `redis-server` of the test's own on a free loopback port (no persistence),
//! killed when dropped; started as tai-runtime's Redis tests start theirs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one, or `None` (having said why) when `redis-server` is not on the
    /// PATH, unless `TAI_REQUIRE_REDIS` is set (as `.ci/run` sets it): then
    /// the test must run, and fails.
    pub fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("TAI_REQUIRE_REDIS").is_none(),
                "TAI_REQUIRE_REDIS is set but redis-server is not on the PATH"
            );
            eprintln!(
                "skipped: redis-server is not installed (Debian: apt-get install redis-server); \
                 .ci/run installs it and sets TAI_REQUIRE_REDIS=1"
            );
            return None;
        }
        // A free port: the kernel picks one, the listener closes, Redis takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether it answers PING (in Redis' inline protocol).
    fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
