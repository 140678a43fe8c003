//! The tour: what `mesh` does with no arguments.
//!
//! It starts the Governor, the Coordinator and three Scheduler replicas (one
//! shared task store) on loopback (`servers`), runs a workload through the
//! generated clients (`workload`), breaks things on a schedule (`faults`),
//! shows it live (`view`), and at the end checks that resilience held
//! (`verdict`) — exiting 0 only then.
//!
//! What keeps every call succeeding is the policy compiled into the clients
//! from the .proto (retry on UNAVAILABLE with backoff, breakers that trip only
//! when a whole service fails) and the Scheduler channel's replica handling
//! (health watching, outlier ejection, peak-EWMA balancing); what keeps the
//! retries harmless is the servers' deduplication. Each concern is a module so
//! that [`run`] reads as the story it tells: start, load, break, watch, judge.
//! `--fast` runs the same schedule compressed about seven times, for tests.
//! Every connection is mTLS unless `--no-tls` (`tls`), and the schedule
//! rotates the servers' certificate midway.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tai_runtime::config::ClientConfig;
use tokio::time::Instant;

use crate::server::ServeError;

mod auth;
mod faults;
mod servers;
mod stats;
mod tls;
mod verdict;
mod view;
mod workload;

use faults::{Clock, NORMAL_LENGTH, SCHEDULE, Step};
use servers::Mesh;
use stats::Stats;
use verdict::Verdict;
use view::{Scene, View};
use workload::{Clients, Workload};

/// How the tour shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Live {
    /// A refreshing table on a terminal, progress lines otherwise.
    #[default]
    Auto,
    /// Always the refreshing table.
    Table,
    /// Progress lines only.
    Lines,
}

/// Options of the tour.
#[derive(Clone, Debug)]
pub struct TourOptions {
    /// Run the schedule compressed (about 5s instead of 34s).
    pub fast: bool,
    /// How to show progress.
    pub live: Live,
    /// The connection preset of the clients.
    pub config: ClientConfig,
    /// Seed of the workload's choices and of the clients' jitter.
    pub seed: u64,
    /// mTLS on every connection (certificates made at start, the server's
    /// rotated midway); plaintext if `false`.
    pub tls: bool,
    /// A bearer JWT required on every call (a secret made at start, each
    /// client with a token of its service's scopes), and two calls that must
    /// be refused at the end; no authentication if `false`.
    pub jwt: bool,
}

impl Default for TourOptions {
    fn default() -> Self {
        Self {
            fast: false,
            live: Live::Auto,
            config: ClientConfig::default(),
            seed: 7,
            tls: true,
            jwt: true,
        }
    }
}

/// How the tour went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TourOutcome {
    /// Every check passed: exit 0.
    pub passed: bool,
    /// Idempotent calls made (all unary calls and stream openings are).
    pub calls: u64,
    /// Of which failed.
    pub failed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why the tour could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    /// A server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A client could not be built.
    #[error(transparent)]
    Connect(#[from] tai_runtime::ConnectError),
    /// The certificates could not be made or loaded.
    #[error("cannot set up the tour's mTLS: {0}")]
    Tls(String),
    /// The tokens could not be set up.
    #[error("cannot set up the tour's authentication: {0}")]
    Auth(String),
    /// Output (or writing the certificates) failed.
    #[error("cannot write the tour's output: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the tour, writing progress and the summary to `out`.
///
/// # Errors
///
/// If the servers or clients cannot be set up, or `out` fails; a tour whose
/// checks fail is an `Ok` with `passed: false`.
pub async fn run(
    options: TourOptions,
    out: &mut (dyn Write + Send),
) -> Result<TourOutcome, TourError> {
    let started = Instant::now();
    let clock = Clock::new(options.fast);
    let tls = options.tls.then(tls::TourTls::start).transpose()?;
    let auth = options.jwt.then(auth::TourAuth::start).transpose()?;
    let mesh = Mesh::start(tls, auth.as_ref().map(|a| a.jwt.clone())).await?;
    let (metrics_url, metrics_task) = mesh.serve_metrics().await?;
    let stats = Arc::new(Stats::new());
    let clients = Clients::connect(&mesh, &options, clock.factor, auth.as_ref()).await?;
    let intro = intro(&mesh, &metrics_url, clock, options.fast, options.jwt);
    write!(out, "{intro}")?;
    out.flush()?;

    let workload = Workload::start(&clients, &stats, options.seed);
    let total = clock.scaled(NORMAL_LENGTH);
    let mut view = View::new(out, options.live, metrics_url, total);
    let mut tour = Tour {
        mesh,
        clients,
        stats,
        workload,
    };
    tour.play(clock, &mut view).await?;
    if let Some(tls) = &mut tour.mesh.tls {
        tls.settle().await?;
    }
    tour.workload.finish(&tour.mesh).await;
    let refusals = match &auth {
        Some(auth) => Some(auth.refusals(&tour.mesh).await?),
        None => None,
    };
    view.clear(&intro)?;

    let mut verdict = Verdict::judge(tour.scene(), &tour.workload.expected);
    if let Some(refusals) = &refusals {
        verdict.add(refusals.check());
    }
    view.write(&verdict.summary(started.elapsed(), tour.scene()))?;

    drop(tour.clients);
    tour.mesh.shut_down().await;
    metrics_task.abort();
    Ok(TourOutcome {
        passed: verdict.passed(),
        calls: verdict.calls,
        failed: verdict.failed,
        elapsed: started.elapsed(),
    })
}

/// What the tour runs and watches.
struct Tour {
    mesh: Mesh,
    clients: Clients,
    stats: Arc<Stats>,
    workload: Workload,
}

impl Tour {
    fn scene(&self) -> Scene<'_> {
        Scene {
            mesh: &self.mesh,
            clients: &self.clients,
            stats: &self.stats,
        }
    }

    /// Plays the fault schedule to its end (the workload stopping), refreshing
    /// `view` meanwhile.
    async fn play(&mut self, clock: Clock, view: &mut View<'_>) -> Result<(), TourError> {
        let mut tick = tokio::time::interval(view.refresh_every(clock.scaled(4.0)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let origin = Instant::now();
        let mut steps = SCHEDULE.iter().peekable();
        while let Some(&&(at, step, what)) = steps.peek() {
            tokio::select! {
                () = tokio::time::sleep_until(origin + clock.scaled(at)) => {
                    steps.next();
                    if !step.applies(&self.mesh) {
                        continue;
                    }
                    view.event(at * clock.factor, what)?;
                    step.apply(&mut self.mesh, &self.workload).await?;
                    if matches!(step, Step::StopWorkload) {
                        break;
                    }
                }
                _ = tick.tick() => view.refresh(self.scene())?,
            }
        }
        Ok(())
    }
}

/// The first lines: where everything is, and how long it will take.
fn intro(mesh: &Mesh, metrics_url: &str, clock: Clock, fast: bool, jwt: bool) -> String {
    let mut intro = String::new();
    let security = match &mesh.tls {
        Some(tls) => format!(
            "mTLS on every connection (a development CA and pairs in {}, checked every {:?}; \
             --no-tls for plaintext)",
            tls.dir().display(),
            tls::RELOAD
        ),
        None => "plaintext (--no-tls)".to_owned(),
    };
    let auth = if jwt {
        "a bearer JWT on every call (HS256, a secret made at start; each client's token \
         carries its service's read and write scopes; --no-jwt to turn off)"
    } else {
        "none (--no-jwt)"
    };
    let _ = write!(
        intro,
        "tai mesh tour: Governor on {}, Coordinator on {}, Scheduler replicas on {}\n\
         security: {security}\n\
         auth: {auth}\n\
         metrics: {metrics_url} (Prometheus text; scrape it while the tour runs)\n\
         schedule: {:.0}s{}\n",
        mesh.governor_addr,
        mesh.coordinator_addr,
        mesh.replica_addrs().join(", "),
        NORMAL_LENGTH * clock.factor,
        if fast { " (fast mode)" } else { "" }
    );
    intro
}
