//! The simulated network: per-link loss, latency with jitter, one-way and two-way cuts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Network conditions; node indices are the simulator's.
#[derive(Debug, Clone)]
pub struct Network {
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra latency, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Loss probability on every link.
    pub loss: f64,
    inbound_loss: Vec<f64>,
    outbound_loss: Vec<f64>,
    /// Blocked `(from, to)` links.
    blocked: HashSet<(usize, usize)>,
    /// Loss of single `(from, to)` links.
    link_loss: HashMap<(usize, usize), f64>,
}

impl Network {
    /// A LAN: 0.2 ms latency, 0.1 ms jitter, no loss.
    pub fn lan(nodes: usize) -> Self {
        Network {
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(100),
            loss: 0.0,
            inbound_loss: vec![0.0; nodes],
            outbound_loss: vec![0.0; nodes],
            blocked: HashSet::new(),
            link_loss: HashMap::new(),
        }
    }

    pub(crate) fn grow(&mut self, nodes: usize) {
        self.inbound_loss.resize(nodes, 0.0);
        self.outbound_loss.resize(nodes, 0.0);
    }

    /// Sets the loss of everything `node` receives and sends.
    pub fn set_node_loss(&mut self, node: usize, inbound: f64, outbound: f64) {
        if let Some(l) = self.inbound_loss.get_mut(node) {
            *l = inbound;
        }
        if let Some(l) = self.outbound_loss.get_mut(node) {
            *l = outbound;
        }
    }

    /// Sets the loss of the one-way link `from → to`.
    pub fn set_link_loss(&mut self, from: usize, to: usize, loss: f64) {
        self.link_loss.insert((from, to), loss);
    }

    /// Blocks every link from a node of `from` to a node of `to` (one way).
    pub fn block(&mut self, from: &[usize], to: &[usize]) {
        for &a in from {
            for &b in to {
                if a != b {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Cuts the links between the two sets both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Restores every blocked link (loss settings stay).
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether `from` can reach `to` at all.
    pub fn connected(&self, from: usize, to: usize) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// Decides a datagram's fate: `None` if lost, else its delay.
    pub(crate) fn datagram(
        &self,
        from: usize,
        to: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<Duration> {
        if !self.connected(from, to) {
            return None;
        }
        let out = self.outbound_loss.get(from).copied().unwrap_or(0.0);
        let inb = self.inbound_loss.get(to).copied().unwrap_or(0.0);
        let link = self.link_loss.get(&(from, to)).copied().unwrap_or(0.0);
        let delivered = (1.0 - self.loss) * (1.0 - out) * (1.0 - inb) * (1.0 - link);
        if delivered < 1.0 && unit(rng) >= delivered {
            return None;
        }
        Some(self.delay(rng))
    }

    /// A stream message: never lost on a connected link (QUIC retransmits), but slower.
    pub(crate) fn stream(&self, from: usize, to: usize, rng: &mut ChaCha8Rng) -> Option<Duration> {
        let usable = self.connected(from, to)
            && self.outbound_loss.get(from).is_none_or(|&l| l < 1.0)
            && self.inbound_loss.get(to).is_none_or(|&l| l < 1.0);
        usable.then(|| self.delay(rng) * 3)
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Duration {
        self.latency + self.jitter.mul_f64(unit(rng))
    }
}

/// A uniform float in `[0, 1)`.
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
