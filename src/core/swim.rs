//! The protocol state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::awareness::Awareness;
use super::broadcast::BroadcastQueue;
use super::members::{DIGEST_BUCKETS, Health, Member, MemberInfo, Members, Slot, hash64};
use super::notes::Notes;
use super::suspicion::Suspicion;
use super::trace::{Step, Trace, TraceEntry};
use super::{Channel, Config, Event, EventKind, KnownMember, MemberView, Stats, Transmit};
use crate::wire::{
    self, Ack, ClusterId, Digest, Encoded, Incarnation, MAX_CLOSED_WITNESSES, Message, Nack,
    NodeName, Ping, PingReq, PushPull, Received, Software, State, Tags, Update, WireAddr,
};

/// Who this member is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Unique name (also the name in its certificate).
    pub name: NodeName,
    /// The address peers reach it at.
    pub addr: SocketAddr,
    /// The cluster it belongs to.
    pub cluster: ClusterId,
    /// Initial tags.
    pub tags: Tags,
    /// The incarnation to start from (persisted by the agent across restarts).
    pub incarnation: Incarnation,
}

/// Tags that cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tags take {len} bytes encoded, more than gossip.max_tags_bytes ({limit})")]
pub struct TagsError {
    /// Their encoded size.
    pub len: usize,
    /// The configured limit.
    pub limit: usize,
}

/// Why [`Swim::force_leave`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    /// No member has this name.
    #[error("no member named {0}")]
    Unknown(String),
    /// Only a failed member can be forced out (ourselves never is, in our own view).
    #[error("{name} is {state}, not failed: only failed members can be forced out")]
    NotFailed {
        /// The member.
        name: String,
        /// Its state in our view.
        state: State,
    },
}

/// Why [`Swim::publish_note`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Longer than a note may be.
    #[error("note of {0} bytes, more than {max}", max = wire::MAX_NOTE_LEN)]
    TooLong(usize),
    /// Already known here (published, or learnt from a peer).
    #[error("note already known")]
    Known,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Probe,
    Gossip,
    PushPull,
    Reconnect,
    SeedRetry,
    SyncAfterJoin(u8),
    SyncAgain,
    DirectTimeout(u32),
    ProbeDeadline(u32),
    RelayNack(u32),
    RelayTimeout(u32),
    Suspicion(Slot),
    /// A suspicion's periodic check, with the suspicion's start (a later one has its own).
    SuspicionCheck(Slot, Instant),
    Reap(Slot),
    LinkCheckDeadline(u32),
    LinkCheckRetry,
    /// The next round of a link check's pings (its id).
    LinkCheckRound(u32),
    /// A refutation held back by the rate limit is due.
    DeferredRefutation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    /// A round-robin, ring or fast-confirmation probe: failure means suspicion.
    Check,
    /// A ping to a failed member, to notice that it is back.
    Reconnect,
    /// One ping of a link check (see [`LinkCheck`]).
    LinkCheck,
    /// A ping to a suspect carrying our view of it, so a live suspect whose refutation we
    /// missed answers with it (see `tell_sender`); its outcome is otherwise ignored.
    Verify,
}

/// Pings in one link check, and the acks it needs to pass (binomial odds): with 80% of our
/// packets lost a check passes once in 1,800 tries; at 15% loss each way (72% of round
/// trips) 99.93% of checks pass, at 20% (64%) 98.5%. Ten pings with a quorum of 7 failed
/// 29% of checks at 15% loss, and a healthy member accused then failed before it could
/// refute (seed 5005 of the 100-member 15% sweep).
const LINK_CHECK_PINGS: u32 = 32;
const LINK_CHECK_QUORUM: u32 = 15;
/// How far one claim may raise a member's incarnation above what we hold (or above zero
/// for a member we did not know), whoever makes it. A member raises its own by one per
/// refutation, a few per second at most, so honest claims never come near this; a claim
/// above it is taken at the bound. Incarnations are 64-bit: walking one to the top 65,536
/// at a time takes 2^48 claims, so no input can leave a member unable to outbid it.
pub(crate) const MAX_INCARNATION_STEP: u64 = 1 << 16;
/// Refutations a member sends per second at most; later ones wait for the next slot (one
/// refutation answers every claim up to its incarnation). A hostile member repeating
/// claims about us cannot turn us into a storm.
pub(crate) const MAX_REFUTATIONS_PER_SEC: usize = 4;

/// Members held at most, in every state. A certified member could otherwise invent members
/// without end (each push-pull may name `wire::MAX_ELEMENTS`, and push-pulls keep coming);
/// beyond this, new names are refused until failed and left ones are reaped. Six times
/// the largest cluster simulated (about 750 bytes each in an agent).
pub(crate) const MAX_MEMBERS: usize = 65_536;

/// Time between a link check's rounds when it has fewer targets than pings. The odds above
/// need 32 independent packets: pings to one member sent together leave in one QUIC
/// packet, lost or delivered together (in a lab of 5, a host with 80% outbound loss passed
/// 18% of its checks, sending 4 packets of 8 pings).
const LINK_CHECK_SPACING: Duration = Duration::from_millis(5);

/// A member accused while its own probes keep failing checks its links before refuting
/// (ours): it pings several members at once and refutes only if nearly all answer. A member
/// that lost its links stays out until they work, then rejoins within a round trip, instead
/// of flapping with every lucky probe or waiting for its health score to decay.
#[derive(Debug)]
struct LinkCheck {
    id: u32,
    seqs: Vec<u32>,
    acks: u32,
    /// Who is pinged, one ping each per round.
    targets: Vec<Slot>,
}

#[derive(Debug)]
struct Probe {
    target: Slot,
    target_name: NodeName,
    /// The target's incarnation when we pinged it: a failure speaks of that one only.
    incarnation: Incarnation,
    kind: ProbeKind,
    sent: Instant,
    indirect: bool,
    /// Relays asked to ping the target that have not answered at all (no nack).
    silent_helpers: Vec<Slot>,
    /// Every relay asked: an ack counts from the target or from one of them.
    helpers: Vec<NodeName>,
    nacks: u32,
}

#[derive(Debug)]
struct Relay {
    requester: SocketAddr,
    requester_name: NodeName,
    seq: u32,
    /// Whom we pinged: only its ack is passed on.
    target: NodeName,
}

/// Ping-reqs being relayed at once, at most; more are refused (a probe timeout each).
const MAX_RELAYS: usize = 1024;

/// Members whose closed-port witnesses must agree before one is failed at once: one
/// member's word is not enough, nor is one ICMP error.
const CLOSED_WITNESSES_NEEDED: usize = 2;

/// "Port unreachable" errors for our packets to one member, since `first`.
#[derive(Debug, Clone, Copy)]
struct ClosedPort {
    first: Instant,
    errors: u32,
}

/// Where an update came from: gossip is passed on, state from a push-pull is not (except
/// what the peer says about itself), restored state produces no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Gossip,
    Sync,
    Restore,
}

/// The SWIM + Lifeguard protocol state of one member.
pub struct Swim {
    config: Config,
    cluster: ClusterId,
    me: Slot,
    rng: ChaCha8Rng,
    members: Members,
    broadcasts: BroadcastQueue,
    notes: Notes,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    probes: HashMap<u32, Probe>,
    relays: HashMap<u32, Relay>,
    suspicions: HashMap<Slot, Suspicion>,
    /// "Port unreachable" for our packets, per member, not yet corroborated.
    closed_ports: HashMap<Slot, ClosedPort>,
    /// The witnesses of members failed on their word, while they stay failed.
    closed_verdicts: HashMap<Slot, Vec<NodeName>>,
    awareness: Awareness,
    /// Draws probe and relay sequence numbers: unpredictable, so an ack cannot be forged
    /// ahead of the ping (its own stream, so the protocol's other draws stay as they were).
    seq_rng: ChaCha8Rng,
    /// The last link check's id.
    link_check_id: u32,
    next_is_ring_probe: bool,
    /// Our subjects in the order we probe them this cycle (overlay mode).
    subject_cycle: Vec<Slot>,
    /// A driver instant and the wall-clock time then (since the Unix epoch): probe slots
    /// are numbered on the wall clock, so that all members agree on them.
    wall_clock: (Instant, Duration),
    /// Where in each probe slot we probe (from our name's hash: members spread over the
    /// first tenth of the slot).
    probe_phase: Duration,
    /// Members to probe before the next ring or round-robin target (see on_probe_deadline).
    probe_next_queue: VecDeque<Slot>,
    seeds: Vec<SocketAddr>,
    joined: bool,
    leaving: bool,
    /// Accused while too unhealthy to refute at once: refute once a link check passes.
    pending_refutation: Option<Incarnation>,
    /// The member that answered our join, for the first sync after it.
    join_peer: Option<Slot>,
    link_check: Option<LinkCheck>,
    /// No link check starts before this (backoff after failed checks).
    link_check_after: Option<Instant>,
    link_check_backoff: Duration,
    /// Accusers we sent our refutation to directly, for our current incarnation.
    told_accusers: (Incarnation, Vec<NodeName>),
    /// When our last refutations went out (at most `MAX_REFUTATIONS_PER_SEC`).
    recent_refutations: VecDeque<Instant>,
    /// The highest incarnation claimed of us while refutations were rate-limited.
    deferred_refutation: Option<Incarnation>,
    gossip_scheduled: bool,
    /// A follow-up sync is due (see `on_push_pull`).
    sync_again_scheduled: bool,
    last_gossip: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Recent direct-probe round trips, for the agent's histogram (bounded).
    rtt_samples: VecDeque<Duration>,
    /// Confirmations each ended suspicion had, for the agent's histogram (bounded).
    confirmation_samples: VecDeque<u32>,
    trace: Trace,
}

/// Samples kept between two drains; older ones are dropped when the driver is slow.
const MAX_SAMPLES: usize = 256;

/// Appends `sample`, dropping the oldest once `MAX_SAMPLES` are waiting.
fn push_sample<T>(queue: &mut VecDeque<T>, sample: T) {
    if queue.len() == MAX_SAMPLES {
        queue.pop_front();
    }
    queue.push_back(sample);
}

impl Swim {
    /// A member that knows only itself; call [`Swim::join`] or [`Swim::restore`] next.
    /// `config` must have passed [`Config::validate`].
    pub fn new(identity: Identity, config: Config, seed: u64, now: Instant) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let phase_hash = hash64(identity.name.as_str().as_bytes(), 0x7068_6173);
        let mut members = Members::new();
        let info = Arc::new(
            MemberInfo::new(identity.name, identity.addr, identity.tags)
                .with_software(Some(Software::current())),
        );
        let me = members.insert(
            Member {
                info,
                incarnation: identity.incarnation,
                state: State::Alive,
                since: now,
            },
            &mut rng,
        );
        members.set_overlay(me, config.observers);
        let probe_phase = config
            .probe_interval
            .mul_f64(unit_fraction(phase_hash) / 10.0);
        let mut swim = Swim {
            awareness: Awareness::new(config.awareness_max_multiplier),
            config,
            cluster: identity.cluster,
            me,
            rng,
            members,
            broadcasts: BroadcastQueue::default(),
            notes: Notes::default(),
            timers: BinaryHeap::new(),
            probes: HashMap::new(),
            relays: HashMap::new(),
            suspicions: HashMap::new(),
            closed_ports: HashMap::new(),
            closed_verdicts: HashMap::new(),
            seq_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7365_7175_656e_6365),
            link_check_id: 0,
            next_is_ring_probe: false,
            subject_cycle: Vec::new(),
            wall_clock: (now, Duration::ZERO),
            probe_phase,
            probe_next_queue: VecDeque::new(),
            seeds: Vec::new(),
            joined: false,
            leaving: false,
            pending_refutation: None,
            join_peer: None,
            link_check: None,
            link_check_after: None,
            link_check_backoff: Duration::ZERO,
            told_accusers: (Incarnation::default(), Vec::new()),
            recent_refutations: VecDeque::with_capacity(MAX_REFUTATIONS_PER_SEC),
            deferred_refutation: None,
            gossip_scheduled: false,
            sync_again_scheduled: false,
            last_gossip: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            rtt_samples: VecDeque::new(),
            confirmation_samples: VecDeque::new(),
            trace: Trace::default(),
        };
        // Spread the first probe over one interval so members started together do not probe
        // in lockstep.
        let jitter = swim.random_fraction_of(swim.config.probe_interval);
        swim.schedule(now + jitter, Timer::Probe);
        if !swim.config.push_pull_interval.is_zero() {
            let first = swim.config.push_pull_interval
                + swim.random_fraction_of(swim.config.push_pull_interval);
            swim.schedule(now + first, Timer::PushPull);
        }
        swim.schedule(now + swim.config.reconnect_interval, Timer::Reconnect);
        swim.announce_self(now);
        swim
    }

    // ----- public verbs -------------------------------------------------------------------

    /// Starts joining through `seeds` (our own address among them is skipped); retried every
    /// `seed_retry_interval` while no other member is known alive.
    pub fn join(&mut self, now: Instant, seeds: Vec<SocketAddr>) {
        self.seeds = seeds;
        self.announce_self(now);
        self.contact_seeds(now);
        self.schedule(now + self.config.seed_retry_interval, Timer::SeedRetry);
    }

    /// Loads last-known members (from the agent's state directory, or the simulator's
    /// bootstrap) without events; they are probed like any other member.
    /// Members already known (ourselves included) and repeated names are skipped.
    pub fn restore(&mut self, now: Instant, members: impl IntoIterator<Item = KnownMember>) {
        let fresh: Vec<Member> = members
            .into_iter()
            .filter(|(info, _, _)| self.members.find(info.name.as_str()).is_none())
            .map(|(info, incarnation, state)| Member {
                info,
                incarnation,
                state,
                since: now,
            })
            .collect();
        for slot in self.members.extend(fresh, &mut self.rng) {
            match self.members.get(slot).map(|m| m.state) {
                Some(State::Failed) => {
                    self.schedule(now + self.config.reap_failed_after, Timer::Reap(slot))
                }
                Some(State::Left) => {
                    self.schedule(now + self.config.reap_left_after, Timer::Reap(slot))
                }
                _ => {}
            }
        }
        if self.members.live() > 1 {
            self.joined = true;
        }
        self.announce_self(now);
    }

    /// Leaves gracefully: announces `left` and stops probing. Keep driving the core until
    /// [`Swim::leave_done`] (or a time bound) so the announcement spreads.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let incarnation = self.incarnation().next();
        self.members
            .set_state(self.me, State::Left, incarnation, now);
        self.enqueue_broadcast(self.me);
        self.tell_leaving();
        self.schedule_gossip(now);
    }

    /// Sends our `left` straight to up to `leave_notify` members: gossip alone needs a few
    /// rounds (log n / log fanout, 200 ms each) to reach everyone, a direct packet one trip.
    /// These sends do not count as gossip transmissions, so [`Swim::leave_done`] still waits
    /// for the gossip that covers members beyond the bound and packets lost on the way.
    fn tell_leaving(&mut self) {
        let me = self.me;
        let targets = self
            .members
            .random(self.config.leave_notify, &mut self.rng, |s, m| {
                s != me && matches!(m.state, State::Alive | State::Suspect)
            });
        for target in targets {
            if let Some(addr) = self.members.info(target).map(|i| i.addr) {
                self.send_with(addr, Some(target), Message::Gossip, Some(me));
            }
        }
    }

    /// True once our `left` announcement has been sent as often as gossip sends any update
    /// (or there is nobody to tell).
    pub fn leave_done(&self) -> bool {
        self.leaving && (!self.broadcasts.contains(self.me) || self.members.live() == 0)
    }

    /// Publishes new tags (raising our incarnation).
    pub fn set_tags(&mut self, now: Instant, tags: Tags) -> Result<(), TagsError> {
        let len = wire::tags_len(&tags);
        if len > self.config.max_tags_bytes {
            return Err(TagsError {
                len,
                limit: self.config.max_tags_bytes,
            });
        }
        let mut info = MemberInfo::clone(self.my_info());
        info.tags = tags;
        self.members.set_info(self.me, Arc::new(info));
        let incarnation = self.incarnation().next();
        self.members
            .set_state(self.me, State::Alive, incarnation, now);
        self.announce_self(now);
        Ok(())
    }

    /// Publishes our service health: the names of the checks failing now (raising our
    /// incarnation if it changed). Emits our own `updated` and `critical`/`passing` events.
    pub fn set_health(&mut self, now: Instant, mut failing: Vec<String>) {
        failing.sort();
        failing.dedup();
        let me = self.my_info();
        if me.failing == failing {
            return;
        }
        let before = me.health();
        let info = Arc::new(MemberInfo::clone(me).with_failing(failing));
        self.publish_info(now, before, info);
    }

    /// Puts us in planned maintenance (`Some(reason)`) or takes us out (`None`), raising our
    /// incarnation if that changes anything. Emits our own `updated` and
    /// `maintenance`/`ready` (or `critical`, when checks fail as maintenance ends) events.
    pub fn set_maintenance(&mut self, now: Instant, maintenance: Option<String>) {
        let me = self.my_info();
        if me.maintenance == maintenance {
            return;
        }
        let before = me.health();
        let info = Arc::new(MemberInfo::clone(me).with_maintenance(maintenance));
        self.publish_info(now, before, info);
    }

    /// Starts us in maintenance, as we were before a restart: no event, no new incarnation
    /// (call before [`Swim::join`]; the agent restarts one incarnation up anyway).
    pub fn restore_maintenance(&mut self, reason: String) {
        let info = Arc::new(MemberInfo::clone(self.my_info()).with_maintenance(Some(reason)));
        self.members.set_info(self.me, info);
    }

    fn publish_info(&mut self, now: Instant, before: Health, info: Arc<MemberInfo>) {
        let after = info.health();
        self.members.set_info(self.me, info);
        let incarnation = self.incarnation().next();
        self.members
            .set_state(self.me, State::Alive, incarnation, now);
        self.emit_health(self.me, before, after);
        self.announce_self(now);
    }

    /// `updated`, then what the health turned into, if it turned: `maintenance`,
    /// `critical`, or `ready` (out of maintenance) / `passing` (checks pass again).
    fn emit_health(&mut self, slot: Slot, before: Health, after: Health) {
        self.emit(EventKind::Updated, slot, Some(State::Alive));
        let kind = match (before, after) {
            (b, a) if b == a => return,
            (_, Health::Maintenance) => EventKind::Maintenance,
            (_, Health::Critical) => EventKind::Critical,
            (Health::Maintenance, Health::Passing) => EventKind::Ready,
            (_, Health::Passing) => EventKind::Passing,
        };
        self.emit(kind, slot, Some(State::Alive));
    }

    /// Forgets a failed member at once (`swimd force-leave`): it is marked `left` everywhere.
    pub fn force_leave(&mut self, now: Instant, name: &str) -> Result<(), ForceLeaveError> {
        let unknown = || ForceLeaveError::Unknown(name.to_string());
        let slot = self.members.find(name).ok_or_else(unknown)?;
        let member = self.members.get(slot).ok_or_else(unknown)?;
        if slot == self.me || member.state != State::Failed {
            return Err(ForceLeaveError::NotFailed {
                name: name.to_string(),
                state: member.state,
            });
        }
        let incarnation = member.incarnation;
        self.transition(now, slot, State::Left, incarnation, Source::Gossip);
        Ok(())
    }

    /// Handles a decoded packet that arrived from `from`. Its updates are decoded one at a
    /// time as they are applied (a [`wire::Packet`] is encoded for this: tests and tools).
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, packet: impl Into<Received>) {
        let packet: Received = packet.into();
        let sender = packet.from;
        if !self.closed_ports.is_empty()
            && let Some(slot) = self.members.find(sender.as_str())
        {
            // It spoke: something listens on its port after all.
            self.closed_ports.remove(&slot);
        }
        for update in packet.updates.iter() {
            self.apply_update(now, update, Some(&sender), Source::Gossip);
        }
        if !packet.notes.is_empty() {
            for note in packet.notes.iter() {
                self.notes.receive(note.key);
            }
            if !self.notes.is_empty() {
                self.schedule_gossip(now);
            }
        }
        match packet.message {
            Message::Ping(ping) => self.on_ping(now, from, &sender, ping),
            Message::Ack(ack) => self.on_ack(now, ack, &sender),
            Message::PingReq(req) => self.on_ping_req(now, from, sender, req),
            Message::Nack(nack) => self.on_nack(nack, &sender),
            Message::Gossip => {}
            Message::PushPull(push_pull) => {
                self.on_push_pull(now, from, &sender, push_pull, &packet.members)
            }
        }
    }

    /// Handles an ICMP "port unreachable" for a packet we sent to `addr` (the driver checks
    /// that the error quotes a packet of ours). Two of them, the second after we pinged the
    /// member again, make us a witness that its port is closed; see `witness_closed_port`.
    pub fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        self.stats.ports_unreachable += 1;
        if self.leaving {
            return;
        }
        let me = self.me;
        let Some(slot) = self
            .members
            .iter()
            .find(|(s, m)| {
                *s != me && m.info.addr == addr && matches!(m.state, State::Alive | State::Suspect)
            })
            .map(|(s, _)| s)
        else {
            return; // a failed member we retry, one that left, or nobody we know
        };
        let window = self.config.probe_interval;
        let entry = self.closed_ports.entry(slot).or_insert(ClosedPort {
            first: now,
            errors: 0,
        });
        if now > entry.first + window {
            *entry = ClosedPort {
                first: now,
                errors: 0,
            };
        }
        entry.errors += 1;
        let corroborated = entry.errors > 1 && now > entry.first;
        if !corroborated {
            // Ask again: the answer to a ping sent now cannot be an old error.
            if entry.errors == 1 {
                self.reprobe(now, slot);
            }
            return;
        }
        self.closed_ports.remove(&slot);
        self.witness_closed_port(now, slot);
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.on_timer(now, timer);
        }
    }

    /// When [`Swim::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Spreads an application note (at most [`wire::MAX_NOTE_LEN`] bytes) to every member.
    pub fn publish_note(&mut self, now: Instant, key: String) -> Result<(), NoteError> {
        if key.len() > wire::MAX_NOTE_LEN {
            return Err(NoteError::TooLong(key.len()));
        }
        if !self.notes.publish(key) {
            return Err(NoteError::Known);
        }
        self.schedule_gossip(now);
        Ok(())
    }

    /// Turns the trace of why views change on or off (see [`Swim::poll_trace`]).
    pub fn set_trace(&mut self, on: bool) {
        self.trace.enable(on);
    }

    /// The next trace entry, while tracing is on (at most the latest 4096 are kept).
    pub fn poll_trace(&mut self) -> Option<TraceEntry> {
        self.trace.poll()
    }

    /// The next note learnt from a peer (each note once).
    pub fn poll_note(&mut self) -> Option<String> {
        self.notes.poll()
    }

    // ----- queries ------------------------------------------------------------------------

    /// Our name.
    pub fn name(&self) -> &NodeName {
        &self.my_info().name
    }

    /// Our current incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.members
            .get(self.me)
            .map(|m| m.incarnation)
            .unwrap_or_default()
    }

    /// True once we know another alive member (or a seed answered).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// True after [`Swim::leave`].
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Lifeguard local health score (0 = healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Updates waiting to be piggybacked.
    pub fn broadcast_queue_depth(&self) -> usize {
        self.broadcasts.len()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Direct-probe round trips measured since the last drain (at most the latest 256).
    pub fn drain_rtt_samples(&mut self) -> impl Iterator<Item = Duration> + '_ {
        self.rtt_samples.drain(..)
    }

    /// How many confirmations each suspicion ended since the last drain had, whether it
    /// ended failed or refuted (at most the latest 256).
    pub fn drain_confirmation_samples(&mut self) -> impl Iterator<Item = u32> + '_ {
        self.confirmation_samples.drain(..)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of members in `state` (ourselves included).
    pub fn count(&self, state: State) -> usize {
        self.members.count(state)
    }

    /// Every known member, ourselves included, in ring order.
    pub fn members(&self) -> impl Iterator<Item = MemberView> + '_ {
        self.members.iter().map(|(_, m)| view(m))
    }

    /// The members we watch on the probing overlay (none without one).
    pub fn watched(&self) -> Vec<MemberView> {
        self.views(self.members.overlay().subjects())
    }

    /// The members we watch and those watching us: the peers we keep connections to.
    pub fn neighbours(&self) -> Vec<MemberView> {
        self.views(self.members.overlay().neighbours())
    }

    fn views(&self, slots: Vec<Slot>) -> Vec<MemberView> {
        slots
            .into_iter()
            .filter_map(|s| self.members.get(s).map(view))
            .collect()
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<MemberView> {
        self.members
            .find(name)
            .and_then(|s| self.members.get(s))
            .map(view)
    }

    // ----- timers -------------------------------------------------------------------------

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    /// Tells the core the wall-clock time at `now` (since the Unix epoch), so that its probe
    /// slots line up with every other member's (see `probe_next`). Clock skew between hosts
    /// only spreads the slots: nothing else depends on it.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall_clock = (now, since_epoch);
    }

    /// The probe slot `t` falls in: its number on the wall clock and when it began.
    fn probe_slot(&self, t: Instant) -> (u64, Instant) {
        let (base, wall) = self.wall_clock;
        let wall = if t >= base {
            wall + (t - base)
        } else {
            wall.saturating_sub(base - t)
        };
        let interval = self.config.probe_interval.as_nanos().max(1);
        let into = wall.as_nanos() % interval;
        let slot = (wall.as_nanos() / interval) as u64;
        let into = Duration::from_nanos(u64::try_from(into).unwrap_or(u64::MAX));
        (slot, t.checked_sub(into).unwrap_or(t))
    }

    fn random_fraction_of(&mut self, d: Duration) -> Duration {
        d.mul_f64(unit_fraction(self.rng.next_u64()))
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Probe => {
                let interval = self.awareness.scale(self.config.probe_interval);
                let next = if self.members.overlay().enabled() {
                    self.probe_slot(now + interval).1 + self.probe_phase
                } else {
                    now + interval
                };
                self.schedule(next, Timer::Probe);
                if !self.leaving {
                    self.probe_next(now);
                }
            }
            Timer::Gossip => {
                self.gossip_scheduled = false;
                self.gossip(now);
            }
            Timer::PushPull => {
                self.schedule(now + self.config.push_pull_interval, Timer::PushPull);
                self.sync_with_random_member(now);
            }
            Timer::SyncAfterJoin(round) => {
                // First with the member that answered our join: in a cluster starting
                // together it has heard from every joiner since, while a random member may
                // have joined before most of them.
                match self
                    .join_peer
                    .take()
                    .filter(|&p| self.members.get(p).is_some_and(|m| m.state == State::Alive))
                {
                    Some(peer) if !self.leaving => self.push_pull(now, peer, false),
                    _ => self.sync_with_random_member(now),
                }
                if round < 3 {
                    let delay = self.config.gossip_interval * (4 << (2 * round));
                    self.schedule(now + delay, Timer::SyncAfterJoin(round + 1));
                }
            }
            Timer::SyncAgain => {
                self.sync_again_scheduled = false;
                self.sync_with_random_member(now);
            }
            Timer::Reconnect => {
                self.schedule(now + self.config.reconnect_interval, Timer::Reconnect);
                self.reconnect(now);
            }
            Timer::SeedRetry => {
                if !self.leaving && self.members.live() <= 1 && !self.seeds.is_empty() {
                    self.contact_seeds(now);
                }
                self.schedule(now + self.config.seed_retry_interval, Timer::SeedRetry);
            }
            Timer::DirectTimeout(seq) => self.on_direct_timeout(now, seq),
            Timer::ProbeDeadline(seq) => self.on_probe_deadline(now, seq),
            Timer::RelayNack(seq) => {
                if let Some(relay) = self.relays.get(&seq) {
                    let (requester, msg) =
                        (relay.requester, Message::Nack(Nack { seq: relay.seq }));
                    let to = self.members.find(relay.requester_name.as_str());
                    self.send(requester, to, msg);
                }
            }
            Timer::RelayTimeout(seq) => {
                // A late ack still goes back until now (after our nack: the prober counts both).
                self.relays.remove(&seq);
            }
            Timer::Suspicion(slot) => {
                let due = self.suspicions.get(&slot).map(Suspicion::deadline);
                if due.is_none_or(|d| d > now) {
                    return;
                }
                if self.hold_own_verdict(now, slot) {
                    return;
                }
                if let (Some(s), Some(info)) = (self.suspicions.get(&slot), self.members.info(slot))
                {
                    let confirmations = s.confirmations();
                    self.trace
                        .record(now, &info.name, || Step::Failed { confirmations });
                }
                self.end_suspicion(slot);
                if let Some(m) = self.members.get(slot).filter(|m| m.state == State::Suspect) {
                    let incarnation = m.incarnation;
                    self.transition(now, slot, State::Failed, incarnation, Source::Gossip);
                }
            }
            Timer::SuspicionCheck(slot, started) => {
                // Halfway to the earliest verdict we may have missed the refutation: gossip
                // reaches all but a few members. Ask the member ourselves; the ping tells it
                // what we believe, so a live member answers with its news. Short of
                // confirmations, each round a fresh few members chosen by hash (as fast
                // confirmers are) make it a full probe: in a partition the first confirmers
                // may sit on the far side. Only a few: were every suspecting member to probe,
                // the few probes that fail by chance under loss (3% each at 15%) would add up
                // to confirmations of a healthy member, more of them the larger the cluster.
                let Some(wants_confirmations) = self
                    .suspicions
                    .get(&slot)
                    .filter(|s| s.started() == started)
                    .map(Suspicion::wants_confirmations)
                else {
                    return;
                };
                // Again while it lasts: the ping or its answer may be lost.
                let (min, _) = self.config.suspicion_bounds(self.members.live());
                self.schedule(now + min / 2, Timer::SuspicionCheck(slot, started));
                if !self.leaving && !self.probing(slot) {
                    let round = now.saturating_duration_since(started).as_nanos()
                        / (min / 2).as_nanos().max(1);
                    let incarnation = self.members.get(slot).map(|m| m.incarnation);
                    let selected = if self.members.overlay().enabled() {
                        // Its observers among the members we believe alive: in a partition
                        // the far side turns suspect, and the watchers on our side step in
                        // (the rings' own observers may mostly sit across the cut).
                        self.members
                            .observers_of(slot, self.config.observers, |s| s == State::Alive)
                            .contains(&self.me)
                    } else {
                        incarnation.is_some_and(|inc| {
                            self.selected_to_confirm(
                                slot,
                                inc,
                                u32::try_from(round).unwrap_or(u32::MAX),
                            )
                        })
                    };
                    if self.members.overlay().enabled() && !selected {
                        // Not one of its observers: ask a neighbour rather than dial the
                        // suspect; one that knows the refutation answers with it.
                        self.ask_a_neighbour_about(slot);
                        return;
                    }
                    let kind = if wants_confirmations && selected {
                        ProbeKind::Check
                    } else {
                        ProbeKind::Verify
                    };
                    self.start_probe(now, slot, kind);
                }
            }
            Timer::Reap(slot) => self.reap(now, slot),
            Timer::LinkCheckDeadline(id) => self.on_link_check_deadline(now, id),
            Timer::LinkCheckRetry => self.start_link_check(now),
            Timer::DeferredRefutation => {
                if let Some(claimed) = self.deferred_refutation.take() {
                    self.refute(now, claimed);
                }
            }
            Timer::LinkCheckRound(id) => self.link_check_round(now, id),
        }
    }

    /// Ours: a verdict that rests on our probes alone waits while we believe our own links
    /// are down (accused, link check not passed): a member with heavy outbound loss fails
    /// others in its own view otherwise, and gossips it. Verdicts from others still count.
    /// It is held one minimum timeout at a time, so once our links are back the suspect has
    /// that long (and our suspicion checks) to refute. True when the verdict was held.
    fn hold_own_verdict(&mut self, now: Instant, slot: Slot) -> bool {
        if self.pending_refutation.is_none() {
            return false;
        }
        let me = self.me;
        let Some(s) = self.suspicions.get_mut(&slot) else {
            return false;
        };
        if !s.uncorroborated() || self.members.find(s.first_accuser().as_str()) != Some(me) {
            return false;
        }
        let at = s.hold(now + s.min());
        self.stats.verdicts_deferred += 1;
        if let Some(info) = self.members.info(slot) {
            self.trace.record(now, &info.name, || Step::VerdictHeld);
        }
        self.schedule(at, Timer::Suspicion(slot));
        true
    }

    // ----- probing ------------------------------------------------------------------------

    fn probe_next(&mut self, now: Instant) {
        let me = self.me;
        let probeable =
            |s: Slot, m: &Member| s != me && matches!(m.state, State::Alive | State::Suspect);
        while let Some(slot) = self.probe_next_queue.pop_front() {
            let due =
                self.members.get(slot).is_some_and(|m| probeable(slot, m)) && !self.probing(slot);
            if due {
                self.start_probe(now, slot, ProbeKind::Check);
                return;
            }
        }
        if self.members.overlay().enabled() {
            // Our subject on the slot's ring: a member's observers sit on different rings,
            // so one of them probes it in every slot (a crash is noticed within one probe
            // interval, not within one of several observers' random turns).
            let rings = self.members.overlay().rings().max(1);
            let ring = (self.probe_slot(now).0 % rings as u64) as usize;
            let on_ring = self.members.overlay().subject_on(ring).filter(|&s| {
                self.members.get(s).is_some_and(|m| probeable(s, m)) && !self.probing(s)
            });
            if let Some(target) = on_ring.or_else(|| self.next_subject(probeable)) {
                self.start_probe(now, target, ProbeKind::Check);
            }
            return;
        }
        let ring = self.config.ring_probes && self.next_is_ring_probe;
        self.next_is_ring_probe = !self.next_is_ring_probe;
        let target = if ring {
            self.members.ring_successor(me, probeable)
        } else {
            self.members.next_round_robin(&mut self.rng, probeable)
        };
        if let Some(target) = target {
            self.start_probe(now, target, ProbeKind::Check);
        }
    }

    /// The next of our subjects, in ring order (overlay mode): each is probed once every
    /// `observers` intervals, never twice as late as a reshuffled order could make it.
    fn next_subject(&mut self, probeable: impl Fn(Slot, &Member) -> bool) -> Option<Slot> {
        for _ in 0..2 {
            while let Some(slot) = self.subject_cycle.pop() {
                if self.members.get(slot).is_some_and(|m| probeable(slot, m))
                    && self.members.overlay().watches(slot)
                {
                    return Some(slot);
                }
            }
            self.subject_cycle = self.members.overlay().subjects();
            self.subject_cycle.reverse();
        }
        None
    }

    /// Up to `count` of our overlay neighbours, in random order, that `eligible` accepts.
    fn random_neighbours(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        let mut picked: Vec<Slot> = self
            .members
            .overlay()
            .neighbours()
            .into_iter()
            .filter(|&s| self.members.get(s).is_some_and(|m| eligible(s, m)))
            .collect();
        super::members::shuffle(&mut picked, &mut self.rng);
        picked.truncate(count);
        picked
    }

    /// Up to `count` random neighbours that `eligible` accepts, then, if there are too few
    /// (or no overlay), random members.
    fn neighbours_then_random(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        let mut picked = self.random_neighbours(count, &eligible);
        if picked.len() < count {
            let more = self.members.random(count, &mut self.rng, |s, m| {
                eligible(s, m) && !picked.contains(&s)
            });
            picked.extend(more.into_iter().take(count - picked.len()));
        }
        picked
    }

    /// Up to `count` random neighbours (or, without an overlay, members) that `eligible`
    /// accepts: the members we keep connections to.
    fn neighbours_or_random(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        if self.members.overlay().enabled() {
            self.random_neighbours(count, eligible)
        } else {
            self.members.random(count, &mut self.rng, eligible)
        }
    }

    /// A fresh sequence number, in use by no probe or relay.
    fn new_seq(&mut self) -> u32 {
        loop {
            let seq = self.seq_rng.next_u32();
            if !self.probes.contains_key(&seq) && !self.relays.contains_key(&seq) {
                return seq;
            }
        }
    }

    /// True while a probe of `slot` runs.
    fn probing(&self, slot: Slot) -> bool {
        self.probes.values().any(|p| p.target == slot)
    }

    /// Pings `target` and returns the probe's sequence number.
    fn start_probe(&mut self, now: Instant, target: Slot, kind: ProbeKind) -> Option<u32> {
        let info = self.members.info(target).cloned()?;
        let incarnation = self.members.get(target)?.incarnation;
        let seq = self.new_seq();
        self.probes.insert(
            seq,
            Probe {
                target,
                target_name: info.name.clone(),
                incarnation,
                kind,
                sent: now,
                indirect: false,
                silent_helpers: Vec::new(),
                helpers: Vec::new(),
                nacks: 0,
            },
        );
        let ping = Message::Ping(Ping {
            seq,
            target: info.name.clone(),
        });
        self.send(info.addr, Some(target), ping);
        let timeout = self.awareness.scale(self.config.probe_timeout);
        let interval = self.awareness.scale(self.config.probe_interval);
        match kind {
            ProbeKind::Check => self.schedule(now + timeout, Timer::DirectTimeout(seq)),
            ProbeKind::Reconnect | ProbeKind::LinkCheck | ProbeKind::Verify => {}
        }
        if kind != ProbeKind::LinkCheck {
            self.schedule(now + interval, Timer::ProbeDeadline(seq));
        }
        Some(seq)
    }

    fn on_direct_timeout(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probes.get(&seq) else {
            return;
        };
        let (target, target_name) = (probe.target, probe.target_name.clone());
        let Some(addr) = self.members.info(target).map(|i| i.addr) else {
            return;
        };
        let me = self.me;
        // Relays we keep a connection to, so only their hop to the target may need a
        // handshake.
        let helpers = self.neighbours_then_random(self.config.indirect_checks, |s, m| {
            s != me && s != target && m.state == State::Alive
        });
        for &helper in &helpers {
            let Some(helper_addr) = self.members.info(helper).map(|i| i.addr) else {
                continue;
            };
            let req = Message::PingReq(PingReq {
                seq,
                target: target_name.clone(),
                addr: WireAddr(addr),
            });
            self.send(helper_addr, Some(helper), req);
        }
        let names = helpers
            .iter()
            .filter_map(|&h| self.members.info(h).map(|i| i.name.clone()))
            .collect();
        if let Some(probe) = self.probes.get_mut(&seq) {
            probe.indirect = true;
            probe.silent_helpers = helpers;
            probe.helpers = names;
        }
        let _ = now;
    }

    fn on_probe_deadline(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probes.remove(&seq) else {
            return;
        };
        if probe.kind != ProbeKind::Check {
            return;
        }
        self.stats.probes_failed += 1;
        // Lifeguard: without nacks our own links may be the problem. Unlike memberlist we
        // count one step, and none once any nack arrived: a nack proves our links to that
        // relay work, and in a partition the relays across it can never answer.
        self.awareness.apply(i32::from(probe.nacks == 0));
        // A relay that did not even nack, while others did, may be unreachable too (ours):
        // probe it next instead of at its round-robin turn, which can be 2N probes away.
        // In a partition this finds the far side's members in a few rounds.
        if probe.nacks > 0 {
            for helper in probe.silent_helpers {
                if !self.probe_next_queue.contains(&helper) && self.probe_next_queue.len() < 8 {
                    self.probe_next_queue.push_back(helper);
                }
            }
        }
        let Some(member) = self.members.get(probe.target) else {
            return;
        };
        if member.info.name != probe.target_name {
            return;
        }
        // Alive again at a higher incarnation since we pinged (a restart, a refutation):
        // our silence is about the old one (a crash failed on the fast path and restarted
        // within a probe interval was suspected again by the probe of its dead process).
        if member.incarnation != probe.incarnation {
            return;
        }
        let incarnation = member.incarnation;
        let nacks = probe.nacks;
        self.trace
            .record(now, &probe.target_name, || Step::ProbeFailed { nacks });
        let me = self.my_info().name.clone();
        self.suspect(now, probe.target, incarnation, me, None, Source::Gossip);
    }

    fn on_ack(&mut self, now: Instant, ack: Ack, sender: &NodeName) {
        // An ack is evidence only from whom we asked: the member pinged, or (for an
        // indirect probe) a relay we asked. Anyone else's is ignored, and the probe waits on.
        if let Some(relay) = self.relays.get(&ack.seq) {
            if relay.target != *sender {
                self.stats.acks_misattributed += 1;
                return;
            }
            let to = self.members.find(relay.requester_name.as_str());
            let (requester, seq) = (relay.requester, relay.seq);
            self.relays.remove(&ack.seq);
            self.send(requester, to, Message::Ack(Ack { seq }));
            return;
        }
        let Some(probe) = self.probes.get(&ack.seq) else {
            self.stats.stray_packets += 1;
            return;
        };
        if probe.target_name != *sender && !(probe.indirect && probe.helpers.contains(sender)) {
            self.stats.acks_misattributed += 1;
            return;
        }
        let Some(probe) = self.probes.remove(&ack.seq) else {
            return;
        };
        match probe.kind {
            ProbeKind::Check if !probe.indirect => {
                self.stats.probes_direct_ok += 1;
                let rtt = now.saturating_duration_since(probe.sent);
                self.stats.rtt_us_sum += rtt.as_micros() as u64;
                self.stats.rtt_count += 1;
                push_sample(&mut self.rtt_samples, rtt);
                self.awareness.apply(-1);
                // Our links may be back: no need to wait out the backoff.
                if self.pending_refutation.is_some() {
                    self.link_check_after = None;
                    self.start_link_check(now);
                }
            }
            ProbeKind::Check => self.stats.probes_indirect_ok += 1,
            ProbeKind::Reconnect => {
                // It is back: sync views now, and try the next failed member soon after.
                if let Some(m) = self.members.get(probe.target)
                    && m.info.name == probe.target_name
                {
                    self.push_pull(now, probe.target, false);
                }
                self.reconnect(now);
            }
            ProbeKind::LinkCheck => self.on_link_check_ack(now, ack.seq),
            ProbeKind::Verify => {}
        }
    }

    fn on_nack(&mut self, nack: Nack, sender: &NodeName) {
        let from = self.members.find(sender.as_str());
        if let Some(probe) = self.probes.get_mut(&nack.seq) {
            probe.nacks += 1;
            probe.silent_helpers.retain(|&h| Some(h) != from);
        }
    }

    fn on_ping(&mut self, now: Instant, from: SocketAddr, sender: &NodeName, ping: Ping) {
        if ping.target != self.my_info().name {
            // An address reused by another member: let the prober time out.
            self.stats.stray_packets += 1;
            return;
        }
        let to = self.members.find(sender.as_str());
        self.send(from, to, Message::Ack(Ack { seq: ping.seq }));
        let _ = now;
    }

    fn on_ping_req(&mut self, now: Instant, from: SocketAddr, sender: NodeName, req: PingReq) {
        // We ping only a member we know, at the address we know (the request's is ignored):
        // a ping-req must not make us dial wherever a peer names.
        let target = self
            .members
            .find(req.target.as_str())
            .filter(|&t| t != self.me)
            .and_then(|t| self.members.info(t).map(|i| (t, i.addr)));
        let Some((target, addr)) = target.filter(|_| self.relays.len() < MAX_RELAYS) else {
            // The nack tells the requester its own link to us works (Lifeguard).
            self.stats.ping_reqs_refused += 1;
            let to = self.members.find(sender.as_str());
            self.send(from, to, Message::Nack(Nack { seq: req.seq }));
            return;
        };
        let seq = self.new_seq();
        self.relays.insert(
            seq,
            Relay {
                requester: from,
                requester_name: sender,
                seq: req.seq,
                target: req.target.clone(),
            },
        );
        self.send(
            addr,
            Some(target),
            Message::Ping(Ping {
                seq,
                target: req.target,
            }),
        );
        // The requester sent this at its probe timeout and decides at its probe interval
        // (twice as late by default): a nack at the full timeout would arrive just after that
        // decision and never count (then every failed probe looked like our own fault).
        self.schedule(
            now + self.config.probe_timeout * 4 / 5,
            Timer::RelayNack(seq),
        );
        self.schedule(now + self.config.probe_timeout, Timer::RelayTimeout(seq));
    }

    // ----- link checks (ours) ---------------------------------------------------------------

    /// Refutes `claimed` once our links are shown to work (see [`LinkCheck`]).
    fn refute_after_link_check(&mut self, now: Instant, claimed: Incarnation) {
        self.pending_refutation = Some(claimed.max(self.pending_refutation.unwrap_or_default()));
        self.start_link_check(now);
    }

    fn start_link_check(&mut self, now: Instant) {
        if self.pending_refutation.is_none()
            || self.link_check.is_some()
            || self.leaving
            || self.link_check_after.is_some_and(|t| now < t)
        {
            return;
        }
        // Alive members first: the ones most likely to answer if our links work.
        let me = self.me;
        let pings = LINK_CHECK_PINGS as usize;
        let mut targets =
            self.neighbours_then_random(pings, |s, m| s != me && m.state == State::Alive);
        if self.members.overlay().enabled() {
            // Our neighbours only (pings cycle over them): the connections we keep open.
            let neighbours = self.members.overlay().neighbours();
            targets.retain(|t| neighbours.contains(t));
        }
        if targets.len() < pings {
            let more = self.members.random(pings, &mut self.rng, |s, m| {
                s != me && matches!(m.state, State::Suspect | State::Failed)
            });
            targets.extend(more.into_iter().take(pings - targets.len()));
        }
        if targets.is_empty() {
            // Nobody to check against (nor anybody who could have accused us).
            if let Some(claimed) = self.pending_refutation.take() {
                self.refute(now, claimed);
            }
            return;
        }
        self.link_check_id = self.link_check_id.wrapping_add(1);
        let id = self.link_check_id;
        let rounds = pings.div_ceil(targets.len());
        self.link_check = Some(LinkCheck {
            id,
            seqs: Vec::with_capacity(pings),
            acks: 0,
            targets,
        });
        // With fewer targets than pings, each gets one per round (see LINK_CHECK_SPACING);
        // every ping has a full probe timeout for its answer.
        self.link_check_round(now, id);
        let last_round = LINK_CHECK_SPACING * u32::try_from(rounds - 1).unwrap_or(0);
        self.schedule(
            now + last_round + self.config.probe_timeout,
            Timer::LinkCheckDeadline(id),
        );
    }

    /// Sends the next round of link check `id`: one ping to each target, up to the total.
    fn link_check_round(&mut self, now: Instant, id: u32) {
        let Some(check) = self.link_check.as_ref().filter(|c| c.id == id) else {
            return;
        };
        let left = (LINK_CHECK_PINGS as usize).saturating_sub(check.seqs.len());
        let round: Vec<Slot> = check.targets.iter().take(left).copied().collect();
        for target in &round {
            let seq = self.start_probe(now, *target, ProbeKind::LinkCheck);
            if let (Some(seq), Some(check)) = (seq, self.link_check.as_mut()) {
                check.seqs.push(seq);
            }
        }
        if left > round.len() {
            self.schedule(now + LINK_CHECK_SPACING, Timer::LinkCheckRound(id));
        }
    }

    fn on_link_check_ack(&mut self, now: Instant, seq: u32) {
        let Some(check) = self.link_check.as_mut() else {
            return;
        };
        if !check.seqs.contains(&seq) {
            return;
        }
        check.acks += 1;
        if check.acks < LINK_CHECK_QUORUM {
            return;
        }
        let acks = check.acks;
        let me = self.my_info().name.clone();
        self.trace
            .record(now, &me, || Step::LinkCheck { acks, passed: true });
        self.end_link_check();
        self.stats.link_checks_passed += 1;
        self.link_check_after = None;
        self.link_check_backoff = Duration::ZERO;
        // The health score is left to our probes: after a lucky pass on bad links it keeps
        // the next accusation behind a check too.
        if let Some(claimed) = self.pending_refutation.take() {
            self.refute(now, claimed);
        }
    }

    fn on_link_check_deadline(&mut self, now: Instant, id: u32) {
        let Some(acks) = self
            .link_check
            .as_ref()
            .filter(|c| c.id == id)
            .map(|c| c.acks)
        else {
            return;
        };
        let me = self.my_info().name.clone();
        self.trace.record(now, &me, || Step::LinkCheck {
            acks,
            passed: false,
        });
        self.end_link_check();
        self.stats.link_checks_failed += 1;
        // Retry soon (a suspicion runs out in seconds), then back off to 16 probe intervals,
        // so a member with bad links does not keep rolling the dice.
        self.link_check_backoff = (self.link_check_backoff * 2)
            .clamp(self.config.probe_timeout, self.config.probe_interval * 16);
        let at = now + self.link_check_backoff;
        self.link_check_after = Some(at);
        self.schedule(at, Timer::LinkCheckRetry);
    }

    fn end_link_check(&mut self) {
        if let Some(check) = self.link_check.take() {
            for seq in check.seqs {
                self.probes.remove(&seq);
            }
        }
    }

    // ----- suspicion and state changes ----------------------------------------------------

    /// `accuser` suspects `slot` at `incarnation`: start or confirm a suspicion.
    fn suspect(
        &mut self,
        now: Instant,
        slot: Slot,
        incarnation: Incarnation,
        accuser: NodeName,
        via: Option<&NodeName>,
        source: Source,
    ) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        if incarnation < member.incarnation {
            return;
        }
        let name = member.info.name.clone();
        match member.state {
            State::Suspect => {
                let current = member.incarnation;
                let confirmed = self
                    .suspicions
                    .get_mut(&slot)
                    .is_some_and(|s| s.confirm(&accuser));
                if incarnation > current {
                    self.members
                        .set_state(slot, State::Suspect, incarnation, now);
                }
                if confirmed {
                    let confirmations = self
                        .suspicions
                        .get(&slot)
                        .map_or(0, Suspicion::confirmations);
                    self.trace.record(now, &name, || Step::Confirmed {
                        accuser: accuser.clone(),
                        via: via.cloned(),
                        confirmations,
                    });
                    if let Some(deadline) = self.suspicions.get(&slot).map(Suspicion::deadline) {
                        self.schedule(deadline, Timer::Suspicion(slot));
                    }
                    self.enqueue_suspect(now, slot, &accuser);
                }
            }
            State::Alive => {
                self.stats.suspicions += 1;
                self.trace.record(now, &name, || Step::Suspected {
                    accuser: accuser.clone(),
                    via: via.cloned(),
                    incarnation,
                });
                let n = self.members.live();
                let wanted = self.config.suspicion_confirmations;
                let expected = if self.members.overlay().enabled() {
                    // Only the suspect's other observers confirm: a few, now and then fewer
                    // than `wanted` (two rings may give it the same observer).
                    let others = self.live_observers(slot).len().saturating_sub(1);
                    wanted.min(u32::try_from(others).unwrap_or(u32::MAX))
                } else if n.saturating_sub(2) < wanted as usize {
                    0
                } else {
                    wanted
                };
                let bounds = self.config.suspicion_bounds(n);
                let suspicion = Suspicion::new(now, accuser.clone(), expected, bounds);
                self.schedule(suspicion.deadline(), Timer::Suspicion(slot));
                self.schedule(now + bounds.0 / 2, Timer::SuspicionCheck(slot, now));
                self.suspicions.insert(slot, suspicion);
                self.transition(now, slot, State::Suspect, incarnation, source);
                self.enqueue_suspect(now, slot, &accuser);
                if accuser != self.my_info().name && self.selected_to_confirm(slot, incarnation, 0)
                {
                    self.start_probe(now, slot, ProbeKind::Check);
                }
            }
            State::Failed | State::Left => {}
        }
    }

    /// Our improvement over memberlist: a few members, chosen by hash of (suspect,
    /// incarnation, prober), probe a new suspect at once, so confirmations (or the suspect's
    /// refutation) arrive within about one probe round. Expected set size is
    /// `fast_confirm_probes` whatever the cluster size: O(1) probes per suspicion.
    fn selected_to_confirm(&self, slot: Slot, incarnation: Incarnation, round: u32) -> bool {
        if self.config.fast_confirm_probes == 0 || self.leaving {
            return false;
        }
        if self.members.overlay().enabled() {
            // The suspect's observers: at most `observers`, connected to it already.
            return self.members.overlay().watches(slot);
        }
        let Some(suspect) = self.members.info(slot) else {
            return false;
        };
        let others = self.members.live().saturating_sub(2).max(1) as f64;
        let share = (f64::from(self.config.fast_confirm_probes) / others).min(1.0);
        let mut key =
            Vec::with_capacity(suspect.name.as_str().len() + self.name().as_str().len() + 5);
        key.extend_from_slice(suspect.name.as_str().as_bytes());
        key.push(0);
        // The low 32 bits, as when incarnations were 32-bit: the same members are chosen.
        key.extend_from_slice(&(incarnation.0 as u32).to_be_bytes());
        key.extend_from_slice(&round.to_be_bytes());
        key.extend_from_slice(self.name().as_str().as_bytes());
        (hash64(&key, 0x5357_494d) as f64) < share * u64::MAX as f64
    }

    fn enqueue_suspect(&mut self, now: Instant, slot: Slot, accuser: &NodeName) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let update = Update {
            name: member.info.name.clone(),
            incarnation: member.incarnation,
            state: State::Suspect,
            from: accuser.clone(),
            addr: None,
            tags: None,
            failing: None,
            closed: self.closed_witnesses(slot),
            maintenance: None,
            software: None,
        };
        self.broadcasts.push(slot, wire::encode_update(&update));
        self.schedule_gossip(now);
    }

    /// True when we suspect `slot` at exactly `incarnation`.
    fn suspected_at(&self, slot: Slot, incarnation: Incarnation) -> bool {
        self.members
            .get(slot)
            .is_some_and(|m| m.state == State::Suspect && m.incarnation == incarnation)
    }

    fn closed_witnesses(&self, slot: Slot) -> Vec<NodeName> {
        match self.suspicions.get(&slot) {
            Some(s) => s.closed().to_vec(),
            None => self.closed_verdicts.get(&slot).cloned().unwrap_or_default(),
        }
    }

    // ----- the crash fast path (ours) ---------------------------------------------------------

    /// Pings `slot` again now, whatever probe of it is running: the error this ping draws
    /// cannot be an old one, or a forgery quoting an older packet.
    fn reprobe(&mut self, now: Instant, slot: Slot) {
        let running = self
            .probes
            .iter()
            .find(|(_, p)| p.target == slot)
            .map(|(&seq, p)| (seq, p.target_name.clone()));
        match running {
            Some((seq, target)) => {
                if let Some(addr) = self.members.info(slot).map(|i| i.addr) {
                    self.send(addr, Some(slot), Message::Ping(Ping { seq, target }));
                }
            }
            None => {
                self.start_probe(now, slot, ProbeKind::Verify);
            }
        }
    }

    /// Our own packets found `slot`'s port closed: accuse it as a witness, and tell its
    /// observers at once (they confirm with their own packets) rather than by gossip.
    fn witness_closed_port(&mut self, now: Instant, slot: Slot) {
        let Some((name, incarnation)) = self
            .members
            .get(slot)
            .map(|m| (m.info.name.clone(), m.incarnation))
        else {
            return;
        };
        self.trace.record(now, &name, || Step::PortClosed);
        let me = self.my_info().name.clone();
        self.suspect(now, slot, incarnation, me.clone(), None, Source::Gossip);
        if self.note_closed_witnesses(now, slot, std::slice::from_ref(&me), None) {
            return;
        }
        let Some(accuser) = self
            .suspicions
            .get(&slot)
            .map(|s| s.first_accuser().clone())
        else {
            return;
        };
        self.enqueue_suspect(now, slot, &accuser);
        for observer in self.live_observers(slot) {
            if observer == self.me {
                continue;
            }
            if let Some(addr) = self.members.info(observer).map(|i| i.addr) {
                self.send_with(addr, Some(observer), Message::Gossip, Some(slot));
            }
        }
    }

    /// Records members that say `slot`'s port is closed (`via`: who told us), and fails it
    /// at once when enough of its observers agree; true when it failed.
    fn note_closed_witnesses(
        &mut self,
        now: Instant,
        slot: Slot,
        witnesses: &[NodeName],
        via: Option<&NodeName>,
    ) -> bool {
        let me = self.me;
        let mut news = false;
        for witness in witnesses.iter().take(MAX_CLOSED_WITNESSES) {
            // Only members we trust to accuse (as for any accusation), never the suspect.
            let trusted = self.members.find(witness.as_str()).is_some_and(|w| {
                w != slot
                    && (w == me || self.members.get(w).is_some_and(|m| m.state == State::Alive))
            });
            if !trusted {
                continue;
            }
            let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                return false;
            };
            if suspicion.add_closed(witness) {
                news = true;
                if suspicion.confirm(witness) {
                    let deadline = suspicion.deadline();
                    let confirmations = suspicion.confirmations();
                    self.schedule(deadline, Timer::Suspicion(slot));
                    if let Some(name) = self.members.info(slot).map(|i| i.name.clone()) {
                        self.trace.record(now, &name, || Step::Confirmed {
                            accuser: witness.clone(),
                            via: via.cloned(),
                            confirmations,
                        });
                    }
                }
            }
        }
        if !news {
            return false;
        }
        if self.closed_verdict_due(slot) {
            self.fail_closed(now, slot);
            return true;
        }
        if via.is_some()
            && let Some(accuser) = self
                .suspicions
                .get(&slot)
                .map(|s| s.first_accuser().clone())
        {
            // Pass the larger witness list on.
            self.enqueue_suspect(now, slot, &accuser);
            // Where any member's witness counts, look for ourselves: no observer will probe
            // it at once for us (in a large cluster, its observers do).
            let mine = self.my_info().name.clone();
            let witnessed = self
                .suspicions
                .get(&slot)
                .is_some_and(|s| s.closed().contains(&mine));
            if !witnessed && !self.probing(slot) && self.closed_port_judges(slot).is_none() {
                self.start_probe(now, slot, ProbeKind::Verify);
            }
        }
        false
    }

    /// The suspect's observers, or `None` when any member's witness counts: without an
    /// overlay, or when fewer than `CLOSED_WITNESSES_NEEDED` distinct members watch it (in a
    /// small cluster all rings may give it the same observer: one in 8 clusters of 3).
    fn closed_port_judges(&self, slot: Slot) -> Option<Vec<Slot>> {
        if !self.members.overlay().enabled() {
            return None;
        }
        let observers = self.live_observers(slot);
        (observers.len() >= CLOSED_WITNESSES_NEEDED).then_some(observers)
    }

    /// The members that watch `slot` among those alive or suspect (a scan of the table).
    fn live_observers(&self, slot: Slot) -> Vec<Slot> {
        let live = |st| matches!(st, State::Alive | State::Suspect);
        self.members.observers_of(slot, self.config.observers, live)
    }

    /// True when at least `CLOSED_WITNESSES_NEEDED` of the suspect's observers (see
    /// `closed_port_judges`) found its port closed.
    fn closed_verdict_due(&self, slot: Slot) -> bool {
        let Some(witnesses) = self.suspicions.get(&slot).map(Suspicion::closed) else {
            return false;
        };
        if witnesses.len() < CLOSED_WITNESSES_NEEDED {
            return false;
        }
        let Some(observers) = self.closed_port_judges(slot) else {
            return true;
        };
        let agreeing = witnesses
            .iter()
            .filter(|w| {
                self.members
                    .find(w.as_str())
                    .is_some_and(|s| observers.contains(&s))
            })
            .count();
        agreeing >= CLOSED_WITNESSES_NEEDED
    }

    /// Declares `slot` failed now, and gossips the verdict with its witnesses so that every
    /// member can take it at once.
    fn fail_closed(&mut self, now: Instant, slot: Slot) {
        let witnesses = self.closed_witnesses(slot);
        let Some((name, incarnation)) = self
            .members
            .get(slot)
            .filter(|m| m.state == State::Suspect)
            .map(|m| (m.info.name.clone(), m.incarnation))
        else {
            return;
        };
        self.stats.closed_port_verdicts += 1;
        self.trace.record(now, &name, || Step::ClosedVerdict {
            witnesses: witnesses.clone(),
        });
        // Kept while it stays failed, so that its broadcast and our packets name them.
        self.closed_verdicts.insert(slot, witnesses);
        self.transition(now, slot, State::Failed, incarnation, Source::Gossip);
        // And to each neighbour at once: the verdict is all there is to hear (no suspicion
        // spread first), and gossip alone missed a member now and then (1 crash in 500 at
        // 50 members, seen 22 s later in a push-pull). Costs a datagram per neighbour.
        let me = self.me;
        let neighbours = self.neighbours_or_random(2 * self.config.observers.max(4), |s, m| {
            s != me && s != slot && m.state == State::Alive
        });
        for neighbour in neighbours {
            if let Some(addr) = self.members.info(neighbour).map(|i| i.addr) {
                self.send_with(addr, Some(neighbour), Message::Gossip, Some(slot));
            }
        }
    }

    /// Moves a member to a new state, with its event and, unless restored, its broadcast.
    fn transition(
        &mut self,
        now: Instant,
        slot: Slot,
        state: State,
        incarnation: Incarnation,
        source: Source,
    ) {
        let Some(previous) = self.members.get(slot).map(|m| m.state) else {
            return;
        };
        self.members.set_state(slot, state, incarnation, now);
        if state != State::Suspect {
            self.end_suspicion(slot);
            self.closed_ports.remove(&slot);
        }
        if state != State::Failed {
            self.closed_verdicts.remove(&slot);
        }
        match state {
            State::Failed => self.schedule(now + self.config.reap_failed_after, Timer::Reap(slot)),
            State::Left => self.schedule(now + self.config.reap_left_after, Timer::Reap(slot)),
            _ => {}
        }
        if source != Source::Restore {
            let kind = match (previous, state) {
                (State::Failed, State::Alive) => EventKind::Recovered,
                (State::Left, State::Alive) => EventKind::Joined,
                (_, State::Alive) => EventKind::Updated,
                (_, State::Suspect) => EventKind::Suspect,
                (_, State::Failed) => EventKind::Failed,
                (_, State::Left) => EventKind::Left,
            };
            self.emit(kind, slot, Some(previous));
        }
        // A recovery learnt in a push-pull is news for everyone on our side of a healed
        // partition too: pass it on (other sync state stays with us).
        let recovered = previous == State::Failed && state == State::Alive;
        if (source == Source::Gossip || (source == Source::Sync && recovered))
            && state != State::Suspect
        {
            self.enqueue_broadcast(slot);
            self.schedule_gossip(now);
        }
    }

    /// Forgets the suspicion of `slot`, if any, keeping how many confirmations it had.
    fn end_suspicion(&mut self, slot: Slot) {
        if let Some(suspicion) = self.suspicions.remove(&slot) {
            push_sample(&mut self.confirmation_samples, suspicion.confirmations());
        }
    }

    fn emit(&mut self, kind: EventKind, slot: Slot, previous: Option<State>) {
        if let Some(member) = self.members.get(slot) {
            self.events.push_back(Event {
                kind,
                member: view(member),
                previous,
            });
        }
    }

    fn enqueue_broadcast(&mut self, slot: Slot) {
        if let Some(member) = self.members.get(slot) {
            let mut update = update_of(member);
            if update.state == State::Failed {
                update.from = self.my_info().name.clone();
                update.closed = self.closed_witnesses(slot);
            }
            self.broadcasts.push(slot, wire::encode_update(&update));
        }
    }

    fn announce_self(&mut self, now: Instant) {
        self.enqueue_broadcast(self.me);
        self.schedule_gossip(now);
    }

    fn refute(&mut self, now: Instant, claimed: Incarnation) {
        if claimed < self.incarnation() {
            return; // answered already
        }
        while self
            .recent_refutations
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.recent_refutations.pop_front();
        }
        if self.recent_refutations.len() >= MAX_REFUTATIONS_PER_SEC {
            self.stats.refutations_deferred += 1;
            let first = self.deferred_refutation.is_none();
            self.deferred_refutation =
                Some(self.deferred_refutation.map_or(claimed, |d| d.max(claimed)));
            if first && let Some(&oldest) = self.recent_refutations.front() {
                self.schedule(oldest + Duration::from_secs(1), Timer::DeferredRefutation);
            }
            return;
        }
        self.recent_refutations.push_back(now);
        let incarnation = claimed.max(self.incarnation()).next();
        self.members
            .set_state(self.me, State::Alive, incarnation, now);
        self.stats.refutations += 1;
        self.awareness.apply(1);
        self.announce_self(now);
    }

    /// Applies one claim about a member. `sender` is the peer the claim came through.
    fn apply_update(
        &mut self,
        now: Instant,
        update: Update,
        sender: Option<&NodeName>,
        source: Source,
    ) {
        let mut update = update;
        let Some(slot) = self.members.find(update.name.as_str()) else {
            if matches!(update.state, State::Alive) || source == Source::Restore {
                if source != Source::Restore
                    && bound_incarnation(&mut update, Incarnation(0), false)
                {
                    self.stats.incarnations_bounded += 1;
                }
                self.add_member(now, update, source);
            }
            return;
        };
        if slot == self.me {
            if source != Source::Restore {
                self.update_about_me(now, update, sender);
            }
            return;
        }
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let (current, state) = (member.incarnation, member.state);
        if source != Source::Restore {
            let itself = sender.is_some_and(|s| *s == update.name);
            if bound_incarnation(&mut update, current, itself) {
                self.stats.incarnations_bounded += 1;
            }
        }
        if matches!(update.state, State::Suspect | State::Failed)
            && update.incarnation < current
            && state == State::Alive
            && self.members.overlay().enabled()
        {
            self.answer_stale_accusation(slot, sender);
            return;
        }
        // The accuser: named in the update, else the peer it came from (push-pull from an
        // older agent). Such an unnamed accusation may start a suspicion but never confirms
        // one: the peer may only be passing on somebody else's.
        let named = !update.from.as_str().is_empty();
        if matches!(update.state, State::Suspect | State::Failed) && !named {
            update.from = sender.cloned().unwrap_or_default();
        }
        // Accusations from members we believe suspect or failed are not trusted: a member
        // that cannot hear acks, or the far side of a healed partition, would otherwise
        // fail healthy members (ours).
        if matches!(update.state, State::Suspect | State::Failed) {
            let distrusted = self
                .members
                .find(update.from.as_str())
                .filter(|&s| s != self.me)
                .and_then(|s| self.members.get(s))
                .is_some_and(|m| matches!(m.state, State::Suspect | State::Failed));
            if distrusted {
                return;
            }
        }
        let source = match source {
            Source::Sync if sender.is_some_and(|s| *s == update.name) => Source::Gossip,
            other => other,
        };
        match update.state {
            State::Alive => {
                let newer = update.incarnation > current;
                // The same claim again, but whole: an agent older than the maintenance and
                // software fields relays a claim without them, and whoever heard that first
                // holds it stripped (no software: every newer member states its own). The
                // member's own word, or a relay that carries its software, completes it.
                // Details only: it refutes nothing (that takes a higher incarnation).
                let completes = update.incarnation == current
                    && state == State::Alive
                    && (sender.is_some_and(|s| *s == update.name)
                        || (member.info.software.is_none() && update.software.is_some()));
                if !newer && source != Source::Restore && !completes {
                    return;
                }
                let same_claim = !newer && source != Source::Restore;
                let mut changed = false;
                let before = member.info.health();
                let mut after = before;
                if let (Some(addr), Some(tags)) = (update.addr, update.tags) {
                    let info = member.info.clone();
                    let fresh = MemberInfo::new(info.name.clone(), addr.0, tags)
                        .with_failing(update.failing.unwrap_or_default())
                        .with_maintenance(update.maintenance)
                        .with_software(update.software);
                    after = fresh.health();
                    if *info != fresh {
                        changed = true;
                        self.members.set_info(slot, Arc::new(fresh));
                    }
                }
                if same_claim {
                    // Not gossiped again: every holder of a stripped copy doing so would send
                    // N x N updates at once after a restore or an upgrade; the member's own
                    // gossip and its push-pulls complete the others. No event unless the
                    // health itself turned (the release alone is no membership change).
                    if changed && before != after {
                        self.emit_health(slot, before, after);
                    }
                    return;
                }
                if state == State::Alive {
                    self.members
                        .set_state(slot, State::Alive, update.incarnation, now);
                    if changed && source != Source::Restore {
                        self.emit_health(slot, before, after);
                    }
                    if source == Source::Gossip {
                        self.enqueue_broadcast(slot);
                        self.schedule_gossip(now);
                    }
                } else {
                    self.trace.record(now, &update.name, || Step::Alive {
                        incarnation: update.incarnation,
                        via: sender.cloned(),
                    });
                    self.transition(now, slot, State::Alive, update.incarnation, source);
                }
            }
            State::Suspect if named || state == State::Alive => {
                let (incarnation, from) = (update.incarnation, update.from);
                self.suspect(now, slot, incarnation, from, sender, source);
                if !update.closed.is_empty() && self.suspected_at(slot, incarnation) {
                    self.note_closed_witnesses(now, slot, &update.closed, sender);
                }
            }
            State::Suspect => {}
            State::Failed => {
                if update.incarnation < current || matches!(state, State::Failed | State::Left) {
                    return;
                }
                if state == State::Alive {
                    let accuser = update.from.clone();
                    self.suspect(now, slot, update.incarnation, accuser, sender, source);
                }
                if !update.closed.is_empty()
                    && self.suspected_at(slot, update.incarnation)
                    && self.note_closed_witnesses(now, slot, &update.closed, sender)
                {
                    return; // its observers found its port closed: no need to wait
                }
                // A verdict on a member we did not suspect, or only just began to: check it
                // ourselves and accept the verdict only once our suspicion is half its minimum
                // old, so the member gets a chance to refute in our eyes. A crashed member
                // costs nothing more (we rarely hear a verdict before the suspicion); a
                // confused member, or the far side of a healed partition, cannot fail a
                // healthy one (ours).
                let half_min = self.config.suspicion_bounds(self.members.live()).0 / 2;
                let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                    return;
                };
                let accepted = now >= suspicion.started() + half_min;
                self.trace.record(now, &update.name, || Step::VerdictHeard {
                    accuser: update.from.clone(),
                    via: sender.cloned(),
                    accepted,
                });
                let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                    return;
                };
                if !accepted {
                    let at = suspicion.accept_verdict_at(suspicion.started() + half_min);
                    self.schedule(at, Timer::Suspicion(slot));
                    if !self.probing(slot) {
                        self.start_probe(now, slot, ProbeKind::Check);
                    }
                    return;
                }
                self.transition(now, slot, State::Failed, update.incarnation, source);
            }
            State::Left => {
                if update.incarnation < current || state == State::Left {
                    return;
                }
                self.transition(now, slot, State::Left, update.incarnation, source);
            }
        }
    }

    fn insert_member(
        &mut self,
        now: Instant,
        info: Arc<MemberInfo>,
        incarnation: Incarnation,
        state: State,
    ) -> Slot {
        let slot = self.members.insert(
            Member {
                info,
                incarnation,
                state,
                since: now,
            },
            &mut self.rng,
        );
        match state {
            State::Failed => self.schedule(now + self.config.reap_failed_after, Timer::Reap(slot)),
            State::Left => self.schedule(now + self.config.reap_left_after, Timer::Reap(slot)),
            State::Alive | State::Suspect => {}
        }
        slot
    }

    fn add_member(&mut self, now: Instant, update: Update, source: Source) {
        if self.members.len() >= MAX_MEMBERS {
            self.stats.members_refused += 1;
            return;
        }
        let addr = update.addr.map(|a| a.0).unwrap_or(WireAddr::default().0);
        let info = Arc::new(
            MemberInfo::new(update.name, addr, update.tags.unwrap_or_default())
                .with_failing(update.failing.unwrap_or_default())
                .with_maintenance(update.maintenance.filter(|_| update.state == State::Alive))
                .with_software(update.software.filter(|_| update.state == State::Alive)),
        );
        let slot = self.insert_member(now, info, update.incarnation, update.state);
        if self.members.live() > 1 {
            self.joined = true;
        }
        if source != Source::Restore {
            self.emit(EventKind::Joined, slot, None);
        }
        if source == Source::Gossip {
            self.enqueue_broadcast(slot);
            self.schedule_gossip(now);
        }
    }

    fn update_about_me(&mut self, now: Instant, update: Update, sender: Option<&NodeName>) {
        let current = self.incarnation();
        if self.leaving {
            return;
        }
        // An accusation is followed at most one step above what we hold: had we jumped to
        // a forged `left@u64::MAX`, its repeats would look stale to us while the others,
        // holding us far lower, took them. An alive claim is followed all the way: every
        // receiver takes our answer at most one step above what it holds, always news.
        let mut update = update;
        if update.state != State::Alive
            && bound_incarnation(
                &mut update,
                Incarnation(current.0.saturating_add(MAX_INCARNATION_STEP - 1)),
                false,
            )
        {
            self.stats.incarnations_bounded += 1;
        }
        match update.state {
            State::Alive => {
                let me = self.my_info();
                let differs = update.addr.is_some_and(|a| a.0 != me.addr)
                    || update.tags.as_ref().is_some_and(|t| *t != me.tags)
                    || update.failing.as_ref().is_some_and(|f| *f != me.failing)
                    // `None` is also what an agent that predates maintenance relays: were
                    // it a difference, each relay would make us refute again.
                    || update.maintenance.as_ref().is_some_and(|r| Some(r) != me.maintenance.as_ref());
                // A newer incarnation of us (from before a restart that lost our state), or
                // the same one with other details: outbid it.
                if update.incarnation > current || (update.incarnation == current && differs) {
                    self.refute(now, update.incarnation);
                }
            }
            State::Suspect => {
                if update.incarnation >= current {
                    let after_link_check = self.awareness.score() > 0;
                    self.trace_refuting(now, &update, sender, after_link_check);
                    if after_link_check {
                        // Some of our own probes failed without nacks: we may be the culprit,
                        // so we refute only once our links are shown to work.
                        self.refute_after_link_check(now, update.incarnation);
                        return;
                    }
                    self.refute(now, update.incarnation);
                }
                if sender != Some(&update.from) {
                    self.tell_accuser(&update.from);
                }
                if let Some(sender) = sender {
                    // The sender still holds the suspicion: it missed our refutation.
                    self.tell_sender(sender);
                }
            }
            State::Failed | State::Left => {
                if update.incarnation >= current {
                    self.trace_refuting(now, &update, sender, true);
                    // The cluster agreed we are gone: claim otherwise only once our links
                    // are shown to work, whatever our health score says.
                    self.refute_after_link_check(now, update.incarnation);
                    return;
                }
                if sender != Some(&update.from) {
                    self.tell_accuser(&update.from);
                }
                if let Some(sender) = sender {
                    self.tell_sender(sender);
                }
            }
        }
    }

    fn trace_refuting(
        &mut self,
        now: Instant,
        update: &Update,
        sender: Option<&NodeName>,
        after_link_check: bool,
    ) {
        self.trace.record(now, &update.name, || Step::Refuting {
            claimed: update.incarnation,
            accuser: update.from.clone(),
            via: sender.cloned(),
            after_link_check,
        });
    }

    /// Sends our view of `slot` to a random neighbour (see `answer_stale_accusation`).
    fn ask_a_neighbour_about(&mut self, slot: Slot) {
        let me = self.me;
        let peers =
            self.neighbours_or_random(1, |s, m| s != me && s != slot && m.state == State::Alive);
        if let Some(&peer) = peers.first()
            && let Some(addr) = self.members.info(peer).map(|i| i.addr)
        {
            self.send_with(addr, Some(peer), Message::Gossip, Some(slot));
        }
    }

    /// A peer accused `slot` at an incarnation it has already refuted: answer with our view,
    /// so the peer (which missed the refutation) does not fail a live member when its
    /// suspicion runs out. One answer per such packet, so this cannot amplify.
    fn answer_stale_accusation(&mut self, slot: Slot, sender: Option<&NodeName>) {
        let Some(peer) = sender
            .and_then(|s| self.members.find(s.as_str()))
            .filter(|&p| p != self.me && p != slot)
        else {
            return;
        };
        if let Some(addr) = self.members.info(peer).map(|i| i.addr) {
            self.send_with(addr, Some(peer), Message::Gossip, Some(slot));
        }
    }

    /// Answers a packet that carried a stale accusation of us with our current view: the
    /// sender missed our refutation (gossip reaches all but a few members; a missed one
    /// would fail us when its suspicion runs out). One answer per such packet, so this
    /// cannot amplify; the packet may be lost, so every one is answered.
    fn tell_sender(&mut self, sender: &NodeName) {
        let Some(slot) = self.members.find(sender.as_str()).filter(|&s| s != self.me) else {
            return;
        };
        let Some(addr) = self.members.info(slot).map(|i| i.addr) else {
            return;
        };
        let me = self.me;
        self.send_with(addr, Some(slot), Message::Gossip, Some(me));
    }

    /// Sends our refutation straight to whoever accused us (at most 8 per incarnation): its
    /// suspicion started first, so its timer runs out first, and gossip alone may reach it
    /// late.
    fn tell_accuser(&mut self, accuser: &NodeName) {
        let incarnation = self.incarnation();
        if self.told_accusers.0 != incarnation {
            self.told_accusers = (incarnation, Vec::new());
        }
        if accuser.as_str().is_empty()
            || self.told_accusers.1.contains(accuser)
            || self.told_accusers.1.len() >= 8
        {
            return;
        }
        let Some(slot) = self.members.find(accuser.as_str()) else {
            return;
        };
        let Some(addr) = self.members.info(slot).map(|i| i.addr) else {
            return;
        };
        self.told_accusers.1.push(accuser.clone());
        let me = self.me;
        self.send_with(addr, Some(slot), Message::Gossip, Some(me));
    }

    fn reap(&mut self, now: Instant, slot: Slot) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let after = match member.state {
            State::Failed => self.config.reap_failed_after,
            State::Left => self.config.reap_left_after,
            _ => return,
        };
        if now.saturating_duration_since(member.since) < after {
            return;
        }
        self.emit(EventKind::Reaped, slot, Some(member.state));
        self.broadcasts.remove(slot);
        self.suspicions.remove(&slot);
        self.closed_ports.remove(&slot);
        self.closed_verdicts.remove(&slot);
        self.members.remove(slot);
    }

    // ----- dissemination ------------------------------------------------------------------

    fn schedule_gossip(&mut self, now: Instant) {
        if self.gossip_scheduled {
            return;
        }
        self.gossip_scheduled = true;
        let at = match self.last_gossip {
            Some(last) => (last + self.config.gossip_interval).max(now),
            None => now,
        };
        // A little jitter keeps members from gossiping in lockstep: rounds that all fire at
        // the same instant race with the very updates they carry.
        let jitter = self.random_fraction_of(self.config.gossip_interval / 5);
        self.schedule(at + jitter, Timer::Gossip);
    }

    fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() && self.notes.is_empty() {
            return;
        }
        self.last_gossip = Some(now);
        let me = self.me;
        let dead_window = self.config.gossip_to_the_dead;
        let overlay = self.members.overlay().clone();
        let mut targets = self.neighbours_or_random(self.config.gossip_nodes, |s, m| {
            s != me
                && match m.state {
                    State::Alive | State::Suspect => true,
                    State::Failed => now.saturating_duration_since(m.since) < dead_window,
                    State::Left => false,
                }
        });
        if overlay.enabled() {
            // The dead we would watch, so a member failed by mistake hears it and refutes.
            let dead = self.members.random_failed(&mut self.rng, &[], |m| {
                now.saturating_duration_since(m.since) < dead_window
                    && overlay.would_watch(m.info.ring_hash)
            });
            targets.extend(dead);
        }
        for target in targets {
            if let Some(addr) = self.members.info(target).map(|i| i.addr) {
                self.send(addr, Some(target), Message::Gossip);
            }
        }
        if !self.broadcasts.is_empty() || !self.notes.is_empty() {
            self.schedule_gossip(now);
        }
    }

    /// Encodes a datagram to `to` with as many queued updates as fit the budget. A member we
    /// believe suspect or failed gets our view of itself first (Lifeguard's buddy system,
    /// extended to failure), so it can refute at once.
    fn send(&mut self, to: SocketAddr, slot: Option<Slot>, message: Message) {
        self.send_with(to, slot, message, None);
    }

    /// [`Swim::send`], with our current view of member `about` first in the packet.
    fn send_with(
        &mut self,
        to: SocketAddr,
        slot: Option<Slot>,
        message: Message,
        about: Option<Slot>,
    ) {
        let kind = message.kind();
        let mut payload = Vec::with_capacity(self.config.datagram_budget);
        wire::encode_head(
            self.cluster,
            &self.my_info().name.clone(),
            &message,
            &mut payload,
        );
        let mut updates = Vec::new();
        let mut count = 0;
        let room = self
            .config
            .datagram_budget
            .saturating_sub(payload.len() + 3);
        let buddy = slot.filter(|&s| {
            self.members
                .get(s)
                .is_some_and(|m| matches!(m.state, State::Suspect | State::Failed))
        });
        for member_slot in [buddy, about].into_iter().flatten() {
            let Some(member) = self.members.get(member_slot) else {
                continue;
            };
            let mut update = update_of(member);
            // Name the first accuser, so the suspect can answer it directly.
            update.from = match update.state {
                State::Suspect => self
                    .suspicions
                    .get(&member_slot)
                    .map(|s| s.first_accuser().clone())
                    .unwrap_or_else(|| self.my_info().name.clone()),
                State::Failed => self.my_info().name.clone(),
                _ => NodeName::default(),
            };
            update.closed = self.closed_witnesses(member_slot);
            let bytes = wire::encode_update(&update);
            if bytes.len() <= room.saturating_sub(updates.len()) {
                updates.extend_from_slice(&bytes);
                count += 1;
            }
        }
        let limit = self.config.retransmit_limit(self.members.live());
        // Only packets to members we believe alive use up an update's transmissions; those
        // to suspect or failed members (probes, reconnects, gossip to the dead) carry
        // updates too, but in a partition they are lost, and the members on our side would
        // miss the verdicts (ours).
        let counted = slot
            .and_then(|s| self.members.get(s))
            .is_none_or(|m| m.state == State::Alive);
        let room = room - updates.len();
        // `about` is in the packet already; sending it twice would also count a transmission
        // of it that gossip still has to make.
        let exclude = [slot, about];
        count += if !counted {
            self.broadcasts.fill_uncounted(room, &exclude, &mut updates)
        } else {
            self.broadcasts.fill(room, limit, &exclude, &mut updates)
        };
        wire::encode_updates_len(count, &mut payload);
        payload.extend_from_slice(&updates);
        if !self.notes.is_empty() {
            // One byte turns the packet array into five elements, plus the notes' header.
            let room = self
                .config
                .datagram_budget
                .saturating_sub(payload.len() + 4);
            let mut notes = Vec::new();
            self.notes.fill(room, limit, &mut notes);
            let notes: Vec<&[u8]> = notes.iter().map(Vec::as_slice).collect();
            wire::append_notes(&mut payload, &notes);
        }
        self.transmits.push_back(Transmit {
            to,
            to_name: slot
                .and_then(|s| self.members.info(s))
                .map(|i| i.name.clone()),
            payload,
            channel: Channel::Datagram,
            kind,
        });
    }

    // ----- anti-entropy -------------------------------------------------------------------

    fn contact_seeds(&mut self, now: Instant) {
        let my_addr = self.my_info().addr;
        let seeds: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|&s| s != my_addr)
            .collect();
        for seed in seeds {
            self.send_push_pull(now, seed, None, true, false);
        }
    }

    fn push_pull(&mut self, now: Instant, slot: Slot, join: bool) {
        if let Some(addr) = self.members.info(slot).map(|i| i.addr) {
            self.send_push_pull(now, addr, Some(slot), join, false);
        }
    }

    /// Starts a push-pull. A join sends everything; otherwise we send ourselves, the peer as
    /// we see it (so it can refute), and our digest: the peer answers with its members of
    /// every ring bucket where the digests differ and we send ours back, so the exchange
    /// costs a few hundred bytes when views agree and heals exactly what differs.
    fn send_push_pull(
        &mut self,
        now: Instant,
        to: SocketAddr,
        peer: Option<Slot>,
        join: bool,
        reply: bool,
    ) {
        let (members, digest) = if join {
            (
                self.members
                    .iter()
                    .map(|(s, m)| self.describe(s, m))
                    .collect(),
                Digest::default(),
            )
        } else {
            (
                self.self_and_peer(peer),
                Digest(self.members.digest().to_vec()),
            )
        };
        self.stats.push_pulls_started += 1;
        let message = PushPull {
            join,
            reply,
            members,
            digest,
            buckets: Vec::new(),
        };
        self.send_stream(now, to, peer, message);
    }

    fn self_and_peer(&self, peer: Option<Slot>) -> Vec<Update> {
        let mut slots = vec![self.me];
        slots.extend(peer.filter(|&p| p != self.me));
        slots
            .iter()
            .filter_map(|&s| self.members.get(s).map(|m| self.describe(s, m)))
            .collect()
    }

    /// Our members of `buckets`, stopping before `push_pull_max_members`; returns the
    /// buckets actually covered.
    fn bucket_members(
        &self,
        buckets: impl Iterator<Item = usize>,
        out: &mut Vec<Update>,
    ) -> Vec<u8> {
        let mut covered = Vec::new();
        for bucket in buckets {
            let members: Vec<Update> = self
                .members
                .bucket(bucket)
                .filter(|&s| s != self.me)
                .filter_map(|s| self.members.get(s).map(|m| self.describe(s, m)))
                .collect();
            if !covered.is_empty() && out.len() + members.len() > self.config.push_pull_max_members
            {
                break;
            }
            out.extend(members);
            covered.push(bucket as u8);
        }
        covered
    }

    fn send_stream(&mut self, now: Instant, to: SocketAddr, peer: Option<Slot>, message: PushPull) {
        let mut payload = Vec::new();
        let message = Message::PushPull(message);
        let kind = message.kind();
        wire::encode_packet(
            self.cluster,
            &self.my_info().name.clone(),
            &message,
            &[],
            &mut payload,
        );
        self.transmits.push_back(Transmit {
            to,
            to_name: peer
                .and_then(|s| self.members.info(s))
                .map(|i| i.name.clone()),
            payload,
            channel: Channel::Stream,
            kind,
        });
        let _ = now;
    }

    fn on_push_pull(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: &NodeName,
        push_pull: PushPull,
        members: &Encoded<Update>,
    ) {
        // A received push-pull's members are in `members`, still encoded.
        let PushPull {
            join,
            reply,
            members: _,
            digest,
            buckets,
        } = push_pull;
        let before = *self.members.digest();
        for update in members.iter() {
            self.apply_update(now, update, Some(sender), Source::Sync);
        }
        let taught = before != *self.members.digest();
        let peer = self.members.find(sender.as_str());
        if reply {
            // A sync that taught us something (gossip missed it) suggests more is missing:
            // sync again soon with another neighbour, until one teaches nothing. Members
            // hear gossip from their few neighbours only, and in a burst of joins now and
            // then all of them send an update elsewhere.
            if taught && !join && !self.sync_again_scheduled && !self.leaving {
                self.sync_again_scheduled = true;
                let delay = self.config.gossip_interval * 4;
                self.schedule(now + delay, Timer::SyncAgain);
            }
            if join {
                self.join_peer = peer;
                // Members that joined just before us may not have reached the seed yet, and
                // gossip of joins in a fresh cluster misses a few (an update is sent a
                // bounded number of times): digest exchanges about 1, 5, 20 and 80 gossip
                // intervals after joining settle it, the first with this peer.
                let delay = self.config.gossip_interval
                    + self.random_fraction_of(self.config.gossip_interval);
                self.schedule(now + delay, Timer::SyncAfterJoin(0));
            }
            self.joined = true;
            if !buckets.is_empty() {
                // Second half of a digest exchange: our members of the buckets that differed.
                let mut members = Vec::new();
                let wanted = buckets
                    .iter()
                    .map(|&b| usize::from(b))
                    .filter(|&b| b < DIGEST_BUCKETS);
                self.bucket_members(wanted, &mut members);
                let message = PushPull {
                    reply: true,
                    members,
                    ..PushPull::default()
                };
                self.send_stream(now, from, peer, message);
            }
            return;
        }
        self.stats.push_pulls_answered += 1;
        let mut members = if join {
            self.members
                .iter()
                .map(|(s, m)| self.describe(s, m))
                .collect()
        } else {
            self.self_and_peer(peer)
        };
        let mut covered = Vec::new();
        if !join {
            let ours = self.members.digest();
            let differing: Vec<usize> = (0..DIGEST_BUCKETS)
                .filter(|&b| digest.0.get(b) != ours.get(b))
                .collect();
            // Start at a random differing bucket so capped exchanges cover all in turn.
            let offset = (self.rng.next_u64() % differing.len().max(1) as u64) as usize;
            let rotated = differing
                .iter()
                .cycle()
                .skip(offset)
                .take(differing.len())
                .copied();
            covered = self.bucket_members(rotated, &mut members);
        }
        let message = PushPull {
            join,
            reply: true,
            members,
            digest: Digest::default(),
            buckets: covered,
        };
        self.send_stream(now, from, peer, message);
    }

    fn sync_with_random_member(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let me = self.me;
        let peers = self.neighbours_or_random(1, |s, m| s != me && m.state == State::Alive);
        if let Some(&peer) = peers.first() {
            self.push_pull(now, peer, false);
        }
    }

    fn reconnect(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let pending: Vec<Slot> = self
            .probes
            .values()
            .filter(|p| p.kind == ProbeKind::Reconnect)
            .map(|p| p.target)
            .collect();
        // With the overlay, a failed member is retried by the members that would watch it
        // (about `observers` of them), not by everyone: each retry to a dead address costs
        // a handshake's Initial packets.
        let overlay = self.members.overlay();
        let watched = |m: &Member| !overlay.enabled() || overlay.would_watch(m.info.ring_hash);
        if let Some(slot) = self.members.random_failed(&mut self.rng, &pending, watched) {
            self.start_probe(now, slot, ProbeKind::Reconnect);
        }
    }

    /// A member as we describe it in a push-pull: a suspect names its first accuser, so the
    /// peer does not take us for a second, independent one (two members syncing would
    /// otherwise mint two confirmations out of one accusation).
    fn describe(&self, slot: Slot, m: &Member) -> Update {
        let mut update = update_of(m);
        if m.state == State::Suspect
            && let Some(s) = self.suspicions.get(&slot)
        {
            update.from = s.first_accuser().clone();
        }
        update
    }

    fn my_info(&self) -> &Arc<MemberInfo> {
        match self.members.info(self.me) {
            Some(info) => info,
            None => unreachable!("our own slot is never removed"),
        }
    }
}

/// Lowers a claim's incarnation to what its sender may claim, given the `current` we hold
/// (true if it did): an accusation refers at most to `current` (a `left` not from the
/// member itself to one above, the step a leave takes), and nobody raises a member more
/// than `MAX_INCARNATION_STEP` at once. An honest claim is never changed; a forged
/// `failed@u64::MAX` becomes an accusation the member can refute, and a forged jump cannot
/// exhaust the counter.
fn bound_incarnation(update: &mut Update, current: Incarnation, itself: bool) -> bool {
    let bound = match update.state {
        // Refuted by one step, and not ratcheted up: each repeat is at the same level.
        State::Suspect | State::Failed => current,
        // A member leaves one incarnation up: relayed, that step is taken too.
        State::Left if !itself => current.next(),
        State::Left | State::Alive => Incarnation(current.0.saturating_add(MAX_INCARNATION_STEP)),
    };
    let lowered = update.incarnation > bound;
    if lowered {
        update.incarnation = bound;
    }
    lowered
}

/// `x` as a fraction in [0, 1).
fn unit_fraction(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn view(m: &Member) -> MemberView {
    MemberView {
        info: m.info.clone(),
        incarnation: m.incarnation,
        state: m.state,
        since: m.since,
    }
}

fn update_of(m: &Member) -> Update {
    let alive = m.state == State::Alive;
    Update {
        name: m.info.name.clone(),
        incarnation: m.incarnation,
        state: m.state,
        from: NodeName::default(),
        addr: Some(WireAddr(m.info.addr)),
        tags: alive.then(|| m.info.tags.clone()),
        failing: alive.then(|| m.info.failing.clone()),
        closed: Vec::new(),
        maintenance: m.info.maintenance.clone().filter(|_| alive),
        software: m.info.software.clone().filter(|_| alive),
    }
}
