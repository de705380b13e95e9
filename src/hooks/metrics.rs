//! The hook metrics (`swimd_hook_*`), shared by the agent task (suppressions) and the hook
//! runner; registered in the agent's registry.

use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::policy::SUPPRESS_REASONS;
use crate::metrics::{gauge, register};

/// Delivery outcomes (`swimd_hook_deliveries_total{outcome}`).
pub const HOOK_OUTCOMES: [&str; 5] = ["success", "retry", "failed", "gone", "lost"];

/// Hook metrics, shared by the agent task (suppressions) and the hook runner.
#[derive(Clone)]
pub struct HookMetrics {
    deliveries: IntCounterVec,
    duration: HistogramVec,
    depth: IntGaugeVec,
    dead_letters: IntCounterVec,
    last_success: GaugeVec,
    suppressed: IntCounterVec,
    enabled: IntGaugeVec,
}

impl HookMetrics {
    /// Registers the hook metrics in `registry`.
    pub fn new(registry: &Registry) -> HookMetrics {
        HookMetrics {
            deliveries: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_hook_deliveries_total",
                        "Hook delivery attempts by outcome (success, retry, failed, gone, lost)",
                    ),
                    &["hook", "outcome"],
                ),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "swimd_hook_delivery_duration_seconds",
                        "Time one hook delivery attempt took",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["hook"],
                ),
            ),
            depth: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_hook_outbox_depth",
                        "Deliveries waiting in the durable outbox",
                    ),
                    &["hook"],
                ),
            ),
            dead_letters: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_hook_dead_letters_total",
                        "Deliveries moved to the dead letters (given up)",
                    ),
                    &["hook"],
                ),
            ),
            last_success: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "swimd_hook_last_success_timestamp_seconds",
                        "Unix time of the hook's last successful delivery (0: none yet)",
                    ),
                    &["hook"],
                ),
            ),
            suppressed: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_hook_suppressed_total",
                        format!(
                            "Events not delivered on purpose, by reason ({})",
                            SUPPRESS_REASONS.join(", ")
                        ),
                    ),
                    &["hook", "reason"],
                ),
            ),
            enabled: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_hook_enabled",
                        "0 once a receiver answered 410 Gone (until a reload), else 1",
                    ),
                    &["hook"],
                ),
            ),
        }
    }

    /// Creates every series of a hook at zero.
    pub fn init(&self, hook: &str) {
        for outcome in HOOK_OUTCOMES {
            self.deliveries.with_label_values(&[hook, outcome]);
        }
        for reason in SUPPRESS_REASONS {
            self.suppressed.with_label_values(&[hook, reason]);
        }
        self.duration.with_label_values(&[hook]);
        self.depth.with_label_values(&[hook]);
        self.dead_letters.with_label_values(&[hook]);
        self.last_success.with_label_values(&[hook]);
        self.enabled.with_label_values(&[hook]).set(1);
    }

    /// Removes every series of a hook that is no longer configured.
    pub fn remove(&self, hook: &str) {
        for outcome in HOOK_OUTCOMES {
            let _ = self.deliveries.remove_label_values(&[hook, outcome]);
        }
        for reason in SUPPRESS_REASONS {
            let _ = self.suppressed.remove_label_values(&[hook, reason]);
        }
        let _ = self.duration.remove_label_values(&[hook]);
        let _ = self.depth.remove_label_values(&[hook]);
        let _ = self.dead_letters.remove_label_values(&[hook]);
        let _ = self.last_success.remove_label_values(&[hook]);
        let _ = self.enabled.remove_label_values(&[hook]);
    }

    /// Counts an attempt's outcome.
    pub fn outcome(&self, hook: &str, outcome: &str) {
        self.deliveries.with_label_values(&[hook, outcome]).inc();
    }

    /// Observes an attempt's duration.
    pub fn duration(&self, hook: &str, took: Duration) {
        self.duration
            .with_label_values(&[hook])
            .observe(took.as_secs_f64());
    }

    /// Sets the outbox depth.
    pub fn depth(&self, hook: &str, depth: usize) {
        self.depth.with_label_values(&[hook]).set(gauge(depth));
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, hook: &str) {
        self.dead_letters.with_label_values(&[hook]).inc();
    }

    /// Records a success time.
    pub fn last_success(&self, hook: &str, unix: f64) {
        self.last_success.with_label_values(&[hook]).set(unix);
    }

    /// Counts a suppressed event.
    pub fn suppressed(&self, hook: &str, reason: &str) {
        self.suppressed.with_label_values(&[hook, reason]).inc();
    }

    /// Sets whether the hook is enabled.
    pub fn enabled(&self, hook: &str, enabled: bool) {
        self.enabled
            .with_label_values(&[hook])
            .set(i64::from(enabled));
    }
}
