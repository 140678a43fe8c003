//! The live view: how the tour shows what is happening while it happens.
//!
//! On a terminal, a table redrawn in place four times a second: per method
//! calls, success rate, retries and latency, from the clients' own statistics
//! (`Resilient::stats`); per replica whether it is up, in
//! rotation and under a fault; the clients' breakers; the last few schedule
//! events. Elsewhere (a pipe, a CI log) a line per event and a progress line
//! now and then, since redrawing would only garble a log. The summary reuses
//! the same tables ([`tables`]), so the last frame and the summary agree.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use tai_runtime::{BreakerState, Resilient};
use tokio::time::Instant;

use super::Live;
use super::servers::Mesh;
use super::stats::Stats;
use super::workload::Clients;

/// Schedule events kept on screen.
const EVENTS_SHOWN: usize = 4;
/// How often the table is redrawn.
const TABLE_REFRESH: Duration = Duration::from_millis(250);
/// Width of the progress bar.
const BAR: usize = 30;

/// What the view shows: the mesh, and what the clients saw of it.
#[derive(Clone, Copy)]
pub(super) struct Scene<'a> {
    pub(super) mesh: &'a Mesh,
    pub(super) clients: &'a Clients,
    pub(super) stats: &'a Stats,
}

/// The tour's output while it runs.
pub(super) struct View<'a> {
    out: &'a mut (dyn Write + Send),
    /// A redrawn table, or lines.
    table: bool,
    metrics_url: String,
    origin: Instant,
    /// How long the schedule runs.
    total: Duration,
    /// The last schedule event.
    phase: String,
    events: VecDeque<String>,
    /// Whether a table was drawn (and the screen is to be cleared after).
    drawn: bool,
}

impl<'a> View<'a> {
    /// A view starting now, of a schedule that runs `total`.
    pub(super) fn new(
        out: &'a mut (dyn Write + Send),
        live: Live,
        metrics_url: String,
        total: Duration,
    ) -> Self {
        let table = match live {
            Live::Table => true,
            Live::Lines => false,
            Live::Auto => std::io::stdout().is_terminal(),
        };
        Self {
            out,
            table,
            metrics_url,
            origin: Instant::now(),
            total,
            phase: "all healthy".to_owned(),
            events: VecDeque::new(),
            drawn: false,
        }
    }

    /// How often to [`refresh`](Self::refresh): the table often, progress
    /// lines every `lines` (four scheduled seconds).
    pub(super) fn refresh_every(&self, lines: Duration) -> Duration {
        if self.table { TABLE_REFRESH } else { lines }
    }

    /// Writes `text` as it is.
    pub(super) fn write(&mut self, text: &str) -> io::Result<()> {
        write!(self.out, "{text}")?;
        self.out.flush()
    }

    /// A schedule event, `at` seconds into the tour.
    pub(super) fn event(&mut self, at: f64, what: &str) -> io::Result<()> {
        let line = format!("[{at:>5.1}s] {what}");
        what.clone_into(&mut self.phase);
        if !self.table {
            writeln!(self.out, "{line}")?;
        }
        self.events.push_back(line);
        if self.events.len() > EVENTS_SHOWN {
            self.events.pop_front();
        }
        Ok(())
    }

    /// Redraws the table, or writes a progress line.
    pub(super) fn refresh(&mut self, scene: Scene<'_>) -> io::Result<()> {
        let elapsed = self.origin.elapsed().min(self.total);
        if self.table {
            let frame = self.frame(elapsed, scene);
            // Redraw from the top left, clearing what each line leaves:
            // right however the terminal wraps long lines.
            let home = if self.drawn {
                "\x1b[H"
            } else {
                "\x1b[2J\x1b[H"
            };
            self.drawn = true;
            write!(self.out, "{home}{}\x1b[J", frame.replace('\n', "\x1b[K\n"))?;
            self.out.flush()?;
        } else if elapsed > Duration::ZERO {
            let (calls, failed, retries) = scene.clients.totals();
            writeln!(
                self.out,
                "[{:>5.1}s] {calls} calls, {failed} failed, {retries} retries",
                elapsed.as_secs_f64()
            )?;
        }
        Ok(())
    }

    /// Clears the table, if one was drawn, and writes `intro` again above
    /// what follows.
    pub(super) fn clear(&mut self, intro: &str) -> io::Result<()> {
        if self.drawn {
            write!(self.out, "\x1b[2J\x1b[H{intro}")?;
        }
        Ok(())
    }

    fn frame(&self, elapsed: Duration, scene: Scene<'_>) -> String {
        let done =
            ((elapsed.as_secs_f64() / self.total.as_secs_f64().max(0.001)) * BAR as f64) as usize;
        let mut f = String::new();
        let _ = writeln!(
            f,
            "tai mesh tour  [{}{}]  {:>5.1}s / {:.1}s",
            "#".repeat(done.min(BAR)),
            "-".repeat(BAR - done.min(BAR)),
            elapsed.as_secs_f64(),
            self.total.as_secs_f64()
        );
        let _ = writeln!(f, "now: {}", self.phase);
        let _ = writeln!(f, "metrics: {}\n", self.metrics_url);
        tables(scene, &mut f);
        for e in &self.events {
            let _ = writeln!(f, "  {e}");
        }
        f
    }
}

/// The methods, the replicas and the breakers, each followed by a blank line.
pub(super) fn tables(scene: Scene<'_>, out: &mut String) {
    method_table(scene.clients, out);
    out.push('\n');
    replica_table(scene, out);
    out.push('\n');
    let clients = scene.clients;
    breaker_line("Governor", &clients.governor, out);
    breaker_line("Coordinator", &clients.coordinator, out);
    breaker_line("Scheduler", &clients.scheduler, out);
    out.push('\n');
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

fn fmt_latency(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| fmt_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    )
}

/// Per method, the client's own statistics (`Resilient::stats`), as a user's
/// program would read them.
fn method_table(clients: &Clients, out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<30} {:>7} {:>8} {:>7} {:>8} {:>8}",
        "method", "calls", "ok%", "retries", "p50", "p99"
    );
    for client in clients.stats() {
        // `tai.v1.mesh.Governor` as `Governor`.
        let service = client.service.rsplit('.').next().unwrap_or(client.service);
        for m in client.methods.iter().filter(|m| m.calls > 0) {
            let ok = m
                .success_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0));
            let _ = writeln!(
                out,
                "  {:<30} {:>7} {:>8} {:>7} {:>8} {:>8}",
                format!("{service}/{}", m.method),
                m.calls,
                ok,
                m.retries,
                fmt_latency(m.p50),
                fmt_latency(m.p99),
            );
        }
    }
}

fn replica_table(scene: Scene<'_>, out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<10} {:<16} {:<8} {:<13} {:>7} {:>8} {:>8} {:>8}  fault",
        "replica", "address", "server", "in rotation", "latency", "calls", "failures", "injected"
    );
    let stats = scene.clients.scheduler_channel.endpoint_stats();
    for r in &scene.mesh.replicas {
        let addr = r.addr.to_string();
        let e = stats.iter().find(|e| e.address.ends_with(&addr));
        let rotation = match e {
            None => "unknown".to_owned(),
            Some(e) if e.ejected_for.is_some() => {
                format!(
                    "ejected {:.1}s",
                    e.ejected_for.unwrap_or_default().as_secs_f64()
                )
            }
            Some(e) if e.not_serving => "not serving".to_owned(),
            Some(e) => format!("{:?}", e.state).to_lowercase(),
        };
        let f = r.faults.counts();
        let _ = writeln!(
            out,
            "  {:<10} {:<16} {:<8} {:<13} {:>7} {:>8} {:>8} {:>8}  {}",
            r.name,
            addr,
            if r.is_up() { "up" } else { "stopped" },
            rotation,
            fmt_latency(e.and_then(|e| e.ewma_latency)),
            e.map_or(0, |e| e.calls),
            e.map_or(0, |e| e.failures),
            f.refused + f.delayed + f.dropped,
            r.fault,
        );
    }
}

fn breaker_line<C: Resilient>(service: &str, client: &C, out: &mut String) {
    let policy = client.service_policy();
    let mut closed = 0;
    let mut total = 0;
    let mut others = Vec::new();
    for m in policy.methods {
        match client.breaker_state(m.name) {
            None => {}
            Some(BreakerState::Closed) => {
                closed += 1;
                total += 1;
            }
            Some(state) => {
                total += 1;
                others.push(format!("{}: {}", m.name, state.name()));
            }
        }
    }
    let _ = write!(out, "  {service} breakers: {closed}/{total} closed");
    if !others.is_empty() {
        let _ = write!(out, " ({})", others.join(", "));
    }
    out.push('\n');
}
