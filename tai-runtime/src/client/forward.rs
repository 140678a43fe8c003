//! The trait impl of a client whose `#[resilient]` trait is written with plain
//! messages (`fn m(&self, request: Req) -> .. Result<Resp, Status>`): the
//! client's own methods have tonic's shape (a `Request` in, a `Response` out), and
//! the trait's methods forward to them, keeping just the message.

use std::future::Future;

use futures_util::FutureExt;
use tonic::{Response, Status};

/// A call of the client's tonic-shaped method, giving the response message alone
/// (its metadata dropped), as a plain-message trait method returns it.
pub fn into_inner<Resp>(
    call: impl Future<Output = Result<Response<Resp>, Status>> + Send,
) -> impl Future<Output = Result<Resp, Status>> + Send {
    call.map(|result| result.map(Response::into_inner))
}
