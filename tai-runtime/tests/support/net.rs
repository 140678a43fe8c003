//! An in-process network for channel tests: servers by address, connections
//! through a user-space proxy that can be cut (the kernel's netem is not available,
//! and paused tokio time needs in-memory I/O to stay deterministic).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tai_runtime::channel::{BoxIo, ConnectFuture, Connector};
use tokio::sync::{mpsc, watch};
use tonic::transport::Server;

use super::Script;

/// Accepted in-memory connections, for `serve_with_incoming`.
pub type Incoming = futures_util::stream::Map<
    tokio_stream::wrappers::UnboundedReceiverStream<tokio::io::DuplexStream>,
    fn(tokio::io::DuplexStream) -> Result<tokio::io::DuplexStream, io::Error>,
>;

struct Host {
    incoming: mpsc::UnboundedSender<tokio::io::DuplexStream>,
    kill: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
}

/// Servers by address; connecting to an address with no server is refused.
#[derive(Clone, Default)]
pub struct Net {
    hosts: Arc<Mutex<HashMap<String, Host>>>,
}

impl Net {
    /// Starts `script`'s server at `address` (replacing a killed one).
    pub fn start(&self, address: &str, script: &Script) {
        let router = Server::builder().add_service(script.clone());
        self.serve(address, |incoming| async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
    }

    /// Starts any server at `address`: `serve` gets the stream of accepted
    /// connections (pass it to `serve_with_incoming`).
    pub fn serve<F, Fut>(&self, address: &str, serve: F)
    where
        F: FnOnce(Incoming) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<tokio::io::DuplexStream>();
        let incoming = futures_util::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            Ok::<_, io::Error> as fn(_) -> _,
        );
        tokio::spawn(serve(incoming));
        self.hosts.lock().unwrap().insert(
            address.to_owned(),
            Host {
                incoming: tx,
                kill: watch::Sender::new(false),
                accepted: Arc::default(),
            },
        );
    }

    /// Cuts every connection to `address` and refuses new ones.
    pub fn kill(&self, address: &str) {
        if let Some(host) = self.hosts.lock().unwrap().remove(address) {
            host.kill.send_replace(true);
        }
    }

    /// Connections `address` has accepted since it started.
    pub fn accepted(&self, address: &str) -> usize {
        self.hosts
            .lock()
            .unwrap()
            .get(address)
            .map_or(0, |h| h.accepted.load(Ordering::SeqCst))
    }

    pub fn connector(&self) -> impl Connector {
        self.clone()
    }
}

impl Connector for Net {
    fn connect(&self, address: &str) -> ConnectFuture {
        let hosts = self.hosts.lock().unwrap();
        let Some(host) = hosts.get(address) else {
            let address = address.to_owned();
            return Box::pin(async move {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{address}: connection refused"),
                ))
            });
        };
        let (client, mut near) = tokio::io::duplex(1 << 16);
        let (mut far, server) = tokio::io::duplex(1 << 16);
        let sent = host.incoming.send(server);
        host.accepted.fetch_add(1, Ordering::SeqCst);
        let mut kill = host.kill.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                _ = kill.wait_for(|k| *k) => {}
            }
        });
        Box::pin(async move {
            sent.map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "server stopped"))?;
            Ok(Box::new(client) as BoxIo)
        })
    }
}
