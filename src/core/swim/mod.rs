//! The protocol state machine.

mod crash;
mod gossip;
mod link_check;
mod membership;
mod probe;
mod proof;
mod suspect;
mod sync;
mod timers;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::awareness::Awareness;
use super::broadcast::BroadcastQueue;
use super::keyring::{Keyring, ModelKeyring, Proven};
use super::members::{DIGEST_BUCKETS, Health, Member, MemberInfo, Members, Slot, hash64};
use super::notes::Notes;
use super::suspicion::Suspicion;
use super::trace::{Step, Trace, TraceEntry};
use super::{Channel, Config, Event, EventKind, KnownMember, MemberView, Stats, Transmit};
use crate::wire::{
    self, Ack, Blob, ClusterId, Credential, Digest, Encoded, Incarnation, MAX_CLOSED_WITNESSES,
    Message, Nack, NodeName, Note, Ping, PingReq, PushPull, Received, Software, State, Tags,
    Update, WireAddr,
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
    /// Credential requests batched for peers are due (see `proof.rs`).
    AskCredentials,
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

/// Most members queued to be probed out of their turn (relays that stayed silent).
const MAX_PROBE_NEXT: usize = 8;
/// When a relay nacks, as a fraction of the probe timeout: the requester decides at its
/// probe interval, and a nack at the full timeout would arrive just after that decision.
const RELAY_NACK_AT: (u32, u32) = (4, 5);
/// Bytes the updates array's header takes beyond the packet's head (a datagram never holds
/// more than 65,535 updates: msgpack array16 at most).
const UPDATES_HEADER_LEN: usize = 3;
/// Bytes the notes take beyond the updates: one turns the packet array into five
/// elements, three for the notes array's header.
const NOTES_HEADER_LEN: usize = 4;
/// Gossip intervals before another sync, after a sync that taught us something.
const SYNC_AGAIN_AFTER: u32 = 4;
/// Digest exchanges after joining (about 1, 5, 20 and 80 gossip intervals after it).
const SYNCS_AFTER_JOIN: u8 = 4;
/// Longest wait between failed link checks, in probe intervals.
const LINK_CHECK_MAX_BACKOFF: u32 = 16;

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
    /// Signs our statements, checks others' (see `proof.rs`).
    keyring: Box<dyn Keyring>,
    /// Statements held until their maker's credential arrives, by member.
    pending: HashMap<NodeName, proof::Pending>,
    /// Credentials asked for, and when.
    asked: HashMap<NodeName, Instant>,
    /// Credentials to ask for, by the peer that passed the statements on (and its address:
    /// it may be news to us too).
    wanted: BTreeMap<NodeName, (SocketAddr, Vec<NodeName>)>,
    /// Notes held until their maker's credential arrives.
    pending_notes: VecDeque<(Note, Instant)>,
    /// Where the packet being handled came from.
    packet_from: Option<SocketAddr>,
    ask_scheduled: bool,
    /// Until when our push-pulls carry our credential (after a new keyring).
    tell_credential_until: Option<Instant>,
    /// Members seen signing their statements (kept under `accept_unsigned` only).
    signers: std::collections::HashSet<NodeName>,
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
        let keyring = Box::new(ModelKeyring::knowing_all(identity.name.clone()));
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
                proof: None,
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
            keyring,
            pending: HashMap::new(),
            asked: HashMap::new(),
            wanted: BTreeMap::new(),
            pending_notes: VecDeque::new(),
            packet_from: None,
            ask_scheduled: false,
            signers: std::collections::HashSet::new(),
            tell_credential_until: None,
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
        let mut fresh = Vec::new();
        for known in members {
            if self.members.find(known.info.name.as_str()).is_some() {
                continue;
            }
            // Checked again (the CA or the revocation lists may have changed meanwhile).
            if let Some(chain) = &known.credential
                && !self.keyring.holds(&known.info.name, chain.as_bytes())
            {
                self.keyring.learn(&known.info.name, chain.as_bytes());
            }
            fresh.push(Member {
                info: known.info,
                incarnation: known.incarnation,
                state: known.state,
                since: now,
                proof: known.proof,
            });
        }
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
        self.packet_from = Some(from);
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
                self.receive_note(now, note, Some(&sender));
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
        self.packet_from = None;
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
        let mut note = Note {
            key,
            from: self.my_info().name.clone(),
            proof: None,
        };
        note.proof = self
            .keyring
            .sign(&wire::note_statement(self.cluster, &note))
            .map(Blob::from);
        if !self.notes.publish(note) {
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

    /// The next note learnt from a peer (each note once), with the member that made it.
    pub fn poll_note(&mut self) -> Option<(String, NodeName)> {
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

    /// Every member as held, with its proof: what a state directory keeps.
    pub fn known_members(&self) -> impl Iterator<Item = KnownMember> + '_ {
        self.members.iter().map(|(_, m)| KnownMember {
            info: m.info.clone(),
            incarnation: m.incarnation,
            state: m.state,
            proof: m.proof.clone(),
            credential: self.keyring.credential(&m.info.name).map(Blob::from),
        })
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

    /// A member as we describe it in a push-pull: a suspect names its first accuser, so the
    /// peer does not take us for a second, independent one (two members syncing would
    /// otherwise mint two confirmations out of one accusation).
    fn describe(&self, slot: Slot, m: &Member) -> Update {
        let mut update = update_of(m);
        if m.state == State::Suspect
            && let Some(s) = self.suspicions.get(&slot)
        {
            update.from = s.first_accuser().clone();
            update.proof = self.accusation_proof(slot, &update);
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
    describe(&m.info, m.incarnation, m.state, m.proof.clone())
}

/// The update that describes a member as held (what relays pass on; for `alive` and `left`
/// what its proof signs).
pub(crate) fn describe(
    info: &MemberInfo,
    incarnation: Incarnation,
    state: State,
    proof: Option<Blob>,
) -> Update {
    let alive = state == State::Alive;
    Update {
        name: info.name.clone(),
        incarnation,
        state,
        from: NodeName::default(),
        addr: Some(WireAddr(info.addr)),
        tags: alive.then(|| info.tags.clone()),
        failing: alive.then(|| info.failing.clone()),
        closed: Vec::new(),
        maintenance: info.maintenance.clone().filter(|_| alive),
        software: info.software.clone().filter(|_| alive),
        proof: proof.filter(|_| matches!(state, State::Alive | State::Left)),
    }
}
