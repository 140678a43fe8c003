//! How a connection's byte stream is made: TCP by default, anything else (TLS, an
//! in-memory pipe, a fault-injecting proxy) by implementing [`Connector`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a connection can run HTTP/2 over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>>;

/// Opens byte streams to endpoints. Called once per connection attempt, never per
/// call.
///
/// ```
/// use tai_runtime::channel::{Connector, ConnectFuture};
///
/// /// Connects over TCP, as the default connector does.
/// struct Tcp;
/// impl Connector for Tcp {
///     fn connect(&self, address: &str) -> ConnectFuture {
///         let address = address.to_owned();
///         Box::pin(async move {
///             let stream = tokio::net::TcpStream::connect(address).await?;
///             Ok(Box::new(stream) as tai_runtime::channel::BoxIo)
///         })
///     }
/// }
/// ```
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `address` (`host:port`).
    fn connect(&self, address: &str) -> ConnectFuture;
}

impl<F, Fut> Connector for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<BoxIo>> + Send + 'static,
{
    fn connect(&self, address: &str) -> ConnectFuture {
        Box::pin(self(address.to_owned()))
    }
}

/// TCP, with `TCP_NODELAY` as configured.
pub(crate) struct TcpConnector {
    pub(crate) nodelay: bool,
}

impl Connector for TcpConnector {
    fn connect(&self, address: &str) -> ConnectFuture {
        let address = address.to_owned();
        let nodelay = self.nodelay;
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&address).await?;
            stream.set_nodelay(nodelay)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

pub(crate) type SharedConnector = Arc<dyn Connector>;
