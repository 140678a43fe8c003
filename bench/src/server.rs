//! The benchmark server: tonic's generated server for `tai.bench.Bench`, with
//! tai's server layers on or off (on: [`ServerLayer`] — deadlines and metrics —
//! and a per-client [`RateLimitLayer`] whose quota no run reaches, so that it
//! checks every call and refuses none). Runs as its own process (`tai-bench serve`),
//! pinned to its own core, so that its CPU time is read from /proc on its own and
//! it never competes with the client for a core.

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

#[derive(Debug, Default)]
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
/// runs until stdin closes (the parent harness exited or dropped us).
pub fn serve(layers: bool, threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = crate::runtime(threads)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTENING {}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let stop = async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        };
        let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
        let service = BenchServer::new(Service);
        if layers {
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
        Ok(())
    })
}
