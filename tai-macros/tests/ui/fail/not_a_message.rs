use std::future::Future;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Resp {}

/// Only wrappers of `Wire` types are messages, and nothing is `Wire`: so
/// `Wrapper<u8>` is not a message, and the runtime says so at the request type.
pub trait Wire {}

#[derive(Clone, Default)]
pub struct Wrapper<T>(T);

impl<T: Wire + Send + Sync> prost::Message for Wrapper<T> {
    fn encode_raw(&self, _: &mut impl BufMut) {}
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        0
    }
    fn clear(&mut self) {}
}

#[resilient(service = "x.v1.Svc")]
pub trait Svc {
    fn call(&self, request: Wrapper<u8>) -> impl Future<Output = Result<Resp, Status>> + Send;
}

fn main() {}
