//! The mesh under test: the Governor, the Coordinator and three Scheduler
//! replicas on loopback, each server behind its own fault injector.
//!
//! The three replicas share one [`Scheduler`] (one task store), as replicas of
//! a real service share a database, so stopping one loses no task. A stop runs
//! off the schedule's loop ([`Replica::stop`]): a graceful shutdown drains for
//! up to two seconds, and faults due meanwhile must still come on time. With
//! the tour's mTLS ([`TourTls`]) every server, a restarted replica included,
//! serves with the one shared [`ServerTls`], and with the tour's JWT check on,
//! requires the tokens it accepts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tai_runtime::server::auth::JwtAuth;
use tai_runtime::tls::ServerTls;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::TourError;
use super::tls::TourTls;
use crate::coordinator::Coordinator;
use crate::fault::{FaultInjector, FaultPlan};
use crate::governor::Governor;
use crate::scheduler::{Scheduler, TaskHandler};
use crate::server::{Drained, MeshServer, ServeError, bind};

/// How long a stopping server drains its calls.
const DRAIN: Duration = Duration::from_secs(2);

/// A server serving, and how to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<Drained, ServeError>>,
}

impl Running {
    fn spawn<H: TaskHandler>(server: MeshServer<H>, listener: tokio::net::TcpListener) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.drain_timeout(DRAIN).serve(listener, async move {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    /// Stops it gracefully and waits until it has.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// One Scheduler replica.
pub(super) struct Replica {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    pub(super) faults: FaultInjector,
    running: Option<Running>,
    /// A shutdown in progress, run off the schedule's loop.
    stopping: Option<JoinHandle<()>>,
    /// The fault it is under, as the view shows it ("" for none).
    pub(super) fault: &'static str,
    /// The TLS it serves, if any.
    tls: Option<ServerTls>,
    /// The tokens it requires, if any.
    auth: Option<JwtAuth>,
}

impl Replica {
    /// Whether its server is up.
    pub(super) fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Puts it under `plan` (`None`: no fault), shown as `label`.
    pub(super) fn set_fault(&mut self, plan: Option<FaultPlan>, label: &'static str) {
        match plan {
            Some(plan) => {
                self.faults.set(plan);
                self.fault = label;
            }
            None => {
                self.faults.clear();
                self.fault = "";
            }
        }
    }

    /// Starts stopping its server gracefully, without waiting for it.
    pub(super) fn stop(&mut self) {
        self.fault = "stopped";
        if let Some(running) = self.running.take() {
            self.stopping = Some(tokio::spawn(running.stop()));
        }
    }

    /// Serves `scheduler` again on its address, once its last stop is done.
    pub(super) async fn restart(&mut self, scheduler: &Scheduler) -> Result<(), TourError> {
        self.wait_stopped().await;
        let listener = rebind(self.addr).await?;
        let server = MeshServer::new()
            .scheduler(scheduler.clone())
            .faults(self.faults.clone());
        let server = secured(server, self.tls.as_ref(), self.auth.as_ref());
        self.running = Some(Running::spawn(server, listener));
        self.fault = "";
        Ok(())
    }

    async fn wait_stopped(&mut self) {
        if let Some(stopping) = self.stopping.take() {
            let _ = stopping.await;
        }
    }
}

/// The services, their servers and their fault injectors.
pub(super) struct Mesh {
    pub(super) governor: Governor,
    pub(super) coordinator: Coordinator,
    pub(super) scheduler: Scheduler,
    pub(super) governor_addr: SocketAddr,
    pub(super) coordinator_addr: SocketAddr,
    governor_server: Option<Running>,
    coordinator_server: Option<Running>,
    pub(super) governor_faults: FaultInjector,
    pub(super) coordinator_faults: FaultInjector,
    pub(super) replicas: Vec<Replica>,
    /// The mTLS every server and client uses, if on.
    pub(super) tls: Option<TourTls>,
}

impl Mesh {
    /// Starts every server on a free loopback port, with `tls` and requiring
    /// tokens `auth` accepts if given.
    pub(super) async fn start(
        tls: Option<TourTls>,
        auth: Option<JwtAuth>,
    ) -> Result<Self, TourError> {
        let server_tls = tls.as_ref().map(|t| t.server.clone());
        let governor = Governor::new();
        let coordinator = Coordinator::new();
        let scheduler = Scheduler::default();
        let governor_faults = FaultInjector::new("the Governor");
        let coordinator_faults = FaultInjector::new("the Coordinator");
        let (governor_addr, governor_server) = serve(
            MeshServer::new()
                .governor(governor.clone())
                .faults(governor_faults.clone()),
            server_tls.as_ref(),
            auth.as_ref(),
        )
        .await?;
        let (coordinator_addr, coordinator_server) = serve(
            MeshServer::new()
                .coordinator(coordinator.clone())
                .faults(coordinator_faults.clone()),
            server_tls.as_ref(),
            auth.as_ref(),
        )
        .await?;
        let mut replicas = Vec::new();
        for i in 0..3 {
            let name = format!("replica-{}", i + 1);
            let faults = FaultInjector::new(name.clone());
            let server = MeshServer::new()
                .scheduler(scheduler.clone())
                .faults(faults.clone());
            let (addr, running) = serve(server, server_tls.as_ref(), auth.as_ref()).await?;
            replicas.push(Replica {
                name,
                addr,
                faults,
                running: Some(running),
                stopping: None,
                fault: "",
                tls: server_tls.clone(),
                auth: auth.clone(),
            });
        }
        Ok(Self {
            governor,
            coordinator,
            scheduler,
            governor_addr,
            coordinator_addr,
            governor_server: Some(governor_server),
            coordinator_server: Some(coordinator_server),
            governor_faults,
            coordinator_faults,
            replicas,
            tls,
        })
    }

    /// The replicas' addresses.
    pub(super) fn replica_addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.to_string()).collect()
    }

    /// Makes the Governor and the Coordinator lose the response of one first
    /// attempt of a mutation in five, after applying it (or stop doing so).
    pub(super) fn lose_responses(&self, on: bool) {
        if on {
            self.governor_faults.set(FaultPlan::lose_first_responses(
                5,
                &[
                    "/tai.v1.mesh.Governor/ProposePolicy",
                    "/tai.v1.mesh.Governor/EnforcePolicy",
                    "/tai.v1.mesh.Governor/RevokePolicy",
                ],
            ));
            self.coordinator_faults.set(FaultPlan::lose_first_responses(
                5,
                &[
                    "/tai.v1.mesh.Coordinator/SubmitSignal",
                    "/tai.v1.mesh.Coordinator/RequestAction",
                    "/tai.v1.mesh.Coordinator/AcknowledgeAction",
                ],
            ));
        } else {
            self.governor_faults.clear();
            self.coordinator_faults.clear();
        }
    }

    /// Serves the Prometheus text of the faults injected so far, by server and
    /// kind, on a free loopback port; returns its URL.
    pub(super) async fn serve_metrics(&self) -> Result<(String, JoinHandle<()>), TourError> {
        let injectors: Vec<(String, FaultInjector)> = self
            .replicas
            .iter()
            .map(|r| (r.name.clone(), r.faults.clone()))
            .chain([
                ("governor".to_owned(), self.governor_faults.clone()),
                ("coordinator".to_owned(), self.coordinator_faults.clone()),
            ])
            .collect();
        let fault_counters = move || {
            let mut text = String::from(
                "# HELP tai_tour_injected_faults Faults the tour injected, by server and kind.\n\
                 # TYPE tai_tour_injected_faults counter\n",
            );
            for (name, f) in &injectors {
                let c = f.counts();
                for (kind, n) in [
                    ("refused", c.refused),
                    ("delayed", c.delayed),
                    ("lost_response", c.dropped),
                ] {
                    let _ = writeln!(
                        text,
                        "tai_tour_injected_faults_total{{server=\"{name}\",kind=\"{kind}\"}} {n}"
                    );
                }
            }
            text
        };
        Ok(crate::metrics::serve(
            bind(localhost()).await?,
            Arc::new(fault_counters),
        ))
    }

    /// Stops every server, waiting for each.
    pub(super) async fn shut_down(mut self) {
        let services = [self.governor_server.take(), self.coordinator_server.take()];
        for running in services.into_iter().flatten() {
            running.stop().await;
        }
        for r in &mut self.replicas {
            r.wait_stopped().await;
            if let Some(running) = r.running.take() {
                running.stop().await;
            }
        }
    }
}

/// Serves `server` on a free loopback port, with `tls` and `auth` if given.
async fn serve<H: TaskHandler>(
    server: MeshServer<H>,
    tls: Option<&ServerTls>,
    auth: Option<&JwtAuth>,
) -> Result<(SocketAddr, Running), TourError> {
    let listener = bind(localhost()).await?;
    let addr = listener.local_addr().map_err(TourError::Io)?;
    Ok((addr, Running::spawn(secured(server, tls, auth), listener)))
}

/// `server` with `tls`, and requiring tokens `auth` accepts, if given.
fn secured<H: TaskHandler>(
    mut server: MeshServer<H>,
    tls: Option<&ServerTls>,
    auth: Option<&JwtAuth>,
) -> MeshServer<H> {
    if let Some(tls) = tls {
        server = server.tls(tls.clone());
    }
    if let Some(auth) = auth {
        server = server.auth(auth.clone());
    }
    server
}

/// Binds `addr` again after a stop; the port may take a moment to be free.
async fn rebind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let mut tries = 0;
    loop {
        match bind(addr).await {
            Err(ServeError::AddrInUse(_)) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
