//! mTLS end to end: real TLS on loopback between a tai `Channel` with `ClientTls`
//! and tonic's server fed by `ServerTls::incoming`, with certificates made by
//! rcgen inside each test and written as a Kubernetes-style secret directory
//! (files behind a `..data` symlink swapped atomically).
//!
//! Refusals are checked twice: the call fails and the handler never ran, and the
//! server's own handshake gives the error kind naming the peer.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use support::{Echo, echo};
use tai_runtime::channel::{BoxIo, Channel, Endpoints};
use tai_runtime::tls::{ClientTls, PeerIdentity, ServerTls, TlsError, TlsErrorKind};
use tokio::net::{TcpListener, TcpStream};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

// ---- certificates ------------------------------------------------------------

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
    serial: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost` and 127.0.0.1, with a SPIFFE id and this serial.
    fn leaf(&self, serial: u64, spiffe: &str) -> Pair {
        self.leaf_with(serial, spiffe, |_| {})
    }

    fn leaf_with(
        &self,
        serial: u64,
        spiffe: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe.try_into().unwrap()));
        params.serial_number = Some(serial.into());
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial: format!("{serial:02x}"),
        }
    }
}

/// A secret mounted the way Kubernetes mounts one: `name -> ..data/name`, and
/// `..data -> ..vN`, swapped by renaming a new symlink over it.
struct Secret {
    dir: tempfile::TempDir,
    version: AtomicUsize,
}

impl Secret {
    fn new(ca: &str, pair: &Pair) -> Self {
        let secret = Self {
            dir: tempfile::tempdir().unwrap(),
            version: AtomicUsize::new(0),
        };
        secret.write(ca, pair);
        for name in ["ca.crt", "tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(
                Path::new("..data").join(name),
                secret.dir.path().join(name),
            )
            .unwrap();
        }
        secret
    }

    /// Writes a new version and swaps it in atomically.
    fn write(&self, ca: &str, pair: &Pair) {
        let version = format!("..v{}", self.version.fetch_add(1, Ordering::SeqCst));
        let dir = self.dir.path().join(&version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
        std::fs::write(dir.join("tls.crt"), &pair.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &pair.key).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, reload: Duration) -> ServerTls {
        ServerTls::builder()
            .ca(self.path("ca.crt"))
            .certificate(self.path("tls.crt"), self.path("tls.key"))
            .reload_interval(reload)
            .build()
            .unwrap()
    }

    fn client(&self, reload: Duration) -> ClientTls {
        ClientTls::builder()
            .ca(self.path("ca.crt"))
            .certificate(self.path("tls.crt"), self.path("tls.key"))
            .reload_interval(reload)
            .build()
            .unwrap()
    }
}

// ---- the server --------------------------------------------------------------

/// `test.Echo/Unary`, answering with what it sees of the caller's identity.
#[derive(Clone, Default)]
struct WhoAmI {
    calls: Arc<AtomicUsize>,
}

impl NamedService for WhoAmI {
    const NAME: &'static str = "test.Echo";
}

impl UnaryService<Echo> for WhoAmI {
    type Response = Echo;
    type Future = std::future::Ready<Result<Response<Echo>, Status>>;

    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let msg = match PeerIdentity::of(&request) {
            Some(id) => format!(
                "serial={} dns={} uri={} spiffe={}",
                id.serial(),
                id.dns_names().join(","),
                id.uris().join(","),
                id.spiffe_id().unwrap_or("-"),
            ),
            None => "anonymous".to_owned(),
        };
        std::future::ready(Ok(Response::new(echo(&msg))))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Echo, Echo>::default());
            Ok(grpc.unary(this, req).await)
        })
    }
}

/// Serves `WhoAmI` over `tls` on loopback; returns the address and the handler.
async fn serve(tls: &ServerTls) -> (SocketAddr, WhoAmI) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = WhoAmI::default();
    let server = tonic::transport::Server::builder().add_service(service.clone());
    let incoming = tls.incoming(listener);
    tokio::spawn(async move { server.serve_with_incoming(incoming).await.unwrap() });
    (addr, service)
}

/// The server's side of one handshake with whatever `client` does.
async fn server_refusal<F>(tls: &ServerTls, client: impl FnOnce(SocketAddr) -> F) -> TlsError
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(client(addr));
    let (tcp, _) = listener.accept().await.unwrap();
    let Err(err) = tls.accept(tcp).await else {
        panic!("the server accepted the handshake");
    };
    client.abort();
    err
}

// ---- the client --------------------------------------------------------------

fn channel(connector: impl tai_runtime::channel::Connector, addr: SocketAddr) -> Channel {
    let mut config = tai_runtime::config::ClientConfig::factory();
    config.connection.wait_for_ready = false;
    Channel::builder(Endpoints::one(format!("https://localhost:{}", addr.port())))
        .config(config)
        .connector(connector)
        .build()
        .unwrap()
}

async fn call(channel: &Channel) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        grpc.unary(Request::new(echo("hi")), path, codec),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("test call timed out"))??;
    Ok(response.into_inner().msg)
}

/// Waits (bounded) until `done` holds, polling the reloader's counters.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

const RELOAD: Duration = Duration::from_millis(20);

// ---- accepted ----------------------------------------------------------------

#[tokio::test]
async fn a_good_pair_is_accepted_and_the_handler_sees_san_names_and_spiffe_id() {
    let ca = Ca::new("ca");
    let server = Secret::new(
        &ca.pem(),
        &ca.leaf(1, "spiffe://example.org/ns/x/sa/server"),
    );
    let client = Secret::new(&ca.pem(), &ca.leaf(2, "spiffe://example.org/ns/x/sa/y"));
    let (addr, handler) = serve(&server.server(RELOAD)).await;

    let msg = call(&channel(client.client(RELOAD), addr)).await.unwrap();
    assert_eq!(
        msg,
        "serial=02 dns=localhost uri=spiffe://example.org/ns/x/sa/y \
         spiffe=spiffe://example.org/ns/x/sa/y"
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);

    // The client sees the server's identity too, with ALPN h2 agreed.
    let (stream, identity) = client
        .client(RELOAD)
        .connect_tls(&addr.to_string())
        .await
        .unwrap();
    assert_eq!(identity.serial(), "01");
    assert_eq!(
        identity.spiffe_id(),
        Some("spiffe://example.org/ns/x/sa/server")
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn an_https_address_without_a_tls_connector_is_a_build_error() {
    let err = Channel::builder(Endpoints::one("https://127.0.0.1:7000"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("https:// needs a TLS connector"),
        "{err}"
    );
}

// ---- refused -----------------------------------------------------------------

/// Asserts that calls through `connector` fail and never reach the handler.
async fn assert_refused(
    connector: impl tai_runtime::channel::Connector,
    addr: SocketAddr,
    handler: &WhoAmI,
) {
    let err = call(&channel(connector, addr)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        0,
        "the handler never ran"
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let ca = Ca::new("ca");
    let server = Secret::new(&ca.pem(), &ca.leaf(1, "spiffe://example.org/s"));
    let tls = server.server(RELOAD);
    let (addr, handler) = serve(&tls).await;
    let anonymous = ClientTls::builder()
        .ca(server.path("ca.crt"))
        .build()
        .unwrap();

    assert_refused(anonymous.clone(), addr, &handler).await;
    let err = server_refusal(&tls, move |addr| async move {
        let _ = anonymous.connect_tls(&addr.to_string()).await;
    })
    .await;
    assert_eq!(err.kind(), TlsErrorKind::NoPeerCertificate, "{err}");
    assert!(
        err.to_string().starts_with("peer 127.0.0.1:"),
        "names the peer: {err}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (ca, other) = (Ca::new("ca"), Ca::new("other"));
    let server = Secret::new(&ca.pem(), &ca.leaf(1, "spiffe://example.org/s"));
    // Trusts the server's CA, but its own certificate is signed by another.
    let client = Secret::new(&ca.pem(), &other.leaf(2, "spiffe://example.org/c"));
    let tls = server.server(RELOAD);
    let (addr, handler) = serve(&tls).await;

    assert_refused(client.client(RELOAD), addr, &handler).await;
    let connector = client.client(RELOAD);
    let err = server_refusal(&tls, move |addr| async move {
        let _ = connector.connect_tls(&addr.to_string()).await;
    })
    .await;
    assert_eq!(err.kind(), TlsErrorKind::UnknownCa, "{err}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let ca = Ca::new("ca");
    let server = Secret::new(&ca.pem(), &ca.leaf(1, "spiffe://example.org/s"));
    let expired = ca.leaf_with(2, "spiffe://example.org/c", |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let client = Secret::new(&ca.pem(), &expired);
    // ClientTls refuses to load it, naming the file...
    let err = ClientTls::from_pem(
        client.path("ca.crt"),
        client.path("tls.crt"),
        client.path("tls.key"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Expired, "{err}");
    assert_eq!(err.path(), Some(client.path("tls.crt").as_path()));
    // ...so a hand-made rustls client presents it.
    let tls = server.server(RELOAD);
    let (addr, handler) = serve(&tls).await;
    let raw = raw_client(&ca.pem(), &expired);
    assert_refused(raw.clone(), addr, &handler).await;
    let err = server_refusal(&tls, move |addr| async move {
        let _ = raw.handshake(addr.to_string()).await;
    })
    .await;
    assert_eq!(err.kind(), TlsErrorKind::Expired, "{err}");
}

#[tokio::test]
async fn a_wrong_server_name_is_refused_by_the_client() {
    let ca = Ca::new("ca");
    let server = Secret::new(&ca.pem(), &ca.leaf(1, "spiffe://example.org/s"));
    let client = Secret::new(&ca.pem(), &ca.leaf(2, "spiffe://example.org/c"));
    let (addr, handler) = serve(&server.server(RELOAD)).await;
    let connector = ClientTls::builder()
        .ca(client.path("ca.crt"))
        .certificate(client.path("tls.crt"), client.path("tls.key"))
        .server_name("scheduler.example.org")
        .build()
        .unwrap();

    let err = connector.connect_tls(&addr.to_string()).await.unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::HostnameMismatch, "{err}");
    assert!(
        err.to_string().contains(&addr.to_string()),
        "names the peer: {err}"
    );
    assert_refused(connector, addr, &handler).await;
}

#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let ca = Ca::new("ca");
    let server = Secret::new(&ca.pem(), &ca.leaf(1, "spiffe://example.org/s"));
    let tls = server.server(RELOAD);
    let (addr, handler) = serve(&tls).await;
    let plaintext =
        |address: String| async move { Ok(Box::new(TcpStream::connect(address).await?) as BoxIo) };

    assert_refused(plaintext, addr, &handler).await;
    let err = server_refusal(&tls, |addr| async move {
        use tokio::io::AsyncWriteExt;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut [0; 64]).await;
    })
    .await;
    assert_eq!(err.kind(), TlsErrorKind::NotTls, "{err}");
}

// ---- reload ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_call_and_new_handshakes_see_the_new_pair() {
    const CALLERS: usize = 16;
    const ROTATIONS: u64 = 12;
    const BAD_AT: u64 = 6;
    let ca = Ca::new("ca");
    let ca_pem = ca.pem();
    let server = Secret::new(&ca_pem, &ca.leaf(100, "spiffe://example.org/s"));
    let client = Secret::new(&ca_pem, &ca.leaf(200, "spiffe://example.org/c"));
    let server_tls = server.server(RELOAD);
    let client_tls = client.client(RELOAD);
    let (addr, handler) = serve(&server_tls).await;
    let shared = channel(client_tls.clone(), addr);

    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let (shared, client_tls, stopped) = (shared.clone(), client_tls.clone(), stopped.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            // Half keep one channel (connections opened before rotations keep
            // working); half open a new one every few calls (new handshakes).
            let mut own = channel(client_tls.clone(), addr);
            while !stopped.load(Ordering::SeqCst) {
                if i % 2 == 1 && ok % 5 == 0 {
                    own = channel(client_tls.clone(), addr);
                }
                let ch = if i % 2 == 0 { &shared } else { &own };
                match call(ch).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }

    let mut server_serial = "64".to_owned(); // 100
    let mut applied = 0;
    for r in 1..=ROTATIONS {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if r == BAD_AT {
            // A certificate with another certificate's key: refused, old pair stays.
            let mut bad = ca.leaf(100 + r, "spiffe://example.org/s");
            bad.key = ca.leaf(999, "spiffe://example.org/s").key;
            server.write(&ca_pem, &bad);
            until("the rejection", || server_tls.reload_stats().rejected == 1).await;
        } else {
            let next = ca.leaf(100 + r, "spiffe://example.org/s");
            server.write(&ca_pem, &next);
            client.write(&ca_pem, &ca.leaf(200 + r, "spiffe://example.org/c"));
            applied += 1;
            until("the server's reload", || {
                server_tls.reload_stats().applied == applied
            })
            .await;
            until("the client's reload", || {
                client_tls.reload_stats().applied == applied
            })
            .await;
            server_serial = next.serial;
        }
        // A new handshake, seen from the client: the server's pair in force.
        let (_, identity) = client_tls.connect_tls(&addr.to_string()).await.unwrap();
        assert_eq!(identity.serial(), server_serial, "rotation {r}");
        // And the server sees the client's new certificate on a new connection.
        let msg = call(&channel(client_tls.clone(), addr)).await.unwrap();
        // The client's pair was not rotated with the bad server pair.
        let expected = format!("{:02x}", 200 + if r == BAD_AT { r - 1 } else { r });
        assert!(
            msg.starts_with(&format!("serial={expected} ")),
            "rotation {r}: {msg}"
        );
    }
    stopped.store(true, Ordering::SeqCst);

    let mut total = 0;
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(failed.is_empty(), "failed calls under rotation: {failed:?}");
        assert!(ok > 0, "every caller made calls");
        total += ok;
    }
    assert!(handler.calls.load(Ordering::SeqCst) >= total);
    assert_eq!(server_tls.reload_stats().rejected, 1);
    assert_eq!(client_tls.reload_stats().rejected, 0);
    let metrics = tai_runtime::metrics::Metrics::global().encode();
    assert!(
        metrics.contains("tai_tls_reloads_total{side=\"server\",outcome=\"rejected\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rotated_ca_bundle_refuses_a_client_of_the_removed_ca() {
    let (old, new) = (Ca::new("old"), Ca::new("new"));
    let server = Secret::new(&old.pem(), &old.leaf(1, "spiffe://example.org/s"));
    let server_tls = server.server(RELOAD);
    let (addr, handler) = serve(&server_tls).await;
    // Both clients trust the server's (old) CA; one is signed by each CA.
    let old_client = Secret::new(&old.pem(), &old.leaf(2, "spiffe://example.org/old"));
    let new_client = Secret::new(&old.pem(), &new.leaf(3, "spiffe://example.org/new"));
    let old_tls = old_client.client(RELOAD);
    call(&channel(old_tls.clone(), addr)).await.unwrap();

    // The server now trusts only the new CA (its own pair unchanged).
    server.write(&new.pem(), &old.leaf(1, "spiffe://example.org/s"));
    until("the CA reload", || server_tls.reload_stats().applied == 1).await;

    let before = handler.calls.load(Ordering::SeqCst);
    let err = call(&channel(old_tls.clone(), addr)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(handler.calls.load(Ordering::SeqCst), before);
    let err = server_refusal(&server_tls, move |addr| async move {
        let _ = old_tls.connect_tls(&addr.to_string()).await;
    })
    .await;
    assert_eq!(err.kind(), TlsErrorKind::UnknownCa, "{err}");
    let msg = call(&channel(new_client.client(RELOAD), addr))
        .await
        .unwrap();
    assert!(msg.contains("spiffe=spiffe://example.org/new"), "{msg}");
}

// ---- a client outside tai, for what ClientTls will not load --------------------

#[derive(Clone)]
struct RawClient(tokio_rustls::TlsConnector);

fn raw_client(ca: &str, pair: &Pair) -> RawClient {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    RawClient(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl RawClient {
    async fn handshake(&self, address: String) -> std::io::Result<BoxIo> {
        let tcp = TcpStream::connect(&address).await?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        Ok(Box::new(self.0.connect(name, tcp).await?) as BoxIo)
    }
}

impl tai_runtime::channel::Connector for RawClient {
    fn connect(&self, address: &str) -> tai_runtime::channel::ConnectFuture {
        let (this, address) = (self.clone(), address.to_owned());
        Box::pin(async move { this.handshake(address).await })
    }
}

// ---- the tai server builder ----------------------------------------------------

/// `Server::builder().tls(..)` serves mTLS on its own accept loop: the handler
/// sees the client's identity, and a client without a certificate never reaches
/// it.
#[tokio::test]
async fn the_server_builder_serves_mtls_with_the_identity_in_every_request() {
    let ca = Ca::new("ca");
    let server = Secret::new(
        &ca.pem(),
        &ca.leaf(1, "spiffe://example.org/ns/x/sa/server"),
    );
    let client = Secret::new(&ca.pem(), &ca.leaf(7, "spiffe://example.org/ns/x/sa/z"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = WhoAmI::default();
    let builder = tai_runtime::server::Server::builder()
        .tls(server.server(RELOAD))
        .add_service(handler.clone());
    tokio::spawn(builder.serve_with_incoming(listener, std::future::pending()));

    let msg = call(&channel(client.client(RELOAD), addr)).await.unwrap();
    assert!(msg.starts_with("serial=07 "), "{msg}");
    assert!(
        msg.ends_with("spiffe=spiffe://example.org/ns/x/sa/z"),
        "{msg}"
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);

    let anonymous = ClientTls::builder()
        .ca(client.path("ca.crt"))
        .build()
        .unwrap();
    let err = call(&channel(anonymous, addr)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}
