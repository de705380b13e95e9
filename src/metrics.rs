//! Prometheus metrics (text format 0.0.4): the agent feeds them membership events and, at
//! most once a second, a [`Snapshot`] of the core's and the transport's cumulative counters.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::core::Stats;
use crate::model::State;
use crate::model::{EventKind, Health, MemberView, StateCounts};
use crate::wire::KIND_NAMES;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Direct-probe round-trip buckets, in seconds: LAN round trips up to a probe timeout.
const RTT_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Confirmations a suspicion had when it ended.
const CONFIRMATION_BUCKETS: [f64; 6] = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0];

/// The agent's cumulative counters and current levels, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub stats: Stats,
    /// Members per state, ourselves included.
    pub members: StateCounts,
    /// Alive members whose service checks fail, not in maintenance (ourselves included).
    pub critical_members: usize,
    /// Members in maintenance, per state (ourselves included).
    pub maintenance_members: StateCounts,
    /// Lifeguard local health score.
    pub health_score: u32,
    /// Our incarnation.
    pub incarnation: u64,
    /// Updates waiting to be piggybacked.
    pub broadcast_queue_depth: usize,
    /// Open QUIC connections.
    pub quic_connections: usize,
    /// Handshakes completed as client (we dialled) and as server.
    pub handshakes_client: u64,
    /// See `handshakes_client`.
    pub handshakes_server: u64,
    /// Handshakes that timed out, were refused, or failed otherwise.
    pub handshake_timeouts: u64,
    /// See `handshake_timeouts`.
    pub handshake_refused: u64,
    /// See `handshake_timeouts`.
    pub handshake_other: u64,
    /// Incoming handshakes refused because too many were in flight.
    pub handshakes_shed: u64,
    /// Incoming handshakes answered with a stateless Retry (address validation under load).
    pub handshakes_retried: u64,
    /// HTTP connections closed at accept because the limit was reached: API, metrics.
    pub http_refused: [u64; 2],
    /// HTTP connections closed for sending no request headers in time: API, metrics.
    pub http_header_timeouts: [u64; 2],
    /// SWIM payload bytes sent (datagrams and streams).
    pub bytes_sent: u64,
    /// SWIM payload bytes received (datagrams and streams).
    pub bytes_received: u64,
    /// Packets dropped by the agent, by reason.
    pub decode_errors: u64,
    /// See `decode_errors`.
    pub identity_mismatches: u64,
    /// See `decode_errors`.
    pub cluster_mismatches: u64,
    /// See `decode_errors`.
    pub oversize: u64,
    /// Messages the transport could not send.
    pub send_drops: u64,
    /// Received messages dropped because the agent's queue was full.
    pub receive_drops: u64,
    /// Messages not sent: the peer at the address is not the member they were for.
    pub peer_mismatches: u64,
    /// ICMP errors read from the gossip socket: (reported to the core, ignored).
    pub icmp_errors: (u64, u64),
}

/// Every swimd metric, in its own registry (with the process metrics).
pub struct Metrics {
    registry: Registry,
    members: IntGaugeVec,
    members_health: IntGaugeVec,
    members_maintenance: IntGaugeVec,
    member_up: Option<IntGaugeVec>,
    transitions: IntCounterVec,
    probes: IntCounterVec,
    probe_rtt: Histogram,
    suspicions: IntCounter,
    refutations: IntCounter,
    refutations_deferred: IntCounter,
    link_checks: IntCounterVec,
    verdicts_deferred: IntCounter,
    ports_unreachable: IntCounter,
    closed_port_verdicts: IntCounter,
    flaps: IntCounter,
    health_score: IntGauge,
    incarnation: IntGauge,
    suspicion_confirmations: Histogram,
    gossip_messages: IntCounterVec,
    gossip_bytes: IntCounterVec,
    broadcast_queue_depth: IntGauge,
    push_pulls: IntCounterVec,
    quic_connections: IntGauge,
    handshakes: IntCounterVec,
    handshake_failures: IntCounterVec,
    retries: IntCounter,
    icmp_errors: IntCounterVec,
    http_rejected: IntCounterVec,
    dropped: IntCounterVec,
    config_reload_ok: IntGauge,
    tls_expiry: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric with each listed label value at zero; `member_up` adds one
    /// `swimd_member_up` series per known member.
    pub fn new(member_up: bool) -> Metrics {
        let registry = Registry::new();
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("swimd_build_info", "swimd version (always 1)"),
                &["version"],
            ),
        );
        build_info.with_label_values(&[crate::VERSION]).set(1);
        let metrics = Metrics {
            members: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_members",
                        "Known members by state, ourselves included",
                    ),
                    &["state"],
                ),
            ),
            members_health: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_members_health",
                        "Alive members by service health (passing, critical, maintenance), ourselves included",
                    ),
                    &["health"],
                ),
            ),
            members_maintenance: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_members_maintenance",
                        "Members in planned maintenance by state, ourselves included",
                    ),
                    &["state"],
                ),
            ),
            member_up: member_up.then(|| {
                register(
                    &registry,
                    IntGaugeVec::new(
                        Opts::new("swimd_member_up", "1 if the member is alive, else 0"),
                        &["member"],
                    ),
                )
            }),
            transitions: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_member_state_transitions_total",
                        "Member state changes seen, by new state",
                    ),
                    &["to"],
                ),
            ),
            probes: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_probes_total",
                        "Probes by the phase that ended them and their result",
                    ),
                    &["kind", "result"],
                ),
            ),
            probe_rtt: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "swimd_probe_rtt_seconds",
                        "Round trip of direct probes answered in time",
                    )
                    .buckets(RTT_BUCKETS.to_vec()),
                ),
            ),
            suspicions: register(
                &registry,
                IntCounter::new(
                    "swimd_suspicions_total",
                    "Suspicions this member started or joined",
                ),
            ),
            refutations: register(
                &registry,
                IntCounter::new(
                    "swimd_refutations_total",
                    "Times this member refuted a suspicion or failure of itself",
                ),
            ),
            refutations_deferred: register(
                &registry,
                IntCounter::new(
                    "swimd_refutations_deferred_total",
                    "Refutations held back by the rate limit (4 per second)",
                ),
            ),
            link_checks: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_link_checks_total",
                        "Checks of our own links before refuting an accusation, by result",
                    ),
                    &["result"],
                ),
            ),
            verdicts_deferred: register(
                &registry,
                IntCounter::new(
                    "swimd_verdicts_deferred_total",
                    "Own failure verdicts held back while this member's links were in doubt",
                ),
            ),
            ports_unreachable: register(
                &registry,
                IntCounter::new(
                    "swimd_ports_unreachable_total",
                    "ICMP port unreachable errors that quoted a packet of ours",
                ),
            ),
            closed_port_verdicts: register(
                &registry,
                IntCounter::new(
                    "swimd_closed_port_verdicts_total",
                    "Members failed at once because two of their observers found their port closed",
                ),
            ),
            flaps: register(
                &registry,
                IntCounter::new(
                    "swimd_member_flaps_total",
                    "Failed members seen alive again",
                ),
            ),
            health_score: register(
                &registry,
                IntGauge::new(
                    "swimd_health_score",
                    "Lifeguard local health score (0 = healthy)",
                ),
            ),
            incarnation: register(
                &registry,
                IntGauge::new("swimd_incarnation", "This member's incarnation"),
            ),
            suspicion_confirmations: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "swimd_suspicion_confirmations",
                        "Confirmations a suspicion had when it ended (failed or refuted)",
                    )
                    .buckets(CONFIRMATION_BUCKETS.to_vec()),
                ),
            ),
            gossip_messages: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("swimd_gossip_messages_total", "SWIM messages by type"),
                    &["direction", "type"],
                ),
            ),
            gossip_bytes: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("swimd_gossip_bytes_total", "SWIM payload bytes"),
                    &["direction"],
                ),
            ),
            broadcast_queue_depth: register(
                &registry,
                IntGauge::new(
                    "swimd_broadcast_queue_depth",
                    "Updates waiting to be piggybacked",
                ),
            ),
            push_pulls: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_push_pull_total",
                        "Push-pull exchanges started and answered",
                    ),
                    &["result"],
                ),
            ),
            quic_connections: register(
                &registry,
                IntGauge::new("swimd_quic_connections", "Open QUIC connections"),
            ),
            handshakes: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_quic_handshakes_total",
                        "QUIC handshakes completed, by side (client: this agent dialled)",
                    ),
                    &["side"],
                ),
            ),
            handshake_failures: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_quic_handshake_failures_total",
                        "QUIC handshakes that failed, by reason (shed: refused, too many in flight)",
                    ),
                    &["reason"],
                ),
            ),
            retries: register(
                &registry,
                IntCounter::new(
                    "swimd_quic_retries_total",
                    "Incoming QUIC handshakes sent a stateless Retry to prove their address (under load)",
                ),
            ),
            icmp_errors: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_icmp_errors_total",
                        "ICMP errors for the gossip socket: reported (port unreachable quoting a datagram of ours) or ignored",
                    ),
                    &["result"],
                ),
            ),
            http_rejected: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_http_connections_rejected_total",
                        "HTTP connections closed by the API or metrics listener: at the \
                         connection limit (limit) or for sending no request headers in time \
                         (header_timeout)",
                    ),
                    &["listener", "reason"],
                ),
            ),
            dropped: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "swimd_dropped_messages_total",
                        "SWIM messages dropped, by reason",
                    ),
                    &["reason"],
                ),
            ),
            config_reload_ok: register(
                &registry,
                IntGauge::new(
                    "swimd_config_last_reload_successful",
                    "0 if the last SIGHUP reload was rejected, else 1",
                ),
            ),
            tls_expiry: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "swimd_tls_certificate_expiry_timestamp_seconds",
                        "When the certificate in use stops being valid (Unix seconds): node, or the CA that expires first",
                    ),
                    &["certificate"],
                ),
            ),
            registry,
        };
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics are registered once");
        for state in State::ALL.map(State::as_str) {
            metrics.members.with_label_values(&[state]);
            metrics.members_maintenance.with_label_values(&[state]);
            metrics.transitions.with_label_values(&[state]);
        }
        metrics.transitions.with_label_values(&["reaped"]);
        for health in Health::ALL {
            metrics.members_health.with_label_values(&[health.as_str()]);
        }
        for result in ["reported", "ignored"] {
            metrics.icmp_errors.with_label_values(&[result]);
        }
        for result in ["passed", "failed"] {
            metrics.link_checks.with_label_values(&[result]);
        }
        for kind in ["direct", "indirect"] {
            for result in ["ok", "failed"] {
                metrics.probes.with_label_values(&[kind, result]);
            }
        }
        for direction in ["sent", "received"] {
            for kind in KIND_NAMES {
                metrics
                    .gossip_messages
                    .with_label_values(&[direction, kind]);
            }
            metrics.gossip_bytes.with_label_values(&[direction]);
        }
        for result in ["started", "answered"] {
            metrics.push_pulls.with_label_values(&[result]);
        }
        for reason in ["timeout", "refused", "shed", "other"] {
            metrics.handshake_failures.with_label_values(&[reason]);
        }
        for listener in ["api", "metrics"] {
            for reason in ["limit", "header_timeout"] {
                metrics.http_rejected.with_label_values(&[listener, reason]);
            }
        }
        for side in ["client", "server"] {
            metrics.handshakes.with_label_values(&[side]);
        }
        for reason in DROP_REASONS {
            metrics.dropped.with_label_values(&[reason]);
        }
        metrics.config_reload_ok.set(1);
        for certificate in ["node", "ca"] {
            metrics.tls_expiry.with_label_values(&[certificate]);
        }
        metrics
    }

    /// Brings counters and gauges up to `snapshot` (counters advance by the increase since
    /// the last update) and observes the new samples.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        rtt_samples: impl Iterator<Item = Duration>,
        confirmation_samples: impl Iterator<Item = u32>,
    ) {
        for state in State::ALL {
            let label = [state.as_str()];
            let count = snapshot.members.of(state);
            self.members.with_label_values(&label).set(gauge(count));
            let count = snapshot.maintenance_members.of(state);
            self.members_maintenance
                .with_label_values(&label)
                .set(gauge(count));
        }
        let (counts, maint) = (snapshot.members, snapshot.maintenance_members);
        let in_maintenance = maint.alive.min(counts.alive);
        let critical = snapshot.critical_members.min(counts.alive - in_maintenance);
        for (health, count) in Health::ALL.into_iter().zip([
            counts.alive - in_maintenance - critical,
            critical,
            in_maintenance,
        ]) {
            self.members_health
                .with_label_values(&[health.as_str()])
                .set(gauge(count));
        }
        let stats = &snapshot.stats;
        // A probe fails only after its indirect phase.
        for (counter, labels, total) in [
            (&self.probes, ["direct", "ok"], stats.probes_direct_ok),
            (&self.probes, ["indirect", "ok"], stats.probes_indirect_ok),
            (&self.probes, ["indirect", "failed"], stats.probes_failed),
        ] {
            advance_to(&counter.with_label_values(&labels), total);
        }
        for (counter, label, total) in [
            (&self.link_checks, "passed", stats.link_checks_passed),
            (&self.link_checks, "failed", stats.link_checks_failed),
            (&self.push_pulls, "started", stats.push_pulls_started),
            (&self.push_pulls, "answered", stats.push_pulls_answered),
        ] {
            advance_to(&counter.with_label_values(&[label]), total);
        }
        for (counter, total) in [
            (&self.suspicions, stats.suspicions),
            (&self.refutations, stats.refutations),
            (&self.refutations_deferred, stats.refutations_deferred),
            (&self.verdicts_deferred, stats.verdicts_deferred),
            (&self.ports_unreachable, stats.ports_unreachable),
            (&self.closed_port_verdicts, stats.closed_port_verdicts),
        ] {
            advance_to(counter, total);
        }
        self.health_score.set(i64::from(snapshot.health_score));
        self.incarnation
            .set(i64::try_from(snapshot.incarnation).unwrap_or(i64::MAX));
        self.broadcast_queue_depth
            .set(gauge(snapshot.broadcast_queue_depth));
        self.quic_connections.set(gauge(snapshot.quic_connections));
        for (side, total) in [
            ("client", snapshot.handshakes_client),
            ("server", snapshot.handshakes_server),
        ] {
            advance_to(&self.handshakes.with_label_values(&[side]), total);
        }
        let handshakes = &self.handshake_failures;
        for (reason, total) in [
            ("timeout", snapshot.handshake_timeouts),
            ("refused", snapshot.handshake_refused),
            ("shed", snapshot.handshakes_shed),
            ("other", snapshot.handshake_other),
        ] {
            advance_to(&handshakes.with_label_values(&[reason]), total);
        }
        advance_to(&self.retries, snapshot.handshakes_retried);
        let (reported, ignored) = snapshot.icmp_errors;
        advance_to(&self.icmp_errors.with_label_values(&["reported"]), reported);
        advance_to(&self.icmp_errors.with_label_values(&["ignored"]), ignored);
        for (i, listener) in ["api", "metrics"].into_iter().enumerate() {
            for (reason, totals) in [
                ("limit", snapshot.http_refused),
                ("header_timeout", snapshot.http_header_timeouts),
            ] {
                let total = totals.get(i).copied().unwrap_or(0);
                advance_to(
                    &self.http_rejected.with_label_values(&[listener, reason]),
                    total,
                );
            }
        }
        for (direction, total) in [
            ("sent", snapshot.bytes_sent),
            ("received", snapshot.bytes_received),
        ] {
            advance_to(&self.gossip_bytes.with_label_values(&[direction]), total);
        }
        for (reason, total) in DROP_REASONS.into_iter().zip([
            snapshot.decode_errors,
            snapshot.identity_mismatches,
            snapshot.cluster_mismatches,
            snapshot.oversize,
            snapshot.send_drops,
            snapshot.receive_drops,
            snapshot.peer_mismatches,
            snapshot.stats.acks_misattributed,
            snapshot.stats.ping_reqs_refused,
            snapshot.stats.incarnations_bounded,
            snapshot.stats.members_refused,
            snapshot.stats.statements_unsigned,
            snapshot.stats.statements_unproven,
            snapshot.stats.credentials_refused,
            snapshot.stats.notes_unproven,
        ]) {
            advance_to(&self.dropped.with_label_values(&[reason]), total);
        }
        for rtt in rtt_samples {
            self.probe_rtt.observe(rtt.as_secs_f64());
        }
        for confirmations in confirmation_samples {
            self.suspicion_confirmations
                .observe(f64::from(confirmations));
        }
    }

    /// Counts a membership event; `previous` is the member's state before it.
    pub fn on_event(&mut self, kind: EventKind, member: &MemberView, previous: Option<State>) {
        let name = member.info.name.as_str();
        if kind == EventKind::Reaped {
            self.transitions.with_label_values(&["reaped"]).inc();
            if let Some(up) = &self.member_up {
                let _ = up.remove_label_values(&[name]);
            }
            return;
        }
        if previous != Some(member.state) {
            self.transitions
                .with_label_values(&[member.state.as_str()])
                .inc();
        }
        if kind == EventKind::Recovered {
            self.flaps.inc();
        }
        self.set_member(member);
    }

    /// Sets `swimd_member_up` for a member known without an event (ourselves, restored).
    pub fn set_member(&mut self, member: &MemberView) {
        if let Some(up) = &self.member_up {
            up.with_label_values(&[member.info.name.as_str()])
                .set(i64::from(member.state == State::Alive));
        }
    }

    /// Counts one SWIM message of `kind` (an index into [`KIND_NAMES`]) sent.
    pub fn message_sent(&mut self, kind: u8) {
        self.count_message("sent", kind);
    }

    /// Counts one SWIM message of `kind` (an index into [`KIND_NAMES`]) received.
    pub fn message_received(&mut self, kind: u8) {
        self.count_message("received", kind);
    }

    fn count_message(&self, direction: &str, kind: u8) {
        if let Some(name) = KIND_NAMES.get(usize::from(kind)) {
            self.gossip_messages
                .with_label_values(&[direction, name])
                .inc();
        }
    }

    /// Records when our certificate and the CA expire (at start and after each reload).
    pub fn tls_expiry(&mut self, expiry: crate::net::tls::Expiry) {
        self.tls_expiry
            .with_label_values(&["node"])
            .set(expiry.cert);
        self.tls_expiry.with_label_values(&["ca"]).set(expiry.ca);
    }

    /// Records whether the last configuration reload was accepted.
    pub fn reload_done(&mut self, successful: bool) {
        self.config_reload_ok.set(i64::from(successful));
    }

    /// The registry, for metrics other parts register (hooks).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// Every metric of `registry` in the Prometheus text format 0.0.4.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# cannot encode the metrics: {e}\n"))
}

/// `swimd_dropped_messages_total` reasons, in [`Metrics::update`]'s order.
const DROP_REASONS: [&str; 15] = [
    "decode_error",
    "identity_mismatch",
    "cluster_mismatch",
    "oversize",
    "send_queue",
    "receive_queue",
    "peer_mismatch",
    "ack_not_from_probed",
    "ping_req_unknown_target",
    "incarnation_out_of_bounds",
    "member_table_full",
    "unsigned_statement",
    "unproven_statement",
    "credential_refused",
    "unproven_note",
];

/// Registers a metric whose definition is fixed in the code: an error is a programming
/// mistake (a bad name or a duplicate), caught by the tests.
pub(crate) fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric is registered once");
    metric
}

/// Advances a counter to a cumulative total (never backwards).
fn advance_to(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// A count as a gauge value (saturating: a gauge is signed).
pub(crate) fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::core::MemberInfo;
    use crate::wire::{Incarnation, NodeName};

    /// Every metric docs/metrics.md documents (histograms by their base name).
    pub(crate) const NAMES: [&str; 35] = [
        "swimd_build_info",
        "swimd_members",
        "swimd_members_health",
        "swimd_members_maintenance",
        "swimd_member_up",
        "swimd_member_state_transitions_total",
        "swimd_probes_total",
        "swimd_probe_rtt_seconds",
        "swimd_suspicions_total",
        "swimd_refutations_total",
        "swimd_refutations_deferred_total",
        "swimd_link_checks_total",
        "swimd_verdicts_deferred_total",
        "swimd_ports_unreachable_total",
        "swimd_closed_port_verdicts_total",
        "swimd_icmp_errors_total",
        "swimd_member_flaps_total",
        "swimd_health_score",
        "swimd_incarnation",
        "swimd_suspicion_confirmations",
        "swimd_gossip_messages_total",
        "swimd_gossip_bytes_total",
        "swimd_broadcast_queue_depth",
        "swimd_push_pull_total",
        "swimd_quic_connections",
        "swimd_quic_handshakes_total",
        "swimd_quic_handshake_failures_total",
        "swimd_quic_retries_total",
        "swimd_http_connections_rejected_total",
        "swimd_dropped_messages_total",
        "swimd_config_last_reload_successful",
        "swimd_tls_certificate_expiry_timestamp_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ];

    fn member(name: &str, state: State) -> MemberView {
        MemberView {
            info: Arc::new(MemberInfo::new(
                NodeName::new(name),
                "127.0.0.1:7946".parse().unwrap(),
                Default::default(),
            )),
            incarnation: Incarnation(1),
            state,
            since: Instant::now(),
        }
    }

    /// The value of the series `series` (name and labels exactly as rendered).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_metric_is_rendered_with_help_and_type() {
        let mut metrics = Metrics::new(true);
        metrics.set_member(&member("node-1", State::Alive));
        let text = metrics.render();
        for name in NAMES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert_eq!(
            value(&text, "swimd_config_last_reload_successful"),
            Some(1.0)
        );
        assert!(text.contains("swimd_build_info{version=\""));
    }

    #[test]
    fn every_listed_label_value_starts_at_zero() {
        let text = Metrics::new(false).render();
        for series in [
            "swimd_members{state=\"alive\"}",
            "swimd_members{state=\"left\"}",
            "swimd_member_state_transitions_total{to=\"reaped\"}",
            "swimd_probes_total{kind=\"direct\",result=\"failed\"}",
            "swimd_probes_total{kind=\"indirect\",result=\"ok\"}",
            "swimd_gossip_messages_total{direction=\"received\",type=\"push_pull\"}",
            "swimd_gossip_messages_total{direction=\"sent\",type=\"ping_req\"}",
            "swimd_gossip_bytes_total{direction=\"sent\"}",
            "swimd_push_pull_total{result=\"answered\"}",
            "swimd_quic_handshake_failures_total{reason=\"refused\"}",
            "swimd_quic_handshake_failures_total{reason=\"shed\"}",
            "swimd_quic_retries_total",
            "swimd_http_connections_rejected_total{listener=\"api\",reason=\"limit\"}",
            "swimd_dropped_messages_total{reason=\"receive_queue\"}",
            "swimd_dropped_messages_total{reason=\"identity_mismatch\"}",
            "swimd_probe_rtt_seconds_count",
            "swimd_suspicion_confirmations_count",
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series}:\n{text}");
        }
        assert!(!text.contains("swimd_member_up"), "turned off:\n{text}");
    }

    #[test]
    fn counters_advance_with_the_cumulative_totals() {
        let mut metrics = Metrics::new(true);
        let mut snapshot = Snapshot {
            stats: Stats {
                probes_direct_ok: 5,
                probes_failed: 2,
                push_pulls_started: 3,
                ..Stats::default()
            },
            members: StateCounts {
                alive: 2,
                failed: 1,
                ..StateCounts::default()
            },
            send_drops: 4,
            bytes_received: 100,
            http_refused: [0, 6],
            http_header_timeouts: [2, 0],
            ..Snapshot::default()
        };
        metrics.update(
            &snapshot,
            [Duration::from_micros(300)].into_iter(),
            [2].into_iter(),
        );
        snapshot.stats.probes_direct_ok = 7;
        snapshot.members.failed = 0;
        metrics.update(&snapshot, std::iter::empty(), std::iter::empty());
        metrics.message_sent(0);
        metrics.message_received(5);
        let text = metrics.render();
        for (series, expected) in [
            ("swimd_probes_total{kind=\"direct\",result=\"ok\"}", 7.0),
            (
                "swimd_probes_total{kind=\"indirect\",result=\"failed\"}",
                2.0,
            ),
            ("swimd_probes_total{kind=\"direct\",result=\"failed\"}", 0.0),
            ("swimd_push_pull_total{result=\"started\"}", 3.0),
            (
                "swimd_http_connections_rejected_total{listener=\"metrics\",reason=\"limit\"}",
                6.0,
            ),
            (
                "swimd_http_connections_rejected_total{listener=\"api\",reason=\"header_timeout\"}",
                2.0,
            ),
            ("swimd_members{state=\"alive\"}", 2.0),
            ("swimd_members{state=\"failed\"}", 0.0),
            ("swimd_dropped_messages_total{reason=\"send_queue\"}", 4.0),
            ("swimd_gossip_bytes_total{direction=\"received\"}", 100.0),
            (
                "swimd_gossip_messages_total{direction=\"sent\",type=\"ping\"}",
                1.0,
            ),
            (
                "swimd_gossip_messages_total{direction=\"received\",type=\"push_pull\"}",
                1.0,
            ),
            ("swimd_probe_rtt_seconds_count", 1.0),
            ("swimd_probe_rtt_seconds_bucket{le=\"0.0005\"}", 1.0),
            ("swimd_probe_rtt_seconds_bucket{le=\"0.00025\"}", 0.0),
            ("swimd_suspicion_confirmations_bucket{le=\"2\"}", 1.0),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
        }
    }

    #[test]
    fn events_count_transitions_flaps_and_remove_reaped_members() {
        let mut metrics = Metrics::new(true);
        metrics.on_event(EventKind::Joined, &member("node-2", State::Alive), None);
        metrics.on_event(
            EventKind::Failed,
            &member("node-2", State::Failed),
            Some(State::Suspect),
        );
        let text = metrics.render();
        assert_eq!(
            value(&text, "swimd_member_up{member=\"node-2\"}"),
            Some(0.0)
        );
        metrics.on_event(
            EventKind::Recovered,
            &member("node-2", State::Alive),
            Some(State::Failed),
        );
        // A tag change is no transition.
        metrics.on_event(
            EventKind::Updated,
            &member("node-2", State::Alive),
            Some(State::Alive),
        );
        let text = metrics.render();
        assert_eq!(
            value(&text, "swimd_member_up{member=\"node-2\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "swimd_member_flaps_total"), Some(1.0));
        assert_eq!(
            value(&text, "swimd_member_state_transitions_total{to=\"alive\"}"),
            Some(2.0)
        );
        metrics.on_event(
            EventKind::Reaped,
            &member("node-2", State::Failed),
            Some(State::Failed),
        );
        let text = metrics.render();
        assert!(!text.contains("member=\"node-2\""), "{text}");
        assert_eq!(
            value(&text, "swimd_member_state_transitions_total{to=\"reaped\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn a_rejected_reload_shows_as_zero() {
        let mut metrics = Metrics::new(false);
        metrics.reload_done(false);
        assert_eq!(
            value(&metrics.render(), "swimd_config_last_reload_successful"),
            Some(0.0)
        );
    }
}
