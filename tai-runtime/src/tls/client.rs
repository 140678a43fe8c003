//! The client side: a [`Connector`] that opens TCP, then TLS with ALPN `h2`,
//! verifying the server against a CA bundle and presenting the client's own
//! certificate, both reloaded from their files.
//!
//! A channel calls its connector once per connection, so a reload reaches every
//! connection opened after it and none already open — the same rule as the
//! server's. The server name verified is the one configured, or else the host of
//! the address connected to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use super::error::{TlsError, TlsErrorKind};
use super::identity::PeerIdentity;
use super::reload::{ReloadStats, Reloading, Side};
use super::{ALPN_H2, DEFAULT_RELOAD_INTERVAL, VERSIONS, pem, provider};
use crate::channel::{BoxIo, ConnectFuture, Connector};

/// Connects with TLS, certificates reloaded from PEM files.
///
/// Cheap to clone; clones share the configuration and its reloading, which stops
/// when the last clone (and the channel holding it) is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tai_runtime::channel::{Channel, Endpoints};
/// use tai_runtime::tls::ClientTls;
///
/// let tls = ClientTls::builder()
///     .ca("/etc/tls/ca.crt")
///     .certificate("/etc/tls/tls.crt", "/etc/tls/tls.key")
///     .server_name("scheduler.internal")
///     .build()?;
/// let every = std::time::Duration::from_secs(30);
/// let channel = Channel::builder(Endpoints::dns("https://scheduler.internal:7000", every))
///     .connector(tls)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    state: Arc<Reloading<rustls::ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("reloads", &self.state.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientTls`]; the CA bundle is required, the client's own
/// certificate is not (plain TLS without it).
#[derive(Debug)]
pub struct ClientTlsBuilder {
    ca: Option<PathBuf>,
    pair: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
    reload_interval: Duration,
}

impl ClientTlsBuilder {
    /// The PEM bundle of the CAs whose servers are trusted.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// The client's certificate chain (leaf first) and private key (PKCS#8, RSA
    /// or EC), PEM, presented to servers that ask.
    pub fn certificate(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.pair = Some((chain.into(), key.into()));
        self
    }

    /// The name the server's certificate must hold (a DNS name or an IP address).
    /// Default: the host of each address connected to — set it when the channel
    /// resolves a DNS name ([`Endpoints::dns`](crate::Endpoints::dns)), whose
    /// connections are made to the resolved IP addresses.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// How often the files are polled for changes (default
    /// [`DEFAULT_RELOAD_INTERVAL`], 10 s).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Loads and checks the files, and starts polling them. Must run inside a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file that is missing, unreadable, not PEM,
    /// without a certificate or key, expired or not yet valid, or whose key does
    /// not match its certificate; or an invalid server name.
    pub fn build(self) -> Result<ClientTls, TlsError> {
        let server_name = self
            .server_name
            .map(|name| parse_server_name(&name))
            .transpose()?;
        let ca = self
            .ca
            .ok_or_else(|| TlsError::config("no CA bundle: call `ca(path)`"))?;
        let mut paths = vec![ca.clone()];
        if let Some((chain, key)) = &self.pair {
            paths.extend([chain.clone(), key.clone()]);
        }
        let pair = self.pair;
        let build = move |files: &[Vec<u8>]| {
            let own = pair
                .as_ref()
                .map(|(chain, key)| ((chain, &files[1][..]), (key, &files[2][..])));
            client_config((&ca, &files[0]), own)
        };
        let state = Reloading::start(paths, self.reload_interval, Side::Client, Box::new(build))?;
        Ok(ClientTls { state, server_name })
    }
}

type File<'a> = (&'a PathBuf, &'a [u8]);

/// The rustls configuration of one set of files.
fn client_config(
    (ca, ca_pem): File<'_>,
    own: Option<(File<'_>, File<'_>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let roots = pem::roots(ca, ca_pem)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match own {
        Some(((chain, chain_pem), (key, key_pem))) => {
            let certified = pem::certified_key((chain, chain_pem), (key, key_pem), &provider)?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified,
            )))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|e| {
        TlsError::peer(
            TlsErrorKind::InvalidServerName,
            name,
            format!("not a DNS name or an IP address: {e}"),
        )
    })
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl ClientTls {
    /// A builder: CA bundle, own certificate, server name, reload interval.
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder {
            ca: None,
            pair: None,
            server_name: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// Trusts servers signed by a CA of `ca`, presents `chain` with `key`, and
    /// reloads them every 10 s. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`ClientTlsBuilder::build`].
    pub fn from_pem(
        ca: impl Into<PathBuf>,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        Self::builder().ca(ca).certificate(chain, key).build()
    }

    /// Opens TCP to `address` (`host:port`) and runs the client side of a
    /// handshake with the configuration in force now; gives the stream and the
    /// server's verified identity.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the server: connection refused, a certificate from
    /// another CA, expired, or for another name.
    pub async fn connect_tls(
        &self,
        address: &str,
    ) -> Result<(TlsStream<TcpStream>, PeerIdentity), TlsError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host_of(address))?,
        };
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| TlsError::handshake(address, e))?;
        tcp.set_nodelay(true)
            .map_err(|e| TlsError::handshake(address, e))?;
        let connector = TlsConnector::from(self.state.current());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| TlsError::handshake(address, e))?;
        // A client always gets the server's chain: rustls refuses a server
        // without one.
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(PeerIdentity::from_chain)
            .ok_or_else(|| {
                TlsError::peer(TlsErrorKind::Handshake, address, "presented no certificate")
            })?;
        Ok((stream, identity))
    }

    /// Reloads applied and rejected so far.
    pub fn reload_stats(&self) -> ReloadStats {
        self.state.stats()
    }
}

impl Connector for ClientTls {
    fn connect(&self, address: &str) -> ConnectFuture {
        let this = self.clone();
        let address = address.to_owned();
        Box::pin(async move {
            let (stream, _) = this.connect_tls(&address).await?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("localhost:7000"), "localhost");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
    }
}
