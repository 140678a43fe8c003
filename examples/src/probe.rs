//! Why a server cannot be reached, in words that say what to do.
//!
//! A channel that cannot connect only knows that it cannot: a plaintext client
//! talking to a TLS server sees its HTTP/2 preface answered by a TLS alert and
//! the connection closed, and it would retry until its connect timeout, then
//! say "unreachable" — of a server that is up. So `mesh call` watches for the
//! first failed connection and then probes the address itself, once, on a
//! connection of its own. A TLS server asked in plaintext, a plaintext server
//! asked in TLS, or a handshake refused (an unknown CA, a certificate for
//! another name) will not get better by waiting: each gets its own message, at
//! once. Nothing listening may be a server still starting: the wait goes on,
//! and ends with that reason.

use std::time::Duration;

use tai_runtime::Channel;
use tai_runtime::ConnectivityState;
use tai_runtime::tls::{ClientTls, TlsErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long the probe waits for the server's first bytes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP/2 client preface and an empty SETTINGS frame: what a plaintext
/// gRPC client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The first byte of a TLS record carrying an alert (21) or a handshake (22).
const TLS_ALERT: u8 = 0x15;
const TLS_HANDSHAKE: u8 = 0x16;

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Nothing accepts connections there (yet).
    NotListening(String),
    /// The server is there and the two sides do not agree (TLS or not, which
    /// CA): waiting will not help.
    Mismatch(String),
}

impl Finding {
    /// What to tell the user.
    pub fn reason(self) -> String {
        match self {
            Finding::NotListening(reason) | Finding::Mismatch(reason) => reason,
        }
    }
}

/// Waits until `channel` to `addr` is ready, for at most `wait`. At the first
/// failed connection the address is probed ([`diagnose`]); a
/// [`Finding::Mismatch`] ends the wait at once.
///
/// # Errors
///
/// Why the server cannot be reached: the probe's reason, or else that nothing
/// answered within `wait`.
pub async fn ready(
    channel: &Channel,
    addr: &str,
    tls: Option<&ClientTls>,
    wait: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let ready = channel.ready(wait);
    tokio::pin!(ready);
    tokio::select! {
        ready = &mut ready => if ready { return Ok(()) },
        () = first_failure(channel, deadline) => {
            if let Some(Finding::Mismatch(reason)) = diagnose(addr, tls).await {
                return Err(reason);
            }
            if ready.await {
                return Ok(());
            }
        }
    }
    Err(diagnose(addr, tls).await.map_or_else(
        || format!("cannot connect to {addr} within {wait:?}: is `mesh serve` running there?"),
        Finding::reason,
    ))
}

/// Resolves when `channel` first fails a connection; never, if it does not
/// before `deadline`.
async fn first_failure(channel: &Channel, deadline: Instant) {
    loop {
        let state = channel.state();
        if state == ConnectivityState::TransientFailure {
            return;
        }
        if !channel.wait_for_state_change(state, deadline).await {
            return std::future::pending().await;
        }
    }
}

/// Probes `addr` (`host:port`, or with `http://`/`https://`) once on a
/// connection of its own, as `tls` would connect (plaintext if `None`); why it
/// fails, or `None` if it does not tell.
pub async fn diagnose(addr: &str, tls: Option<&ClientTls>) -> Option<Finding> {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    match tls {
        Some(tls) => diagnose_tls(authority, tls).await,
        None => diagnose_plaintext(authority).await,
    }
}

async fn diagnose_tls(addr: &str, tls: &ClientTls) -> Option<Finding> {
    let error = match timeout(PROBE_TIMEOUT, tls.connect_tls(addr)).await {
        Ok(Ok(_)) | Err(_) => return None,
        Ok(Err(error)) => error,
    };
    Some(match error.kind() {
        TlsErrorKind::Io => not_listening(addr, &error),
        TlsErrorKind::NotTls | TlsErrorKind::Handshake
            if !speaks_tls(addr).await.unwrap_or(true) =>
        {
            Finding::Mismatch(format!(
                "the server at {addr} does not speak TLS ({error}): leave out --tls-dir, \
                 or serve with `mesh serve --tls-dir`"
            ))
        }
        _ => Finding::Mismatch(format!("the TLS handshake with {addr} failed: {error}")),
    })
}

async fn diagnose_plaintext(addr: &str) -> Option<Finding> {
    match speaks_tls(addr).await {
        Err(e) => Some(not_listening(addr, &e)),
        Ok(true) => Some(Finding::Mismatch(format!(
            "the server at {addr} requires TLS: call it with --tls-dir DIR (ca.pem, client.pem \
             and client.key; `mesh certs --out DIR` writes a development set)"
        ))),
        Ok(false) => None,
    }
}

fn not_listening(addr: &str, error: &dyn std::fmt::Display) -> Finding {
    Finding::NotListening(format!(
        "nothing accepts connections at {addr} ({error}): is `mesh serve` running there?"
    ))
}

/// Whether the server at `addr` answers a plaintext HTTP/2 preface as a TLS
/// server does (an alert, or a handshake record).
async fn speaks_tls(addr: &str) -> std::io::Result<bool> {
    let mut tcp = timeout(PROBE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    // A write the server refuses shows in the read that follows.
    let _ = tcp.write_all(H2_PREFACE).await;
    let mut first = [0u8; 1];
    Ok(matches!(
        timeout(PROBE_TIMEOUT, tcp.read(&mut first)).await,
        Ok(Ok(1)) if first[0] == TLS_ALERT || first[0] == TLS_HANDSHAKE
    ))
}
