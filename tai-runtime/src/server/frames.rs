//! Finding frame headers in a byte stream that arrives in arbitrary pieces.
//!
//! Two layers of the server read length-prefixed frames without decoding them:
//! the keepalive police reads HTTP/2 frames (a 9-byte header: 24-bit length,
//! type, flags, stream id) on the connection, and the message limits read gRPC
//! messages (a 5-byte header: compressed flag, 32-bit length) in a call's body.
//! Both only need each header and where it starts; the payload is skipped, never
//! copied. Pieces may split a header anywhere, so a partial header is kept (at
//! most 9 bytes) until the rest comes.

/// The shape of one kind of frame header: a type, so that reading a header's
/// length compiles to a few loads rather than a call through a pointer (every
/// frame of every call passes here).
pub(crate) trait Shape {
    /// Bytes in a header.
    const HEADER_LEN: usize;
    /// The payload length a header (`HEADER_LEN` bytes) declares.
    fn payload_len(header: &[u8]) -> u64;
}

/// HTTP/2 (RFC 9113 §4.1): length (24 bits), type, flags, stream id.
#[derive(Debug)]
pub(crate) struct Http2;

impl Shape for Http2 {
    const HEADER_LEN: usize = 9;
    fn payload_len(h: &[u8]) -> u64 {
        u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]))
    }
}

/// A gRPC message on HTTP/2: compressed flag, length (32 bits).
#[derive(Debug)]
pub(crate) struct Grpc;

impl Shape for Grpc {
    const HEADER_LEN: usize = 5;
    fn payload_len(h: &[u8]) -> u64 {
        u64::from(u32::from_be_bytes([h[1], h[2], h[3], h[4]]))
    }
}

/// Takes up to `available` bytes off `left`; answers how many.
fn pass(left: &mut u64, available: usize) -> usize {
    let passed = usize::try_from(*left).map_or(available, |left| left.min(available));
    *left -= passed as u64;
    passed
}

/// Where a stream of frames is: in a header, or in a payload.
#[derive(Debug)]
pub(crate) struct Frames<S> {
    /// Bytes to pass over before the first header (HTTP/2's client preface).
    skip: u64,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame not seen yet.
    payload: u64,
    shape: std::marker::PhantomData<S>,
}

impl<S: Shape> Frames<S> {
    pub(crate) const fn new() -> Self {
        Self::after(0)
    }

    /// Frames that start after `skip` bytes.
    pub(crate) const fn after(skip: u64) -> Self {
        Self {
            skip,
            header: [0; 9],
            have: 0,
            payload: 0,
            shape: std::marker::PhantomData,
        }
    }

    /// Reads `bytes`, calling `on_header` with each complete header. If it
    /// answers `false`, reading stops and the answer is the offset in `bytes` at
    /// which that frame's header began (0 if it began in an earlier piece).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_header: impl FnMut(&[u8]) -> bool,
    ) -> Option<usize> {
        let total = bytes.len();
        loop {
            if self.skip > 0 {
                let passed = pass(&mut self.skip, bytes.len());
                bytes = &bytes[passed..];
            }
            if self.payload > 0 {
                let passed = pass(&mut self.payload, bytes.len());
                bytes = &bytes[passed..];
            }
            if bytes.is_empty() {
                return None;
            }
            let start = (total - bytes.len()).saturating_sub(self.have);
            let header = if self.have == 0 && bytes.len() >= S::HEADER_LEN {
                // The common case: the whole header is in this piece; read it
                // in place rather than through the partial-header buffer.
                let (header, rest) = bytes.split_at(S::HEADER_LEN);
                bytes = rest;
                header
            } else {
                let n = (S::HEADER_LEN - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < S::HEADER_LEN {
                    return None;
                }
                self.have = 0;
                &self.header[..S::HEADER_LEN]
            };
            self.payload = S::payload_len(header);
            if !on_header(header) {
                return Some(start);
            }
        }
    }

    /// Whether the bytes seen so far end exactly at a frame's end.
    pub(crate) fn at_boundary(&self) -> bool {
        self.skip == 0 && self.payload == 0 && self.have == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(len: u32) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend(std::iter::repeat_n(7, len as usize));
        frame
    }

    #[test]
    fn headers_are_found_however_the_bytes_are_cut() {
        let stream: Vec<u8> = [grpc(3), grpc(0), grpc(300)].concat();
        for cut in 1..stream.len() {
            let mut frames = Frames::<Grpc>::new();
            let mut lengths = Vec::new();
            for piece in stream.chunks(cut) {
                frames.feed(piece, |h| {
                    lengths.push(Grpc::payload_len(h));
                    true
                });
            }
            assert_eq!(lengths, [3, 0, 300], "pieces of {cut}");
            assert!(frames.at_boundary());
        }
    }

    #[test]
    fn a_refused_header_gives_where_it_began() {
        let stream: Vec<u8> = [grpc(3), grpc(9)].concat();
        let mut frames = Frames::<Grpc>::new();
        assert_eq!(frames.feed(&stream, |h| h[4] != 9), Some(8));
        let mut frames = Frames::<Grpc>::new();
        assert_eq!(frames.feed(&stream[..10], |_| true), None);
        assert!(!frames.at_boundary());
        assert_eq!(frames.feed(&stream[10..], |h| h[4] != 9), Some(0));
    }

    #[test]
    fn the_http2_preface_is_passed_over() {
        let mut frames = Frames::<Http2>::after(24);
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[1; 8]);
        let mut kinds = Vec::new();
        frames.feed(&bytes, |h| {
            kinds.push(h[3]);
            true
        });
        assert_eq!(kinds, [0x6]);
        assert!(frames.at_boundary());
    }
}
