//! What is measured: CPU time from /proc, allocations from the counting allocator,
//! latency histograms, and the statistics over pairs.

use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// CPU time (user + system) of every live thread of process `pid`, in nanoseconds.
///
/// Read from `/proc/<pid>/task/*/schedstat` (the scheduler's nanosecond run time)
/// rather than `/proc/<pid>/stat`, whose utime/stime tick at 10 ms: a 2 s segment at
/// half a core would otherwise be measured to ±1%. Falls back to `stat` ticks where
/// schedstat is missing.
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(text) = std::fs::read_to_string(path)
                && let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                found = true;
            }
        }
    }
    if found { total } else { stat_cpu_ns(pid) }
}

/// utime + stime from `/proc/<pid>/stat`, in nanoseconds (10 ms resolution).
fn stat_cpu_ns(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // `rest` starts at field 3, so field n is fields[n - 3].
    (ticks(14 - 3) + ticks(15 - 3)) * 10_000_000
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// Records `d` into `h`, saturating at the top bound.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().min(u128::from(u64::MAX)) as u64);
}

/// The median of `values` (which need not be sorted).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of `values` with a percentile-bootstrap 95% interval (10 000
/// resamples, seeded, so a run's report is reproducible from its figures).
pub fn median_ci(values: &[f64], seed: u64) -> (f64, f64, f64) {
    let m = median(values);
    if values.len() < 2 {
        return (m, m, m);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut medians = Vec::with_capacity(10_000);
    let mut sample = vec![0.0; values.len()];
    for _ in 0..10_000 {
        for s in sample.iter_mut() {
            *s = values[rng.random_range(0..values.len())];
        }
        medians.push(median(&sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((medians.len() - 1) as f64 * q).round() as usize];
    (m, at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_interval() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let (m, lo, hi) = median_ci(&[1.0, 1.1, 0.9, 1.05, 0.95, 1.0], 1);
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert_eq!(median_ci(&[1.0, 1.1, 0.9, 1.05, 0.95, 1.0], 1), (m, lo, hi));
    }

    #[test]
    fn reads_own_cpu_time() {
        let before = cpu_ns(std::process::id());
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_ns(std::process::id()) > before, "{x}");
    }
}
