use std::future::Future;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Req {}

/// A message without `Default`, which the runtime needs to decode a response.
pub struct NoDefault;

impl prost::Message for NoDefault {
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
    fn call(&self, request: Req) -> impl Future<Output = Result<NoDefault, Status>> + Send;
}

fn main() {}
