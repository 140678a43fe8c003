//! What a tai client asks of its transport and of its messages, as traits with
//! blanket impls: any tower service speaking gRPC is a transport, any prost message
//! a message. The bounds live here, once, so that a type that falls short gets an
//! error at the user's type (`diagnostic::on_unimplemented`), not deep inside an
//! expansion.

use bytes::Bytes;
use tonic::client::GrpcService;

use crate::BoxError;

/// Anything a tai client can send calls over: a tonic `Channel`, or any tower
/// service speaking gRPC over HTTP/2 (with layers of your own around it).
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
}

impl<T> Transport for T where
    T: GrpcService<
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
