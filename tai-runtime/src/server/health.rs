//! `grpc.health.v1.Health` for every service a server serves, driven by the
//! dependencies the application declares, and its part in shutting down.
//!
//! Each added service is SERVING (and so is the server as a whole, `""`) from
//! the start, unless a [`DependencyHealth`] it needs is down: health is meant
//! to say whether a call would work, and a service whose database is gone
//! would fail it. The application declares which services need which
//! dependency once, and then only says `down()` / `up()` for the dependency;
//! a service is SERVING exactly while every dependency it needs is up, so two
//! dependencies going down and one coming back leave it NOT_SERVING.
//!
//! `""` follows only the dependencies that name it: unlike a readiness
//! aggregate, one service's missing dependency does not take the whole server
//! out for the clients of its other services. Name `""` among a dependency's
//! services to take the whole server out with it.
//!
//! The moment shutdown begins, before any connection is told to go away,
//! every service turns NOT_SERVING whatever its dependencies: health-checking
//! clients and load balancers stop sending here while calls in flight drain.
//! Watch streams are then ended (after they have been sent NOT_SERVING): they
//! never finish on their own and would hold the drain open until its timeout.
//! Checks still answer NOT_SERVING.

use std::fmt;
use std::sync::{Arc, Mutex};

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::sync::lock;

/// The health statuses of a server's services.
#[derive(Clone, Debug)]
pub(crate) struct Health {
    reporter: HealthReporter,
    state: Arc<Shared>,
}

/// What the statuses are computed from, shared with every [`DependencyHealth`].
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Held while statuses are written to the reporter, so that two changes
    /// reach watchers in the order they were made.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    /// The services to report on, `""` (the whole server) first.
    services: Vec<&'static str>,
    phase: Phase,
    dependencies: Vec<Dependency>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not serving yet: nothing is reported, changes are only recorded.
    Starting,
    Serving,
    /// Every service NOT_SERVING, whatever its dependencies.
    ShuttingDown,
}

#[derive(Debug)]
struct Dependency {
    name: String,
    services: Vec<&'static str>,
    up: bool,
}

impl State {
    /// Every service reported on: those added, then those only a dependency names.
    fn reported(&self) -> Vec<&'static str> {
        let mut all = self.services.clone();
        for service in self.dependencies.iter().flat_map(|d| &d.services) {
            if !all.contains(service) {
                all.push(service);
            }
        }
        all
    }

    fn status(&self, service: &str) -> ServingStatus {
        let needed_and_down = self
            .dependencies
            .iter()
            .any(|d| !d.up && d.services.contains(&service));
        if self.phase == Phase::ShuttingDown || needed_and_down {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        }
    }
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            reporter: HealthReporter::new(),
            state: Arc::new(Shared {
                state: Mutex::new(State {
                    services: vec![""],
                    phase: Phase::Starting,
                    dependencies: Vec::new(),
                }),
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub(crate) fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Reports on `service` too.
    pub(crate) fn add(&mut self, service: &'static str) {
        let mut state = lock(&self.state.state);
        if !state.services.contains(&service) {
            state.services.push(service);
        }
    }

    /// Declares a dependency `services` need, up until told otherwise.
    pub(crate) fn dependency(
        &self,
        name: &str,
        services: impl IntoIterator<Item = &'static str>,
    ) -> DependencyHealth {
        let mut state = lock(&self.state.state);
        let mut needed: Vec<&'static str> = Vec::new();
        for service in services {
            if !needed.contains(&service) {
                needed.push(service);
            }
        }
        state.dependencies.push(Dependency {
            name: name.to_owned(),
            services: needed,
            up: true,
        });
        DependencyHealth {
            health: self.clone(),
            index: state.dependencies.len() - 1,
        }
    }

    /// The `grpc.health.v1.Health` service answering from these statuses.
    pub(crate) fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Enters `phase` (if given), updates dependency `index` (if given), then
    /// writes the statuses of the services that may have changed.
    async fn apply(&self, phase: Option<Phase>, dependency: Option<(usize, bool)>) {
        let _writing = self.state.writing.lock().await;
        let statuses: Vec<(&'static str, ServingStatus)> = {
            let mut state = lock(&self.state.state);
            if let Some(phase) = phase {
                state.phase = phase;
            }
            let services = match dependency {
                Some((index, up)) => {
                    let dependency = &mut state.dependencies[index];
                    if dependency.up == up {
                        return;
                    }
                    dependency.up = up;
                    tracing::info!(dependency = %dependency.name, up, services = ?dependency.services, "dependency health changed");
                    dependency.services.clone()
                }
                None => state.reported(),
            };
            if state.phase == Phase::Starting {
                return;
            }
            services.into_iter().map(|s| (s, state.status(s))).collect()
        };
        for (service, status) in statuses {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Every service SERVING but those with a dependency down.
    pub(crate) async fn serving(&self) {
        self.apply(Some(Phase::Serving), None).await;
    }

    /// Every service NOT_SERVING; watchers told so, then their streams ended.
    pub(crate) async fn shutting_down(&mut self) {
        self.apply(Some(Phase::ShuttingDown), None).await;
        let _writing = self.state.writing.lock().await;
        let services = lock(&self.state.state).reported();
        for service in services {
            // Dropping a status ends the streams watching it, after they have
            // had its last value; a new one answers checks.
            self.reporter.clear_service_status(service).await;
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}

/// A dependency of some of a server's services (a database, a downstream
/// service): while it is down they report NOT_SERVING, so health-checking
/// clients (tai's channel with [`health_check`](crate::config::ClientConfig::health_check),
/// load balancers, Kubernetes probes) send their calls elsewhere; when it is up
/// again they report SERVING (unless another dependency they need is down).
///
/// Get one from [`Server::dependency`](super::Server::dependency); clones
/// share the state. The server as a whole (`""`) follows a dependency only if
/// it is among the services named.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let my_service = tonic_health::server::health_reporter().1;
/// # async fn database_ping() -> bool { true }
/// use tai_runtime::server::Server;
///
/// let server = Server::builder().add_service(my_service);
/// // The services that cannot answer without the database.
/// let database = server
///     .dependency("database", ["grpc.health.v1.Health"])
///     .expect("health is on");
/// tokio::spawn(async move {
///     loop {
///         if database_ping().await {
///             database.up().await;
///         } else {
///             database.down().await;
///         }
///         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     }
/// });
/// server.serve("127.0.0.1:50051".parse()?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DependencyHealth {
    health: Health,
    index: usize,
}

impl fmt::Debug for DependencyHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.health.state.state);
        let dependency = &state.dependencies[self.index];
        f.debug_struct("DependencyHealth")
            .field("name", &dependency.name)
            .field("services", &dependency.services)
            .field("up", &dependency.up)
            .finish()
    }
}

impl DependencyHealth {
    /// The dependency is gone: the services that need it turn NOT_SERVING
    /// (watchers are told when this returns). Before the server starts, they
    /// start NOT_SERVING; after shutdown began, nothing changes.
    pub async fn down(&self) {
        self.health.apply(None, Some((self.index, false))).await;
    }

    /// The dependency is back: the services that need it turn SERVING, unless
    /// another dependency they need is down.
    pub async fn up(&self) {
        self.health.apply(None, Some((self.index, true))).await;
    }

    /// Whether the dependency is up (the last of [`up`](Self::up) and
    /// [`down`](Self::down); up at first).
    pub fn is_up(&self) -> bool {
        lock(&self.health.state.state).dependencies[self.index].up
    }
}
