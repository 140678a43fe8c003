//! The benchmark servers: tonic's generated server for `tai.bench.Bench`, hosted
//! five ways ([`ServerKind`]) so that each tai server has the tonic server a user
//! would otherwise run beside it in the same run. Each runs as its own process
//! (`tai-bench serve --kind ...`), pinned to its own core, so that its CPU time is
//! read from /proc on its own and it never competes with the client for a core.
//!
//! The rate limit of the tai servers is per client with a quota no run reaches,
//! so that it checks every call and refuses none.

use std::path::Path;
use std::pin::Pin;

use futures_util::Stream;
use tai_runtime::server::ServerLayer;
use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use crate::pb::bench_server::{Bench, BenchServer};
use crate::pb::{Nested, Payload, StreamRequest};

/// Messages per stream at most, whatever a client asks for.
const MAX_STREAM: u32 = 1_000_000;

/// A per-client quota far above anything one client sends here.
const UNREACHED: Quota = Quota::per_second(std::num::NonZeroU32::new(100_000_000).unwrap());

/// How a server process hosts the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerKind {
    /// tonic's `Server`, nothing added, started as the harness always started it
    /// for the client variants: `serve_with_incoming` over a plain listener, which
    /// leaves Nagle's algorithm on (tonic ignores its `tcp_nodelay` there). Its
    /// writes are batched, so at concurrency 64 it stays ahead of every client
    /// and the client comparisons measure the clients.
    Plain,
    /// tonic's `Server`, nothing added, accepting with TCP_NODELAY as tonic's own
    /// `serve(addr)` does: the baseline of the server variants.
    Tonic,
    /// tonic's `Server` with tai's layers: [`ServerLayer`] (deadline, metrics)
    /// and a per-client [`RateLimitLayer`].
    Layers,
    /// tai's [`Server`](tai_runtime::server::Server) builder: its accept loop, the
    /// default `ServerLayer` (deadline, metrics), the rate limit, auth off;
    /// health and reflection off (they serve no call here).
    Builder,
    /// tonic's `Server` with tonic's own TLS (rustls on ring), client
    /// certificates required.
    TonicTls,
    /// [`Builder`](ServerKind::Builder) with mTLS
    /// ([`ServerTls`](tai_runtime::tls::ServerTls)).
    BuilderTls,
}

impl ServerKind {
    /// Every kind, in the order the harness starts them.
    pub const ALL: [ServerKind; 6] = [
        ServerKind::Plain,
        ServerKind::Tonic,
        ServerKind::Layers,
        ServerKind::Builder,
        ServerKind::TonicTls,
        ServerKind::BuilderTls,
    ];

    /// The `--kind` of `tai-bench serve`.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Plain => "plain",
            ServerKind::Tonic => "tonic",
            ServerKind::Layers => "layers",
            ServerKind::Builder => "builder",
            ServerKind::TonicTls => "tonic-tls",
            ServerKind::BuilderTls => "builder-tls",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether clients reach it over mTLS.
    pub fn tls(self) -> bool {
        matches!(self, ServerKind::TonicTls | ServerKind::BuilderTls)
    }
}

#[derive(Debug, Default, Clone)]
struct Service;

type PayloadStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl Bench for Service {
    async fn echo(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_nested(&self, request: Request<Nested>) -> Result<Response<Nested>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type StreamStream = PayloadStream;

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<PayloadStream>, Status> {
        let StreamRequest { count, size } = request.into_inner();
        let payload = Payload {
            data: vec![0x5a; size.min(1 << 20) as usize],
        };
        let messages = (0..count.min(MAX_STREAM)).map(move |_| Ok(payload.clone()));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }
}

/// Serves on an ephemeral loopback port, prints `LISTENING <addr>` on stdout, and
/// runs until stdin closes (the parent harness exited or dropped us). `tls_dir`
/// holds the development certificates for the TLS kinds (as
/// [`tai_examples::certs::DevCerts::write`] names them).
pub fn serve(
    kind: ServerKind,
    threads: usize,
    tls_dir: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    use tai_examples::certs::files;
    let runtime = crate::runtime(threads)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTENING {}", listener.local_addr()?);
        let stop = async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        };
        let service = BenchServer::new(Service);
        let tls_dir = || tls_dir.ok_or("a TLS server needs --tls-dir");
        match kind {
            ServerKind::Builder | ServerKind::BuilderTls => {
                let mut server = tai_runtime::server::Server::builder()
                    .health(false)
                    .reflection(false)
                    .layer(RateLimitLayer::per_client(UNREACHED))
                    .add_service(service);
                if kind == ServerKind::BuilderTls {
                    let dir = tls_dir()?;
                    server = server.tls(tai_runtime::tls::ServerTls::from_pem(
                        dir.join(files::CA),
                        dir.join(files::SERVER_CERT),
                        dir.join(files::SERVER_KEY),
                    )?);
                }
                server.serve_with_incoming(listener, stop).await?;
            }
            ServerKind::Plain | ServerKind::Tonic | ServerKind::Layers | ServerKind::TonicTls => {
                // The servers compared with tai's accept as tonic's own
                // `serve(addr)` does: with TCP_NODELAY, as tai's builder does. (Its
                // builder's `tcp_nodelay` is ignored by `serve_with_incoming*`.)
                let nodelay = kind != ServerKind::Plain;
                let incoming = tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(nodelay));
                let mut builder = tonic::transport::Server::builder();
                if kind == ServerKind::TonicTls {
                    let dir = tls_dir()?;
                    let read = |file| std::fs::read(dir.join(file));
                    let tls = tonic::transport::ServerTlsConfig::new()
                        .identity(tonic::transport::Identity::from_pem(
                            read(files::SERVER_CERT)?,
                            read(files::SERVER_KEY)?,
                        ))
                        .client_ca_root(tonic::transport::Certificate::from_pem(read(files::CA)?));
                    builder = builder.tls_config(tls)?;
                }
                if kind == ServerKind::Layers {
                    builder
                        .layer(ServerLayer::new())
                        .layer(RateLimitLayer::per_client(UNREACHED))
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await?;
                } else {
                    builder
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await?;
                }
            }
        }
        Ok(())
    })
}
