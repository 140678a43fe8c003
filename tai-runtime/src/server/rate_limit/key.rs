//! How the rate limit tells clients apart: a [`ClientKey`] per request.
//!
//! A key is a small value, not a string: an IPv4 address, an IPv6 /64 network, an
//! id or an authenticated identity of at most [`MAX_KEY_LEN`] bytes, or "unknown".
//! Peers choose the values that end up here, so keys are bounded in size, hashed
//! by kind and value (the table keeps only a keyed digest of them), and shown in
//! refusals as a person would name them. Grouping IPv6 by /64 is why a key is not simply the peer's address:
//! one host usually holds a whole /64 and could otherwise pick a fresh key per
//! call.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderName;
use tonic::transport::server::TcpConnectInfo;

/// The longest client key taken from a header, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Who a call is counted against.
///
/// Built by the layer's key extractor, or by your own with [`ClientKey::peer`],
/// [`ClientKey::ip`] or [`ClientKey::id`]. Displays as a person would name it
/// (`peer 10.0.0.7`, `client id "billing"`), which is how refusals name it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Ip(IpAddr),
    /// An IPv6 address with its last 64 bits cleared.
    Ipv6Net(Ipv6Addr),
    Id(Box<[u8]>),
    /// An authenticated identity (token subject, certificate SAN).
    Identity(Box<str>),
    Unknown,
}

impl ClientKey {
    /// The key the layer gives a peer address: an IPv4 address as it is, an IPv6
    /// address by its /64 network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn peer(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V6(v6) => Self(Repr::Ipv6Net(Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            ))),
            v4 => Self(Repr::Ip(v4)),
        }
    }

    /// One IP address, whole (no /64 grouping for IPv6).
    pub fn ip(addr: IpAddr) -> Self {
        Self(Repr::Ip(addr.to_canonical()))
    }

    /// A client id (e.g. a header value): `None` if empty or longer than
    /// [`MAX_KEY_LEN`] bytes.
    pub fn id(id: &[u8]) -> Option<Self> {
        (!id.is_empty() && id.len() <= MAX_KEY_LEN).then(|| Self(Repr::Id(id.into())))
    }

    /// An authenticated identity, e.g. a token's subject or a certificate's SAN:
    /// `None` if empty or longer than [`MAX_KEY_LEN`] bytes.
    pub fn identity(identity: &str) -> Option<Self> {
        (!identity.is_empty() && identity.len() <= MAX_KEY_LEN)
            .then(|| Self(Repr::Identity(identity.into())))
    }

    /// The key as Redis stores it (after the layer's prefix): a kind, then the
    /// value, so that kinds never collide.
    #[cfg(feature = "redis")]
    pub(super) fn write_redis_key(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = match &self.0 {
            Repr::Ip(a) => write!(out, "ip:{a}"),
            Repr::Ipv6Net(a) => write!(out, "net:{a}/64"),
            Repr::Id(id) => out.write_all(b"id:").and_then(|()| out.write_all(id)),
            Repr::Identity(id) => write!(out, "identity:{id}"),
            Repr::Unknown => out.write_all(b"unknown"),
        };
    }

    /// The one key shared by every request nothing else identifies.
    pub fn unknown() -> Self {
        Self(Repr::Unknown)
    }
}

/// A kind byte, then the value in one write: the store hashes keys into the
/// digests it keeps instead of them (`store.rs`), so keys of different kinds must
/// never feed the hasher the same bytes (`id "a"` and `identity "a"` are two
/// clients).
impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.0 {
            Repr::Ip(IpAddr::V4(a)) => {
                state.write_u8(1);
                state.write_u32(a.to_bits());
            }
            Repr::Ip(IpAddr::V6(a)) => {
                state.write_u8(2);
                state.write_u128(a.to_bits());
            }
            Repr::Ipv6Net(a) => {
                state.write_u8(3);
                state.write_u64((a.to_bits() >> 64) as u64);
            }
            Repr::Id(id) => {
                state.write_u8(4);
                state.write(id);
            }
            Repr::Identity(id) => {
                state.write_u8(5);
                state.write(id.as_bytes());
            }
            Repr::Unknown => state.write_u8(0),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Ip(a) => write!(f, "peer {a}"),
            Repr::Ipv6Net(a) => write!(f, "peer network {a}/64"),
            Repr::Id(id) => write!(f, "client id \"{}\"", id.escape_ascii()),
            Repr::Identity(id) => write!(f, "identity \"{}\"", id.escape_default()),
            Repr::Unknown => f.write_str("peers without an address"),
        }
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({self})")
    }
}

pub(super) type KeyFn = dyn Fn(&http::request::Parts) -> Option<ClientKey> + Send + Sync;
pub(super) type ExtensionKeyFn = dyn Fn(&http::Extensions) -> Option<ClientKey> + Send + Sync;

/// Where the layer finds a request's key; the peer address is the fallback of
/// each.
#[derive(Clone)]
pub(super) enum KeyBy {
    Peer,
    Header(HeaderName),
    /// A value an earlier layer put in the request's extensions (an
    /// authenticated identity): read without taking the request apart.
    Extension(Arc<ExtensionKeyFn>),
    Custom(Arc<KeyFn>),
}

impl KeyBy {
    /// Keys by the identity `name` reads from the request extension `T`.
    pub(super) fn extension<T, F>(name: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Option<&str> + Send + Sync + 'static,
    {
        Self::Extension(Arc::new(move |extensions: &http::Extensions| {
            extensions
                .get::<T>()
                .and_then(&name)
                .and_then(ClientKey::identity)
        }))
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Peer => f.write_str("Peer"),
            KeyBy::Header(name) => f.debug_tuple("Header").field(name).finish(),
            KeyBy::Extension(_) => f.write_str("Extension(..)"),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl KeyBy {
    /// The key `request` is counted against. `warned` is set the first time a
    /// request has no peer address (and that is logged once).
    pub(super) fn key_of<B>(
        &self,
        request: http::Request<B>,
        warned: &AtomicBool,
    ) -> (ClientKey, http::Request<B>) {
        let (key, request) = match self {
            KeyBy::Peer => (None, request),
            KeyBy::Header(name) => (
                request
                    .headers()
                    .get(name)
                    .and_then(|v| ClientKey::id(v.as_bytes())),
                request,
            ),
            KeyBy::Extension(key) => (key(request.extensions()), request),
            KeyBy::Custom(key) => {
                let (parts, body) = request.into_parts();
                (key(&parts), http::Request::from_parts(parts, body))
            }
        };
        let key = key.unwrap_or_else(|| peer_key(request.extensions(), warned));
        (key, request)
    }
}

fn peer_key(extensions: &http::Extensions, warned: &AtomicBool) -> ClientKey {
    match extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
    {
        Some(addr) => ClientKey::peer(addr.ip()),
        None => {
            if !warned.load(Ordering::Relaxed) && !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "rate limit: a request without a TCP peer address; such requests \
                         share one bucket (use RateLimitLayer::key_by to identify them)"
                );
            }
            ClientKey::unknown()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_display_and_group() {
        let v6 = |s: &str| ClientKey::peer(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(
            v6("2001:db8:1:2:aaaa::1").to_string(),
            "peer network 2001:db8:1:2::/64"
        );
        assert_eq!(v6("::ffff:10.0.0.7").to_string(), "peer 10.0.0.7");
        assert_eq!(
            ClientKey::id(b"a\"b\xff").unwrap().to_string(),
            r#"client id "a\"b\xff""#
        );
        assert!(ClientKey::id(b"").is_none());
        assert!(ClientKey::id(&[b'x'; MAX_KEY_LEN]).is_some());
        assert!(ClientKey::id(&[b'x'; MAX_KEY_LEN + 1]).is_none());
        assert_eq!(
            ClientKey::identity("spiffe://acme/billing")
                .unwrap()
                .to_string(),
            r#"identity "spiffe://acme/billing""#
        );
        assert_ne!(ClientKey::identity("a"), ClientKey::id(b"a"));
        assert!(ClientKey::identity("").is_none());
        assert!(ClientKey::identity(&"x".repeat(MAX_KEY_LEN + 1)).is_none());
    }
}
