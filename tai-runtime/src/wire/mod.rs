//! What gRPC puts on the wire, spelled once: header names, and how an HTTP
//! status without a gRPC status maps to a code.
//!
//! Header names are `const` [`HeaderName`]s (checked at compile time, no
//! run-time validation or allocation on the call path).

pub(crate) mod pushback;
pub(crate) mod timeout;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderName, StatusCode};
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

/// The server's word on retrying, in milliseconds (gRFC A6); a metadata key.
pub(crate) const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// The base64 flavour tonic decodes `grpc-status-details-bin` with: the standard
/// alphabet, padding optional. A value it rejects would make tonic panic.
pub(crate) const STATUS_DETAILS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
    fn details_base64_accepts_what_tonic_accepts() {
        assert!(STATUS_DETAILS_BASE64.decode("AAEC").is_ok());
        assert!(STATUS_DETAILS_BASE64.decode("AAE").is_ok(), "no padding");
        assert!(STATUS_DETAILS_BASE64.decode("AAE=").is_ok(), "padding");
        assert!(STATUS_DETAILS_BASE64.decode("!!!").is_err());
    }
}
