//! What the QUIC transport costs, modelled as the agent runs it (`net::transport`): one
//! connection per pair of members, opened by a mutual-TLS handshake that takes round trips,
//! bytes and CPU and can lose packets; closed after `idle_timeout` without traffic; at most
//! `max_connections` per member (the least recently used is closed); dials to an address
//! that did not answer are backed off. A datagram for a peer without a connection waits for
//! the handshake, and is lost with it if the handshake misses `handshake_timeout` (in the
//! agent that is `probe_timeout`: a failed probe).
//!
//! The figures come from `shared/QUIC-NOTES.md` (quinn 0.11, rustls + ring, ECDSA P-256,
//! MTU 1200 pinned) and are checked against real agents (`benches/loopback`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;

/// What connections cost, and the agent's pool settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportCost {
    /// A connection without traffic either way for this long is closed (agent: 180 s).
    pub idle_timeout: Duration,
    /// Most connections per member; the least recently used is closed beyond it.
    pub max_connections: usize,
    /// A handshake not done by then fails (agent: `probe_timeout`).
    pub handshake_timeout: Duration,
    /// First and longest wait before dialling an address that did not answer again.
    pub backoff: (Duration, Duration),
    /// First retransmission timeout of a handshake flight (doubles each time): quinn's PTO
    /// with a 10 ms initial RTT.
    pub first_pto: Duration,
    /// The client's Initial (padded to the 1200-byte MTU) with IPv4 + UDP headers.
    pub client_initial_bytes: usize,
    /// The server's first flight (Initial + Handshake: its certificate and signature):
    /// (UDP datagrams, bytes with IPv4 + UDP headers).
    pub server_flight: (usize, usize),
    /// The client's second flight (its certificate, signature, Finished, its ACKs).
    pub client_flight: (usize, usize),
    /// The server's HANDSHAKE_DONE, session tickets and ACKs.
    pub server_done: (usize, usize),
    /// CPU one side spends on a full handshake (signature, verification, key schedule).
    pub handshake_cpu: Duration,
    /// CPU per datagram sent or received (QUIC, crypto, syscalls, SWIM, the agent's timers
    /// amortised).
    pub packet_cpu: Duration,
}

impl Default for TransportCost {
    fn default() -> Self {
        TransportCost {
            idle_timeout: Duration::from_secs(180),
            max_connections: 1024,
            handshake_timeout: Duration::from_millis(500),
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            first_pto: Duration::from_millis(30),
            // Measured: two dist agents on loopback, /v1/self after the join (client 13
            // datagrams, 3,249 B; server 12, 2,091 B; less the SWIM messages among them).
            client_initial_bytes: 1228,
            server_flight: (4, 1500),
            client_flight: (7, 1710),
            server_done: (3, 360),
            // Fitted to 250 dist agents on loopback (benches/loopback, SWIMD_BENCH=scale,
            // two runs): 0.040-0.050 CPU-s/min at 3.15 datagrams/s sent, 0.070-0.080 in
            // the first minute at 6.4-6.6/s and 0.23-0.25 handshakes/s.
            handshake_cpu: Duration::from_micros(600),
            packet_cpu: Duration::from_micros(115),
        }
    }
}

impl TransportCost {
    /// Both sides' bytes of a handshake that needed no retransmission.
    pub fn handshake_bytes(&self) -> usize {
        self.client_initial_bytes + self.server_flight.1 + self.client_flight.1 + self.server_done.1
    }
}

/// Packets and bytes a member sent for handshakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeLoad {
    /// UDP datagrams.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
}

/// How a dial went, decided when it starts (the network's loss is drawn then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialOutcome {
    /// Both sides can send after `ready` (from the dial).
    Done { ready: Duration },
    /// No answer in time.
    Failed,
}

#[derive(Debug)]
enum Pair {
    Dialing {
        by: usize,
        generation: u64,
        queue: Vec<Queued>,
    },
    Connected {
        last_activity: Instant,
        /// Per side (lower index first): last send, for least-recently-used eviction.
        last_used: [Instant; 2],
    },
}

/// A message waiting for a handshake: (from, to, channel, payload).
pub(crate) type Queued = (usize, usize, u8, Vec<u8>);

/// Messages queued per peer while its handshake runs (agent: 32).
const QUEUE_PER_PEER: usize = 32;

/// The connection state of every pair, and each member's dial backoffs.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pairs: HashMap<(usize, usize), Pair>,
    /// Open connections per member.
    open: Vec<usize>,
    /// Per member, the peers it has a pair entry with (connected or dialing).
    peers: Vec<HashSet<usize>>,
    /// (dialer, peer) → (until, last wait).
    backoff: HashMap<(usize, usize), (Instant, Duration)>,
    generation: u64,
    /// Per member: handshakes it completed as client and as server.
    pub(crate) handshakes: Vec<(u64, u64)>,
    /// Per member: dials that failed.
    pub(crate) dial_failures: Vec<u64>,
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// What the simulator should do with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Send it now.
    Send,
    /// Held until the handshake ends.
    Queued,
    /// Start a dial (the message is queued); `generation` identifies it.
    Dial { generation: u64 },
    /// Dropped (the peer is backed off).
    Dropped,
}

impl Connections {
    pub(crate) fn grow(&mut self, nodes: usize) {
        self.open.resize(nodes, 0);
        self.peers.resize_with(nodes, HashSet::new);
        self.handshakes.resize(nodes, (0, 0));
        self.dial_failures.resize(nodes, 0);
    }

    /// Open connections of member `i`.
    pub(crate) fn open(&self, i: usize) -> usize {
        self.open.get(i).copied().unwrap_or(0)
    }

    /// Routes a message from `from` to `to`, queueing it behind a dial if needed.
    pub(crate) fn route(
        &mut self,
        now: Instant,
        cost: &TransportCost,
        from: usize,
        to: usize,
        channel: u8,
        payload: Vec<u8>,
    ) -> (Route, Option<Vec<u8>>) {
        let k = key(from, to);
        match self.pairs.get_mut(&k) {
            Some(Pair::Connected {
                last_activity,
                last_used,
            }) if now.saturating_duration_since(*last_activity) < cost.idle_timeout => {
                last_used[usize::from(from != k.0)] = now;
                return (Route::Send, Some(payload));
            }
            Some(Pair::Dialing { queue, .. }) => {
                if queue.len() >= QUEUE_PER_PEER {
                    queue.remove(0);
                }
                queue.push((from, to, channel, payload));
                return (Route::Queued, None);
            }
            Some(Pair::Connected { .. }) => self.close(k),
            None => {}
        }
        if let Some(&(until, _)) = self.backoff.get(&(from, to))
            && now < until
        {
            return (Route::Dropped, None);
        }
        self.generation += 1;
        let generation = self.generation;
        self.link(k);
        self.pairs.insert(
            k,
            Pair::Dialing {
                by: from,
                generation,
                queue: vec![(from, to, channel, payload)],
            },
        );
        (Route::Dial { generation }, None)
    }

    /// A packet arrived on the pair's connection: QUIC's idle timer restarts.
    pub(crate) fn touch(&mut self, now: Instant, a: usize, b: usize) {
        if let Some(Pair::Connected { last_activity, .. }) = self.pairs.get_mut(&key(a, b)) {
            *last_activity = now;
        }
    }

    /// The dial `generation` between `a` and `b` finished: returns the queued messages,
    /// and connections the pool closed to make room (least recently used first).
    pub(crate) fn dial_done(
        &mut self,
        now: Instant,
        cost: &TransportCost,
        a: usize,
        b: usize,
        generation: u64,
    ) -> Option<Vec<Queued>> {
        let k = key(a, b);
        let queue = match self.pairs.get_mut(&k) {
            Some(Pair::Dialing {
                generation: g,
                queue,
                by,
            }) if *g == generation => {
                let by = *by;
                let queue = std::mem::take(queue);
                if let Some(h) = self.handshakes.get_mut(by) {
                    h.0 += 1;
                }
                if let Some(h) = self.handshakes.get_mut(if by == a { b } else { a }) {
                    h.1 += 1;
                }
                self.backoff.remove(&(by, if by == a { b } else { a }));
                queue
            }
            _ => return None,
        };
        self.pairs.insert(
            k,
            Pair::Connected {
                last_activity: now,
                last_used: [now; 2],
            },
        );
        for side in [k.0, k.1] {
            if let Some(open) = self.open.get_mut(side) {
                *open += 1;
            }
            if self.open(side) > cost.max_connections {
                self.evict_least_recently_used(side, k);
            }
        }
        Some(queue)
    }

    /// The dial `generation` failed: the dialer backs off; queued messages are lost.
    pub(crate) fn dial_failed(
        &mut self,
        now: Instant,
        cost: &TransportCost,
        a: usize,
        b: usize,
        generation: u64,
    ) {
        let k = key(a, b);
        let by = match self.pairs.get(&k) {
            Some(Pair::Dialing {
                generation: g, by, ..
            }) if *g == generation => *by,
            _ => return,
        };
        self.close(k);
        let peer = if by == a { b } else { a };
        if let Some(f) = self.dial_failures.get_mut(by) {
            *f += 1;
        }
        let previous = self
            .backoff
            .get(&(by, peer))
            .map_or(Duration::ZERO, |b| b.1);
        let wait = (previous * 2).clamp(cost.backoff.0, cost.backoff.1);
        self.backoff.insert((by, peer), (now + wait, wait));
    }

    fn evict_least_recently_used(&mut self, side: usize, keep: (usize, usize)) {
        let Some(peers) = self.peers.get(side) else {
            return;
        };
        let oldest = peers
            .iter()
            .map(|&p| key(side, p))
            .filter(|k| *k != keep)
            .filter_map(|k| match self.pairs.get(&k) {
                Some(Pair::Connected { last_used, .. }) => {
                    Some((last_used[usize::from(side != k.0)], k))
                }
                _ => None,
            })
            .min();
        if let Some((_, k)) = oldest {
            self.close(k);
        }
    }

    fn link(&mut self, k: (usize, usize)) {
        for (a, b) in [(k.0, k.1), (k.1, k.0)] {
            if let Some(peers) = self.peers.get_mut(a) {
                peers.insert(b);
            }
        }
    }

    /// Forgets the pair, closing its connection if it had one.
    fn close(&mut self, k: (usize, usize)) {
        if let Some(pair) = self.pairs.remove(&k) {
            for (a, b) in [(k.0, k.1), (k.1, k.0)] {
                if let Some(peers) = self.peers.get_mut(a) {
                    peers.remove(&b);
                }
                if matches!(pair, Pair::Connected { .. })
                    && let Some(open) = self.open.get_mut(a)
                {
                    *open = open.saturating_sub(1);
                }
            }
        }
    }

    /// Closes every connection of member `i` (a restarted agent resets its peers' stale
    /// connections with the persisted stateless-reset key).
    pub(crate) fn reset(&mut self, i: usize) {
        let mine: Vec<usize> = self
            .peers
            .get(i)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        for peer in mine {
            self.close(key(i, peer));
        }
    }

    /// Closes connections idle for `idle_timeout` (quinn's idle timer), so open counts are
    /// right when read.
    pub(crate) fn expire(&mut self, now: Instant, cost: &TransportCost) {
        let idle: Vec<(usize, usize)> = self
            .pairs
            .iter()
            .filter(|(_, p)| match p {
                Pair::Connected { last_activity, .. } => {
                    now.saturating_duration_since(*last_activity) >= cost.idle_timeout
                }
                Pair::Dialing { .. } => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.close(k);
        }
        self.backoff
            .retain(|_, (until, wait)| now < *until + *wait * 4);
    }
}

/// Plays out a handshake from `client` to `server`: each flight may be lost (`lost` draws
/// it), a lost flight is sent again after the retransmission timeout, which doubles. Returns
/// the outcome and what each side sent.
pub(crate) fn play_handshake(
    cost: &TransportCost,
    rtt: Duration,
    server_answers: bool,
    rng: &mut ChaCha8Rng,
    mut lost: impl FnMut(bool, &mut ChaCha8Rng) -> bool,
) -> (DialOutcome, HandshakeLoad, HandshakeLoad) {
    let mut client = HandshakeLoad::default();
    let mut server = HandshakeLoad::default();
    let mut t = Duration::ZERO;
    let mut pto = cost.first_pto;
    let add = |load: &mut HandshakeLoad, (packets, bytes): (usize, usize)| {
        load.packets += packets as u64;
        load.bytes += bytes as u64;
    };
    loop {
        if t >= cost.handshake_timeout {
            return (DialOutcome::Failed, client, server);
        }
        add(&mut client, (1, cost.client_initial_bytes));
        // Initial lost, or nobody answers: the client sends it again after the timeout.
        if !server_answers || lost(true, rng) {
            t += pto;
            pto *= 2;
            continue;
        }
        add(&mut server, cost.server_flight);
        if lost(false, rng) {
            t += pto;
            pto *= 2;
            continue;
        }
        // The client has the server's flight: it can send (its flight goes with its data).
        add(&mut client, cost.client_flight);
        let mut ready = t + rtt + rtt / 2;
        if lost(true, rng) {
            // The server asks again after its timeout; the data waits for the keys.
            add(&mut client, cost.client_flight);
            ready += pto;
        }
        add(&mut server, cost.server_done);
        if ready > cost.handshake_timeout {
            return (DialOutcome::Failed, client, server);
        }
        return (DialOutcome::Done { ready }, client, server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn at(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_clean_handshake_costs_its_bytes_and_a_round_trip_and_a_half() {
        let cost = TransportCost::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rtt = Duration::from_micros(400);
        let (outcome, client, server) = play_handshake(&cost, rtt, true, &mut rng, |_, _| false);
        assert_eq!(outcome, DialOutcome::Done { ready: rtt * 3 / 2 });
        assert_eq!(
            (client.bytes + server.bytes) as usize,
            cost.handshake_bytes()
        );
        assert!(
            (4000..=5000).contains(&cost.handshake_bytes()),
            "QUIC-NOTES: ~4.4 KB"
        );
    }

    #[test]
    fn a_silent_peer_costs_initials_until_the_handshake_times_out() {
        let cost = TransportCost::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (outcome, client, server) = play_handshake(
            &cost,
            Duration::from_micros(400),
            false,
            &mut rng,
            |_, _| false,
        );
        assert_eq!(outcome, DialOutcome::Failed);
        // Sent at 0, 30, 90, 210 and 450 ms.
        assert_eq!(client.packets, 5);
        assert_eq!(server, HandshakeLoad::default());
    }

    #[test]
    fn a_lost_initial_costs_one_retransmission_timeout() {
        let cost = TransportCost::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rtt = Duration::from_micros(400);
        let mut first = true;
        let (outcome, client, _) = play_handshake(&cost, rtt, true, &mut rng, |_, _| {
            std::mem::replace(&mut first, false)
        });
        assert_eq!(
            outcome,
            DialOutcome::Done {
                ready: cost.first_pto + rtt * 3 / 2
            }
        );
        assert_eq!(client.packets, 1 + 1 + cost.client_flight.0 as u64);
    }

    #[test]
    fn a_pair_shares_one_connection_that_closes_when_idle() {
        let cost = TransportCost::default();
        let mut c = Connections::default();
        c.grow(3);
        let t0 = at(0);
        let (route, _) = c.route(t0, &cost, 0, 1, 0, vec![1]);
        let Route::Dial { generation } = route else {
            panic!("first send dials: {route:?}");
        };
        assert_eq!(c.route(t0, &cost, 1, 0, 0, vec![2]).0, Route::Queued);
        let queued = c
            .dial_done(t0, &cost, 0, 1, generation)
            .expect("current dial");
        assert_eq!(queued.len(), 2, "both directions waited for the handshake");
        assert_eq!((c.open(0), c.open(1)), (1, 1));
        assert_eq!(c.handshakes[0], (1, 0));
        assert_eq!(c.handshakes[1], (0, 1));
        assert_eq!(c.route(t0, &cost, 1, 0, 0, vec![3]).0, Route::Send);
        c.expire(t0 + cost.idle_timeout, &cost);
        assert_eq!((c.open(0), c.open(1)), (0, 0));
    }

    #[test]
    fn a_failed_dial_backs_off_the_dialer_only() {
        let cost = TransportCost::default();
        let mut c = Connections::default();
        c.grow(2);
        let t0 = at(0);
        let Route::Dial { generation } = c.route(t0, &cost, 0, 1, 0, vec![]).0 else {
            panic!("dial");
        };
        c.dial_failed(t0, &cost, 0, 1, generation);
        assert_eq!(c.route(t0, &cost, 0, 1, 0, vec![]).0, Route::Dropped);
        assert!(matches!(
            c.route(t0, &cost, 1, 0, 0, vec![]).0,
            Route::Dial { .. }
        ));
    }

    #[test]
    fn the_pool_closes_the_least_recently_used_connection_beyond_its_cap() {
        let cost = TransportCost {
            max_connections: 2,
            ..TransportCost::default()
        };
        let mut c = Connections::default();
        c.grow(4);
        for (peer, ms) in [(1, 0), (2, 1), (3, 2)] {
            let now = at(ms);
            let Route::Dial { generation } = c.route(now, &cost, 0, peer, 0, vec![]).0 else {
                panic!("dial");
            };
            c.dial_done(now, &cost, 0, peer, generation);
        }
        assert_eq!(c.open(0), 2);
        assert_eq!(c.open(1), 0, "the oldest went");
        assert_eq!(c.route(at(3), &cost, 0, 3, 0, vec![]).0, Route::Send);
    }
}
