//! One proto, two clients: [`tonic_side`] is what tonic-prost-build generates (a
//! tonic user's client and server), [`tai_side`] what tai-build generates. The
//! test `tests/call_sites.rs` runs the same call sites, written once, against both.

/// tonic's generated messages, client and server.
#[allow(missing_docs, clippy::all)]
pub mod tonic_side {
    include!(concat!(env!("OUT_DIR"), "/tonic/greeter.rs"));
}

/// tai's generated messages and client.
#[allow(missing_docs)]
pub mod tai_side {
    include!(concat!(env!("OUT_DIR"), "/tai/greeter.rs"));
}
