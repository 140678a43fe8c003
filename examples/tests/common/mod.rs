//! Helpers shared by the integration tests: a real server on loopback, and the
//! generated clients connected to it.
#![allow(dead_code)]

pub mod foreign_certs;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use tai_examples::proto::coordinator_client::CoordinatorClient;
use tai_examples::proto::governor_client::GovernorClient;
use tai_examples::proto::scheduler_client::SchedulerClient;
use tai_examples::scheduler::TaskHandler;
use tai_examples::server::{Drained, MeshServer, ServeError, bind};
use tai_runtime::{Channel, Status};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound on waiting for an event that should come at once.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// A server running on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<Drained, ServeError>>>,
}

impl TestServer {
    pub async fn start<H: TaskHandler>(server: MeshServer<H>) -> Self {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn channel(&self) -> Channel {
        Channel::to(self.addr.to_string()).expect("valid address")
    }

    pub fn governor(&self) -> GovernorClient {
        GovernorClient::new(self.channel())
    }

    pub fn coordinator(&self) -> CoordinatorClient {
        CoordinatorClient::new(self.channel())
    }

    pub fn scheduler(&self) -> SchedulerClient {
        SchedulerClient::new(self.channel())
    }

    /// A plain tonic channel, for the standard health and reflection clients.
    pub async fn tonic_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for the drain.
    pub async fn shutdown(mut self) -> Drained {
        self.begin_shutdown();
        self.task
            .take()
            .expect("not yet shut down")
            .await
            .expect("server task")
            .expect("server ran")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Asserts a call failed with `code` and a message containing `fragment`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: tonic::Code,
    fragment: &str,
) {
    match result {
        Ok(v) => panic!("expected {code:?} ({fragment}), got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(
                s.message().contains(fragment),
                "expected `{fragment}` in the message: {}",
                s.message()
            );
        }
    }
}

/// The next message of a stream, failing the test if none comes in time.
pub async fn next<T>(stream: &mut tai_runtime::ResponseStream<T>) -> T {
    tokio::time::timeout(EVENTUALLY, stream.message())
        .await
        .expect("a message in time")
        .expect("no stream error")
        .expect("the stream is open")
}
