//! The memory of one call in flight: a tai call's future, next to the future of
//! tonic's generated client for the same call on the same channel.
//!
//! At concurrency 64 every byte here is held 64 times and copied as the future is
//! built, so the call engine keeps it flat (combinators instead of nested
//! `async fn`s, which store their arguments twice).

#[path = "../benches/support/mod.rs"]
mod support;

use std::mem::size_of_val;

use http::uri::PathAndQuery;
use support::*;
use tai_runtime::__private::ClientCore;
use tai_runtime::{Channel, Endpoints};

#[tokio::test]
async fn a_call_in_flight_is_about_as_big_as_tonics() {
    let channel = Channel::builder(Endpoints::one("http://127.0.0.1:1".to_owned()))
        .build()
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let codec = tonic_prost::ProstCodec::<Payload, Payload>::default();
    let tonic = size_of_val(&grpc.unary(
        tonic::Request::new(payload()),
        PathAndQuery::from_static(PATH),
        codec,
    ));

    let plain = ClientCore::new(channel.clone(), &NO_RETRY);
    let unary = size_of_val(&plain.unary::<Payload, Payload>(0, tonic::Request::new(payload())));
    let retrying = ClientCore::new(channel, &FULL);
    let unary_retry = size_of_val(&retrying.unary_retry::<Payload, Payload>(0, payload()));
    eprintln!(
        "tonic unary: {tonic} B, tai unary: {unary} B, tai unary with retry: {unary_retry} B"
    );

    // Deadline, breaker, metrics and span on top of tonic's own call: a few
    // hundred bytes, not a multiple (before the flat engine: 3.7 KB and 4.0 KB).
    // The attempt's own clone of the channel holds the endpoint its readiness
    // picked (about 60 B), which is how the engine knows nothing was sent while
    // it waited. With tonic's call shape (issue 11) a call also holds the
    // response's headers and extensions while it reads the message and the
    // trailers (about 100 B, as tonic's own unary does), and the request's
    // metadata until the call starts: 320 B became 416 B. The request's metadata
    // shares the one `Arc` with the message, so a retried call is no bigger.
    // With the `otel` feature (off by default) each attempt also holds its
    // OpenTelemetry span (a `tracing::Span`, 32 B): the budget grows by that
    // and no more.
    let otel = if cfg!(feature = "otel") {
        std::mem::size_of::<tracing::Span>()
    } else {
        0
    };
    assert!(
        unary <= tonic + 416 + otel,
        "unary: {unary} B vs tonic {tonic} B"
    );
    assert!(
        unary_retry <= tonic + 768 + otel,
        "unary with retry: {unary_retry} B vs tonic {tonic} B"
    );
}
