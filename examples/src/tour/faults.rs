//! The fault schedule: what breaks when, as data.
//!
//! | time (normal) | fault |
//! |---|---|
//! | 4s – 12s | replica-1 answers every call UNAVAILABLE |
//! | 14s – 20s | replica-2 is stopped (gracefully), then restarted |
//! | 22s – 30s | replica-3 answers 150ms late |
//! | 4s – 30s | Governor and Coordinator lose the response of one first attempt in five, *after* applying it |
//! | 16s | an action subscriber disconnects holding unacknowledged actions |
//! | 18s | the servers' certificate is rotated (mTLS only) |
//!
//! Each fault aims at one mechanism: UNAVAILABLE at retries and outlier
//! ejection, the stop at health watching and stream resumption, the latency at
//! peak-EWMA balancing, lost responses at deduplication (a retry of a mutation
//! that was applied), the vanished subscriber at redelivery, the rotation at
//! reloading certificates while serving (it comes while replica-2 is down, so
//! that its restart handshakes with the new certificate). The faults overlap
//! only where their mechanisms differ, so that a failure points at one. Times
//! are seconds at normal speed; [`Clock`] compresses them for `--fast`.

use std::time::Duration;

use super::TourError;
use super::servers::Mesh;
use super::workload::Workload;
use crate::fault::FaultPlan;

/// One change the schedule makes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// Replica `i` answers every call UNAVAILABLE (or recovers).
    Unavailable(usize, bool),
    /// Replica `i` is stopped gracefully.
    Stop(usize),
    /// Replica `i` is started again.
    Start(usize),
    /// Replica `i` answers late (or is fast again).
    Slow(usize, bool),
    /// Governor and Coordinator lose responses after applying (or stop).
    LoseResponses(bool),
    /// An action subscriber vanishes holding unacknowledged actions.
    CrashSubscriber,
    /// A new server pair from the same CA is renamed into place (skipped in
    /// plaintext).
    RotateServerCertificate,
    /// The workload stops; the schedule ends.
    StopWorkload,
}

/// Seconds (at normal speed), what happens then, and how the tour says it.
pub(super) const SCHEDULE: &[(f64, Step, &str)] = &[
    (
        4.0,
        Step::LoseResponses(true),
        "Governor and Coordinator start losing 1 in 5 responses after applying them",
    ),
    (
        4.0,
        Step::Unavailable(0, true),
        "replica-1 starts answering every call UNAVAILABLE",
    ),
    (12.0, Step::Unavailable(0, false), "replica-1 recovers"),
    (
        14.0,
        Step::Stop(1),
        "replica-2 is stopped (graceful shutdown)",
    ),
    (
        16.0,
        Step::CrashSubscriber,
        "action subscriber worker-a disconnects holding unacknowledged actions",
    ),
    (
        18.0,
        Step::RotateServerCertificate,
        "the server certificate is rotated: a new pair from the same CA is renamed into place; \
         servers reload it for new connections, open ones keep theirs",
    ),
    (20.0, Step::Start(1), "replica-2 is restarted"),
    (
        22.0,
        Step::Slow(2, true),
        "replica-3 starts answering 150ms late",
    ),
    (30.0, Step::Slow(2, false), "replica-3 is fast again"),
    (30.0, Step::LoseResponses(false), "no more lost responses"),
    (
        32.0,
        Step::StopWorkload,
        "workload stops; waiting for tasks and actions to finish",
    ),
];
/// When the schedule ends, at normal speed.
pub(super) const NORMAL_LENGTH: f64 = 32.0;
/// How much `--fast` compresses the schedule.
const FAST_FACTOR: f64 = 0.15;
/// How late a slow replica answers.
const SLOW_BY: Duration = Duration::from_millis(150);

/// The schedule's time: normal, or compressed for `--fast`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    /// Real seconds per scheduled second.
    pub(super) factor: f64,
}

impl Clock {
    pub(super) fn new(fast: bool) -> Self {
        Self {
            factor: if fast { FAST_FACTOR } else { 1.0 },
        }
    }

    /// `seconds` of the schedule, in real time.
    pub(super) fn scaled(self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds * self.factor)
    }
}

impl Step {
    /// Whether the step means anything for `mesh` (a rotation does not in
    /// plaintext).
    pub(super) fn applies(self, mesh: &Mesh) -> bool {
        !matches!(self, Step::RotateServerCertificate) || mesh.tls.is_some()
    }

    /// Makes the change; a restart waits for the replica's stop to finish.
    pub(super) async fn apply(self, mesh: &mut Mesh, workload: &Workload) -> Result<(), TourError> {
        match self {
            Step::Unavailable(i, on) => {
                let plan = on.then(FaultPlan::unavailable);
                mesh.replicas[i].set_fault(plan, "UNAVAILABLE");
            }
            Step::Slow(i, on) => {
                let plan = on.then(|| FaultPlan::latency(SLOW_BY));
                mesh.replicas[i].set_fault(plan, "slow (+150ms)");
            }
            Step::Stop(i) => mesh.replicas[i].stop(),
            Step::Start(i) => mesh.replicas[i].restart(&mesh.scheduler).await?,
            Step::LoseResponses(on) => mesh.lose_responses(on),
            Step::CrashSubscriber => workload.crash_subscriber(),
            Step::RotateServerCertificate => {
                let addr = mesh.governor_addr.to_string();
                if let Some(tls) = &mut mesh.tls {
                    tls.rotate(addr)?;
                }
            }
            Step::StopWorkload => workload.stop(),
        }
        Ok(())
    }
}
