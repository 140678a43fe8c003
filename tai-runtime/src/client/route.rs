//! Which engine a single-request call runs, chosen per call from its method's
//! policy *now* — compiled, or as a run-time service config made it.
//!
//! The generated client calls a method compiled without retry or hedging through
//! [`ClientCore::unary`] (or `server_streaming`), whose future holds one attempt
//! and no retry loop: that is what keeps the common call small and free of
//! allocation. A run-time service config may give such a method a `retryPolicy`
//! or `hedgingPolicy`; its calls then need the retry engine, whose future is
//! bigger. Rather than make every call as big as the engine, the rare call that
//! needs it gets the engine's future boxed (one allocation per call, only while
//! the config asks for it); every other call keeps the flat, unboxed path.

use std::future::Future;

use futures_util::future::Either;
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::{Request, Response, Status};

use super::attempt::Head;
use super::contract::{RequestMessage, ResponseMessage, Transport};
use super::core::ClientCore;

impl<T: Transport> ClientCore<T> {
    /// A single-request call of a method compiled without retry or hedging: one
    /// attempt, unless the method's policy now has a retry or hedging policy (a
    /// run-time service config gave it one), which runs the retry engine.
    pub(super) fn single_by_policy<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        request: Request<Req>,
        read: R,
    ) -> impl Future<Output = (Result<Out, Status>, Instant)> + use<'_, Req, Resp, Out, R, RFut, T>
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: Fn(Response<Streaming<Resp>>, Head) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let engine = {
            let m = self.method(method);
            m.retry.is_some() || m.hedging.is_some()
        };
        if engine {
            Either::Right(Box::pin(self.single_retried(method, start, request, read)))
        } else {
            Either::Left(self.single(method, start, request, read))
        }
    }
}
