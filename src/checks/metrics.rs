//! The service check metrics (`swimd_check_*`), shared with the check tasks.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::register;

/// Service check metrics, shared with the check tasks.
#[derive(Clone)]
pub struct CheckMetrics {
    status: IntGaugeVec,
    duration: HistogramVec,
    runs: IntCounterVec,
}

/// Results of a check run (`swimd_check_runs_total{result}`).
const CHECK_RESULTS: [&str; 3] = ["pass", "fail", "timeout"];

impl CheckMetrics {
    /// Registers the check metrics in `registry`.
    pub fn new(registry: &Registry) -> CheckMetrics {
        CheckMetrics {
            status: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_check_status",
                        "1 if the local check is passing, 0 if critical (after rise/fall)",
                    ),
                    &["check"],
                ),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "swimd_check_duration_seconds",
                        "Time one run of a local check took",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                    &["check"],
                ),
            ),
            runs: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_check_runs_total",
                        "Runs of a local check by result (pass, fail, timeout: killed at its timeout)",
                    ),
                    &["check", "result"],
                ),
            ),
        }
    }

    /// Creates a check's series (passing until it falls).
    pub fn init(&self, check: &str) {
        self.status.with_label_values(&[check]).set(1);
        self.duration.with_label_values(&[check]);
        for result in CHECK_RESULTS {
            self.runs.with_label_values(&[check, result]);
        }
    }

    /// Removes a check that is no longer configured.
    pub fn remove(&self, check: &str) {
        let _ = self.status.remove_label_values(&[check]);
        let _ = self.duration.remove_label_values(&[check]);
        for result in CHECK_RESULTS {
            let _ = self.runs.remove_label_values(&[check, result]);
        }
    }

    /// Records one run.
    pub fn ran(&self, check: &str, took: Duration, passed: bool, timed_out: bool) {
        self.duration
            .with_label_values(&[check])
            .observe(took.as_secs_f64());
        let result = match (passed, timed_out) {
            (true, _) => "pass",
            (false, true) => "timeout",
            (false, false) => "fail",
        };
        self.runs.with_label_values(&[check, result]).inc();
    }

    /// Sets the state after rise/fall.
    pub fn status(&self, check: &str, passing: bool) {
        self.status
            .with_label_values(&[check])
            .set(i64::from(passing));
    }
}
