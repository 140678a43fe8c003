//! W3C Trace Context (`traceparent`, `tracestate`) and the `x-trace-id` header of
//! older clients: what a server reads from a call, and what each outgoing attempt
//! made while handling it sends.
//!
//! Why it is shaped so: ids are fixed-size arrays, parsed and hex-encoded on the
//! stack; the only heap bytes are the header values a peer sent (kept as the
//! `HeaderValue`s they arrived in, which share their bytes when cloned) and the
//! header values each attempt sends. Fresh ids come from a `SmallRng` per thread,
//! seeded once from the OS: ids must be unique, not secret, and drawing one must
//! not take a lock shared by every call.

use std::cell::RefCell;
use std::fmt;

use http::HeaderValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Longest `tracestate` kept (the W3C limit is 512 characters); a longer one is
/// dropped, as the spec allows, so a peer cannot make every hop carry more.
const MAX_TRACESTATE: usize = 512;
/// Longest `x-trace-id` kept; a longer one is replaced by the trace id.
const MAX_LEGACY_ID: usize = 128;

/// The length of a version-00 `traceparent`: `00-{32 hex}-{16 hex}-{2 hex}`.
const TRACEPARENT_LEN: usize = 55;

/// A trace id: 16 bytes, never all zero. Displays as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero. Displays as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        Self(random_nonzero())
    }
}

impl TraceId {
    /// In hex, on the stack.
    pub(crate) fn hex(&self) -> [u8; 32] {
        let mut buf = [0u8; 32];
        hex_into(&self.0, &mut buf);
        buf
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        Self(random_nonzero())
    }
}

macro_rules! hex_display {
    ($ty:ty, $len:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $len];
                hex_into(&self.0, &mut buf);
                f.write_str(std::str::from_utf8(&buf).expect("hex digits are ASCII"))
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}
hex_display!(TraceId, 32);
hex_display!(SpanId, 16);

/// The trace a call belongs to, as its server read it.
///
/// ```
/// use tai_runtime::context::TraceContext;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let trace = TraceContext::from_headers(&headers);
/// assert_eq!(trace.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(trace.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    /// The caller's span (the `parent-id` of its `traceparent`); `None` when the
    /// trace started here.
    parent_id: Option<SpanId>,
    /// The `trace-flags` byte (bit 0: sampled).
    flags: u8,
    tracestate: Option<HeaderValue>,
    /// The `x-trace-id` an older client sent, forwarded as it came.
    legacy_id: Option<HeaderValue>,
}

impl TraceContext {
    /// Reads a call's trace from its headers: a valid `traceparent` (with its
    /// `tracestate`) continues the caller's trace; else an `x-trace-id` of 32 hex
    /// digits is taken as the trace id; else a new trace starts here. Whatever
    /// `x-trace-id` came is kept and forwarded; nothing a peer sends is an error.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let [traceparent, tracestate, legacy_id] = crate::wire::find(
            headers,
            [
                &crate::wire::TRACEPARENT_HEADER,
                &crate::wire::TRACESTATE_HEADER,
                &crate::wire::X_TRACE_ID_HEADER,
            ],
        );
        Self::from_values(traceparent, tracestate, legacy_id)
    }

    /// The same, from the three headers' values (a server reads them in one
    /// walk with the call's other headers).
    pub(crate) fn from_values(
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
        legacy_id: Option<&HeaderValue>,
    ) -> Self {
        let legacy_id = legacy_id
            .filter(|v| !v.is_empty() && v.len() <= MAX_LEGACY_ID)
            .cloned();
        if let Some((trace_id, parent_id, flags)) =
            traceparent.and_then(|v| parse_traceparent(v.as_bytes()))
        {
            return Self {
                trace_id,
                parent_id: Some(parent_id),
                flags,
                tracestate: tracestate.filter(|v| v.len() <= MAX_TRACESTATE).cloned(),
                legacy_id,
            };
        }
        let trace_id = legacy_id
            .as_ref()
            .and_then(|v| parse_hex::<16>(v.as_bytes()))
            .filter(|id| *id != [0; 16])
            .map_or_else(TraceId::random, TraceId);
        Self {
            trace_id,
            parent_id: None,
            flags: 0,
            tracestate: None,
            legacy_id,
        }
    }

    /// A new trace, started here.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId::random(),
            parent_id: None,
            flags: 0,
            tracestate: None,
            legacy_id: None,
        }
    }

    /// See `CallContext::adopt_trace_id`.
    #[cfg(feature = "otel")]
    pub(crate) fn adopt_trace_id(&mut self, trace_id: TraceId) {
        if self.parent_id.is_none() {
            self.trace_id = trace_id;
        }
    }

    /// The trace id every hop of the call shares.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The caller's span id, from its `traceparent`; `None` if the trace started
    /// at this server.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// Whether the caller sampled the trace (bit 0 of `trace-flags`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The caller's `tracestate`, forwarded unchanged.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// The `x-trace-id` an older client sent.
    pub fn legacy_id(&self) -> Option<&HeaderValue> {
        self.legacy_id.as_ref()
    }

    /// The `traceparent` of an outgoing call made under this trace, as span
    /// `span` (a child of this call's): `00-{trace id}-{span}-{flags}`.
    pub fn child_traceparent(&self, span: SpanId) -> HeaderValue {
        HeaderValue::from_bytes(&self.traceparent_bytes(span))
            .expect("hex digits and dashes are a valid header value")
    }

    /// [`child_traceparent`](Self::child_traceparent), on the stack.
    pub(crate) fn traceparent_bytes(&self, span: SpanId) -> [u8; TRACEPARENT_LEN] {
        traceparent(self.trace_id, span, self.flags)
    }

    /// The trace id in hex, on the stack.
    pub(crate) fn trace_id_bytes(&self) -> [u8; 32] {
        self.trace_id.hex()
    }

    /// The `x-trace-id` an outgoing call sends: the one that came, or the trace
    /// id in hex (so that older services log the same id as newer ones).
    pub fn legacy_header(&self) -> HeaderValue {
        if let Some(v) = &self.legacy_id {
            return v.clone();
        }
        HeaderValue::from_bytes(&self.trace_id_bytes())
            .expect("hex digits are a valid header value")
    }
}

/// A version-00 `traceparent`, on the stack.
pub(crate) fn traceparent(trace: TraceId, span: SpanId, flags: u8) -> [u8; TRACEPARENT_LEN] {
    let mut buf = [0u8; TRACEPARENT_LEN];
    buf[..3].copy_from_slice(b"00-");
    hex_into(&trace.0, &mut buf[3..35]);
    buf[35] = b'-';
    hex_into(&span.0, &mut buf[36..52]);
    buf[52] = b'-';
    hex_into(&[flags], &mut buf[53..55]);
    buf
}

/// Parses a `traceparent`: version `00` exactly as specified, a later version by
/// its first four fields (W3C: a parser must accept a higher version's prefix).
/// `None` for anything invalid, all-zero ids included, or version `ff`.
fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    if v.len() < TRACEPARENT_LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let [version] = parse_hex::<1>(&v[..2])?;
    if version == 0xff || (version == 0 && v.len() != TRACEPARENT_LEN) {
        return None;
    }
    if version > 0 && v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    let trace = parse_hex::<16>(&v[3..35]).filter(|id| *id != [0; 16])?;
    let span = parse_hex::<8>(&v[36..52]).filter(|id| *id != [0; 8])?;
    let [flags] = parse_hex::<1>(&v[53..55])?;
    Some((TraceId(trace), SpanId(span), flags))
}

/// `N` bytes from exactly `2 * N` lowercase hex digits (W3C ids are lowercase).
fn parse_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

thread_local! {
    /// Fresh ids: one fast generator per thread, seeded from the OS once.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Random bytes, not all zero (W3C forbids all-zero ids).
fn random_nonzero<const N: usize>() -> [u8; N] {
    IDS.with_borrow_mut(|rng| {
        loop {
            let mut id = [0u8; N];
            rng.fill(&mut id[..]);
            if id != [0; N] {
                return id;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_traceparent_continues_the_callers_trace() {
        let t = TraceContext::from_headers(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.tracestate().unwrap(), "congo=t61rcWkgMzE");
        let child = t.child_traceparent(SpanId([0xab; 8]));
        assert_eq!(
            child,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01"
        );
        // Older services get the trace id.
        assert_eq!(t.legacy_header(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext::from_headers(&headers(&[("traceparent", bad)]));
            assert_eq!(t.parent_id(), None, "{bad}");
            assert_ne!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        // A later version is read by its prefix.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        let t = TraceContext::from_headers(&headers(&[("traceparent", later)]));
        assert_eq!(t.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn an_older_clients_trace_id_is_kept_and_forwarded() {
        let hex = "0af7651916cd43dd8448eb211c80319c";
        let t = TraceContext::from_headers(&headers(&[("x-trace-id", hex)]));
        assert_eq!(t.trace_id().to_string(), hex);
        assert_eq!(t.legacy_header(), hex);

        let t = TraceContext::from_headers(&headers(&[("x-trace-id", "req-42")]));
        assert_eq!(t.legacy_header(), "req-42", "forwarded as it came");
        assert_eq!(t.parent_id(), None);
    }

    #[test]
    fn without_either_header_a_trace_is_generated() {
        let a = TraceContext::from_headers(&http::HeaderMap::new());
        let b = TraceContext::from_headers(&http::HeaderMap::new());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.legacy_header(), a.trace_id().to_string().as_str());
    }

    #[test]
    fn oversized_peer_values_are_dropped() {
        let long = "k=".to_owned() + &"v".repeat(600);
        let t = TraceContext::from_headers(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", &long),
            ("x-trace-id", &long),
        ]));
        assert_eq!(t.tracestate(), None);
        assert_eq!(t.legacy_id(), None);
    }
}
