//! The tour's mTLS: certificates made at start, one server pair rotated midway.
//!
//! Every server and client of the tour speaks mTLS unless `--no-tls`: a
//! development CA and pairs ([`DevCa`]) are written into a temporary directory,
//! the servers share one [`ServerTls`] polling it every [`RELOAD`], the clients
//! one [`ClientTls`]. The CA is kept so that the schedule can sign a new server
//! pair and rename it into place while calls run ([`TourTls::rotate`]); the
//! rotation is then checked the way a client sees it — a fresh handshake must
//! present the new certificate — and the verdict reports it. Connections open
//! before the rotation keep their handshake, which is why no call fails.

use std::time::Duration;

use tai_runtime::tls::{ClientTls, ReloadStats, ServerTls};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::TourError;
use crate::certs::{self, DevCa};

/// How often the tour's servers poll their certificate files.
pub(super) const RELOAD: Duration = Duration::from_millis(200);

/// How long a rotation may take to reach new handshakes before it counts as
/// failed: many polls.
pub(super) const ROTATION_BOUND: Duration = Duration::from_secs(5);

/// What a rotation did, for the verdict.
#[derive(Clone, Debug)]
pub(super) struct Rotation {
    /// The serial new handshakes presented before.
    pub(super) before: String,
    /// The serial they presented after, if the new certificate was seen.
    pub(super) after: Option<String>,
    /// How long after the rename the new certificate was first seen.
    pub(super) took: Duration,
}

/// The tour's certificates and TLS configurations.
pub(super) struct TourTls {
    dir: TempDir,
    ca: DevCa,
    pub(super) server: ServerTls,
    pub(super) client: ClientTls,
    /// The rotation under way.
    rotation: Option<JoinHandle<Result<Rotation, TourError>>>,
    /// The rotation, once checked.
    pub(super) rotated: Option<Rotation>,
}

impl TourTls {
    /// Makes a CA and pairs in a new temporary directory and loads them.
    pub(super) fn start() -> Result<Self, TourError> {
        let error = |e: &dyn std::fmt::Display| TourError::Tls(e.to_string());
        let dir = tempfile::Builder::new()
            .prefix("tai-mesh-tour-")
            .tempdir()?;
        let ca = DevCa::generate().map_err(|e| error(&e))?;
        ca.certs()
            .map_err(|e| error(&e))?
            .write(dir.path())
            .map_err(TourError::Io)?;
        let server = crate::server::server_tls(dir.path(), RELOAD).map_err(|e| error(&e))?;
        let client = crate::client::client_tls(dir.path(), RELOAD).map_err(|e| error(&e))?;
        Ok(Self {
            dir,
            ca,
            server,
            client,
            rotation: None,
            rotated: None,
        })
    }

    /// Where the certificates are.
    pub(super) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The servers' reloads so far.
    pub(super) fn reloads(&self) -> ReloadStats {
        self.server.reload_stats()
    }

    /// Signs a new server pair with the same CA and, off the schedule's loop,
    /// renames it into place and waits (bounded) until a new handshake with the
    /// server at `addr` presents it; [`settle`](Self::settle) gives the outcome.
    pub(super) fn rotate(&mut self, addr: String) -> Result<(), TourError> {
        let pair = self
            .ca
            .server_pair()
            .map_err(|e| TourError::Tls(e.to_string()))?;
        let (dir, client) = (self.dir.path().to_owned(), self.client.clone());
        self.rotation = Some(tokio::spawn(async move {
            let before = serial(&client, &addr).await.unwrap_or_default();
            certs::rotate_server_pair(&dir, &pair)?;
            let renamed = Instant::now();
            let mut rotation = Rotation {
                before,
                after: None,
                took: Duration::ZERO,
            };
            while renamed.elapsed() < ROTATION_BOUND {
                tokio::time::sleep(RELOAD / 4).await;
                if let Ok((_, identity)) = client.connect_tls(&addr).await
                    && identity.chain().first().map(|c| c.as_ref()) == Some(&pair.cert_der[..])
                {
                    rotation.after = Some(identity.serial().to_owned());
                    rotation.took = renamed.elapsed();
                    break;
                }
            }
            Ok(rotation)
        }));
        Ok(())
    }

    /// Waits for the rotation under way to be checked (into
    /// [`rotated`](Self::rotated)).
    pub(super) async fn settle(&mut self) -> Result<(), TourError> {
        if let Some(task) = self.rotation.take() {
            let rotation = task
                .await
                .map_err(|e| TourError::Tls(format!("the rotation check failed: {e}")))??;
            self.rotated = Some(rotation);
        }
        Ok(())
    }
}

/// The serial of the certificate a new handshake with `addr` presents.
async fn serial(client: &ClientTls, addr: &str) -> Option<String> {
    let (_, identity) = client.connect_tls(addr).await.ok()?;
    Some(identity.serial().to_owned())
}
