//! The verdict: whether resilience held, checked against the servers' own
//! counts rather than the clients' word.
//!
//! Four checks, each a line of the summary: every idempotent call succeeded
//! (the clients' policies hid every fault); every mutation the workload saw
//! succeed was applied exactly once (deduplication made the retries harmless:
//! the servers' applied counts equal the workload's successes, with lost
//! responses and answers from the dedup log reported beside); every action was
//! acknowledged (redelivery survived the vanished subscriber); every task ended.
//! With mTLS a fifth: the rotated server certificate reached new handshakes
//! (while the first check shows that no call failed for it). The tour exits 0
//! only if all pass.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::view::{Scene, tables};
use crate::proto::TaskState;

/// The checks and what they found.
pub(super) struct Verdict {
    /// Each check: passed, and what it says.
    checks: Vec<(bool, String)>,
    /// Idempotent calls made.
    pub(super) calls: u64,
    /// Of which failed.
    pub(super) failed: u64,
}

impl Verdict {
    /// Checks what `scene` shows, once the workload has finished.
    pub(super) fn judge(scene: Scene<'_>, expected: &super::workload::Expected) -> Self {
        let (mesh, stats) = (scene.mesh, scene.stats);
        let (calls, failed) = stats.totals();
        let (_, _, retries) = scene.clients.totals();
        let mut checks: Vec<(bool, String)> = Vec::new();
        let failures: Vec<String> = stats
            .lock()
            .iter()
            .filter(|(_, m)| m.failed > 0)
            .map(|(name, m)| {
                format!(
                    "{name}: {} failed ({}), last: {}",
                    m.failed,
                    m.codes
                        .iter()
                        .map(|(c, n)| format!("{n} {c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.last_error.clone().unwrap_or_default()
                )
            })
            .collect();
        checks.push((
            failed == 0,
            if failed == 0 {
                format!("all {calls} idempotent calls succeeded ({retries} retries were needed)")
            } else {
                format!(
                    "{failed} of {calls} idempotent calls failed: {}",
                    failures.join("; ")
                )
            },
        ));
        let lost = mesh.governor_faults.counts().dropped + mesh.coordinator_faults.counts().dropped;
        let duplicates = mesh.governor.duplicates()
            + mesh.coordinator.duplicates()
            + mesh.scheduler.duplicates();
        let seen = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        let (governor, coordinator, scheduler) = (
            seen(&expected.governor_mutations),
            seen(&expected.coordinator_mutations),
            seen(&expected.scheduler_mutations),
        );
        let exactly_once = mesh.governor.applied() == governor
            && mesh.coordinator.applied() == coordinator
            && mesh.scheduler.applied() == scheduler;
        checks.push((
            exactly_once,
            format!(
                "every mutation applied exactly once: Governor {} applied / {governor} acknowledged, \
                 Coordinator {} / {coordinator}, Scheduler {} / {scheduler}; \
                 {lost} responses were lost after applying, {duplicates} retries answered from the dedup log",
                mesh.governor.applied(),
                mesh.coordinator.applied(),
                mesh.scheduler.applied(),
            ),
        ));
        let status = mesh.coordinator.status();
        let requested = seen(&expected.actions_requested);
        checks.push((
            status.actions_acknowledged == requested
                && status.actions_pending == 0
                && status.actions_in_flight == 0,
            format!(
                "every action acknowledged: {} of {requested} ({} pending, {} in flight; \
                 {} redelivered after a subscriber vanished or timed out)",
                status.actions_acknowledged,
                status.actions_pending,
                status.actions_in_flight,
                status.redeliveries
            ),
        ));
        let counts = mesh.scheduler.counts();
        let count = |s: TaskState| counts.get(&s).copied().unwrap_or(0);
        let unfinished = count(TaskState::Scheduled) + count(TaskState::Running);
        checks.push((
            unfinished == 0 && count(TaskState::Failed) == 0,
            format!(
                "every task ended: {} succeeded, {} cancelled before running, {} failed, \
                 {} unfinished ({} transitions streamed)",
                count(TaskState::Succeeded),
                count(TaskState::Cancelled),
                count(TaskState::Failed),
                unfinished,
                seen(&stats.task_updates),
            ),
        ));
        if let Some(tls) = &mesh.tls {
            checks.push(rotation_check(tls));
        }
        Self {
            checks,
            calls,
            failed,
        }
    }

    /// Adds a check made outside the scene (the expected refusals).
    pub(super) fn add(&mut self, check: (bool, String)) {
        self.checks.push(check);
    }

    /// Whether every check passed.
    pub(super) fn passed(&self) -> bool {
        self.checks.iter().all(|(ok, _)| *ok)
    }

    /// The summary: the final tables, the checks, and the outcome.
    pub(super) fn summary(&self, elapsed: Duration, scene: Scene<'_>) -> String {
        let mut summary = String::new();
        let _ = writeln!(summary, "\nsummary after {:.1}s\n", elapsed.as_secs_f64());
        tables(scene, &mut summary);
        for (ok, line) in &self.checks {
            let _ = writeln!(summary, "  {} {line}", if *ok { "ok  " } else { "FAIL" });
        }
        let _ = writeln!(
            summary,
            "  (streams: {} policy updates received, {} subscriptions broken and resumed)",
            scene.stats.policy_updates.load(Ordering::Relaxed),
            scene.stats.stream_breaks.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            summary,
            "\n{}",
            if self.passed() {
                "PASS: resilience held: every idempotent call succeeded and nothing was applied twice."
            } else {
                "FAIL: see the checks above."
            }
        );
        summary
    }
}

/// Whether the rotated certificate reached new handshakes, and the reloads.
fn rotation_check(tls: &super::tls::TourTls) -> (bool, String) {
    let reloads = tls.reloads();
    let reloaded = format!(
        "{} reload(s) applied, {} refused (a pair caught between its two renames)",
        reloads.applied, reloads.rejected
    );
    match &tls.rotated {
        Some(super::tls::Rotation {
            before,
            after: Some(after),
            took,
        }) => (
            true,
            format!(
                "mTLS on every connection; the server certificate rotated without a failed call: \
                 new handshakes present serial {}… (was {}…) {}ms after the rename; {reloaded}",
                short(after),
                short(before),
                took.as_millis()
            ),
        ),
        Some(rotation) => (
            false,
            format!(
                "the rotated server certificate never reached a new handshake within {:?} \
                 (still serial {}…); {reloaded}",
                super::tls::ROTATION_BOUND,
                short(&rotation.before)
            ),
        ),
        None => (false, "the server certificate was never rotated".to_owned()),
    }
}

/// The first 8 hex digits of a serial: enough to tell two apart.
fn short(serial: &str) -> &str {
    serial.get(..8).unwrap_or(serial)
}
