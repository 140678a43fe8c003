//! A client's own options, as tonic's generated clients offer them: message size
//! limits, compression, and an interceptor. They live in each `ClientCore` (copied
//! to its clones), not in the shared state: two clients of one channel may set
//! them differently, as with tonic.

use std::sync::{Arc, Mutex};

use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;

use super::contract::Transport;
use super::core::ClientCore;

/// Largest messages sent and accepted: explicit, never unlimited (tonic's own
/// default sends messages of any size).
#[derive(Clone, Copy, Debug)]
pub(super) struct MessageLimits {
    pub(super) send: usize,
    pub(super) receive: usize,
}

impl MessageLimits {
    pub(super) const DEFAULT: MessageLimits = MessageLimits {
        send: 4 << 20,
        receive: 4 << 20,
    };
}

impl MessageLimits {
    /// Refuses a request larger than the send limit before anything is sent, with
    /// RESOURCE_EXHAUSTED as gRPC specifies (a body error mid-send would reach the
    /// caller as an opaque HTTP/2 reset).
    pub(super) fn check_send<M: prost::Message>(
        &self,
        message: &M,
        path: &str,
    ) -> Result<(), Status> {
        let size = message.encoded_len();
        if size > self.send {
            return Err(Status::resource_exhausted(format!(
                "{path}: request of {size} bytes is larger than the {} byte send limit",
                self.send
            )));
        }
        Ok(())
    }
}

/// How a client compresses what it sends and which compressions it accepts, as
/// tonic's `send_compressed` / `accept_compressed` set them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Compression {
    pub(super) send: Option<CompressionEncoding>,
    /// gzip and zstd: at most two encodings to accept.
    pub(super) accept: [Option<CompressionEncoding>; 2],
}

impl Compression {
    fn accept(&mut self, encoding: CompressionEncoding) {
        if self.accept.contains(&Some(encoding)) {
            return;
        }
        if let Some(slot) = self.accept.iter_mut().find(|s| s.is_none()) {
            *slot = Some(encoding);
        }
    }
}

/// A client's interceptor, shared by its clones (tonic's `Interceptor` takes
/// `&mut self`, so the calls of all clones take turns; an interceptor runs for
/// microseconds, before anything is sent).
pub(super) type SharedInterceptor = Arc<Mutex<dyn Interceptor + Send>>;

impl<T: Transport> ClientCore<T> {
    /// Runs `interceptor` on every attempt of every call, after the attempt's
    /// metadata is written and before it is sent (tonic's `with_interceptor`).
    /// It may add metadata and extensions, or refuse the attempt with a status:
    /// the call then ends with that status, is not retried, and costs no breaker
    /// failure (nothing was sent).
    pub fn set_interceptor(&mut self, interceptor: impl Interceptor + Send + 'static) {
        self.interceptor = Some(Arc::new(Mutex::new(interceptor)));
    }

    /// Compresses requests with `encoding` (tonic's `send_compressed`).
    pub fn send_compressed(&mut self, encoding: CompressionEncoding) {
        self.compression.send = Some(encoding);
    }

    /// Accepts responses compressed with `encoding` (tonic's
    /// `accept_compressed`); may be called for gzip and for zstd.
    pub fn accept_compressed(&mut self, encoding: CompressionEncoding) {
        self.compression.accept(encoding);
    }

    /// The largest response message accepted (tonic's
    /// `max_decoding_message_size`).
    pub fn max_decoding_message_size(&mut self, limit: usize) {
        self.limits.receive = limit;
    }

    /// The largest request message sent (tonic's `max_encoding_message_size`).
    pub fn max_encoding_message_size(&mut self, limit: usize) {
        self.limits.send = limit;
    }
}
