//! The signals that stop a server: SIGINT (Ctrl-C) and, on Unix, SIGTERM (what
//! `kill`, systemd and Kubernetes send).

/// Resolves when the process gets SIGINT or SIGTERM, the signal
/// [`Server::serve`](super::Server::serve) drains on.
///
/// If a handler cannot be installed (a warning is logged), it waits for the
/// other signal only.
///
/// ```no_run
/// # async fn run() {
/// tai_runtime::server::shutdown_signal().await;
/// println!("shutting down");
/// # }
/// ```
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
