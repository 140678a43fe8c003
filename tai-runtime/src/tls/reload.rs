//! Certificate files polled and swapped in while serving.
//!
//! Polling, not file watches: Kubernetes rotates a mounted secret by pointing a
//! `..data` symlink at a new directory, an event inotify on the files does not
//! see. Each poll reads every file by path (following the symlinks) and compares
//! the bytes with the last ones seen; only a change is rebuilt. A good build is
//! stored in an [`ArcSwap`], which a handshake loads without a lock, so new
//! handshakes take it at once and open connections keep what they were made with.
//! A build that fails is logged, counted once per distinct content, and changes
//! nothing: the last good configuration keeps serving.
//!
//! The poll task holds the shared state weakly and ends when the last
//! [`ServerTls`](super::ServerTls) or [`ClientTls`](super::ClientTls) clone is
//! dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::error::TlsError;
use super::pem;

/// Counts of a [`ServerTls`](super::ServerTls)'s or
/// [`ClientTls`](super::ClientTls)'s reloads so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadStats {
    /// Changed files that loaded and now serve new handshakes.
    pub applied: u64,
    /// Changed files that did not load (the last good configuration kept
    /// serving).
    pub rejected: u64,
}

/// Which side a reloader serves, for logs and the metric's label.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    Server,
    Client,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// Builds a configuration from the files' contents, in the order of the paths.
pub(crate) type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync;

/// The configuration in force, kept up to date with its files.
pub(crate) struct Reloading<T> {
    current: ArcSwap<T>,
    applied: AtomicU64,
    rejected: AtomicU64,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Loads `paths` and builds the first configuration (its error is the
    /// caller's), then polls them every `interval` on the current tokio runtime.
    pub(crate) fn start(
        paths: Vec<PathBuf>,
        interval: Duration,
        side: Side,
        build: Box<Build<T>>,
    ) -> Result<Arc<Self>, TlsError> {
        if interval.is_zero() {
            return Err(TlsError::config("the reload interval must be above zero"));
        }
        let contents = paths
            .iter()
            .map(|p| pem::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let first = build(&contents)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TlsError::config(
                "certificates are reloaded by a tokio task: build this inside a tokio runtime",
            )
        })?;
        let this = Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let poller = Poller {
            state: Arc::downgrade(&this),
            paths,
            seen: Some(contents),
            side,
            build,
        };
        runtime.spawn(poller.run(interval));
        Ok(this)
    }

    /// The configuration for the next handshake.
    pub(crate) fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    pub(crate) fn stats(&self) -> ReloadStats {
        ReloadStats {
            applied: self.applied.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

struct Poller<T> {
    state: Weak<Reloading<T>>,
    paths: Vec<PathBuf>,
    /// The contents last looked at, loaded or not (`None`: a file could not be
    /// read): the same broken files are rejected (and counted) once, not on
    /// every poll.
    seen: Option<Vec<Vec<u8>>>,
    side: Side,
    build: Box<Build<T>>,
}

impl<T: Send + Sync + 'static> Poller<T> {
    async fn run(mut self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(state) = self.state.upgrade() else {
                return;
            };
            self.poll(&state).await;
        }
    }

    async fn poll(&mut self, state: &Reloading<T>) {
        let side = self.side.label();
        let mut contents = match self.read().await {
            Ok(contents) => contents,
            Err(e) => {
                if self.seen.take().is_some() {
                    reject(state, side, &e);
                }
                return;
            }
        };
        // The files are read one by one: a swap between two reads gives a mixed
        // set that fails to build. Such a failure is looked at again with a
        // fresh read; only files that fail the same way twice are rejected.
        for _ in 0..3 {
            if self.seen.as_ref() == Some(&contents) {
                return;
            }
            match (self.build)(&contents) {
                Ok(next) => {
                    state.current.store(Arc::new(next));
                    state.applied.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::Metrics::global().tls_reload(side, true);
                    tracing::info!(side, "reloaded TLS certificates");
                    self.seen = Some(contents);
                    return;
                }
                Err(e) => match self.read().await {
                    Ok(again) if again != contents => contents = again,
                    _ => {
                        reject(state, side, &e);
                        self.seen = Some(contents);
                        return;
                    }
                },
            }
        }
    }

    async fn read(&self) -> Result<Vec<Vec<u8>>, TlsError> {
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            contents.push(pem::read_async(path).await?);
        }
        Ok(contents)
    }
}

/// Counts and logs files that did not load.
fn reject<T>(state: &Reloading<T>, side: &'static str, error: &TlsError) {
    state.rejected.fetch_add(1, Ordering::Relaxed);
    crate::metrics::Metrics::global().tls_reload(side, false);
    tracing::warn!(
        side,
        "rejected new TLS certificates, keeping the last good ones: {error}"
    );
}
