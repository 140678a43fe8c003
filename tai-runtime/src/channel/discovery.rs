//! Where a channel's endpoints come from: one address, a fixed list, a DNS name
//! re-resolved on an interval (every A/AAAA record an endpoint — the Kubernetes
//! headless-service pattern), or any stream of `tower::discover::Change`.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::{Authority, Scheme};
use tokio::sync::watch;
use tower::discover::Change;

use super::EndpointSet;

/// The future a [`Resolve`] returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a `host:port` name to addresses. The default uses the system resolver;
/// implement it to plug in a registry of your own.
pub trait Resolve: Send + Sync + 'static {
    /// All current addresses of `target`.
    fn resolve(&self, target: &str) -> ResolveFuture;
}

/// The system resolver (`getaddrinfo` via tokio).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, target: &str) -> ResolveFuture {
        let target = target.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Change<String, String>> + Send>>;

enum Source {
    Static(Vec<String>),
    Resolve {
        target: String,
        resolver: Arc<dyn Resolve>,
        interval: Duration,
    },
    Stream(ChangeStream),
}

/// The endpoints of a channel.
///
/// Addresses are `host:port`, optionally with an `http://` prefix.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::channel::Endpoints;
///
/// let one = Endpoints::one("127.0.0.1:50051");
/// let list = Endpoints::list(["10.0.0.1:50051", "10.0.0.2:50051"]);
/// let dns = Endpoints::dns("scheduler.default.svc.cluster.local:50051", Duration::from_secs(30));
/// # drop((one, list, dns));
/// ```
pub struct Endpoints(Source);

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Static(list) => f.debug_tuple("Endpoints::list").field(list).finish(),
            Source::Resolve {
                target, interval, ..
            } => f
                .debug_struct("Endpoints::dns")
                .field("target", target)
                .field("interval", interval)
                .finish(),
            Source::Stream(_) => f.write_str("Endpoints::stream(..)"),
        }
    }
}

impl Endpoints {
    /// What these endpoints name: the addresses of a fixed list, the name a
    /// resolver resolves; `None` for a stream of changes.
    pub(crate) fn target(&self) -> Option<String> {
        match &self.0 {
            Source::Static(addresses) => Some(addresses.join(",")),
            Source::Resolve { target, .. } => Some(target.clone()),
            Source::Stream(_) => None,
        }
    }

    /// Whether an address it names asks for TLS (`https://`).
    pub(crate) fn names_https(&self) -> bool {
        match &self.0 {
            Source::Static(addresses) => addresses.iter().any(|a| a.starts_with("https://")),
            Source::Resolve { target, .. } => target.starts_with("https://"),
            Source::Stream(_) => false,
        }
    }

    /// One address.
    pub fn one(address: impl Into<String>) -> Self {
        Self(Source::Static(vec![address.into()]))
    }

    /// A fixed list of addresses.
    pub fn list<I, S>(addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(Source::Static(
            addresses.into_iter().map(Into::into).collect(),
        ))
    }

    /// A DNS name (`host:port`) resolved now and every `interval`; each address is
    /// an endpoint, and the name stays the `:authority` of every call.
    pub fn dns(target: impl Into<String>, interval: Duration) -> Self {
        Self::resolver(target, SystemResolver, interval)
    }

    /// Like [`Endpoints::dns`], with your own resolver.
    pub fn resolver(target: impl Into<String>, resolver: impl Resolve, interval: Duration) -> Self {
        Self(Source::Resolve {
            target: target.into(),
            resolver: Arc::new(resolver),
            interval,
        })
    }

    /// Any stream of `Change::Insert(key, address)` / `Change::Remove(key)`.
    pub fn stream(changes: impl Stream<Item = Change<String, String>> + Send + 'static) -> Self {
        Self(Source::Stream(Box::pin(changes)))
    }

    /// Applies the source to `set`: at once for static lists, in a background task
    /// otherwise (stopped when the channel is dropped).
    pub(crate) fn start(
        self,
        set: Arc<EndpointSet>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        match self.0 {
            Source::Static(list) => {
                for address in list {
                    let (scheme, authority) = parse(&address)?;
                    set.insert(authority.to_string(), scheme, authority);
                }
                set.mark_resolved();
            }
            Source::Resolve {
                target,
                resolver,
                interval,
            } => {
                let (scheme, authority) = parse(&target)?;
                tokio::spawn(async move {
                    loop {
                        refresh(&set, &*resolver, &scheme, &authority).await;
                        tokio::select! {
                            () = tokio::time::sleep(interval) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                });
            }
            Source::Stream(mut changes) => {
                tokio::spawn(async move {
                    set.mark_resolved();
                    loop {
                        let change = tokio::select! {
                            c = changes.next() => c,
                            _ = shutdown.changed() => return,
                        };
                        match change {
                            Some(Change::Insert(key, address)) => match parse(&address) {
                                Ok((scheme, authority)) => {
                                    set.insert_keyed(key, authority.to_string(), scheme, authority)
                                }
                                Err(e) => tracing::warn!(%key, %address, "ignoring endpoint: {e}"),
                            },
                            Some(Change::Remove(key)) => set.remove(&key),
                            None => return,
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

async fn refresh(
    set: &Arc<EndpointSet>,
    resolver: &dyn Resolve,
    scheme: &Scheme,
    authority: &Authority,
) {
    let target = authority.as_str();
    match resolver.resolve(target).await {
        Ok(addresses) => {
            let wanted: BTreeSet<String> = addresses.iter().map(SocketAddr::to_string).collect();
            for key in set.keys() {
                if !wanted.contains(&key) {
                    set.remove(&key);
                }
            }
            for address in wanted {
                if !set.contains(&address) {
                    set.insert_keyed(address.clone(), address, scheme.clone(), authority.clone());
                }
            }
            set.mark_resolved();
        }
        // Keep the endpoints we have: a DNS hiccup must not empty the rotation.
        Err(e) => tracing::warn!(%target, "DNS resolution failed, keeping current endpoints: {e}"),
    }
}

/// Splits `http://host:port` or `host:port` into scheme and authority.
pub(crate) fn parse(address: &str) -> Result<(Scheme, Authority), String> {
    let (scheme, rest) = match address.split_once("://") {
        Some(("http", rest)) => (Scheme::HTTP, rest),
        Some(("https", rest)) => (Scheme::HTTPS, rest),
        Some((other, _)) => {
            return Err(format!(
                "`{address}`: unsupported scheme `{other}` (use http:// or https://)"
            ));
        }
        None => (Scheme::HTTP, address),
    };
    let rest = rest.trim_end_matches('/');
    let authority: Authority = rest
        .parse()
        .map_err(|e| format!("`{address}` is not a host:port address: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("`{address}` has no port: write it as host:port"));
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let (s, a) = parse("http://127.0.0.1:50051").unwrap();
        assert_eq!((s.as_str(), a.as_str()), ("http", "127.0.0.1:50051"));
        let (_, a) = parse("scheduler:7000/").unwrap();
        assert_eq!(a.as_str(), "scheduler:7000");
        assert!(parse("localhost").unwrap_err().contains("no port"));
        assert!(
            parse("ftp://x:1")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(parse("http://[::1:80").is_err());
    }
}
