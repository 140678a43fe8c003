//! The server side: an acceptor that verifies clients against a CA bundle and
//! serves the certificate pair of the moment.
//!
//! [`ServerTls::accept`] is the one handshake every accept loop calls (tai's own
//! server builder, or [`ServerTls::incoming`] for tonic's `serve_with_incoming`
//! today). Each handshake loads the configuration in force, so a reload is seen
//! by the next handshake and never by a connection already open. Handshakes run
//! concurrently, each under a timeout, and at most `MAX_HANDSHAKES` at once: a
//! client that stalls mid-handshake holds one slot for a bounded time and delays
//! no one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::server::TlsStream;

use super::error::{TlsError, TlsErrorKind};
use super::identity::PeerIdentity;
use super::reload::{ReloadStats, Reloading, Side};
use super::{ALPN_H2, DEFAULT_RELOAD_INTERVAL, VERSIONS, pem, provider};

/// How long a client may take to finish the handshake, unless configured.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on one [`ServerTls::incoming`] stream; accepting
/// waits while this many are under way.
#[cfg(feature = "server")]
pub const MAX_HANDSHAKES: usize = 1024;

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Every client presents a certificate signed by a CA of the bundle (mTLS).
    #[default]
    Required,
    /// A client may present none (its identity is then `None`); one it presents
    /// is verified all the same.
    Optional,
}

/// Accepts TLS connections with certificates reloaded from PEM files.
///
/// Cheap to clone; clones share the configuration and its reloading, which stops
/// when the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tai_runtime::tls::{ClientAuth, ServerTls};
///
/// let tls = ServerTls::builder()
///     .ca("/etc/tls/ca.crt")
///     .certificate("/etc/tls/tls.crt", "/etc/tls/tls.key")
///     .client_auth(ClientAuth::Required)
///     .reload_interval(Duration::from_secs(10))
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:7000").await?;
/// let (tcp, _) = listener.accept().await?;
/// let (stream, identity) = tls.accept(tcp).await?;
/// println!("client: {:?}", identity.and_then(|i| i.spiffe_id().map(str::to_owned)));
/// # drop(stream); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerTls {
    state: Arc<Reloading<rustls::ServerConfig>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("reloads", &self.state.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ServerTls`]; the CA bundle and the certificate pair are required.
#[derive(Debug)]
pub struct ServerTlsBuilder {
    ca: Option<PathBuf>,
    pair: Option<(PathBuf, PathBuf)>,
    client_auth: ClientAuth,
    reload_interval: Duration,
    handshake_timeout: Duration,
}

impl ServerTlsBuilder {
    /// The PEM bundle of the CAs whose clients are accepted.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// The server's certificate chain (leaf first) and private key (PKCS#8, RSA
    /// or EC), PEM.
    pub fn certificate(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.pair = Some((chain.into(), key.into()));
        self
    }

    /// Whether clients must present a certificate (default: required).
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// How often the files are polled for changes (default
    /// [`DEFAULT_RELOAD_INTERVAL`], 10 s).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// How long a client may take to finish its handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Loads and checks the files, and starts polling them. Must run inside a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file that is missing, unreadable, not PEM,
    /// without a certificate or key, expired or not yet valid, or whose key does
    /// not match its certificate.
    pub fn build(self) -> Result<ServerTls, TlsError> {
        let ca = self
            .ca
            .ok_or_else(|| TlsError::config("no CA bundle: call `ca(path)`"))?;
        let (chain, key) = self
            .pair
            .ok_or_else(|| TlsError::config("no certificate: call `certificate(chain, key)`"))?;
        let paths = vec![ca.clone(), chain.clone(), key.clone()];
        let client_auth = self.client_auth;
        let build = move |files: &[Vec<u8>]| {
            server_config(
                (&ca, &files[0]),
                (&chain, &files[1]),
                (&key, &files[2]),
                client_auth,
            )
        };
        let state = Reloading::start(paths, self.reload_interval, Side::Server, Box::new(build))?;
        Ok(ServerTls {
            state,
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// The rustls configuration of one set of files.
fn server_config(
    (ca, ca_pem): (&PathBuf, &[u8]),
    (chain, chain_pem): (&PathBuf, &[u8]),
    (key, key_pem): (&PathBuf, &[u8]),
    client_auth: ClientAuth,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let roots = pem::roots(ca, ca_pem)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
    if client_auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(|e| {
        TlsError::file(
            TlsErrorKind::InvalidCertificate,
            ca,
            format!("cannot verify clients with this CA bundle: {e}"),
        )
    })?;
    let certified = pem::certified_key((chain, chain_pem), (key, key_pem), &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

impl ServerTls {
    /// A builder: CA bundle, certificate pair, client authentication, reload and
    /// handshake timing.
    pub fn builder() -> ServerTlsBuilder {
        ServerTlsBuilder {
            ca: None,
            pair: None,
            client_auth: ClientAuth::Required,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Requires client certificates signed by a CA of `ca`, serves `chain` with
    /// `key`, and reloads them every 10 s. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`ServerTlsBuilder::build`].
    pub fn from_pem(
        ca: impl Into<PathBuf>,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        Self::builder().ca(ca).certificate(chain, key).build()
    }

    /// Runs the server side of a handshake on an accepted connection, with the
    /// configuration in force now. The identity is `None` only when client
    /// certificates are [optional](ClientAuth::Optional) and the client sent none.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the client's address: no certificate, one from
    /// another CA, expired, plaintext instead of TLS, a handshake past the
    /// timeout.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Option<PeerIdentity>), TlsError> {
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| "(unknown address)".to_owned(), |a| a.to_string());
        let acceptor = TlsAcceptor::from(self.state.current());
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| {
                TlsError::peer(
                    TlsErrorKind::Timeout,
                    &peer,
                    format!(
                        "did not finish the TLS handshake within {:?}",
                        self.handshake_timeout
                    ),
                )
            })?
            .map_err(|e| TlsError::handshake(&peer, e))?;
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(PeerIdentity::from_chain);
        Ok((stream, identity))
    }

    /// Reloads applied and rejected so far.
    pub fn reload_stats(&self) -> ReloadStats {
        self.state.stats()
    }
}

#[cfg(feature = "server")]
pub use incoming::{TlsIncoming, TlsIo};

/// tonic's `serve_with_incoming` over [`ServerTls`]; folded into tai's own server
/// builder later.
#[cfg(feature = "server")]
mod incoming {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Semaphore, mpsc};
    use tokio_rustls::server::TlsStream;
    use tonic::transport::server::Connected;

    use super::{MAX_HANDSHAKES, ServerTls};
    use crate::tls::identity::TlsConnectInfo;

    /// One accepted TLS connection: the stream and what tonic puts in each of its
    /// requests' extensions ([`TlsConnectInfo`], holding the client's identity).
    pub struct TlsIo {
        stream: TlsStream<TcpStream>,
        info: TlsConnectInfo,
    }

    impl std::fmt::Debug for TlsIo {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsIo").field("info", &self.info).finish()
        }
    }

    impl Connected for TlsIo {
        type ConnectInfo = TlsConnectInfo;

        fn connect_info(&self) -> TlsConnectInfo {
            self.info.clone()
        }
    }

    impl AsyncRead for TlsIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for TlsIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }

    /// The TLS connections accepted on a listener, for tonic's
    /// `serve_with_incoming`. Failed handshakes are logged and never reach the
    /// server; dropping the stream stops accepting.
    pub struct TlsIncoming {
        accepted: mpsc::Receiver<TlsIo>,
    }

    impl std::fmt::Debug for TlsIncoming {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsIncoming").finish_non_exhaustive()
        }
    }

    impl tokio_stream::Stream for TlsIncoming {
        type Item = io::Result<TlsIo>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.accepted.poll_recv(cx).map(|io| io.map(Ok))
        }
    }

    impl ServerTls {
        /// Accepts connections on `listener` and runs their handshakes (at most
        /// [`MAX_HANDSHAKES`] at once), yielding the ones that succeed. Must run
        /// inside a tokio runtime.
        ///
        /// ```no_run
        /// # async fn run(service: tonic_health::pb::health_server::HealthServer<
        /// #     impl tonic_health::pb::health_server::Health>) -> Result<(), Box<dyn std::error::Error>> {
        /// use tai_runtime::tls::{PeerIdentity, ServerTls};
        ///
        /// let tls = ServerTls::from_pem("ca.crt", "tls.crt", "tls.key")?;
        /// let listener = tokio::net::TcpListener::bind("0.0.0.0:7000").await?;
        /// tonic::transport::Server::builder()
        ///     .add_service(service) // its handlers call `PeerIdentity::of(&request)`
        ///     .serve_with_incoming(tls.incoming(listener))
        ///     .await?;
        /// # Ok(()) }
        /// ```
        pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
            let (sender, accepted) = mpsc::channel(64);
            tokio::spawn(accept_loop(self.clone(), listener, sender));
            TlsIncoming { accepted }
        }
    }

    async fn accept_loop(tls: ServerTls, listener: TcpListener, sender: mpsc::Sender<TlsIo>) {
        let handshakes = std::sync::Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(slot) = std::sync::Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let local_addr = tcp.local_addr().ok();
            let (tls, sender) = (tls.clone(), sender.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tls.accept(tcp).await {
                    Ok((stream, identity)) => {
                        let info = TlsConnectInfo {
                            local_addr,
                            remote_addr: Some(remote_addr),
                            identity,
                        };
                        let _ = sender.send(TlsIo { stream, info }).await;
                    }
                    Err(e) => tracing::info!("TLS handshake refused: {e}"),
                }
            });
        }
    }
}

/// [`ServerTls`] as the acceptor of a [`Server`](crate::server::Server): each
/// connection's handshake runs in its own task, and the verified identity goes
/// into every request of the connection (see [`PeerIdentity::of`]).
#[cfg(feature = "server")]
impl crate::server::Accept for ServerTls {
    type Io = TlsStream<TcpStream>;

    fn accept(
        &self,
        tcp: TcpStream,
        info: crate::server::ConnectInfo,
    ) -> futures_util::future::BoxFuture<
        'static,
        std::io::Result<(Self::Io, crate::server::ConnectInfo)>,
    > {
        let tls = self.clone();
        Box::pin(async move {
            let (stream, identity) = ServerTls::accept(&tls, tcp).await?;
            let info = match identity {
                Some(identity) => info.with_identity(identity),
                None => info,
            };
            Ok((stream, info))
        })
    }
}
