//! The scenarios behind `swimd simulate`, and the figures they report.

use std::time::{Duration, Instant as WallClock};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;

use super::{ACK_ONLY_BYTES, DATAGRAM_OVERHEAD, Process, Simulator};
use crate::core::{Config, EventKind, Profile};
use crate::wire::{Incarnation, Message, NodeName, State, Tags, Update, WireAddr};

/// What happens during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// A member's process is SIGKILLed every `every` on a host that stays up (its kernel
    /// answers with ICMP port unreachable); detection times are measured.
    Crash,
    /// As `crash`, but the whole host goes down: nothing answers, not even ICMP.
    CrashHost,
    /// A member leaves gracefully every `every`; it must end `left`, never `failed`.
    Leave,
    /// Uniform loss on every link for the whole run; nobody may be declared failed.
    Loss,
    /// A member is paused for `pause` every `every`; it must not be declared failed.
    Pause,
    /// The cluster splits in halves for `hold`, then heals.
    PartitionHeal,
    /// Members crash, restart (with or without state), leave and join at random.
    Churn,
    /// Nothing happens: load at steady state (after a cold start when `members` ≤ 1000).
    Steady,
    /// The last member is a certified insider: every `every` it forges claims about a
    /// random victim to every member (in turn: `left`, `failed`, alive elsewhere with other
    /// tags, suspicion confirmed by four made-up accusers, all at the top incarnation);
    /// detection is the time until every honest member sees the victim as it is again.
    Insider,
}

impl std::str::FromStr for ScenarioKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "crash" => ScenarioKind::Crash,
            "crash-host" => ScenarioKind::CrashHost,
            "leave" => ScenarioKind::Leave,
            "loss" => ScenarioKind::Loss,
            "pause" => ScenarioKind::Pause,
            "partition-heal" => ScenarioKind::PartitionHeal,
            "churn" => ScenarioKind::Churn,
            "steady" => ScenarioKind::Steady,
            "insider" => ScenarioKind::Insider,
            other => {
                return Err(format!(
                    "unknown scenario {other:?}: expected crash, crash-host, leave, loss, pause, partition-heal, churn, steady or insider"
                ));
            }
        })
    }
}

impl ScenarioKind {
    /// The scenario's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::Crash => "crash",
            ScenarioKind::CrashHost => "crash-host",
            ScenarioKind::Leave => "leave",
            ScenarioKind::Loss => "loss",
            ScenarioKind::Pause => "pause",
            ScenarioKind::PartitionHeal => "partition-heal",
            ScenarioKind::Churn => "churn",
            ScenarioKind::Steady => "steady",
            ScenarioKind::Insider => "insider",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: ScenarioKind,
    /// Cluster size.
    pub members: usize,
    /// RNG seed: same seed, same run.
    pub seed: u64,
    /// Simulated time.
    pub duration: Duration,
    /// Link loss for `loss` (and background loss for the others).
    pub loss: f64,
    /// Pause length for `pause`.
    pub pause: Duration,
    /// Time between events (crash, leave, pause, churn steps).
    pub every: Duration,
    /// How long `partition-heal` keeps the halves apart.
    pub hold: Duration,
    /// Name of the profile the config came from.
    pub profile: Profile,
    /// The protocol configuration.
    pub config: Config,
    /// Print a progress line on stderr every few seconds.
    pub progress: bool,
    /// Record this member's story (see [`Simulator::explain`]).
    pub explain: Option<usize>,
    /// `steady`: the cold start spreads the members' starts over this long.
    pub start_over: Duration,
    /// Members crashed together at each `crash` event (a rack or a zone going down).
    pub burst: usize,
    /// Load figures count from then: 0 from the start (a cold start included), else at the
    /// earliest after the warm-up and the cold start (`steady` and `loss`).
    pub measure_from: Duration,
}

impl Options {
    /// Defaults for a scenario: 50 members, seed 1, the default profile.
    pub fn new(scenario: ScenarioKind) -> Self {
        Options {
            scenario,
            members: 50,
            seed: 1,
            duration: Duration::from_secs(120),
            loss: 0.0,
            pause: Duration::from_secs(3),
            every: Duration::from_secs(20),
            hold: Duration::from_secs(30),
            profile: Profile::Default,
            config: Config::default(),
            progress: false,
            explain: None,
            start_over: Duration::from_secs(1),
            burst: 1,
            measure_from: WARMUP,
        }
    }
}

/// Percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// How many values.
    pub n: usize,
}

impl Distribution {
    /// The distribution of `values`.
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1)) - 1;
            values.get(i).copied().map(round3)
        };
        Distribution {
            p50: rank(0.5),
            p99: rank(0.99),
            max: values.last().copied().map(round3),
            n: values.len(),
        }
    }
}

/// Load sent per member per second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerMember {
    /// Packets, QUIC ACK-only packets included.
    pub msgs_sent_per_s: f64,
    /// SWIM payload bytes.
    pub bytes_sent_per_s: f64,
    /// Payload plus the per-packet overhead model (see `overhead`), handshakes included.
    pub bytes_sent_with_overhead_per_s: f64,
    /// QUIC handshakes completed (as client or server).
    pub handshakes_per_s: f64,
    /// Dials that got no answer in time.
    pub dial_failures_per_s: f64,
    /// CPU-seconds per minute the transport model charged (handshakes and packets).
    pub cpu_s_per_min: f64,
    /// Open connections at the end of the run (mean over running members).
    pub connections: f64,
    /// Most open connections of one member at the end.
    pub connections_max: usize,
}

/// The overhead model used for `bytes_sent_with_overhead_per_s`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overhead {
    /// Bytes added to every packet: IPv4+UDP 28, QUIC short header + AEAD + frame 37.
    pub per_packet_bytes: usize,
    /// An ACK-only QUIC packet, sent when no other packet to that peer leaves within 25 ms.
    pub ack_only_packet_bytes: usize,
}

/// One run's figures; a figure the scenario does not produce is `null`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Cluster size.
    pub members: usize,
    /// Seed.
    pub seed: u64,
    /// Profile name.
    pub profile: &'static str,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Events injected (crashes, leaves, pauses, partitions, churn steps).
    pub events: usize,
    /// From each event to the first member that noticed it.
    pub detection_first_s: Distribution,
    /// From each event to the last surviving member that noticed it.
    pub detection_all_s: Distribution,
    /// The values behind `detection_first_s` (for sweeps over seeds).
    #[serde(skip)]
    pub detection_first_values: Vec<f64>,
    /// The values behind `detection_all_s`.
    #[serde(skip)]
    pub detection_all_values: Vec<f64>,
    /// Events some survivor never noticed before the run ended.
    pub undetected: usize,
    /// Declarations `failed` of a member that was running (or paused), by any observer.
    pub false_positives: usize,
    /// `failed → alive` transitions of members that had not been down.
    pub flaps: usize,
    /// Load at the end of warm-up until the end of the run.
    pub per_member: PerMember,
    /// Time until every running member sees exactly the running members alive, after the
    /// cold start (`steady`), the heal (`partition-heal`) or the churn.
    pub convergence_s: Option<f64>,
    /// The overhead model.
    pub overhead: Overhead,
    /// Packets a member could not decode (a bug if not 0).
    pub decode_errors: u64,
    /// Hash of every delivery: same seed, same hash.
    pub trace_hash: String,
    /// The protocol configuration used.
    pub config: Config,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

const WARMUP: Duration = Duration::from_secs(5);
const DETECTION_LIMIT: Duration = Duration::from_secs(60);

/// Totals over every member, at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    msgs: u64,
    bytes: u64,
    with_overhead: u64,
    handshakes: u64,
    dial_failures: u64,
    cpu: Duration,
}

struct Run {
    sim: Simulator,
    opts: Options,
    rng: ChaCha8Rng,
    /// Per node: times it went down (crash or exit).
    downs: Vec<Vec<Duration>>,
    /// Same-side check for partition-heal: node → side.
    side: Option<Vec<u8>>,
    wall: WallClock,
    last_progress: WallClock,
    /// The insider's copy of each honest member's signed statement at its first forgery,
    /// replayed later (when the member has moved on).
    captured: Vec<Option<Update>>,
}

/// Runs one scenario.
pub fn run(opts: Options) -> Report {
    run_detailed(opts).0
}

/// Runs one scenario and also returns the simulator (for its observations) and, per node,
/// the times it went down.
pub fn run_detailed(opts: Options) -> (Report, Simulator, Vec<Vec<Duration>>) {
    let wall = WallClock::now();
    let mut sim = Simulator::new(opts.members, opts.config.clone(), opts.seed);
    if opts.scenario != ScenarioKind::Loss {
        sim.network.loss = opts.loss;
    }
    if let Some(subject) = opts.explain {
        sim.explain(subject);
    }
    let mut run = Run {
        rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed),
        downs: vec![Vec::new(); opts.members],
        side: None,
        sim,
        opts,
        wall,
        last_progress: wall,
        captured: Vec::new(),
    };
    let report = run.execute();
    (report, run.sim, run.downs)
}

impl Run {
    fn execute(&mut self) -> Report {
        let mut convergence = None;
        let cold = self.opts.scenario == ScenarioKind::Steady && self.opts.members <= 1000;
        if cold {
            // Everyone joins through node 0, started at random times over `start_over`.
            self.sim.start_joining(0, &[]);
            let spread = self.opts.start_over.as_micros().max(1) as u64;
            let mut starts: Vec<Duration> = (1..self.opts.members)
                .map(|_| Duration::from_micros(self.rng.next_u64() % spread))
                .collect();
            starts.sort();
            for (i, at) in (1..self.opts.members).zip(starts) {
                self.advance_to(at);
                self.sim.start_joining(i, &[0]);
            }
            convergence = self
                .sim
                .run_until(Duration::from_secs(60), Simulator::converged)
                .map(|_| self.sim.elapsed());
        } else {
            self.sim.start_converged();
        }
        if self.opts.scenario == ScenarioKind::Loss {
            self.sim.network.loss = self.opts.loss;
        }
        let warmup = self.sim.elapsed().max(WARMUP);
        let end = self.opts.duration.max(warmup);
        // Only runs where nothing is injected may count from the start (cold start
        // included) or from later on (steady state).
        let measure_from = match self.opts.scenario {
            ScenarioKind::Steady | ScenarioKind::Loss if self.opts.measure_from.is_zero() => {
                Duration::ZERO
            }
            ScenarioKind::Steady | ScenarioKind::Loss => {
                warmup.max(self.opts.measure_from).min(end)
            }
            _ => warmup,
        };
        let (start_load, load_start) = if measure_from.is_zero() {
            (Load::default(), Duration::ZERO)
        } else {
            self.advance_to(measure_from);
            self.sim.settle_acks();
            (self.load(), self.sim.elapsed())
        };
        self.advance_to(warmup);

        let mut firsts = Vec::new();
        let mut alls = Vec::new();
        let mut undetected = 0;
        let mut events = 0;
        match self.opts.scenario {
            ScenarioKind::Steady | ScenarioKind::Loss => self.advance_to(end),
            ScenarioKind::Crash
            | ScenarioKind::CrashHost
            | ScenarioKind::Leave
            | ScenarioKind::Pause => {
                let mut pending = Vec::new();
                let mut t = warmup;
                while t + self.opts.every <= end {
                    // At a random point of the probe slot: probes follow the wall clock.
                    let offset = self.rng.next_u64() % 1_000_000;
                    self.advance_to(t + Duration::from_micros(offset));
                    let running = self.sim.running();
                    if running.len() < 3 {
                        break;
                    }
                    let victim = running[(self.rng.next_u64() % running.len() as u64) as usize];
                    let at = self.sim.elapsed();
                    match self.opts.scenario {
                        ScenarioKind::Crash | ScenarioKind::CrashHost => {
                            let mut victims = vec![victim];
                            // Keep at least three running (and more than half).
                            let room = (running.len() / 2).saturating_sub(1).max(1);
                            while victims.len() < self.opts.burst.min(room) {
                                let v =
                                    running[(self.rng.next_u64() % running.len() as u64) as usize];
                                if !victims.contains(&v) {
                                    victims.push(v);
                                }
                            }
                            for &v in &victims {
                                if self.opts.scenario == ScenarioKind::CrashHost {
                                    self.sim.crash_host(v);
                                } else {
                                    self.sim.crash(v);
                                }
                                self.note_down(v, at);
                            }
                            for v in victims {
                                pending.push((v, at, EventKind::Failed));
                            }
                        }
                        ScenarioKind::Leave => {
                            self.sim.leave(victim, Duration::from_secs(2));
                            self.note_down(victim, self.sim.elapsed());
                            pending.push((victim, at, EventKind::Left));
                        }
                        _ => {
                            self.sim.pause(victim);
                            let until = at + self.opts.pause;
                            self.advance_to(until);
                            self.sim.resume(victim);
                        }
                    }
                    events += 1;
                    t += self.opts.every;
                }
                self.advance_to(end);
                for (victim, at, kind) in pending {
                    match self.detection(victim, at, kind) {
                        Some((first, all)) => {
                            firsts.push(first);
                            if let Some(all) = all {
                                alls.push(all);
                            } else {
                                undetected += 1;
                            }
                        }
                        None => undetected += 1,
                    }
                }
            }
            ScenarioKind::PartitionHeal => {
                let n = self.opts.members;
                let a: Vec<usize> = (0..n / 2).collect();
                let b: Vec<usize> = (n / 2..n).collect();
                self.side = Some((0..n).map(|i| u8::from(i >= n / 2)).collect());
                self.sim.network.partition(&a, &b);
                let at = self.sim.elapsed();
                events += 1;
                let hold = self.opts.hold;
                let first_seen = self.sim.run_until(hold, |s| {
                    s.observations()
                        .iter()
                        .any(|o| o.kind == EventKind::Failed && o.at >= at)
                });
                let remaining = hold.saturating_sub(first_seen.unwrap_or(hold));
                let all_seen = self.sim.run_until(remaining, |s| split_complete(s, &a, &b));
                if let Some(first) = first_seen {
                    firsts.push(first.as_secs_f64());
                }
                match all_seen {
                    Some(extra) => {
                        alls.push((first_seen.unwrap_or_default() + extra).as_secs_f64())
                    }
                    None => undetected += 1,
                }
                self.advance_to(at + hold);
                self.sim.network.heal();
                convergence = self
                    .sim
                    .run_until(Duration::from_secs(120), Simulator::converged);
                self.advance_to(end.max(self.sim.elapsed()));
            }
            ScenarioKind::Insider => {
                let hostile = self.opts.members.saturating_sub(1);
                // It also swallows what honest members ask it to pass on (a hostile relay).
                self.sim.black_hole = Some(hostile);
                let mut t = warmup;
                while t + self.opts.every <= end {
                    self.advance_to(t);
                    let honest: Vec<usize> = self
                        .sim
                        .running()
                        .into_iter()
                        .filter(|&i| i != hostile)
                        .collect();
                    if honest.len() > 5 {
                        let victim = honest[self.rng.next_u64() as usize % honest.len()];
                        self.forge_claims(hostile, victim, events, &honest);
                        // Once the forgeries have arrived (a LAN delivers within 1 ms).
                        let landed = Duration::from_millis(1);
                        self.sim.run_for(landed);
                        let healed = self
                            .sim
                            .run_until(self.opts.every, |s| s.sees_genuine(victim, hostile));
                        match healed {
                            Some(took) => alls.push((landed + took).as_secs_f64()),
                            None => undetected += 1,
                        }
                        events += 1;
                    }
                    t += self.opts.every;
                }
                self.advance_to(end);
            }
            ScenarioKind::Churn => {
                let quiet = Duration::from_secs(30);
                let churn_end = end.saturating_sub(quiet).max(warmup);
                let mut t = warmup;
                while t < churn_end {
                    self.advance_to(t);
                    self.churn_step();
                    events += 1;
                    t += self.opts.every;
                }
                self.advance_to(churn_end);
                convergence = self
                    .sim
                    .run_until(Duration::from_secs(120), Simulator::converged);
                self.advance_to(end.max(self.sim.elapsed()));
            }
        }
        self.sim.settle_acks();
        let end_load = self.load();
        let window = (self.sim.elapsed() - load_start).as_secs_f64().max(1e-9);
        let members = self.opts.members.max(1) as f64;
        let per = |a: u64, b: u64| round3((b.saturating_sub(a)) as f64 / window / members);
        let running = self.sim.running();
        let open: Vec<usize> = running.iter().map(|&i| self.sim.connections(i)).collect();
        let (false_positives, flaps) = self.false_positives();
        Report {
            scenario: self.opts.scenario.as_str(),
            members: self.opts.members,
            seed: self.opts.seed,
            profile: self.opts.profile.as_str(),
            duration_s: round3(self.sim.elapsed().as_secs_f64()),
            events,
            detection_first_s: Distribution::of(firsts.clone()),
            detection_all_s: Distribution::of(alls.clone()),
            detection_first_values: firsts,
            detection_all_values: alls,
            undetected,
            false_positives,
            flaps,
            per_member: PerMember {
                msgs_sent_per_s: per(start_load.msgs, end_load.msgs),
                bytes_sent_per_s: per(start_load.bytes, end_load.bytes),
                bytes_sent_with_overhead_per_s: per(
                    start_load.with_overhead,
                    end_load.with_overhead,
                ),
                // Each handshake has two members: count it for both.
                handshakes_per_s: per(start_load.handshakes, end_load.handshakes),
                dial_failures_per_s: per(start_load.dial_failures, end_load.dial_failures),
                cpu_s_per_min: round3(
                    (end_load.cpu.saturating_sub(start_load.cpu)).as_secs_f64() * 60.0
                        / window
                        / members,
                ),
                connections: round3(open.iter().sum::<usize>() as f64 / open.len().max(1) as f64),
                connections_max: open.iter().copied().max().unwrap_or(0),
            },
            convergence_s: convergence.map(|d| round3(d.as_secs_f64())),
            overhead: Overhead {
                per_packet_bytes: DATAGRAM_OVERHEAD,
                ack_only_packet_bytes: ACK_ONLY_BYTES,
            },
            decode_errors: self.sim.decode_errors(),
            trace_hash: format!("{:016x}", self.sim.trace_hash()),
            config: self.opts.config.clone(),
            wall_s: round3(self.wall.elapsed().as_secs_f64()),
        }
    }

    fn note_down(&mut self, node: usize, at: Duration) {
        if let Some(d) = self.downs.get_mut(node) {
            d.push(at);
        }
    }

    /// Runs in slices of one simulated second, printing progress every few wall seconds.
    fn advance_to(&mut self, t: Duration) {
        while self.sim.elapsed() < t {
            let step = (t - self.sim.elapsed()).min(Duration::from_secs(1));
            self.sim.run_for(step);
            if self.opts.progress && self.last_progress.elapsed() >= Duration::from_secs(3) {
                self.last_progress = WallClock::now();
                eprintln!(
                    "simulate: {:.0}/{:.0} s simulated, {:.1} s wall",
                    self.sim.elapsed().as_secs_f64(),
                    self.opts.duration.as_secs_f64(),
                    self.wall.elapsed().as_secs_f64()
                );
            }
        }
    }

    fn load(&self) -> Load {
        let mut load = Load::default();
        for i in 0..self.sim.len() {
            let (msgs, bytes, with_overhead) = self.sim.sent(i);
            let (client, server) = self.sim.handshakes(i);
            load.msgs += msgs;
            load.bytes += bytes;
            load.with_overhead += with_overhead;
            load.handshakes += client + server;
            load.dial_failures += self.sim.dial_failures(i);
            load.cpu += self.sim.cpu(i);
        }
        load
    }

    /// (first, all) seconds from `at` until observers running since then saw `kind` about
    /// `victim`; `all` is `None` if some observer never did.
    fn detection(
        &self,
        victim: usize,
        at: Duration,
        kind: EventKind,
    ) -> Option<(f64, Option<f64>)> {
        let limit = at + DETECTION_LIMIT;
        let observers: Vec<usize> = self
            .sim
            .running()
            .into_iter()
            .filter(|&o| o != victim && self.downs.get(o).is_none_or(|d| d.iter().all(|&t| t < at)))
            .collect();
        let mut first: Option<Duration> = None;
        let mut last = Duration::ZERO;
        let mut seen = 0;
        for &o in &observers {
            let when = self
                .sim
                .observations()
                .iter()
                .find(|e| {
                    e.observer == o
                        && e.subject == victim
                        && e.kind == kind
                        && e.at >= at
                        && e.at <= limit
                })
                .map(|e| e.at - at);
            if let Some(w) = when {
                seen += 1;
                first = Some(first.map_or(w, |f| f.min(w)));
                last = last.max(w);
            }
        }
        let first = first?.as_secs_f64();
        Some((
            first,
            (seen == observers.len()).then_some(last.as_secs_f64()),
        ))
    }

    /// Failed declarations of members not down in the preceding minute, and recoveries of
    /// members that had not gone down since (a minute before) they were declared failed.
    /// Across a partition neither counts.
    fn false_positives(&self) -> (usize, usize) {
        let minute = Duration::from_secs(60);
        let down_between = |node: usize, from: Duration, to: Duration| {
            self.downs
                .get(node)
                .is_some_and(|d| d.iter().any(|&t| t <= to && t + minute >= from))
        };
        let across = |a: usize, b: usize| match &self.side {
            Some(side) => side.get(a) != side.get(b),
            None => false,
        };
        let mut fp = 0;
        let mut flaps = 0;
        let mut failed_at: std::collections::HashMap<(usize, usize), Duration> = Default::default();
        for o in self.sim.observations() {
            // A hostile member's own view is its own business: its probes never leave,
            // so it fails everyone in time.
            if o.subject == usize::MAX
                || across(o.observer, o.subject)
                || self.sim.black_hole == Some(o.observer)
            {
                continue;
            }
            match o.kind {
                EventKind::Failed => {
                    failed_at.insert((o.observer, o.subject), o.at);
                    if !down_between(o.subject, o.at, o.at) {
                        fp += 1;
                    }
                }
                EventKind::Recovered => {
                    let since = failed_at
                        .get(&(o.observer, o.subject))
                        .copied()
                        .unwrap_or(o.at);
                    if !down_between(o.subject, since, o.at) {
                        flaps += 1;
                    }
                }
                _ => {}
            }
        }
        (fp, flaps)
    }

    /// The insider's `k`th forgery about `victim`, sent to every honest member.
    fn forge_claims(&mut self, hostile: usize, victim: usize, k: usize, honest: &[usize]) {
        let (Some(name), Some(me)) = (self.sim.name(victim).cloned(), self.sim.name(hostile))
        else {
            return;
        };
        let me = me.clone();
        let top = Incarnation(u64::MAX);
        let claim = |state, from: &NodeName| Update {
            name: name.clone(),
            incarnation: top,
            state,
            from: from.clone(),
            ..Update::default()
        };
        if self.captured.is_empty()
            && let Some(swim) = self.sim.swim(hostile)
        {
            // Genuine signed statements, as the insider holds them now, to replay later.
            let held: Vec<_> = swim.known_members().collect();
            self.captured = (0..self.opts.members)
                .map(|i| {
                    let name = self.sim.name(i)?;
                    held.iter()
                        .find(|m| m.info.name == *name)
                        .map(|m| m.update())
                })
                .collect();
        }
        let updates = match k % 5 {
            // A replay: the victim's own signed word, from before its latest refutations.
            4 => self
                .captured
                .get(victim)
                .cloned()
                .flatten()
                .into_iter()
                .collect(),
            0 => vec![claim(State::Left, &me)],
            1 => vec![claim(State::Failed, &me)],
            2 => vec![Update {
                addr: self
                    .sim
                    .swim(hostile)
                    .and_then(|s| s.member(me.as_str()))
                    .map(|m| WireAddr(m.info.addr)),
                tags: Some(Tags::from([("forged".to_string(), "1".to_string())])),
                failing: Some(vec!["forged".to_string()]),
                ..claim(State::Alive, &NodeName::default())
            }],
            _ => honest
                .iter()
                .filter(|&&i| i != victim)
                .take(4)
                .filter_map(|&i| self.sim.name(i).cloned())
                .map(|accuser| claim(State::Suspect, &accuser))
                .collect(),
        };
        for &to in honest {
            self.sim.forge(hostile, to, &Message::Gossip, &updates);
        }
    }

    fn churn_step(&mut self) {
        let n = self.opts.members;
        let running = self.sim.running();
        let down: Vec<usize> = (0..n)
            .filter(|&i| self.sim.process(i) == Process::Down)
            .collect();
        let roll = self.rng.next_u64() % 4;
        let pick = |v: &[usize], r: u64| v.get((r % v.len().max(1) as u64) as usize).copied();
        let r = self.rng.next_u64();
        let at = self.sim.elapsed();
        match roll {
            0 | 1 if running.len() > n / 2 => {
                if let Some(victim) = pick(&running, r) {
                    if roll == 0 {
                        self.sim.crash(victim);
                        self.note_down(victim, at);
                    } else {
                        self.sim.leave(victim, Duration::from_secs(2));
                        self.note_down(victim, self.sim.elapsed());
                    }
                }
            }
            _ => {
                if let Some(node) = pick(&down, r) {
                    let seed = pick(&running, r >> 8).unwrap_or(0);
                    let keep_state = r & 1 == 0;
                    self.sim.restart(node, keep_state, &[seed]);
                }
            }
        }
    }
}

fn split_complete(sim: &Simulator, a: &[usize], b: &[usize]) -> bool {
    // Nobody else fails in this scenario, so counting failed members suffices (and stays
    // cheap at thousands of members).
    let sees_failed = |side: &[usize], other: &[usize]| {
        side.iter().all(|&o| {
            sim.swim(o)
                .is_some_and(|s| s.count(State::Failed) >= other.len())
        })
    };
    sees_failed(a, b) && sees_failed(b, a)
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
