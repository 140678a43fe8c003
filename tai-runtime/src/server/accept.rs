//! The seam between a TCP connection and the HTTP/2 that runs on it: an
//! [`Accept`] turns each accepted `TcpStream` into the byte stream the server
//! speaks HTTP/2 over, and says who is on the other end ([`ConnectInfo`]).
//!
//! Plain TCP ([`PlainTcp`]) hands the stream on as it is; TLS performs its
//! handshake here and adds the certificates the client proved it holds. The
//! accept loop runs each acceptor's future in the connection's own task, so a
//! slow handshake holds up no one else, and puts the connection's
//! [`ConnectInfo`] — and tonic's `TcpConnectInfo`, so that
//! [`tonic::Request::remote_addr`] keeps working — into every request's
//! extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Turns an accepted TCP connection into the IO the server speaks HTTP/2 over.
///
/// Implement it to put a handshake (TLS, PROXY protocol, ...) before HTTP/2, and
/// give it to [`Server::acceptor`](super::Server::acceptor). The future runs in
/// the connection's own task; an error closes that connection only (it is
/// logged at debug level), and counts nothing against the server. It should
/// bound its own handshake time: the connection holds one of
/// [`Server::max_connections`](super::Server::max_connections) meanwhile.
///
/// ```
/// use std::io;
/// use std::net::SocketAddr;
/// use futures_util::future::BoxFuture;
/// use tokio::net::TcpStream;
/// use tai_runtime::server::{Accept, ConnectInfo};
///
/// /// Plain TCP, logging each client.
/// struct Logged;
///
/// impl Accept for Logged {
///     type Io = TcpStream;
///
///     fn accept(
///         &self,
///         tcp: TcpStream,
///         info: ConnectInfo,
///     ) -> BoxFuture<'static, io::Result<(TcpStream, ConnectInfo)>> {
///         println!("a client at {}", info.remote_addr());
///         Box::pin(async move { Ok((tcp, info)) })
///     }
/// }
/// ```
pub trait Accept: Send + Sync + 'static {
    /// The byte stream HTTP/2 runs on (for TLS, the TLS stream).
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Prepares one connection. `info` holds the TCP addresses; give it back
    /// with whatever the handshake learned about the peer (see
    /// [`ConnectInfo::with_peer_certificates`]).
    fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectInfo,
    ) -> BoxFuture<'static, io::Result<(Self::Io, ConnectInfo)>>;
}

/// Plain TCP: the stream as accepted.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl Accept for PlainTcp {
    type Io = TcpStream;

    fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectInfo,
    ) -> BoxFuture<'static, io::Result<(TcpStream, ConnectInfo)>> {
        Box::pin(std::future::ready(Ok((tcp, info))))
    }
}

/// Who is on the other end of a connection; in every request's extensions.
///
/// ```
/// use tai_runtime::server::ConnectInfo;
///
/// fn caller(request: &tonic::Request<()>) -> String {
///     match request.extensions().get::<ConnectInfo>() {
///         Some(info) if info.peer_certificates().is_some() => format!("{} (mTLS)", info.remote_addr()),
///         Some(info) => info.remote_addr().to_string(),
///         None => "not served by tai_runtime::server::Server".to_owned(),
///     }
/// }
/// # let _ = caller;
/// ```
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    remote_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    peer_certificates: Option<Arc<[Vec<u8>]>>,
    /// What tai's own TLS learned of the peer, parsed once per connection and
    /// put into every request (see [`crate::tls::PeerIdentity::of`]).
    #[cfg(feature = "tls")]
    identity: Option<crate::tls::PeerIdentity>,
}

impl ConnectInfo {
    /// A connection from `remote_addr`, accepted on `local_addr`.
    pub fn new(remote_addr: SocketAddr, local_addr: Option<SocketAddr>) -> Self {
        Self {
            remote_addr,
            local_addr,
            peer_certificates: None,
            #[cfg(feature = "tls")]
            identity: None,
        }
    }

    /// The same, with the identity tai's TLS verified (its chain becomes
    /// [`peer_certificates`](Self::peer_certificates) too).
    #[cfg(feature = "tls")]
    pub fn with_identity(mut self, identity: crate::tls::PeerIdentity) -> Self {
        let chain: Vec<Vec<u8>> = identity.chain().iter().map(|c| c.to_vec()).collect();
        self.peer_certificates = Some(chain.into());
        self.identity = Some(identity);
        self
    }

    /// The identity tai's TLS verified, if the connection came through
    /// [`ServerTls`](crate::tls::ServerTls) and the client presented a
    /// certificate.
    #[cfg(feature = "tls")]
    pub fn identity(&self) -> Option<&crate::tls::PeerIdentity> {
        self.identity.as_ref()
    }

    /// The same, with the certificate chain the peer presented and proved it
    /// holds (DER, its own first): for an acceptor that verified it.
    pub fn with_peer_certificates(mut self, chain: Arc<[Vec<u8>]>) -> Self {
        self.peer_certificates = Some(chain);
        self
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The server's address the peer connected to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The peer's verified certificate chain (DER, its own first), if the
    /// acceptor verified one.
    pub fn peer_certificates(&self) -> Option<&[Vec<u8>]> {
        self.peer_certificates.as_deref()
    }

    /// tonic's form, read by [`tonic::Request::remote_addr`].
    pub(crate) fn tcp(&self) -> tonic::transport::server::TcpConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local_addr,
            remote_addr: Some(self.remote_addr),
        }
    }
}

/// Any acceptor's IO, behind one type, so that a server's acceptor can be
/// changed without changing the server's type.
pub(crate) type BoxIo = Pin<Box<dyn Io>>;

pub(crate) trait Io: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// [`Accept`] with its IO type erased.
pub(crate) trait DynAccept: Send + Sync + 'static {
    fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectInfo,
    ) -> BoxFuture<'static, io::Result<(BoxIo, ConnectInfo)>>;
}

impl<A: Accept> DynAccept for A {
    fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectInfo,
    ) -> BoxFuture<'static, io::Result<(BoxIo, ConnectInfo)>> {
        let accepting = Accept::accept(self, tcp, info);
        Box::pin(async move {
            let (io, info) = accepting.await?;
            Ok((Box::pin(io) as BoxIo, info))
        })
    }
}
