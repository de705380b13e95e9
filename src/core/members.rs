//! The member table: stable slots, a hash ring for lookups and ring probes, and the
//! randomized round-robin probe order.
//!
//! Sized for 10,000-member clusters simulated in one process (10^8 entries in all): a member
//! costs 40 bytes plus 8 for the ring and probe order; name, address and tags are shared.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;

use super::overlay::Overlay;

use crate::wire::{Blob, Incarnation, NodeName, Software, State, Tags};

/// A member's identity: changes only with a higher incarnation, shared between snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Unique name.
    pub name: NodeName,
    /// Where it listens for gossip.
    pub addr: SocketAddr,
    /// Its tags.
    pub tags: Tags,
    /// Its failing service checks, sorted (empty: `passing`).
    pub failing: Vec<String>,
    /// In planned maintenance, for this reason (`swimd maint on`).
    pub maintenance: Option<String>,
    /// What it runs, as it advertised (`None`: a v0.1.0 agent, or not heard yet).
    pub software: Option<Software>,
    /// Position on the hash ring.
    pub(crate) ring_hash: u64,
}

impl MemberInfo {
    /// Position on the hash ring (a stable hash of the name).
    pub fn ring_hash(&self) -> u64 {
        self.ring_hash
    }

    /// Builds an identity.
    pub fn new(name: NodeName, addr: SocketAddr, tags: Tags) -> Self {
        let ring_hash = hash64(name.as_str().as_bytes(), 0);
        MemberInfo {
            name,
            addr,
            tags,
            failing: Vec::new(),
            maintenance: None,
            software: None,
            ring_hash,
        }
    }

    /// The same identity with these failing checks.
    pub fn with_failing(mut self, failing: Vec<String>) -> Self {
        self.failing = failing;
        self
    }

    /// The same identity in maintenance (`Some(reason)`) or not.
    pub fn with_maintenance(mut self, maintenance: Option<String>) -> Self {
        self.maintenance = maintenance;
        self
    }

    /// The same identity running this software.
    pub fn with_software(mut self, software: Option<Software>) -> Self {
        self.software = software;
        self
    }

    /// Maintenance first (the operator's word), then the checks.
    pub fn health(&self) -> Health {
        if self.maintenance.is_some() {
            Health::Maintenance
        } else if self.failing.is_empty() {
            Health::Passing
        } else {
            Health::Critical
        }
    }
}

/// What a member says of its own service; serde writes the word (`"passing"`, …).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every check passes (also what older agents, which do not say, are taken to be).
    #[default]
    Passing,
    /// Some check fails.
    Critical,
    /// Out for planned work (`swimd maint on`): drained, never failed over.
    Maintenance,
}

impl Health {
    /// Every health, in metric order.
    pub const ALL: [Health; 3] = [Health::Passing, Health::Critical, Health::Maintenance];

    /// The vocabulary name: `passing`, `critical` or `maintenance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Critical => "critical",
            Health::Maintenance => "maintenance",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the table.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) info: Arc<MemberInfo>,
    pub(crate) incarnation: Incarnation,
    pub(crate) state: State,
    pub(crate) since: Instant,
    /// The member's signature over its statement as held (`alive` with `info`, or `left`,
    /// at `incarnation`), when it made one: passed on with the statement.
    pub(crate) proof: Option<Blob>,
}

pub(crate) type Slot = u32;

pub(crate) struct Members {
    slots: Vec<Option<Member>>,
    free: Vec<Slot>,
    /// Slots ordered by `(ring_hash, name)`: lookups by name and ring successors.
    ring: Vec<Slot>,
    probe_order: Vec<Slot>,
    probe_pos: usize,
    counts: [usize; 4],
    /// Failed members, for reconnect attempts (few, and hard to find by random sampling).
    failed: Vec<Slot>,
    /// Per ring bucket, a hash of every member's (name, incarnation, state) there: two
    /// members whose digests agree on a bucket agree on its members (anti-entropy).
    digest: [u16; DIGEST_BUCKETS],
    /// Our neighbours on the probing rings (disabled until [`Members::set_overlay`]).
    overlay: Overlay,
}

/// Ring buckets in the anti-entropy digest.
pub(crate) const DIGEST_BUCKETS: usize = 64;

fn bucket_of(ring_hash: u64) -> usize {
    (ring_hash >> 58) as usize
}

/// What a member contributes to its bucket's digest. Suspect counts as alive: suspicion is
/// transient and settled by the protocol itself, not by anti-entropy.
fn digest_term(member: &Member) -> u16 {
    let class = match member.state {
        State::Alive | State::Suspect => 0u64,
        State::Failed => 1,
        State::Left => 2,
    };
    let mixed = hash64(
        &(member.info.ring_hash ^ (member.incarnation.0 << 2 | class)).to_le_bytes(),
        0,
    );
    mixed as u16
}

/// Live members are probed and sit on the probing rings.
fn is_live(state: State) -> bool {
    matches!(state, State::Alive | State::Suspect)
}

fn state_index(state: State) -> usize {
    match state {
        State::Alive => 0,
        State::Suspect => 1,
        State::Failed => 2,
        State::Left => 3,
    }
}

impl Members {
    pub(crate) fn new() -> Self {
        Members {
            slots: Vec::new(),
            free: Vec::new(),
            ring: Vec::new(),
            probe_order: Vec::new(),
            probe_pos: 0,
            counts: [0; 4],
            failed: Vec::new(),
            digest: [0; DIGEST_BUCKETS],
            overlay: Overlay::default(),
        }
    }

    /// Places member `me` on `rings` probing rings (0: no overlay) among the live members.
    pub(crate) fn set_overlay(&mut self, me: Slot, rings: usize) {
        let Some(ring_hash) = self.info(me).map(|i| i.ring_hash) else {
            return;
        };
        self.overlay = Overlay::new(rings, me, ring_hash);
        self.rebuild_overlay();
    }

    /// The members that watch `slot` on `rings` probing rings among the members in a state
    /// `eligible` accepts (see [`super::overlay::observers_of`]).
    pub(crate) fn observers_of(
        &self,
        slot: Slot,
        rings: usize,
        eligible: impl Fn(State) -> bool,
    ) -> Vec<Slot> {
        let Some(ring_hash) = self.info(slot).map(|i| i.ring_hash) else {
            return Vec::new();
        };
        let members = self.ring.iter().filter_map(|&s| {
            let member = self.get(s)?;
            eligible(member.state).then_some((s, member.info.ring_hash))
        });
        super::overlay::observers_of(rings, (slot, ring_hash), members)
    }

    /// Our neighbours on the probing rings.
    pub(crate) fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    fn rebuild_overlay(&mut self) {
        let Members {
            overlay,
            ring,
            slots,
            ..
        } = self;
        if !overlay.enabled() {
            return;
        }
        overlay.rebuild(ring.iter().filter_map(|&slot| {
            let member = slots.get(slot as usize)?.as_ref()?;
            is_live(member.state).then_some((slot, member.info.ring_hash))
        }));
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<&Member> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub(crate) fn info(&self, slot: Slot) -> Option<&Arc<MemberInfo>> {
        self.get(slot).map(|m| &m.info)
    }

    fn ring_cmp(&self, slot: Slot, hash: u64, name: &str) -> Ordering {
        match self.info(slot) {
            Some(info) => (info.ring_hash, info.name.as_str()).cmp(&(hash, name)),
            None => Ordering::Less,
        }
    }

    fn ring_search(&self, name: &str) -> Result<usize, usize> {
        let hash = hash64(name.as_bytes(), 0);
        self.ring
            .binary_search_by(|&slot| self.ring_cmp(slot, hash, name))
    }

    pub(crate) fn find(&self, name: &str) -> Option<Slot> {
        let pos = self.ring_search(name).ok()?;
        self.ring.get(pos).copied()
    }

    /// Adds a member not yet in the table and places it at a random point of the probe order
    /// (a name already present returns its slot unchanged).
    pub(crate) fn insert(&mut self, member: Member, rng: &mut impl RngCore) -> Slot {
        let ring_pos = match self.ring_search(member.info.name.as_str()) {
            Err(pos) => pos,
            // Callers look the name up first; should one not, keep the member we have.
            Ok(pos) => {
                if let Some(&slot) = self.ring.get(pos) {
                    return slot;
                }
                pos
            }
        };
        self.counts[state_index(member.state)] += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.slots.get_mut(slot as usize) {
                    *entry = Some(member);
                }
                slot
            }
            None => {
                self.slots.push(Some(member));
                (self.slots.len() - 1) as Slot
            }
        };
        self.ring.insert(ring_pos, slot);
        self.toggle_digest(slot);
        if self.get(slot).is_some_and(|m| m.state == State::Failed) {
            self.failed.push(slot);
        }
        if let Some(m) = self.get(slot).filter(|m| is_live(m.state)) {
            let ring_hash = m.info.ring_hash;
            self.overlay.consider(slot, ring_hash);
        }
        let at = (rng.next_u64() % (self.probe_order.len() as u64 + 1)) as usize;
        self.probe_order.insert(at, slot);
        if at < self.probe_pos {
            self.probe_pos += 1;
        }
        slot
    }

    /// Adds many members not yet in the table at once (restoring 10,000 members one by one
    /// would cost O(n²) in ring insertions).
    pub(crate) fn extend(&mut self, members: Vec<Member>, rng: &mut impl RngCore) -> Vec<Slot> {
        let mut added = Vec::with_capacity(members.len());
        for member in members {
            self.counts[state_index(member.state)] += 1;
            let failed = member.state == State::Failed;
            self.slots.push(Some(member));
            let slot = (self.slots.len() - 1) as Slot;
            if failed {
                self.failed.push(slot);
            }
            self.toggle_digest(slot);
            added.push(slot);
        }
        self.ring.extend_from_slice(&added);
        let slots = &self.slots;
        let key = |s: &Slot| {
            slots
                .get(*s as usize)
                .and_then(Option::as_ref)
                .map(|m| (m.info.ring_hash, m.info.name.as_str()))
        };
        // Input usually arrives in ring order (a snapshot), which this sort handles in O(n).
        self.ring.sort_by(|a, b| key(a).cmp(&key(b)));
        // A name given twice (a hand-edited state file) keeps its first entry.
        let mut repeated = Vec::new();
        self.ring.dedup_by(|later, earlier| {
            let same = key(later) == key(earlier);
            if same {
                repeated.push(*later);
            }
            same
        });
        for slot in repeated {
            self.toggle_digest(slot);
            if let Some(member) = self.slots.get_mut(slot as usize).and_then(Option::take) {
                self.counts[state_index(member.state)] -= 1;
            }
            self.failed.retain(|&s| s != slot);
            self.free.push(slot);
        }
        self.probe_order.extend_from_slice(&added);
        shuffle(&mut self.probe_order, rng);
        self.probe_pos = 0;
        self.rebuild_overlay();
        added
    }

    pub(crate) fn remove(&mut self, slot: Slot) -> Option<Member> {
        let name = self.info(slot)?.name.clone();
        if let Ok(pos) = self.ring_search(name.as_str()) {
            self.ring.remove(pos);
        }
        self.toggle_digest(slot);
        let member = self.slots.get_mut(slot as usize)?.take()?;
        self.counts[state_index(member.state)] -= 1;
        self.failed.retain(|&s| s != slot);
        self.free.push(slot);
        if self.overlay.forget(slot) {
            self.rebuild_overlay();
        }
        // The probe order is cleaned lazily: freed slots are skipped and dropped on reshuffle.
        Some(member)
    }

    fn toggle_digest(&mut self, slot: Slot) {
        if let Some(member) = self.get(slot) {
            let (bucket, term) = (bucket_of(member.info.ring_hash), digest_term(member));
            if let Some(d) = self.digest.get_mut(bucket) {
                *d ^= term;
            }
        }
    }

    /// The anti-entropy digest, one hash per ring bucket.
    pub(crate) fn digest(&self) -> &[u16; DIGEST_BUCKETS] {
        &self.digest
    }

    /// Members of one ring bucket.
    pub(crate) fn bucket(&self, bucket: usize) -> impl Iterator<Item = Slot> + '_ {
        let low = (bucket as u64) << 58;
        let start = self
            .ring
            .partition_point(|&s| self.info(s).is_some_and(|i| i.ring_hash < low));
        self.ring[start.min(self.ring.len())..]
            .iter()
            .copied()
            .take_while(move |&s| {
                self.info(s)
                    .is_some_and(|i| bucket_of(i.ring_hash) == bucket)
            })
    }

    pub(crate) fn set_state(
        &mut self,
        slot: Slot,
        state: State,
        incarnation: Incarnation,
        now: Instant,
    ) {
        let was_live = self.get(slot).is_some_and(|m| is_live(m.state));
        self.toggle_digest(slot);
        self.set_state_inner(slot, state, incarnation, now);
        self.toggle_digest(slot);
        match (was_live, is_live(state)) {
            (true, false) if self.overlay.forget(slot) => self.rebuild_overlay(),
            (false, true) => {
                if let Some(ring_hash) = self.info(slot).map(|i| i.ring_hash) {
                    self.overlay.consider(slot, ring_hash);
                }
            }
            _ => {}
        }
    }

    fn set_state_inner(
        &mut self,
        slot: Slot,
        state: State,
        incarnation: Incarnation,
        now: Instant,
    ) {
        if let Some(Some(member)) = self.slots.get_mut(slot as usize) {
            self.counts[state_index(member.state)] -= 1;
            self.counts[state_index(state)] += 1;
            if member.state != state {
                member.since = now;
                if state == State::Failed {
                    self.failed.push(slot);
                } else if member.state == State::Failed {
                    self.failed.retain(|&s| s != slot);
                }
            }
            member.state = state;
            member.incarnation = incarnation;
            member.proof = None;
        }
    }

    /// A new identity; the proof held was for the old one.
    pub(crate) fn set_info(&mut self, slot: Slot, info: Arc<MemberInfo>) {
        if let Some(Some(member)) = self.slots.get_mut(slot as usize) {
            member.info = info;
            member.proof = None;
        }
    }

    /// The proof of the statement now held (after `set_state`/`set_info`, which drop it).
    pub(crate) fn set_proof(&mut self, slot: Slot, proof: Option<Blob>) {
        if let Some(Some(member)) = self.slots.get_mut(slot as usize) {
            member.proof = proof;
        }
    }

    pub(crate) fn count(&self, state: State) -> usize {
        self.counts[state_index(state)]
    }

    /// A random failed member not in `exclude` that `eligible` accepts.
    pub(crate) fn random_failed(
        &self,
        rng: &mut impl RngCore,
        exclude: &[Slot],
        eligible: impl Fn(&Member) -> bool,
    ) -> Option<Slot> {
        let candidates: Vec<Slot> = self
            .failed
            .iter()
            .copied()
            .filter(|s| !exclude.contains(s) && self.get(*s).is_some_and(&eligible))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates
            .get((rng.next_u64() % candidates.len() as u64) as usize)
            .copied()
    }

    /// Members held, in every state (ourselves included).
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Members that take part in probing and suspicion math: alive or suspect.
    pub(crate) fn live(&self) -> usize {
        self.count(State::Alive) + self.count(State::Suspect)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Slot, &Member)> {
        self.ring
            .iter()
            .filter_map(|&slot| self.get(slot).map(|m| (slot, m)))
    }

    /// The first member after `slot` on the ring that `eligible` accepts.
    pub(crate) fn ring_successor(
        &self,
        slot: Slot,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Option<Slot> {
        let name = self.info(slot)?.name.clone();
        let pos = self.ring_search(name.as_str()).ok()?;
        let len = self.ring.len();
        (1..len)
            .filter_map(|i| self.ring.get((pos + i) % len).copied())
            .find(|&s| self.get(s).is_some_and(|m| eligible(s, m)))
    }

    /// The next member in randomized round-robin order that `eligible` accepts; the order is
    /// reshuffled after each full pass (SWIM §4.3).
    pub(crate) fn next_round_robin(
        &mut self,
        rng: &mut impl RngCore,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Option<Slot> {
        for _ in 0..=self.probe_order.len() {
            if self.probe_pos >= self.probe_order.len() {
                self.reshuffle(rng);
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let slot = self.probe_order.get(self.probe_pos).copied()?;
            self.probe_pos += 1;
            if self.get(slot).is_some_and(|m| eligible(slot, m)) {
                return Some(slot);
            }
        }
        None
    }

    fn reshuffle(&mut self, rng: &mut impl RngCore) {
        let slots = &self.slots;
        self.probe_order
            .retain(|&s| slots.get(s as usize).is_some_and(Option::is_some));
        self.probe_order.dedup();
        shuffle(&mut self.probe_order, rng);
        self.probe_pos = 0;
    }

    /// Up to `count` distinct random members that `eligible` accepts.
    pub(crate) fn random(
        &self,
        count: usize,
        rng: &mut impl RngCore,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        let mut picked = Vec::with_capacity(count);
        if count == 0 || self.ring.is_empty() {
            return picked;
        }
        if self.ring.len() <= count * 8 {
            let mut all: Vec<Slot> = self
                .iter()
                .filter(|(s, m)| eligible(*s, m))
                .map(|(s, _)| s)
                .collect();
            shuffle(&mut all, rng);
            all.truncate(count);
            return all;
        }
        for _ in 0..count * 8 {
            let at = (rng.next_u64() % self.ring.len() as u64) as usize;
            let Some(&slot) = self.ring.get(at) else {
                continue;
            };
            if !picked.contains(&slot) && self.get(slot).is_some_and(|m| eligible(slot, m)) {
                picked.push(slot);
                if picked.len() == count {
                    break;
                }
            }
        }
        picked
    }
}

pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut impl RngCore) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finalizer to spread the bits): the same on
/// every platform and version, since members must agree on rings and selections.
pub(crate) fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
