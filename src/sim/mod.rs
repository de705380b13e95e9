//! A deterministic discrete-event simulator that drives many real [`Swim`] cores over a
//! virtual network and clock. Every packet goes through the real `wire` encoding, so byte
//! counts are real; the same seed gives the same trace.

mod network;
pub mod scenario;
pub mod sweep;
mod transport;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub use network::Network;
pub use transport::TransportCost;
use transport::{Connections, DialOutcome, Route};

use crate::core::{
    Channel, Config, EventKind, Identity, KnownMember, MemberInfo, ModelKeyring, Swim, TraceEntry,
};
use crate::wire::{self, ClusterId, Incarnation, Message, NodeName, State, Update};

/// Clusters up to this size model who holds whose certificate (see `boot`).
const MODELLED_CREDENTIALS: usize = 1000;

/// Bytes every datagram costs on the wire beyond its payload: IPv4 + UDP (28) and QUIC's
/// short header, AEAD tag and DATAGRAM frame header with 8-byte connection ids (37),
/// calibrated against the measurements in `shared/QUIC-NOTES.md`.
pub const DATAGRAM_OVERHEAD: usize = 65;
/// An ACK-only QUIC packet on the wire (35 B of UDP payload + 28 B IPv4/UDP).
pub const ACK_ONLY_BYTES: usize = 63;
/// Payload bytes of one QUIC packet carrying stream data at a 1200-byte MTU.
pub const STREAM_PACKET_PAYLOAD: usize = 1150;
/// quinn acknowledges an ack-eliciting packet within this delay unless other traffic to the
/// same peer carries the ACK.
pub const ACK_DELAY: Duration = Duration::from_millis(25);
/// Idle connections are closed at this granularity (the idle timeout is minutes).
const EXPIRY_STEP: Duration = Duration::from_secs(5);

/// What a simulated process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Running normally.
    Running,
    /// Stopped (SIGSTOP): packets wait in its backlog, timers wait.
    Paused,
    /// Not running (crashed, or exited after leaving).
    Down,
}

/// One membership event as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Virtual time since the simulation started.
    pub at: Duration,
    /// The node that saw it.
    pub observer: usize,
    /// The node it is about (`usize::MAX` if not a simulated node).
    pub subject: usize,
    /// What happened.
    pub kind: EventKind,
    /// The subject's incarnation in the event.
    pub incarnation: Incarnation,
}

struct Node {
    name: NodeName,
    addr: SocketAddr,
    swim: Option<Swim>,
    process: Process,
    backlog: Vec<(SocketAddr, Vec<u8>, Channel)>,
    wake_at: Option<Instant>,
    /// What the state directory holds across restarts.
    saved: Option<(Incarnation, Vec<KnownMember>)>,
    msgs_sent: u64,
    bytes_sent: u64,
    bytes_with_overhead: u64,
    /// CPU the transport model charged (handshakes, packets).
    cpu: Duration,
    /// The host itself is down (not only the process): nothing answers, not even ICMP.
    host_down: bool,
}

/// Linux's ICMP rate limit per destination (`icmp_ratelimit`): a burst of this many errors,
/// then one per `ICMP_REFILL`.
const ICMP_BURST: f64 = 6.0;
const ICMP_REFILL: Duration = Duration::from_secs(1);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Wake(usize),
    Deliver {
        to: usize,
        from: usize,
        channel: u8,
        payload: Vec<u8>,
    },
    /// A dial between `a` (the dialer) and `b` finished.
    DialDone {
        a: usize,
        b: usize,
        generation: u64,
    },
    /// A dial between `a` (the dialer) and `b` timed out.
    DialFailed {
        a: usize,
        b: usize,
        generation: u64,
    },
    /// An ICMP port unreachable from `from`'s host reaches `to`.
    Unreachable {
        to: usize,
        from: usize,
    },
}

/// The simulator.
pub struct Simulator {
    epoch: Instant,
    now: Instant,
    config: Config,
    cluster: ClusterId,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    by_name: HashMap<NodeName, usize>,
    jobs: BinaryHeap<Reverse<(Instant, u64, Job)>>,
    next_job: u64,
    rng: ChaCha8Rng,
    seed: u64,
    /// The network; change it between steps to inject faults.
    pub network: Network,
    /// What connections cost; change it before the first step.
    pub transport: TransportCost,
    connections: Connections,
    /// Idle connections are closed at this granularity.
    next_expiry: Instant,
    observations: Vec<Observation>,
    notes: Vec<(Duration, usize, String)>,
    /// QUIC ACKs owed: (receiver, sender) → deadline.
    acks_owed: HashMap<(usize, usize), Instant>,
    trace: std::collections::hash_map::DefaultHasher,
    decode_errors: u64,
    /// The member whose story is recorded (see [`Simulator::explain`]).
    explained: Option<NodeName>,
    story: Vec<(Duration, usize, TraceEntry)>,
    /// Per (host, destination): ICMP tokens left and when they were counted.
    icmp_tokens: HashMap<(usize, usize), (f64, Instant)>,
    /// A hostile member that answers direct probes and sends nothing else: it relays no
    /// ping-req, nacks nothing, gossips nothing, answers no push-pull.
    pub black_hole: Option<usize>,
}

impl Simulator {
    /// A simulator with `members` nodes named `node-0`… that are not started yet.
    pub fn new(members: usize, config: Config, seed: u64) -> Self {
        let epoch = Instant::now();
        let handshake_timeout = config.probe_timeout;
        let mut sim = Simulator {
            epoch,
            now: epoch,
            config,
            cluster: ClusterId::of("sim"),
            nodes: Vec::with_capacity(members),
            by_addr: HashMap::new(),
            by_name: HashMap::new(),
            jobs: BinaryHeap::new(),
            next_job: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            network: Network::lan(members),
            transport: TransportCost {
                handshake_timeout,
                ..TransportCost::default()
            },
            connections: Connections::default(),
            next_expiry: epoch,
            observations: Vec::new(),
            notes: Vec::new(),
            acks_owed: HashMap::new(),
            trace: Default::default(),
            decode_errors: 0,
            explained: None,
            story: Vec::new(),
            icmp_tokens: HashMap::new(),
            black_hole: None,
        };
        for _ in 0..members {
            sim.add_node();
        }
        sim
    }

    /// Adds a node (not started) and returns its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let name = NodeName::new(&format!("node-{index}"));
        let octets = (index as u32 + 1).to_be_bytes();
        let addr = SocketAddr::from((Ipv4Addr::new(10, octets[1], octets[2], octets[3]), 7946));
        self.by_addr.insert(addr, index);
        self.by_name.insert(name.clone(), index);
        self.nodes.push(Node {
            name,
            addr,
            swim: None,
            process: Process::Down,
            backlog: Vec::new(),
            wake_at: None,
            saved: None,
            msgs_sent: 0,
            bytes_sent: 0,
            bytes_with_overhead: 0,
            cpu: Duration::ZERO,
            host_down: false,
        });
        self.network.grow(self.nodes.len());
        self.connections.grow(self.nodes.len());
        index
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The seed this run was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts every node already knowing every other (as a restarted agent restores its
    /// state directory): a converged cluster without simulating thousands of joins.
    pub fn start_converged(&mut self) {
        // One shared identity per member, as a real agent would hold one per peer.
        let cluster = self.cluster;
        let everyone: Vec<KnownMember> = self
            .nodes
            .iter()
            .map(|n| {
                let info = MemberInfo::new(n.name.clone(), n.addr, Default::default())
                    .with_software(Some(crate::wire::Software::current()));
                let mut known = KnownMember::new(Arc::new(info), Incarnation(0), State::Alive);
                // Each member's own proof, as a restored agent kept it.
                let statement = crate::wire::statement(cluster, &known.update());
                known.proof = Some(ModelKeyring::proof(&n.name, &statement).into());
                known.credential = Some(ModelKeyring::credential_of(&n.name).into());
                known
            })
            .collect();
        let mut everyone = everyone;
        everyone.sort_by(|a, b| {
            (a.info.ring_hash(), a.info.name.as_str())
                .cmp(&(b.info.ring_hash(), b.info.name.as_str()))
        });
        for i in 0..self.nodes.len() {
            self.boot(i, Incarnation(0));
            let now = self.now;
            if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
                swim.restore(now, everyone.iter().cloned());
            }
            self.after_step(i);
        }
    }

    /// Starts node `i` with a fresh state and joins it through `seeds` (node indices).
    pub fn start_joining(&mut self, i: usize, seeds: &[usize]) {
        self.boot(i, Incarnation(0));
        let seeds: Vec<SocketAddr> = seeds
            .iter()
            .filter_map(|&s| self.nodes.get(s))
            .map(|n| n.addr)
            .collect();
        let now = self.now;
        if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
            swim.join(now, seeds);
        }
        self.after_step(i);
    }

    fn boot(&mut self, i: usize, incarnation: Incarnation) {
        let seed = self.rng.next_u64();
        let (config, cluster, now) = (self.config.clone(), self.cluster, self.now);
        let modelled = self.nodes.len() <= MODELLED_CREDENTIALS;
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        let identity = Identity {
            name: node.name.clone(),
            addr: node.addr,
            cluster,
            tags: Default::default(),
            incarnation,
        };
        let name = identity.name.clone();
        let mut swim = Swim::new(identity, config, seed, now);
        // Certificates are learnt in handshakes and asked of relays, as agents do, up to
        // 1,000 members; beyond, every member holds every one from the start (the table of
        // who holds whose would take 10^8 entries at 10,000).
        if modelled {
            swim.set_keyring(Box::new(ModelKeyring::knowing_none(name)));
        }
        swim.set_trace(self.explained.is_some());
        // Every simulated host's clock reads the same.
        swim.set_wall_clock(now, now - self.epoch);
        node.swim = Some(swim);
        node.process = Process::Running;
        node.host_down = false;
        node.backlog.clear();
        node.wake_at = None;
    }

    /// Takes node `i`'s whole host down (power, kernel panic, network gone): like
    /// [`Simulator::crash`], but nothing answers for it, not even ICMP.
    pub fn crash_host(&mut self, i: usize) {
        self.crash(i);
        if let Some(node) = self.nodes.get_mut(i) {
            node.host_down = true;
        }
    }

    /// Kills node `i`'s process (SIGKILL) on a host that stays up: it stops at once, its
    /// host's kernel answers packets to its port with ICMP port unreachable (rate-limited
    /// like Linux), and its state directory survives.
    pub fn crash(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            if let Some(swim) = node.swim.take() {
                node.saved = Some((swim.incarnation(), swim.known_members().collect()));
            }
            node.process = Process::Down;
            node.backlog.clear();
        }
    }

    /// Starts node `i` again as a new process, with its state directory or without it.
    pub fn restart(&mut self, i: usize, keep_state: bool, seeds: &[usize]) {
        self.crash(i);
        self.connections.reset(i);
        let saved = self.nodes.get_mut(i).and_then(|n| n.saved.take());
        match saved.filter(|_| keep_state) {
            Some((incarnation, members)) => {
                // The agent starts one incarnation above what it persisted.
                self.boot(i, incarnation.next());
                let now = self.now;
                let seeds = seeds
                    .iter()
                    .filter_map(|&s| self.by_index_addr(s))
                    .collect();
                if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
                    swim.restore(now, members);
                    swim.join(now, seeds);
                }
                self.after_step(i);
            }
            None => self.start_joining(i, seeds),
        }
    }

    fn by_index_addr(&self, i: usize) -> Option<SocketAddr> {
        self.nodes.get(i).map(|n| n.addr)
    }

    /// Node `i` leaves gracefully; it keeps running until its announcement went out (at
    /// most `bound`), then exits.
    pub fn leave(&mut self, i: usize, bound: Duration) {
        let now = self.now;
        if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
            swim.leave(now);
        }
        self.after_step(i);
        let deadline = self.now + bound;
        while self.now < deadline {
            let done = self.swim(i).is_none_or(Swim::leave_done);
            if done {
                break;
            }
            let step = (self.now + Duration::from_millis(10)).min(deadline);
            self.run_until_instant(step);
        }
        self.crash(i);
    }

    /// Stops node `i` (SIGSTOP).
    pub fn pause(&mut self, i: usize) {
        if let Some(node) = self
            .nodes
            .get_mut(i)
            .filter(|n| n.process == Process::Running)
        {
            node.process = Process::Paused;
        }
    }

    /// Resumes node `i` (SIGCONT): it handles its backlog, then its overdue timers.
    pub fn resume(&mut self, i: usize) {
        let now = self.now;
        let Some(node) = self
            .nodes
            .get_mut(i)
            .filter(|n| n.process == Process::Paused)
        else {
            return;
        };
        node.process = Process::Running;
        let backlog = std::mem::take(&mut node.backlog);
        for (from, payload, channel) in backlog {
            self.receive(i, from, &payload, channel);
        }
        if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
            swim.handle_timeout(now);
        }
        self.after_step(i);
    }

    /// The process state of node `i`.
    pub fn process(&self, i: usize) -> Process {
        self.nodes.get(i).map_or(Process::Down, |n| n.process)
    }

    /// Node `i`'s core, if it is running or paused.
    pub fn swim(&self, i: usize) -> Option<&Swim> {
        self.nodes.get(i).and_then(|n| n.swim.as_ref())
    }

    /// Node `i`'s name.
    pub fn name(&self, i: usize) -> Option<&NodeName> {
        self.nodes.get(i).map(|n| &n.name)
    }

    /// What `observer` believes about `subject`.
    pub fn view(&self, observer: usize, subject: usize) -> Option<State> {
        let name = self.name(subject)?;
        self.swim(observer)?.member(name.as_str()).map(|m| m.state)
    }

    /// Every membership event recorded so far.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// Has node `i` spread an application note; false if it is down or knew it already.
    pub fn publish_note(&mut self, i: usize, key: &str) -> bool {
        let now = self.now;
        let published = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.swim.as_mut())
            .is_some_and(|swim| swim.publish_note(now, key.to_string()).is_ok());
        self.after_step(i);
        published
    }

    /// Has node `i` publish its service health (the names of its failing checks).
    pub fn set_health(&mut self, i: usize, failing: &[&str]) {
        let now = self.now;
        if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
            swim.set_health(now, failing.iter().map(|c| c.to_string()).collect());
        }
        self.after_step(i);
    }

    /// Puts node `i` in maintenance (`Some(reason)`) or takes it out.
    pub fn set_maintenance(&mut self, i: usize, reason: Option<&str>) {
        let now = self.now;
        if let Some(swim) = self.nodes.get_mut(i).and_then(|n| n.swim.as_mut()) {
            swim.set_maintenance(now, reason.map(str::to_string));
        }
        self.after_step(i);
    }

    /// Records, from now on, every step of node `subject`'s story as each core sees it
    /// (who accused it, whose probe failed, which verdict counted; its own refutations).
    pub fn explain(&mut self, subject: usize) {
        self.explained = self.name(subject).cloned();
        for node in &mut self.nodes {
            if let Some(swim) = node.swim.as_mut() {
                swim.set_trace(true);
            }
        }
    }

    /// The recorded story: (when, which node saw it, the step), in time order.
    pub fn story(&self) -> &[(Duration, usize, TraceEntry)] {
        &self.story
    }

    /// Every note handed to a node so far: (when, which node, the key).
    pub fn notes(&self) -> &[(Duration, usize, String)] {
        &self.notes
    }

    /// A hash of every delivery (time, endpoints, bytes): equal seeds give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Packets a receiver could not decode (always 0 unless something is broken).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// (messages, payload bytes, bytes with overhead) sent by node `i` so far, QUIC ACK-only
    /// packets included in the first and last.
    pub fn sent(&self, i: usize) -> (u64, u64, u64) {
        self.nodes.get(i).map_or((0, 0, 0), |n| {
            (n.msgs_sent, n.bytes_sent, n.bytes_with_overhead)
        })
    }

    /// Runs the simulation for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until_instant(until);
    }

    /// Runs until `done` holds (checked every 50 ms of virtual time) or `limit` passes;
    /// returns the time it took, if `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Simulator) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let step = Duration::from_millis(50);
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(step);
        }
    }

    fn run_until_instant(&mut self, until: Instant) {
        while let Some(Reverse((at, _, _))) = self.jobs.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, job))) = self.jobs.pop() else {
                break;
            };
            self.now = self.now.max(at);
            if self.now >= self.next_expiry {
                self.connections.expire(self.now, &self.transport);
                self.next_expiry = self.now + EXPIRY_STEP;
            }
            match job {
                Job::Wake(i) => self.wake(i, at),
                Job::DialDone { a, b, generation } => self.dial_done(a, b, generation),
                Job::DialFailed { a, b, generation } => {
                    let now = self.now;
                    self.connections
                        .dial_failed(now, &self.transport, a, b, generation);
                }
                Job::Deliver {
                    to,
                    from,
                    channel,
                    payload,
                } => {
                    let channel = if channel == 0 {
                        Channel::Datagram
                    } else {
                        Channel::Stream
                    };
                    self.deliver(to, from, payload, channel);
                }
                Job::Unreachable { to, from } => {
                    let Some(addr) = self.by_index_addr(from) else {
                        continue;
                    };
                    let now = self.now;
                    let Some(node) = self.nodes.get_mut(to) else {
                        continue;
                    };
                    if node.process != Process::Running {
                        continue;
                    }
                    if let Some(swim) = node.swim.as_mut() {
                        swim.handle_unreachable(now, addr);
                    }
                    self.after_step(to);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// `host`'s kernel answers a packet from `to` with ICMP port unreachable, if its rate
    /// limit allows, over the network as it is.
    fn port_unreachable(&mut self, host: usize, to: usize, after: Duration) {
        let now = self.now;
        let (tokens, since) = self
            .icmp_tokens
            .entry((host, to))
            .or_insert((ICMP_BURST, now));
        let refilled =
            now.saturating_duration_since(*since).as_secs_f64() / ICMP_REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(ICMP_BURST);
        *since = now;
        if *tokens < 1.0 {
            return;
        }
        *tokens -= 1.0;
        if let Some(delay) = self.network.datagram(host, to, &mut self.rng) {
            self.push_job(now + after + delay, Job::Unreachable { to, from: host });
        }
    }

    fn dial_done(&mut self, a: usize, b: usize, generation: u64) {
        let now = self.now;
        let Some(queued) = self
            .connections
            .dial_done(now, &self.transport, a, b, generation)
        else {
            return;
        };
        for (from, to, channel, payload) in queued {
            self.send_now(from, to, channel, payload);
        }
    }

    /// Open connections of node `i` (after closing those idle for the idle timeout).
    pub fn connections(&mut self, i: usize) -> usize {
        let now = self.now;
        self.connections.expire(now, &self.transport);
        self.connections.open(i)
    }

    /// Handshakes node `i` completed so far, as client and as server.
    pub fn handshakes(&self, i: usize) -> (u64, u64) {
        self.connections
            .handshakes
            .get(i)
            .copied()
            .unwrap_or_default()
    }

    /// Dials node `i` started that failed (no answer within the handshake timeout).
    pub fn dial_failures(&self, i: usize) -> u64 {
        self.connections
            .dial_failures
            .get(i)
            .copied()
            .unwrap_or_default()
    }

    /// CPU the transport model charged node `i` so far.
    pub fn cpu(&self, i: usize) -> Duration {
        self.nodes.get(i).map_or(Duration::ZERO, |n| n.cpu)
    }

    fn push_job(&mut self, at: Instant, job: Job) {
        self.next_job += 1;
        self.jobs.push(Reverse((at, self.next_job, job)));
    }

    fn wake(&mut self, i: usize, at: Instant) {
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        if node.wake_at != Some(at) || node.process != Process::Running {
            return;
        }
        node.wake_at = None;
        let now = self.now;
        if let Some(swim) = node.swim.as_mut() {
            swim.handle_timeout(now);
        }
        self.after_step(i);
    }

    fn deliver(&mut self, to: usize, from: usize, payload: Vec<u8>, channel: Channel) {
        let Some(from_addr) = self.by_index_addr(from) else {
            return;
        };
        self.trace
            .write_u64((self.now - self.epoch).as_nanos() as u64);
        self.trace.write_usize(from);
        self.trace.write_usize(to);
        self.trace.write(&payload);
        let Some(node) = self.nodes.get_mut(to) else {
            return;
        };
        match node.process {
            Process::Down => {
                if !node.host_down {
                    self.port_unreachable(to, from, Duration::ZERO);
                }
                return;
            }
            Process::Paused => {
                node.backlog.push((from_addr, payload, channel));
                return;
            }
            Process::Running => {}
        }
        self.connections.touch(self.now, to, from);
        let cpu = self.transport.packet_cpu;
        if let Some(node) = self.nodes.get_mut(to) {
            node.cpu += cpu;
        }
        self.owe_ack(to, from);
        self.receive(to, from_addr, &payload, channel);
        self.after_step(to);
    }

    fn receive(&mut self, to: usize, from: SocketAddr, payload: &[u8], channel: Channel) {
        let limit = match channel {
            Channel::Datagram => wire::MAX_DATAGRAM_LEN,
            Channel::Stream => wire::MAX_STREAM_LEN,
        };
        let now = self.now;
        let cluster = self.cluster;
        let Some(swim) = self.nodes.get_mut(to).and_then(|n| n.swim.as_mut()) else {
            return;
        };
        match wire::decode_received(cluster, payload, limit) {
            Ok(packet) => {
                // What the handshake showed: the sender's certificate.
                if !swim.knows_credential(&packet.from) {
                    let credential = ModelKeyring::credential_of(&packet.from);
                    swim.learn_credential(now, &packet.from, &credential);
                }
                swim.handle_packet(now, from, packet)
            }
            Err(_) => self.decode_errors += 1,
        }
    }

    /// An ack-eliciting datagram arrived: the receiver owes the sender a QUIC ACK.
    fn owe_ack(&mut self, receiver: usize, sender: usize) {
        let deadline = self.now + ACK_DELAY;
        if let Some(old) = self.acks_owed.insert((receiver, sender), deadline)
            && old < self.now
        {
            self.count_ack_only(receiver);
        }
    }

    fn count_ack_only(&mut self, node: usize) {
        // Its sender's CPU and its receiver's, charged to the sender (ACKs go both ways).
        let cpu = self.transport.packet_cpu * 2;
        if let Some(n) = self.nodes.get_mut(node) {
            n.msgs_sent += 1;
            n.bytes_with_overhead += ACK_ONLY_BYTES as u64;
            n.cpu += cpu;
        }
    }

    /// Settles ACKs still owed (call before reading [`Simulator::sent`] figures).
    pub fn settle_acks(&mut self) {
        let now = self.now;
        let mut due: Vec<(usize, usize)> = self
            .acks_owed
            .iter()
            .filter(|(_, deadline)| **deadline < now)
            .map(|(k, _)| *k)
            .collect();
        due.sort_unstable();
        for key in due {
            self.acks_owed.remove(&key);
            self.count_ack_only(key.0);
        }
    }

    /// Moves what node `i`'s core produced (transmits, events) into the simulation.
    fn after_step(&mut self, i: usize) {
        let now = self.now;
        let epoch = self.epoch;
        let elapsed = self.elapsed();
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        let Some(swim) = node.swim.as_mut() else {
            return;
        };
        let mut outgoing = Vec::new();
        while let Some(t) = swim.poll_transmit() {
            outgoing.push(t);
        }
        if self.black_hole == Some(i) {
            outgoing.retain(|t| matches!(wire::KIND_NAMES.get(usize::from(t.kind)), Some(&"ack")));
        }
        while let Some((key, _)) = swim.poll_note() {
            self.notes.push((elapsed, i, key));
        }
        while let Some(entry) = swim.poll_trace() {
            if self.explained.as_ref() == Some(&entry.subject) {
                let at = entry.at.saturating_duration_since(epoch);
                self.story.push((at, i, entry));
            }
        }
        while let Some(event) = swim.poll_event() {
            let subject = self
                .by_name
                .get(&event.member.info.name)
                .copied()
                .unwrap_or(usize::MAX);
            self.observations.push(Observation {
                at: elapsed,
                observer: i,
                subject,
                kind: event.kind,
                incarnation: event.member.incarnation,
            });
        }
        let wake = swim.poll_timeout();
        if let Some(at) = wake.map(|at| at.max(now))
            && node.wake_at.is_none_or(|w| at < w || w < now)
        {
            node.wake_at = Some(at);
            self.push_job(at, Job::Wake(i));
        }
        for t in outgoing {
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            let channel = u8::from(t.channel == Channel::Stream);
            let (route, payload) =
                self.connections
                    .route(now, &self.transport, i, to, channel, t.payload);
            match (route, payload) {
                (Route::Send, Some(payload)) => self.send_now(i, to, channel, payload),
                (Route::Dial { generation }, _) => self.dial(i, to, generation),
                _ => {}
            }
        }
    }

    /// Plays out a handshake from `client` to `server` over the network as it is now,
    /// charging both sides its packets, bytes and CPU.
    fn dial(&mut self, client: usize, server: usize, generation: u64) {
        let answers = self.process(server) == Process::Running;
        let host_up = self.nodes.get(server).is_some_and(|n| !n.host_down);
        if !answers && host_up {
            // The client's Initial reaches a host where nothing listens.
            if let Some(there) = self.network.datagram(client, server, &mut self.rng) {
                self.port_unreachable(server, client, there);
            }
        }
        let rtt = self.network.latency * 2 + self.network.jitter;
        let network = &self.network;
        let (outcome, client_load, server_load) = transport::play_handshake(
            &self.transport,
            rtt,
            answers,
            &mut self.rng,
            |to_server, rng| {
                let (from, to) = if to_server {
                    (client, server)
                } else {
                    (server, client)
                };
                network.datagram(from, to, rng).is_none()
            },
        );
        let cpu = self.transport.handshake_cpu;
        for (node, load, handshake_cpu) in [
            (client, client_load, cpu),
            (
                server,
                server_load,
                if answers { cpu } else { Duration::ZERO },
            ),
        ] {
            if let Some(n) = self.nodes.get_mut(node) {
                n.msgs_sent += load.packets;
                n.bytes_with_overhead += load.bytes;
                n.cpu += handshake_cpu;
            }
        }
        let (at, job) = match outcome {
            DialOutcome::Done { ready } => (
                self.now + ready,
                Job::DialDone {
                    a: client,
                    b: server,
                    generation,
                },
            ),
            DialOutcome::Failed => (
                self.now + self.transport.handshake_timeout,
                Job::DialFailed {
                    a: client,
                    b: server,
                    generation,
                },
            ),
        };
        self.push_job(at, job);
    }

    /// Sends one message on the (open) connection from `i` to `to`.
    fn send_now(&mut self, i: usize, to: usize, channel: u8, payload: Vec<u8>) {
        let now = self.now;
        let len = payload.len() as u64;
        // A stream message larger than a packet takes several.
        let packets = len.div_ceil(STREAM_PACKET_PAYLOAD as u64).max(1);
        let cpu = self.transport.packet_cpu;
        if let Some(node) = self.nodes.get_mut(i) {
            node.msgs_sent += packets;
            node.bytes_sent += len;
            node.bytes_with_overhead += len + packets * DATAGRAM_OVERHEAD as u64;
            node.cpu += cpu * packets as u32;
        }
        // Our packet carries the ACK we owe this peer, unless quinn sent it on its own
        // already (its delay ran out).
        if let Some(deadline) = self.acks_owed.remove(&(i, to))
            && deadline < now
        {
            self.count_ack_only(i);
        }
        let delay = if channel == 0 {
            self.network.datagram(i, to, &mut self.rng)
        } else {
            self.network.stream(i, to, &mut self.rng)
        };
        if let Some(delay) = delay {
            self.push_job(
                now + delay,
                Job::Deliver {
                    to,
                    from: i,
                    channel,
                    payload,
                },
            );
        }
    }

    /// Sends a packet crafted by node `from` to node `to` over the simulated network: an
    /// insider, which (its certificate binds its name) can only speak as itself.
    pub fn forge(&mut self, from: usize, to: usize, message: &Message, updates: &[Update]) {
        let Some(name) = self.name(from).cloned() else {
            return;
        };
        let encoded: Vec<Vec<u8>> = updates.iter().map(wire::encode_update).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let mut payload = Vec::new();
        wire::encode_packet(self.cluster, &name, message, &refs, &mut payload);
        self.send_now(from, to, 0, payload);
    }

    /// True if every running member but `except` sees `subject` as it is: alive, at its
    /// own address, with its own tags and health.
    pub fn sees_genuine(&self, subject: usize, except: usize) -> bool {
        let Some(real) = self.swim(subject).and_then(|s| s.member(s.name().as_str())) else {
            return false;
        };
        self.running()
            .into_iter()
            .filter(|&o| o != except && o != subject)
            .all(|o| {
                self.swim(o)
                    .and_then(|s| s.member(real.info.name.as_str()))
                    .is_some_and(|m| {
                        m.state == State::Alive
                            && m.info.addr == real.info.addr
                            && m.info.tags == real.info.tags
                            && m.info.failing == real.info.failing
                    })
            })
    }

    /// Indices of nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.process(i) == Process::Running)
            .collect()
    }

    /// True when every running node sees exactly the running nodes alive and nobody suspect.
    pub fn converged(&self) -> bool {
        let running = self.running();
        running.iter().all(|&i| {
            self.swim(i).is_some_and(|s| {
                s.count(State::Alive) == running.len() && s.count(State::Suspect) == 0
            })
        })
    }
}
