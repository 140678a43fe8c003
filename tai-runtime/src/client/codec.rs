//! A prost codec whose requests are shared (`Arc`) between attempts.
//!
//! Retries and hedges send the same request more than once. Instead of cloning the
//! message per attempt, every attempt encodes the one shared copy: the cost of a
//! retry-enabled call is one `Arc` allocation, whatever the message holds, and a
//! retry costs no clone at all. The caller's metadata and extensions live in the
//! same allocation (each attempt copies them into its own request), which keeps a
//! call's future as small as it was with the message alone.

use std::marker::PhantomData;
use std::sync::Arc;

use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status};
use tonic_prost::ProstDecoder;

/// One call's request, as its attempts share it.
pub(crate) struct SharedRequest<T> {
    pub(crate) message: T,
    /// The caller's metadata, less `grpc-timeout` (each attempt writes its own).
    pub(crate) metadata: MetadataMap,
    pub(crate) extensions: Extensions,
}

/// Encodes shared requests and decodes `U` responses with prost.
pub(crate) struct SharedCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SharedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SharedCodec<T, U>
where
    T: prost::Message + Send + Sync + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Arc<SharedRequest<T>>;
    type Decode = U;
    type Encoder = SharedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Encoder for a shared prost message.
pub(crate) struct SharedEncoder<T>(PhantomData<fn(T)>);

impl<T: prost::Message> Encoder for SharedEncoder<T> {
    type Item = Arc<SharedRequest<T>>;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.message
            .encode(buf)
            .map_err(|e| Status::internal(format!("request does not fit its buffer: {e}")))
    }
}
