//! The agent: the tokio driver around the protocol core. One task owns the [`Swim`] core
//! and its single timer; the transport, the API and signals talk to it by message.

pub mod handle;
mod signals;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::checks::{CheckChange, CheckMetrics, Checks};
use crate::config::{self, AgentConfig, Seed};
use crate::core::{Channel, Health, Identity, Swim};
use crate::hooks::payload::{HookEvent, PayloadMember};
use crate::hooks::policy::{Action, Brief, Policy, View};
use crate::hooks::spec::{Hook, HookSpec};
use crate::hooks::{self, HookMetrics, HookTestError, Hooks};
use crate::metrics::{Metrics, Snapshot};
use crate::model::{
    AsOf, Event, Fitness, MemberInfo, MemberView, SelfView, SpecError, StateCounts, TransportTotals,
};
use crate::net::http::ServeStats;
use crate::net::tls::{self, TlsIdentity};
use crate::net::transport::{Inbound, Transport, TransportConfig};
use crate::wire::{self, ClusterId, DecodeError, State};
use handle::{AgentHandle, Command, EventBus, JoinError};
use signals::{Signal, Signals, Watchdog, notify};
use state::{StateDir, StateWriter};

/// How long a graceful leave may take before the agent exits anyway.
const LEAVE_BOUND: Duration = Duration::from_secs(3);
/// Last-known members are saved at most this often after a change (and always on exit).
const SAVE_AFTER_CHANGE: Duration = Duration::from_millis(500);
/// Metrics are brought up to date at most this often (and on every scrape).
const METRICS_REFRESH: Duration = Duration::from_secs(1);
/// How often open connections' peer certificates are checked again (they expire).
const REVALIDATE_EVERY: Duration = Duration::from_secs(60);
/// The loop's longest sleep when nothing at all is due (the core always has a timer).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// TLS material.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The gossip socket.
    #[error(transparent)]
    Transport(#[from] crate::net::transport::TransportError),
    /// A helper thread (HTTP, state writer, heap trimming) could not start.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The system's random number generator (the protocol's seed comes from it).
    #[error("cannot read random bytes for the protocol's seed: {0}")]
    Randomness(std::io::Error),
    /// The signal handlers (SIGTERM, SIGINT, SIGHUP).
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// The hook outbox.
    #[error(transparent)]
    Outbox(#[from] hooks::outbox::OutboxError),
    /// A second SIGTERM/SIGINT arrived during the graceful leave.
    #[error("interrupted during the graceful leave")]
    Interrupted,
}

/// Packets dropped before the core saw them, by reason (the metric's label).
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Not well-formed, or an unknown version.
    pub decode_error: AtomicU64,
    /// Sent by a member of another cluster.
    pub cluster_mismatch: AtomicU64,
    /// The sender's name differs from its certificate's.
    pub identity_mismatch: AtomicU64,
    /// Larger than allowed.
    pub oversize: AtomicU64,
}

impl DropCounters {
    fn count(&self, error: &DecodeError) {
        let counter = match error {
            DecodeError::ClusterMismatch(_) => &self.cluster_mismatch,
            DecodeError::Oversize { .. } => &self.oversize,
            _ => &self.decode_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Changes the log filter at run time (SIGHUP); returns false if the level is invalid.
pub type LogReloader = Box<dyn Fn(&str) -> bool + Send>;

/// What serves the agent to the outside (its API, metrics and HAProxy listeners, see
/// the `serve` module): bound before the agent starts, served once its handle exists.
pub trait Serve {
    /// Connections each HTTP listener (API, metrics) turned away, for the metrics.
    fn stats(&self) -> [Arc<ServeStats>; 2];
    /// Starts serving `handle`; dropping what it returns stops the HTTP listeners.
    fn serve(self: Box<Self>, handle: AgentHandle) -> std::io::Result<Box<dyn Send>>;
}

/// Runs the agent, served by `listeners`, until it has left (signal or API) and returns.
pub async fn run(
    config: AgentConfig,
    reload_log: LogReloader,
    listeners: Box<dyn Serve>,
) -> Result<(), AgentError> {
    let mut agent = Agent::start(config, reload_log, listeners).await?;
    agent.run().await
}

struct Agent {
    config: AgentConfig,
    swim: Swim,
    transport: Transport,
    identity: TlsIdentity,
    inbound: mpsc::Receiver<Inbound>,
    /// Peers whose port answered "unreachable" to a datagram of ours (crash fast path).
    unreachable: mpsc::Receiver<SocketAddr>,
    commands: mpsc::Receiver<Command>,
    resolved_seeds: mpsc::Receiver<Vec<SocketAddr>>,
    /// `swimd join` addresses once resolved, with the request's reply.
    joins: mpsc::Receiver<ResolvedJoin>,
    joins_tx: mpsc::Sender<ResolvedJoin>,
    events: EventBus,
    next_event_id: u64,
    state: StateWriter,
    saved_incarnation: wire::Incarnation,
    last_save: Instant,
    members_changed: bool,
    drops: Arc<DropCounters>,
    reload_log: LogReloader,
    leave_started: Option<Instant>,
    leave_replies: Vec<oneshot::Sender<()>>,
    cluster: ClusterId,
    metrics: Metrics,
    last_metrics_update: Instant,
    last_revalidation: Instant,
    hooks: Hooks,
    policy: Policy,
    hook_metrics: HookMetrics,
    confirmations: mpsc::UnboundedReceiver<String>,
    checks: Checks,
    check_metrics: CheckMetrics,
    check_changes: mpsc::UnboundedReceiver<CheckChange>,
    check_sender: mpsc::UnboundedSender<CheckChange>,
    failing: std::collections::BTreeSet<String>,
    /// The listeners serving our handle; dropped, they stop.
    _serving: Box<dyn Send>,
    /// Connections the API and metrics listeners turned away.
    http: [Arc<ServeStats>; 2],
}

impl Agent {
    async fn start(
        config: AgentConfig,
        reload_log: LogReloader,
        listeners: Box<dyn Serve>,
    ) -> Result<Agent, AgentError> {
        let state = StateDir::open(&config.state.dir)?;
        let identity = tls::load_with_crl(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            config.tls.crl.as_deref(),
            &config.node.name,
        )?;
        // A restart starts above anything the cluster may remember of us.
        let incarnation = state
            .incarnation()?
            .map_or(wire::Incarnation(0), wire::Incarnation::next);
        state.save_incarnation(incarnation)?;
        let reset_key = state.reset_key()?;
        let advertise = config.gossip.advertise_addr();
        let transport_config = TransportConfig {
            handshake_timeout: config.gossip.protocol.probe_timeout,
            ..TransportConfig::default()
        };
        let (transport, inbound) = Transport::start(
            config.gossip.bind,
            advertise,
            &identity,
            &reset_key,
            transport_config,
        )?;
        let unreachable = transport
            .take_unreachable()
            .unwrap_or_else(|| mpsc::channel(1).1);
        let cluster = ClusterId::of(&config.node.cluster);
        let seed = u64::from_le_bytes(state::random_bytes::<8>().map_err(AgentError::Randomness)?);
        let now = Instant::now();
        let me = Identity {
            name: config.node.name.clone(),
            addr: advertise,
            cluster,
            tags: config.node.tags.clone(),
            incarnation,
        };
        let mut swim = Swim::new(me, config.gossip.protocol.clone(), seed, now);
        swim.set_keyring(Box::new(tls::ClusterKeyring::new(&identity)?));
        if let Some(reason) = state.maintenance()? {
            // Maintenance outlives restarts: a member the operator took out stays out until
            // `swimd maint off`, however often it is restarted meanwhile.
            info!(reason = %reason, "in maintenance (from the state directory)");
            swim.restore_maintenance(reason);
        }
        // Probe slots on the wall clock: every agent's line up (NTP's skew only blurs them).
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        swim.set_wall_clock(now, wall);
        let known = state.members()?;
        if !known.is_empty() {
            info!(
                members = known.len(),
                "restored last-known members from the state directory"
            );
        }
        swim.restore(now, known);

        let (command_tx, commands) = mpsc::channel(256);
        let events = EventBus::default();
        let handle = AgentHandle {
            commands: command_tx,
            events: events.clone(),
        };
        let mut metrics = Metrics::new(config.metrics.member_up);
        metrics.tls_expiry(identity.expiry());
        for member in swim.members() {
            metrics.set_member(&member);
        }

        let hook_metrics = HookMetrics::new(metrics.registry());
        let checked = runnable_hooks(&config.hooks);
        let policy = Policy::new(Arc::clone(&checked));
        let (hooks, confirmations) = Hooks::start(
            checked,
            &config.state.dir,
            config.node.name.to_string(),
            hook_metrics.clone(),
        )?;
        let check_metrics = CheckMetrics::new(metrics.registry());
        let (check_sender, check_changes) = mpsc::unbounded_channel();
        let checks = Checks::start(
            &config.checks,
            &Default::default(),
            check_sender.clone(),
            check_metrics.clone(),
        );
        let http = listeners.stats();
        let serving = listeners
            .serve(handle)
            .map_err(|source| AgentError::Thread {
                name: "swimd-http",
                source,
            })?;

        let (seed_tx, resolved_seeds) = mpsc::channel(4);
        let (joins_tx, joins) = mpsc::channel(16);
        tokio::spawn(resolve_seeds(config.gossip.seeds.clone(), seed_tx));
        return_freed_memory().map_err(|source| AgentError::Thread {
            name: "swimd-trim",
            source,
        })?;
        info!(
            name = %config.node.name,
            cluster = %config.node.cluster,
            gossip = %advertise,
            api = %config.api.listen,
            metrics = %config.metrics.listen.map_or("off".to_string(), |a| a.to_string()),
            incarnation = incarnation.0,
            "agent started"
        );
        Ok(Agent {
            saved_incarnation: incarnation,
            config,
            swim,
            transport,
            identity,
            inbound,
            unreachable,
            commands,
            resolved_seeds,
            joins,
            joins_tx,
            events,
            next_event_id: 0,
            state: StateWriter::start(state).map_err(|source| AgentError::Thread {
                name: "swimd-state",
                source,
            })?,
            last_save: now,
            members_changed: true,
            drops: Arc::new(DropCounters::default()),
            reload_log,
            leave_started: None,
            leave_replies: Vec::new(),
            cluster,
            metrics,
            last_metrics_update: now,
            last_revalidation: now,
            hooks,
            policy,
            hook_metrics,
            confirmations,
            checks,
            check_metrics,
            check_changes,
            check_sender,
            failing: Default::default(),
            _serving: serving,
            http,
        })
    }

    async fn run(&mut self) -> Result<(), AgentError> {
        let mut signals = Signals::install().map_err(AgentError::Signals)?;
        // Under systemd (Type=notify): ready once listeners are bound, which they are now.
        notify(&[NotifyState::Ready, NotifyState::Status("running")]);
        let mut watchdog = Watchdog::from_systemd();
        loop {
            watchdog.feed();
            let deadline = self.next_deadline(watchdog.due());
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.swim.handle_timeout(Instant::now());
                }
                Some(inbound) = self.inbound.recv() => self.receive(inbound),
                Some(addr) = self.unreachable.recv() => self.port_unreachable(addr),
                Some(command) = self.commands.recv() => self.command(command),
                Some(key) = self.confirmations.recv() => self.hook_confirmed(key),
                Some(change) = self.check_changes.recv() => self.check_changed(change),
                Some((resolved, reply)) = self.joins.recv() => {
                    let n = resolved.len();
                    self.swim.join(Instant::now(), resolved);
                    let _ = reply.send(Ok(n));
                }
                Some(seeds) = self.resolved_seeds.recv() => self.join_seeds(seeds),
                signal = signals.next() => match signal {
                    Signal::Terminate | Signal::Interrupt => {
                        if self.begin_leave(signal.name()) {
                            return Err(AgentError::Interrupted);
                        }
                    }
                    Signal::Hangup => self.reload(),
                },
            }
            self.flush();
            self.housekeeping();
            if let Some(started) = self.leave_started
                && (self.swim.leave_done() || started.elapsed() >= LEAVE_BOUND)
            {
                break;
            }
        }
        info!(
            took_ms = self.leave_started.map(|s| s.elapsed().as_millis() as u64),
            "left the cluster"
        );
        self.save(true);
        self.state.close().await;
        for reply in self.leave_replies.drain(..) {
            let _ = reply.send(());
        }
        self.transport.shutdown().await;
        Ok(())
    }

    /// The earliest of what the loop must wake up for without any input: the core's timer,
    /// the watchdog, the leave's bound, the hook policy's timer and a pending save.
    fn next_deadline(&self, watchdog: Option<Instant>) -> Instant {
        let save = self
            .members_changed
            .then(|| self.last_save + SAVE_AFTER_CHANGE);
        let leave = self.leave_started.map(|started| started + LEAVE_BOUND);
        [
            self.swim.poll_timeout(),
            watchdog,
            leave,
            self.policy.poll_timeout(),
            save,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + IDLE_WAKE)
    }

    /// Nothing listens on `addr` now: a connection to it is dead, and kept it would stand
    /// in for a restarted process's new one; the core weighs the evidence.
    fn port_unreachable(&mut self, addr: SocketAddr) {
        self.transport.disconnect(addr);
        self.swim.handle_unreachable(Instant::now(), addr);
    }

    /// A cluster hook's delivery was confirmed: gossip the note so standbys stand down.
    fn hook_confirmed(&mut self, key: String) {
        // Known already: a standby's own note, or one a peer spread first.
        if let Err(e) = self.swim.publish_note(Instant::now(), key) {
            debug!(error = %e, "cluster-hook confirmation not published");
        }
    }

    fn join_seeds(&mut self, seeds: Vec<SocketAddr>) {
        if !seeds.is_empty() {
            info!(seeds = ?seeds, "joining through seeds");
            self.swim.join(Instant::now(), seeds);
        }
    }

    /// What is due now and then, not on an event: metrics, certificate revalidation.
    fn housekeeping(&mut self) {
        if self.last_metrics_update.elapsed() >= METRICS_REFRESH {
            self.update_metrics();
        }
        if self.last_revalidation.elapsed() >= REVALIDATE_EVERY {
            self.revalidate_peers();
        }
    }

    /// Starts the graceful leave; true if one was already under way (exit at once).
    fn begin_leave(&mut self, why: &str) -> bool {
        if self.leave_started.is_some() {
            warn!(
                signal = why,
                "second signal: exiting without finishing the leave"
            );
            return true;
        }
        info!(signal = why, "leaving the cluster");
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("leaving the cluster"),
        ]);
        self.leave_started = Some(Instant::now());
        self.swim.leave(Instant::now());
        false
    }

    fn receive(&mut self, inbound: Inbound) {
        let limit = match inbound.channel {
            Channel::Datagram => wire::MAX_DATAGRAM_LEN,
            Channel::Stream => wire::MAX_STREAM_LEN,
        };
        match wire::decode_received(self.cluster, &inbound.payload, limit) {
            Ok(packet) if packet.from != inbound.peer => {
                self.drops.identity_mismatch.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %inbound.peer, claimed = %packet.from, "dropped a packet whose sender differs from its certificate");
            }
            Ok(packet) => {
                self.metrics.message_received(packet.message.kind());
                let now = Instant::now();
                self.swim
                    .learn_credential(now, &inbound.peer, &inbound.credential);
                self.swim.handle_packet(now, inbound.from, packet);
            }
            Err(e) => {
                self.drops.count(&e);
                debug!(peer = %inbound.peer, from = %inbound.from, error = %e, "dropped a packet");
            }
        }
    }

    /// After every wake-up, the core's output leaves in this order: packets, then events
    /// (logs, metrics, the event bus, hooks), then notes; then changed members are saved.
    fn flush(&mut self) {
        self.drive_transmits();
        let hook_events = self.forward_events();
        self.forward_notes();
        self.run_hooks(hook_events);
        self.save(false);
    }

    fn drive_transmits(&mut self) {
        while let Some(t) = self.swim.poll_transmit() {
            self.metrics.message_sent(t.kind);
            self.transport
                .send(t.to, t.to_name.as_ref(), t.channel, t.payload);
        }
    }

    /// Logs, counts and publishes each membership event; returns what the hooks must see.
    fn forward_events(&mut self) -> Vec<HookEvent> {
        let mut hook_events = Vec::new();
        while let Some(event) = self.swim.poll_event() {
            self.members_changed = true;
            let m = &event.member;
            self.metrics.on_event(event.kind, m, event.previous);
            log_event(&event);
            self.next_event_id += 1;
            let published = Event {
                id: self.next_event_id,
                kind: event.kind,
                timestamp: handle::unix_now(),
                at: Instant::now(),
                member: event.member.clone(),
                previous: event.previous,
                observed_by: self.config.node.name.clone(),
            };
            if !self.config.hooks.is_empty() {
                hook_events.push(HookEvent::new(
                    event.kind.as_str(),
                    published.timestamp,
                    &self.config.node.cluster,
                    PayloadMember::from(m),
                    event.previous,
                    self.config.node.name.as_str(),
                ));
            }
            self.events.publish(published);
        }
        hook_events
    }

    /// Notes learnt from peers: cluster-hook confirmations for the policy's standbys.
    fn forward_notes(&mut self) {
        while let Some((key, from)) = self.swim.poll_note() {
            self.policy.on_note(&key, from.as_str());
        }
    }

    /// A local check changed state: publish the failing checks with our state.
    fn check_changed(&mut self, change: CheckChange) {
        if !self.config.checks.iter().any(|c| c.name == change.name) {
            return;
        }
        if change.passing {
            self.failing.remove(&change.name);
        } else {
            self.failing.insert(change.name);
        }
        self.swim
            .set_health(Instant::now(), self.failing.iter().cloned().collect());
    }

    /// Hands events to the hook policy, and lets it release held recoveries and take over
    /// cluster deliveries whose owner is gone.
    fn run_hooks(&mut self, events: Vec<HookEvent>) {
        let now = Instant::now();
        let due = self.policy.poll_timeout().is_some_and(|at| at <= now);
        let standby = self.policy.standby_len() > 0 && !events.is_empty();
        if events.is_empty() && !due && !standby {
            return;
        }
        let briefs: Vec<Brief> = self
            .swim
            .members()
            .map(|m| Brief {
                name: m.info.name.to_string(),
                state: m.state,
                tags: m.info.tags.clone(),
            })
            .collect();
        let view = View {
            me: self.config.node.name.as_str(),
            members: &briefs,
        };
        let mut actions = Vec::new();
        for event in &events {
            actions.extend(self.policy.on_event(now, event, view));
        }
        actions.extend(self.policy.poll(now, view));
        for action in actions {
            match action {
                Action::Deliver {
                    hook,
                    event,
                    confirm,
                } => {
                    debug!(hook = %hook, event = %event.kind, member = %event.data.member.name, "hook delivery accepted");
                    self.hooks.send(hooks::Request::Deliver {
                        hook,
                        event,
                        confirm,
                    });
                }
                Action::Suppressed {
                    hook,
                    reason,
                    event,
                } => {
                    info!(hook = %hook, event = %event.kind, member = %event.data.member.name, reason, "hook delivery suppressed");
                    self.hook_metrics.suppressed(&hook, reason);
                }
            }
        }
    }

    /// Saves our incarnation at once when it changes, the members soon after they change.
    fn save(&mut self, now: bool) {
        let incarnation = self.swim.incarnation();
        if incarnation != self.saved_incarnation {
            self.state.save_incarnation(incarnation);
            self.saved_incarnation = incarnation;
        }
        if now || (self.members_changed && self.last_save.elapsed() >= SAVE_AFTER_CHANGE) {
            self.last_save = Instant::now();
            self.members_changed = false;
            let members: Vec<_> = self
                .swim
                .known_members()
                .filter(|m| m.info.name != self.config.node.name)
                .collect();
            self.state.save_members(&members);
        }
    }

    /// Answers a command at once: nothing here waits (joins resolve on a task of their own).
    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Members(reply) => {
                let _ = reply.send(AsOf {
                    at: now,
                    value: self.swim.members().collect(),
                });
            }
            Command::Member(name, reply) => {
                let _ = reply.send(AsOf {
                    at: now,
                    value: self.swim.member(&name),
                });
            }
            Command::SelfInfo(reply) => {
                let _ = reply.send(self.self_view(now));
            }
            Command::Health(reply) => {
                let _ = reply.send(self.fitness());
            }
            Command::Join(addrs, reply) => {
                // Resolved off the loop: a slow resolver must not hold up probes and acks.
                tokio::spawn(resolve_join(addrs, reply, self.joins_tx.clone()));
            }
            Command::Leave(reply) => {
                self.leave_replies.push(reply);
                let _ = self.begin_leave("API");
            }
            Command::ForceLeave(name, reply) => {
                let _ = reply.send(self.swim.force_leave(now, &name));
            }
            Command::SetTags(tags, reply) => {
                let _ = reply.send(self.swim.set_tags(now, tags));
            }
            Command::SetMaintenance(maintenance, reply) => {
                let result = maintenance
                    .as_deref()
                    .map_or(Ok(()), handle::validate_maintenance_reason);
                if result.is_ok() {
                    match &maintenance {
                        Some(reason) => info!(reason = %reason, "maintenance on"),
                        None => info!("maintenance off"),
                    }
                    self.state.save_maintenance(maintenance.clone());
                    self.swim.set_maintenance(now, maintenance);
                }
                let _ = reply.send(result);
            }
            Command::Metrics(reply) => {
                // Up to date, so a scrape agrees with `/v1/members` read just before it;
                // the rendering happens on the HTTP thread.
                self.update_metrics();
                let _ = reply.send(self.metrics.registry().clone());
            }
            Command::Hooks(reply) => {
                self.hooks.send(hooks::Request::List(reply));
            }
            Command::HookTest {
                name,
                event,
                member,
                reply,
            } => {
                let Some(spec) = self.config.hooks.iter().find(|h| h.name == name) else {
                    let _ = reply.send(Err(HookTestError::NoSuchHook(name)));
                    return;
                };
                let kind =
                    event.unwrap_or_else(|| spec.events.first().cloned().unwrap_or_default());
                let subject = member.unwrap_or_else(|| self.config.node.name.to_string());
                let Some(m) = self.swim.member(&subject) else {
                    let _ = reply.send(Err(HookTestError::NoSuchMember(subject)));
                    return;
                };
                let event = HookEvent::new(
                    &kind,
                    handle::unix_now(),
                    &self.config.node.cluster,
                    PayloadMember::from(&m),
                    Some(m.state),
                    self.config.node.name.as_str(),
                );
                self.hooks.send(hooks::Request::Test(name, event, reply));
            }
            Command::HookReplay(hook, reply) => {
                self.hooks.send(hooks::Request::Replay(hook, reply));
            }
        }
    }

    /// Brings the metrics up to date with the core's and the transport's counters.
    fn update_metrics(&mut self) {
        self.last_metrics_update = Instant::now();
        let stats = self.transport.stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let snapshot = Snapshot {
            stats: self.swim.stats().clone(),
            members: self.state_counts(),
            health_score: self.swim.health_score(),
            incarnation: self.swim.incarnation().0,
            broadcast_queue_depth: self.swim.broadcast_queue_depth(),
            quic_connections: self.transport.connections(),
            handshakes_client: load(&stats.handshakes_client),
            handshakes_server: load(&stats.handshakes_server),
            handshake_timeouts: load(&stats.handshake_timeouts),
            handshake_refused: load(&stats.handshake_refused),
            handshake_other: load(&stats.handshake_other),
            handshakes_shed: load(&stats.handshakes_shed),
            handshakes_retried: load(&stats.handshakes_retried),
            http_refused: self.http.each_ref().map(|h| load(&h.refused)),
            http_header_timeouts: self.http.each_ref().map(|h| load(&h.header_timeouts)),
            bytes_sent: load(&stats.datagram_bytes_sent) + load(&stats.stream_bytes_sent),
            bytes_received: load(&stats.datagram_bytes_received)
                + load(&stats.stream_bytes_received),
            decode_errors: load(&self.drops.decode_error),
            identity_mismatches: load(&self.drops.identity_mismatch),
            cluster_mismatches: load(&self.drops.cluster_mismatch),
            oversize: load(&self.drops.oversize),
            critical_members: self
                .swim
                .members()
                .filter(|m| m.state == State::Alive && m.info.health() == Health::Critical)
                .count(),
            maintenance_members: self.maintenance_counts(),
            send_drops: load(&stats.send_drops),
            receive_drops: load(&stats.receive_drops),
            peer_mismatches: load(&stats.peer_mismatches),
            icmp_errors: (load(&stats.icmp.reported), load(&stats.icmp.ignored)),
        };
        let rtts: Vec<Duration> = self.swim.drain_rtt_samples().collect();
        let confirmations: Vec<u32> = self.swim.drain_confirmation_samples().collect();
        self.metrics
            .update(&snapshot, rtts.into_iter(), confirmations.into_iter());
    }

    /// Closes connections to peers whose certificates no longer verify: after a reload (a
    /// CA removed, a CRL added) and every [`REVALIDATE_EVERY`] (certificates expire).
    fn revalidate_peers(&mut self) {
        self.last_revalidation = Instant::now();
        let closed = self.transport.revalidate(&self.identity);
        if !closed.is_empty() {
            warn!(peers = ?closed, "closed connections whose peer certificate no longer verifies (CA removed, revoked or expired)");
        }
    }

    /// Members in maintenance, per state.
    fn maintenance_counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for m in self.swim.members().filter(|m| m.info.maintenance.is_some()) {
            *match m.state {
                State::Alive => &mut counts.alive,
                State::Suspect => &mut counts.suspect,
                State::Failed => &mut counts.failed,
                State::Left => &mut counts.left,
            } += 1;
        }
        counts
    }

    fn state_counts(&self) -> StateCounts {
        StateCounts {
            alive: self.swim.count(State::Alive),
            suspect: self.swim.count(State::Suspect),
            failed: self.swim.count(State::Failed),
            left: self.swim.count(State::Left),
        }
    }

    fn self_view(&self, now: Instant) -> SelfView {
        let member = self
            .swim
            .member(self.config.node.name.as_str())
            .unwrap_or_else(|| MemberView {
                info: Arc::new(
                    MemberInfo::new(
                        self.config.node.name.clone(),
                        self.config.gossip.advertise_addr(),
                        self.config.node.tags.clone(),
                    )
                    .with_software(Some(wire::Software::current())),
                ),
                incarnation: self.swim.incarnation(),
                state: State::Alive,
                since: now,
            });
        SelfView {
            at: now,
            member,
            cluster: self.config.node.cluster.clone(),
            joined: self.swim.is_joined(),
            health_score: self.swim.health_score(),
            counts: self.state_counts(),
            version: crate::VERSION.to_string(),
            transport: self.transport_totals(),
        }
    }

    fn transport_totals(&self) -> TransportTotals {
        let wire = self.transport.wire_totals();
        let stats = self.transport.stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportTotals {
            udp_tx_datagrams: wire.tx_datagrams,
            udp_tx_bytes: wire.tx_bytes,
            udp_rx_datagrams: wire.rx_datagrams,
            udp_rx_bytes: wire.rx_bytes,
            swim_messages_sent: load(&stats.datagrams_sent) + load(&stats.streams_sent),
            swim_bytes_sent: load(&stats.datagram_bytes_sent) + load(&stats.stream_bytes_sent),
            connections: self.transport.connections(),
            handshakes: load(&stats.handshakes_client) + load(&stats.handshakes_server),
        }
    }

    fn fitness(&self) -> Fitness {
        let degraded =
            self.swim.health_score() * 2 >= self.config.gossip.protocol.awareness_max_multiplier;
        let problem = if self.swim.is_leaving() {
            "leaving the cluster".to_string()
        } else if !self.swim.is_joined() {
            "not joined: no other member known yet".to_string()
        } else if degraded {
            format!("local health degraded (score {})", self.swim.health_score())
        } else if !self.failing.is_empty() {
            let names: Vec<&str> = self.failing.iter().map(String::as_str).collect();
            format!("checks failing: {}", names.join(", "))
        } else {
            return Fitness::Fit;
        };
        Fitness::Unfit(problem)
    }

    /// SIGHUP: re-read the config; apply log level, tags and certificates. An invalid
    /// config is rejected with one error line and the old one stays.
    fn reload(&mut self) {
        let mut reloading = vec![NotifyState::Reloading];
        reloading.extend(NotifyState::monotonic_usec_now().ok());
        notify(&reloading);
        let accepted = self.apply_reload();
        self.metrics.reload_done(accepted);
        notify(&[NotifyState::Ready]);
    }

    /// The reload itself; false if it was rejected.
    fn apply_reload(&mut self) -> bool {
        let new = match config::load(&self.config.path) {
            Ok(new) => new,
            Err(e) => {
                error!("reload rejected, keeping the running configuration: {e}");
                return false;
            }
        };
        if new.node.name != self.config.node.name || new.node.cluster != self.config.node.cluster {
            error!(
                "reload rejected: node.name and node.cluster cannot change while running (restart the agent)"
            );
            return false;
        }
        let identity = match tls::load_with_crl(
            &new.tls.ca,
            &new.tls.cert,
            &new.tls.key,
            new.tls.crl.as_deref(),
            &new.node.name,
        ) {
            Ok(identity) => identity,
            Err(e) => {
                error!("reload rejected, keeping the running configuration: tls: {e}");
                return false;
            }
        };
        let keyring = match tls::ClusterKeyring::new(&identity) {
            Ok(keyring) => keyring,
            Err(e) => {
                error!("reload rejected, keeping the running configuration: tls: {e}");
                return false;
            }
        };
        if let Err(e) = self.transport.reload_tls(&identity) {
            error!("reload rejected, keeping the running configuration: tls: {e}");
            return false;
        }
        // Credentials are learnt again, under the new CA and revocation lists, as peers
        // reconnect and pass statements on; ours are signed with the new key from now on.
        self.swim.set_keyring(Box::new(keyring));
        self.swim.tell_credential(Instant::now());
        self.metrics.tls_expiry(identity.expiry());
        self.identity = identity;
        self.revalidate_peers();
        if std::env::var_os("RUST_LOG").is_none() && !(self.reload_log)(&new.log.level) {
            warn!(level = %new.log.level, "log level not changed");
        }
        if new.node.tags != self.config.node.tags
            && let Err(e) = self.swim.set_tags(Instant::now(), new.node.tags.clone())
        {
            error!("reload: tags not published: {e}");
        }
        if new.hooks != self.config.hooks {
            let checked = runnable_hooks(&new.hooks);
            self.policy.set_hooks(Arc::clone(&checked));
            self.hooks.send(hooks::Request::Reload(checked));
        }
        if new.checks != self.config.checks {
            for old in &self.config.checks {
                if !new.checks.iter().any(|c| c.name == old.name) {
                    self.check_metrics.remove(&old.name);
                }
            }
            // Checks restart in the state they had, so a reload flaps nothing.
            self.failing
                .retain(|name| new.checks.iter().any(|c| &c.name == name));
            self.checks = Checks::start(
                &new.checks,
                &self.failing,
                self.check_sender.clone(),
                self.check_metrics.clone(),
            );
            self.swim
                .set_health(Instant::now(), self.failing.iter().cloned().collect());
        }
        if new.haproxy_agent != self.config.haproxy_agent {
            warn!("haproxy_agent.listen changes take effect at the next restart");
        }
        info!(path = %new.path.display(), hooks = new.hooks.len(), "configuration reloaded (log level, tags, certificates, hooks, checks)");
        self.config = new;
        true
    }
}

/// Turns validated hook settings into runnable hooks (validation already passed, so an
/// error here is logged and the hook skipped).
fn runnable_hooks(specs: &[HookSpec]) -> Arc<Vec<Hook>> {
    Arc::new(
        specs
            .iter()
            .filter_map(|spec| match spec.clone().validate() {
                Ok(hook) => Some(hook),
                Err(SpecError { key, problem }) => {
                    error!(hook = %spec.name, key, "hook skipped: {problem}");
                    None
                }
            })
            .collect(),
    )
}

/// Gives the heap's free pages back to the system every 10 s, on a small thread of its
/// own (trimming walks the heap: not work for the SWIM loop's thread). glibc keeps what a
/// burst freed (a handshake flood: ~12 MiB of connection state) otherwise.
fn return_freed_memory() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("swimd-trim".into())
        .stack_size(64 << 10)
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(10));
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                // SAFETY: malloc_trim only releases free memory; it has no preconditions.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        })
        .map(drop)
}

type ResolvedJoin = (Vec<SocketAddr>, oneshot::Sender<Result<usize, JoinError>>);

/// How long `swimd join` waits for each name to resolve.
const JOIN_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves the addresses of a `swimd join` and hands them to the agent loop, or answers
/// the request with the error itself.
async fn resolve_join(
    addrs: Vec<String>,
    reply: oneshot::Sender<Result<usize, JoinError>>,
    agent: mpsc::Sender<ResolvedJoin>,
) {
    let lookups = addrs.iter().map(|addr| async move {
        match tokio::time::timeout(JOIN_RESOLVE_TIMEOUT, tokio::net::lookup_host(addr.as_str()))
            .await
        {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => {
                warn!(addr = %addr, error = %e, "cannot resolve join address");
                Vec::new()
            }
            Err(_) => {
                warn!(addr = %addr, "join address not resolved within 5 s");
                Vec::new()
            }
        }
    });
    let resolved: Vec<SocketAddr> = futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect();
    if resolved.is_empty() {
        let _ = reply.send(Err(JoinError::Unresolved(addrs)));
    } else if let Err(mpsc::error::SendError((_, reply))) = agent.send((resolved, reply)).await {
        let _ = reply.send(Err(JoinError::Stopping));
    }
}

/// One log line per membership event, with its fields for structured logs.
fn log_event(event: &crate::core::Event) {
    let m = &event.member;
    let previous = event.previous.map_or("none", State::as_str);
    info!(
        event = event.kind.as_str(),
        member = %m.info.name,
        previous,
        state = m.state.as_str(),
        incarnation = m.incarnation.0,
        "{} {} {} -> {} (incarnation {})",
        event.kind.as_str(),
        m.info.name,
        previous,
        m.state.as_str(),
        m.incarnation.0
    );
}

/// Resolves the configured seeds (A/AAAA or SRV), retrying until some resolve.
async fn resolve_seeds(seeds: Vec<Seed>, out: mpsc::Sender<Vec<SocketAddr>>) {
    if seeds.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(500);
    loop {
        let mut addrs = Vec::new();
        for seed in &seeds {
            match resolve(seed).await {
                Ok(found) => addrs.extend(found),
                Err(e) => warn!(seed = %seed, error = %e, "cannot resolve seed"),
            }
        }
        if !addrs.is_empty() {
            addrs.sort();
            addrs.dedup();
            let _ = out.send(addrs).await;
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

async fn resolve(seed: &Seed) -> std::io::Result<Vec<SocketAddr>> {
    match seed {
        Seed::Addr { host, port } => Ok(tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .collect()),
        Seed::Srv(name) => {
            let resolver = hickory_resolver::TokioResolver::builder_tokio()
                .map_err(std::io::Error::other)?
                .build()
                .map_err(std::io::Error::other)?;
            let lookup = resolver
                .lookup(name.as_str(), hickory_resolver::proto::rr::RecordType::SRV)
                .await
                .map_err(std::io::Error::other)?;
            let mut addrs = Vec::new();
            for record in lookup.answers() {
                if let hickory_resolver::proto::rr::RData::SRV(srv) = &record.data {
                    let target = srv.target.to_utf8();
                    addrs.extend(
                        tokio::net::lookup_host((target.trim_end_matches('.'), srv.port)).await?,
                    );
                }
            }
            Ok(addrs)
        }
    }
}
