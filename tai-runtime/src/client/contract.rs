//! What a tai client asks of its transport and of its messages. Any prost message
//! is a message (a blanket impl); a transport is a type that implements
//! [`Transport`] itself, so that it can tell a client what lies beneath it (see
//! the trait). The bounds live here, once, so that a type that falls short gets an
//! error at the user's type (`diagnostic::on_unimplemented`), not deep inside an
//! expansion.

use bytes::Bytes;
use tonic::client::GrpcService;

use crate::BoxError;

/// What a tai client sends its calls over: a tai [`Channel`](crate::Channel), a
/// tonic [`Channel`](tonic::transport::Channel), or any other tower service
/// speaking gRPC over HTTP/2 wrapped in [`Tower`].
///
/// The trait is implemented for those types rather than for every `GrpcService`,
/// so that a transport can say what it knows: [`channel`](Self::channel) hands a
/// client the tai `Channel` beneath it, whose configuration sets the client's
/// message size limits, whose target lets clients of the same service share
/// breakers and the retry throttle, and whose endpoints appear in the client's
/// statistics. A transport of your own implements it with one line, and overrides
/// `channel` only if it wraps a tai `Channel`:
///
/// ```
/// # use tai_runtime::Transport;
/// /// A tai `Channel` with a layer of the application's around it.
/// #[derive(Clone)]
/// struct Audited(tai_runtime::Channel);
/// # impl tower::Service<http::Request<tonic::body::Body>> for Audited {
/// #     type Response = <tai_runtime::Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
/// #     type Error = <tai_runtime::Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
/// #     type Future = <tai_runtime::Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;
/// #     fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
/// #         self.0.poll_ready(cx)
/// #     }
/// #     fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
/// #         self.0.call(request)
/// #     }
/// # }
///
/// impl Transport for Audited {
///     fn channel(&self) -> Option<&tai_runtime::Channel> {
///         Some(&self.0)
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tai transport",
    label = "a tai client sends calls over a `tai_runtime::Channel` or a tonic `Channel`",
    note = "wrap any other tower service speaking gRPC in `tai_runtime::Tower(service)`"
)]
pub trait Transport:
    GrpcService<
        tonic::body::Body,
        Error: Into<BoxError>,
        ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The tai [`Channel`](crate::Channel) this transport sends over, if it is one
    /// or wraps one. Without it a client's message limits are 4 MiB each way and
    /// its breakers and retry throttle are its own (and its clones').
    fn channel(&self) -> Option<&crate::Channel> {
        None
    }
}

impl Transport for crate::Channel {
    fn channel(&self) -> Option<&crate::Channel> {
        Some(self)
    }
}

impl Transport for tonic::transport::Channel {}

/// Any tower service speaking gRPC over HTTP/2, as a tai [`Transport`]: a stack of
/// layers of your own, an in-process server, a test double.
///
/// ```
/// use tai_runtime::{Tower, Transport};
///
/// fn transport<S: Transport>(_: S) {}
///
/// // A tonic server's routes, called in process.
/// # #[cfg(feature = "server")] {
/// let routes = tonic::service::Routes::default();
/// transport(Tower(routes));
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tower<S>(pub S);

impl<S> Transport for Tower<S> where
    Self: GrpcService<
            tonic::body::Body,
            Error: Into<BoxError>,
            ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

impl<S, B> tower::Service<http::Request<B>> for Tower<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.0.call(request)
    }
}

/// A message a tai client can send. Every prost message qualifies; the check exists
/// so that a type that does not gets an error at the user's type, not deep inside
/// an expansion.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent by a tai client",
    label = "this request type must be a prost message that is Send + Sync + 'static",
    note = "derive it with `#[derive(Clone, PartialEq, prost::Message)]`, or generate it with tai-build"
)]
pub trait RequestMessage: prost::Message + Send + Sync + 'static {}

impl<T: prost::Message + Send + Sync + 'static> RequestMessage for T {}

/// A response message a tai client can receive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be received by a tai client",
    label = "this response type must be a prost message that is Default + Send + Sync + 'static",
    note = "derive it with `#[derive(Clone, PartialEq, prost::Message)]`, or generate it with tai-build"
)]
pub trait ResponseMessage: prost::Message + Default + Send + Sync + 'static {}

impl<T: prost::Message + Default + Send + Sync + 'static> ResponseMessage for T {}
