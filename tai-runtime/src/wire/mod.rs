//! What gRPC puts on the wire, spelled once: header names, and how an HTTP
//! status without a gRPC status maps to a code.
//!
//! Header names are `const` [`HeaderName`]s (checked at compile time, no
//! run-time validation or allocation on the call path).

pub(crate) mod pushback;
pub(crate) mod timeout;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tonic::Code;

/// The time a call has left, sent by the client (`grpc-timeout`).
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The final status code of a call (in trailers, or in a trailers-only response).
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The final status message, percent-encoded.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// Rich status details: a base64 `google.rpc.Status`.
pub(crate) const GRPC_STATUS_DETAILS: HeaderName =
    HeaderName::from_static("grpc-status-details-bin");
/// How many attempts of a call came before this one (gRFC A6); a metadata key,
/// since the attempt sets it on tonic's request.
pub(crate) const GRPC_PREVIOUS_RPC_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// W3C Trace Context: the caller's trace id, span id and flags; a metadata key.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context: vendors' trace data, forwarded unchanged; a metadata key.
pub(crate) const TRACESTATE: &str = "tracestate";
/// The trace id header of older tai clients, accepted and forwarded.
pub(crate) const X_TRACE_ID: &str = "x-trace-id";

/// [`TRACEPARENT`] as a header name, for reading a request's headers.
pub(crate) const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
/// [`TRACESTATE`] as a header name.
pub(crate) const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
/// [`X_TRACE_ID`] as a header name.
pub(crate) const X_TRACE_ID_HEADER: HeaderName = HeaderName::from_static(X_TRACE_ID);

/// The server's word on retrying, in milliseconds (gRFC A6); a metadata key.
pub(crate) const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// The base64 flavour tonic decodes `grpc-status-details-bin` with: the standard
/// alphabet, padding optional. A value it rejects would make tonic panic.
pub(crate) const STATUS_DETAILS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Maps with at most this many values are walked rather than hashed into.
///
/// A gRPC call's headers and trailers hold a handful of values, most of them
/// standard names (`content-type`, `te`), and every call reads a few of them. A
/// lookup hashes the name and probes (callgrind: about 180 instructions on the
/// server); comparing two names of different kinds or lengths is a few.
pub(crate) const SCAN_LIMIT: usize = 8;

/// The first value of each of `names` in `headers`, as [`HeaderMap::get`]
/// finds it, read in one walk over a small map (see [`SCAN_LIMIT`]); a larger
/// map (a peer may send many headers) is looked up name by name.
///
/// Inlined, so that the comparisons with the callers' `const` names compile to
/// a length check and a few loads rather than calls to `memcmp` (callgrind, on
/// a response screen: an outlined `find` cost 235 instructions per call more
/// than a hand-written walk, an inlined one 75; the client's screen, which runs
/// twice per call, keeps its own walk for that reason).
#[inline(always)]
pub(crate) fn find<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'h HeaderValue>; N] {
    if headers.len() > SCAN_LIMIT {
        return names.map(|name| headers.get(name));
    }
    let mut found = [None; N];
    // A name's values come in insertion order: the first one seen is `get`'s.
    for (name, value) in headers {
        // The names are distinct: a header is at most one of them.
        for (slot, wanted) in found.iter_mut().zip(names) {
            if name == wanted {
                slot.get_or_insert(value);
                break;
            }
        }
    }
    found
}

/// The code of a response that has no `grpc-status`, from its HTTP status, as
/// grpc-go maps it (`HTTPStatusConvTab`): the proxy errors that mean "try again"
/// are UNAVAILABLE, so such a failure is retried like any other.
pub(crate) fn code_for_http_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// `status` as trailers (its code and message; a server ending a response
/// that has sent headers already ends it so).
#[cfg(feature = "server")]
pub(crate) fn status_trailers(status: &tonic::Status) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS, HeaderValue::from(status.code() as i32));
    if let Ok(message) = HeaderValue::try_from(percent_encode_message(status.message())) {
        trailers.insert(GRPC_MESSAGE, message);
    }
    trailers
}

/// `message` as a `grpc-message` value: bytes outside printable ASCII, and `%`,
/// percent-encoded (the gRPC HTTP/2 protocol spec).
pub(crate) fn percent_encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A `grpc-message` value as text: percent-decoded, bytes that are not UTF-8
/// replaced.
#[cfg(feature = "otel")]
pub(crate) fn percent_decode_message(value: &[u8]) -> String {
    percent_encoding::percent_decode(value)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn http_statuses_map_as_grpc_go_maps_them() {
        let code = |s: u16| code_for_http_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(code(503), Code::Unavailable);
        assert_eq!(code(504), Code::Unavailable);
        assert_eq!(code(502), Code::Unavailable);
        assert_eq!(code(429), Code::Unavailable);
        assert_eq!(code(401), Code::Unauthenticated);
        assert_eq!(code(403), Code::PermissionDenied);
        assert_eq!(code(404), Code::Unimplemented);
        assert_eq!(code(400), Code::Internal);
        assert_eq!(code(500), Code::Unknown);
        assert_eq!(code(200), Code::Unknown);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode_message("50% ok"), "50%25 ok");
        assert_eq!(percent_encode_message("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn find_answers_as_get_does_in_small_and_large_maps() {
        for filler in [0, SCAN_LIMIT] {
            let mut headers = HeaderMap::new();
            for i in 0..filler {
                headers.insert(
                    HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                    HeaderValue::from(i),
                );
            }
            headers.append(GRPC_STATUS, HeaderValue::from_static("0"));
            headers.append(GRPC_STATUS, HeaderValue::from_static("14"));
            headers.insert(
                http::header::CONTENT_TYPE,
                "application/grpc".parse().unwrap(),
            );
            let names = [&GRPC_STATUS, &http::header::CONTENT_TYPE, &GRPC_MESSAGE];
            let found = find(&headers, names);
            assert_eq!(found, names.map(|n| headers.get(n)), "{filler} more");
            assert_eq!(found[0].unwrap(), "0", "the first value");
            assert_eq!(found[2], None);
        }
    }

    #[test]
    fn details_base64_accepts_what_tonic_accepts() {
        assert!(STATUS_DETAILS_BASE64.decode("AAEC").is_ok());
        assert!(STATUS_DETAILS_BASE64.decode("AAE").is_ok(), "no padding");
        assert!(STATUS_DETAILS_BASE64.decode("AAE=").is_ok(), "padding");
        assert!(STATUS_DETAILS_BASE64.decode("!!!").is_err());
    }
}
