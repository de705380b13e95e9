//! One scenario over many seeds: every figure as a distribution, and the seeds where
//! something went wrong, so a rule is never judged on one lucky run.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::scenario::{self, Distribution, Options, Report, round3};

/// Most seeds one sweep runs.
pub const MAX_SEEDS: u64 = 100_000;

/// A range of seeds that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedsError {
    /// Not `A` or `A..B`.
    #[error("--seeds {0:?}: expected a seed (7) or an inclusive range (1..200)")]
    Syntax(String),
    /// `B` below `A`.
    #[error("--seeds {0:?}: the range is empty (the end is below the start)")]
    Empty(String),
    /// Too many seeds.
    #[error("--seeds {0:?}: at most {MAX_SEEDS} seeds per sweep")]
    TooMany(String),
}

/// Parses `A` or `A..B` (both ends included).
pub fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, SeedsError> {
    let syntax = || SeedsError::Syntax(text.to_string());
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| syntax());
    let (start, end) = match text.split_once("..") {
        Some((a, b)) => (number(a)?, number(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let seed = number(text)?;
            (seed, seed)
        }
    };
    if end < start {
        return Err(SeedsError::Empty(text.to_string()));
    }
    if end - start >= MAX_SEEDS {
        return Err(SeedsError::TooMany(text.to_string()));
    }
    Ok(start..=end)
}

/// The figures of one scenario over many seeds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sweep {
    /// Scenario name.
    pub scenario: &'static str,
    /// Cluster size.
    pub members: usize,
    /// Profile name.
    pub profile: &'static str,
    /// Link loss.
    pub loss: f64,
    /// Simulated seconds per run.
    pub duration_s: f64,
    /// First and last seed.
    pub seeds: (u64, u64),
    /// Runs made.
    pub runs: usize,
    /// False failures over all runs.
    pub false_positives_total: usize,
    /// Per run.
    pub false_positives: Distribution,
    /// Flaps over all runs.
    pub flaps_total: usize,
    /// Per run.
    pub flaps: Distribution,
    /// Events some survivor never noticed, over all runs.
    pub undetected_total: usize,
    /// Every event of every run: to the first member that noticed it.
    pub detection_first_s: Distribution,
    /// Every event of every run: to the last surviving member that noticed it.
    pub detection_all_s: Distribution,
    /// Per run.
    pub convergence_s: Distribution,
    /// Runs that never converged (in scenarios that measure it).
    pub not_converged: usize,
    /// Per run: packets per member per second.
    pub msgs_sent_per_s: Distribution,
    /// Per run: bytes per member per second, overhead and handshakes included.
    pub bytes_sent_with_overhead_per_s: Distribution,
    /// Per run: handshakes per member per second.
    pub handshakes_per_s: Distribution,
    /// Per run: modelled CPU-seconds per member per minute.
    pub cpu_s_per_min: Distribution,
    /// Per run: mean open connections per member at the end.
    pub connections: Distribution,
    /// Decode errors over all runs (a bug if not 0).
    pub decode_errors: u64,
    /// Seeds with false failures, flaps, undetected events or decode errors.
    pub failed_seeds: Vec<u64>,
    /// Wall-clock seconds of the whole sweep.
    pub wall_s: f64,
}

/// Runs `base` once per seed in `seeds`, on `threads` threads; `progress` is called after
/// each run with the count done and the run's report.
pub fn run(
    base: &Options,
    seeds: RangeInclusive<u64>,
    threads: usize,
    progress: impl Fn(usize, &Report) + Sync,
) -> Sweep {
    let wall = std::time::Instant::now();
    let next = AtomicU64::new(*seeds.start());
    let end = *seeds.end();
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > end {
                        break;
                    }
                    let mut opts = base.clone();
                    opts.seed = seed;
                    opts.progress = false;
                    let report = scenario::run(opts);
                    let done = {
                        let mut all = reports.lock().unwrap_or_else(|e| e.into_inner());
                        all.push(report.clone());
                        all.len()
                    };
                    progress(done, &report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    summarize(
        base,
        (*seeds.start(), end),
        &reports,
        wall.elapsed().as_secs_f64(),
    )
}

fn summarize(base: &Options, seeds: (u64, u64), reports: &[Report], wall_s: f64) -> Sweep {
    let per_run = |f: &dyn Fn(&Report) -> f64| Distribution::of(reports.iter().map(f).collect());
    let pooled = |f: &dyn Fn(&Report) -> &[f64]| {
        Distribution::of(reports.iter().flat_map(|r| f(r).iter().copied()).collect())
    };
    let measures_convergence = reports.iter().any(|r| r.convergence_s.is_some());
    Sweep {
        scenario: base.scenario.as_str(),
        members: base.members,
        profile: base.profile.as_str(),
        loss: base.loss,
        duration_s: round3(base.duration.as_secs_f64()),
        seeds,
        runs: reports.len(),
        false_positives_total: reports.iter().map(|r| r.false_positives).sum(),
        false_positives: per_run(&|r| r.false_positives as f64),
        flaps_total: reports.iter().map(|r| r.flaps).sum(),
        flaps: per_run(&|r| r.flaps as f64),
        undetected_total: reports.iter().map(|r| r.undetected).sum(),
        detection_first_s: pooled(&|r| &r.detection_first_values),
        detection_all_s: pooled(&|r| &r.detection_all_values),
        convergence_s: Distribution::of(reports.iter().filter_map(|r| r.convergence_s).collect()),
        not_converged: if measures_convergence {
            reports.iter().filter(|r| r.convergence_s.is_none()).count()
        } else {
            0
        },
        msgs_sent_per_s: per_run(&|r| r.per_member.msgs_sent_per_s),
        bytes_sent_with_overhead_per_s: per_run(&|r| r.per_member.bytes_sent_with_overhead_per_s),
        handshakes_per_s: per_run(&|r| r.per_member.handshakes_per_s),
        cpu_s_per_min: per_run(&|r| r.per_member.cpu_s_per_min),
        connections: per_run(&|r| r.per_member.connections),
        decode_errors: reports.iter().map(|r| r.decode_errors).sum(),
        failed_seeds: reports
            .iter()
            .filter(|r| r.false_positives + r.flaps + r.undetected > 0 || r.decode_errors > 0)
            .map(|r| r.seed)
            .collect(),
        wall_s: round3(wall_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_one_or_an_inclusive_range() {
        assert_eq!(parse_seeds("7"), Ok(7..=7));
        assert_eq!(parse_seeds("1..200"), Ok(1..=200));
        assert_eq!(parse_seeds("1..=3"), Ok(1..=3));
        assert_eq!(parse_seeds("5..5"), Ok(5..=5));
    }

    #[test]
    fn bad_seed_ranges_are_refused_with_the_reason() {
        assert!(matches!(parse_seeds("a..b"), Err(SeedsError::Syntax(_))));
        assert!(matches!(parse_seeds(""), Err(SeedsError::Syntax(_))));
        assert!(matches!(parse_seeds("-1"), Err(SeedsError::Syntax(_))));
        assert!(matches!(parse_seeds("9..3"), Err(SeedsError::Empty(_))));
        assert!(matches!(
            parse_seeds("0..100000"),
            Err(SeedsError::TooMany(_))
        ));
        let line = parse_seeds("9..3").unwrap_err().to_string();
        assert!(line.contains("9..3") && line.contains("empty"), "{line}");
    }
}
