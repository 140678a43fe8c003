//! A minimal Prometheus endpoint: `GET /metrics` on a plain TCP listener.
//!
//! It serves tai-runtime's process-wide metrics (every client call, retry,
//! hedge, breaker rejection and server call, by service and method) followed by
//! whatever extra text the caller adds (the tour's fault counters). No HTTP
//! framework: a scrape is one short request, answered and closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Extra metrics text, in the Prometheus text format, appended to the runtime's.
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// The most a scrape request may send before its headers end.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves metrics on `listener` until the returned task is aborted; returns the
/// URL to scrape.
pub fn serve(listener: TcpListener, extra: Extra) -> (String, tokio::task::JoinHandle<()>) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let url = match addr {
        Some(a) => format!("http://{a}/metrics"),
        None => "(unknown address)".to_owned(),
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let extra = Arc::clone(&extra);
            tokio::spawn(async move {
                let mut request = Vec::with_capacity(512);
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let (status, body) = if line.starts_with("GET /metrics") {
                    ("200 OK", render(&extra))
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, task)
}

/// The runtime's metrics and the extra text, as one exposition (one `# EOF`).
pub fn render(extra: &Extra) -> String {
    let runtime = tai_runtime::metrics::Metrics::global().encode();
    let mut text = runtime
        .strip_suffix("# EOF\n")
        .unwrap_or(&runtime)
        .to_owned();
    text.push_str(&extra());
    text.push_str("# EOF\n");
    text
}
