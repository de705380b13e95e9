//! The probing overlay (ours, after Rapid's K-ring expander): `K` pseudo-random rings over
//! the live members. A member watches its successor on every ring (its *subjects*: it
//! probes them, confirms their suspicions) and is watched by its predecessors (its
//! *observers*). Probes, relays, gossip and syncs go to these few stable neighbours, so a
//! member keeps about `2K` QUIC connections open and warm whatever the cluster size, and a
//! suspicion can only be confirmed by the handful of members that watch the suspect.
//!
//! A join changes the neighbours of only the members next to it on each ring; a failure
//! sends only its neighbours looking for the next one (a scan of the table).

use super::members::Slot;

/// Most rings a configuration may ask for.
pub const MAX_RINGS: usize = 16;

/// A member's position on ring `ring`: its name's hash, mixed with the ring number.
pub(crate) fn position(ring_hash: u64, ring: usize) -> u64 {
    let mut z = ring_hash ^ (ring as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per ring, the nearest live member after us (subject) and before us (observer), with its
/// distance along the ring.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    me: Option<(Slot, u64)>,
    subjects: Vec<Option<(u64, Slot)>>,
    observers: Vec<Option<(u64, Slot)>>,
}

impl Overlay {
    /// An overlay of `rings` rings around the member at `me` (0 rings: no overlay).
    pub(crate) fn new(rings: usize, me: Slot, my_ring_hash: u64) -> Self {
        let rings = rings.min(MAX_RINGS);
        Overlay {
            me: (rings > 0).then_some((me, my_ring_hash)),
            subjects: vec![None; rings],
            observers: vec![None; rings],
        }
    }

    /// True when probing and gossip follow the overlay.
    pub(crate) fn enabled(&self) -> bool {
        self.me.is_some()
    }

    /// Distances from us to `ring_hash` on each ring: (ahead, behind).
    fn distances(&self, ring: usize, ring_hash: u64) -> Option<(u64, u64)> {
        let (_, mine) = self.me?;
        let (me, them) = (position(mine, ring), position(ring_hash, ring));
        Some((them.wrapping_sub(me), me.wrapping_sub(them)))
    }

    /// A member became live (alive or suspect): it may be our nearest on some ring.
    pub(crate) fn consider(&mut self, slot: Slot, ring_hash: u64) {
        if self.me.is_none_or(|(me, _)| me == slot) {
            return;
        }
        for ring in 0..self.subjects.len() {
            let Some((ahead, behind)) = self.distances(ring, ring_hash) else {
                return;
            };
            if let Some(s) = self.subjects.get_mut(ring)
                && s.is_none_or(|(d, _)| ahead < d)
            {
                *s = Some((ahead, slot));
            }
            if let Some(o) = self.observers.get_mut(ring)
                && o.is_none_or(|(d, _)| behind < d)
            {
                *o = Some((behind, slot));
            }
        }
    }

    /// A member is no longer live: true if it was a neighbour (call [`Overlay::rebuild`]).
    pub(crate) fn forget(&self, slot: Slot) -> bool {
        self.subjects
            .iter()
            .chain(&self.observers)
            .any(|n| n.is_some_and(|(_, s)| s == slot))
    }

    /// Recomputes every neighbour from the live members `(slot, ring_hash)`.
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (Slot, u64)>) {
        self.subjects.iter_mut().for_each(|s| *s = None);
        self.observers.iter_mut().for_each(|o| *o = None);
        for (slot, ring_hash) in live {
            self.consider(slot, ring_hash);
        }
    }

    /// Our subject on ring `ring`.
    pub(crate) fn subject_on(&self, ring: usize) -> Option<Slot> {
        self.subjects.get(ring).copied().flatten().map(|(_, s)| s)
    }

    /// The number of rings.
    pub(crate) fn rings(&self) -> usize {
        self.subjects.len()
    }

    /// The members we watch, each once.
    pub(crate) fn subjects(&self) -> Vec<Slot> {
        distinct(&self.subjects)
    }

    /// The members we watch and the members watching us, each once.
    pub(crate) fn neighbours(&self) -> Vec<Slot> {
        let mut all = distinct(&self.subjects);
        for o in distinct(&self.observers) {
            if !all.contains(&o) {
                all.push(o);
            }
        }
        all
    }

    /// True if we watch `slot`.
    pub(crate) fn watches(&self, slot: Slot) -> bool {
        self.subjects
            .iter()
            .any(|s| s.is_some_and(|(_, s)| s == slot))
    }

    /// True if we would watch a member at `ring_hash` were it live: it sits between us and
    /// our subject on some ring (so a failed member is retried by about `K` members, its
    /// would-be observers, not by everyone).
    pub(crate) fn would_watch(&self, ring_hash: u64) -> bool {
        (0..self.subjects.len()).any(|ring| {
            let ahead = self.distances(ring, ring_hash).map(|d| d.0);
            match (ahead, self.subjects.get(ring).copied().flatten()) {
                (Some(ahead), Some((subject, _))) => ahead <= subject,
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
    }
}

/// How many distinct members of `live` (`(slot, ring_hash)`) watch the member at
/// `target` on `rings` rings: its predecessors, each counted once. A scan of the table,
/// made when a suspicion starts: confirmations can only come from these members.
pub(crate) fn observers_of(
    rings: usize,
    target: (Slot, u64),
    live: impl Iterator<Item = (Slot, u64)>,
) -> Vec<Slot> {
    let rings = rings.min(MAX_RINGS);
    let mut nearest: Vec<Option<(u64, Slot)>> = vec![None; rings];
    let (target_slot, target_hash) = target;
    let positions: Vec<u64> = (0..rings).map(|r| position(target_hash, r)).collect();
    for (slot, ring_hash) in live {
        if slot == target_slot {
            continue;
        }
        for (ring, (best, &theirs)) in nearest.iter_mut().zip(&positions).enumerate() {
            let behind = theirs.wrapping_sub(position(ring_hash, ring));
            if best.is_none_or(|(d, _)| behind < d) {
                *best = Some((behind, slot));
            }
        }
    }
    distinct(&nearest)
}

fn distinct(entries: &[Option<(u64, Slot)>]) -> Vec<Slot> {
    let mut out: Vec<Slot> = Vec::with_capacity(entries.len());
    for (_, slot) in entries.iter().flatten() {
        if !out.contains(slot) {
            out.push(*slot);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::members::hash64;

    fn hash(i: u32) -> u64 {
        hash64(format!("m{i}").as_bytes(), 0)
    }

    /// The overlay of member `me` among `n` members, all live.
    fn overlay(me: u32, n: u32, rings: usize) -> Overlay {
        let mut o = Overlay::new(rings, me, hash(me));
        o.rebuild((0..n).map(|i| (i, hash(i))));
        o
    }

    #[test]
    fn every_member_is_watched_by_about_k_others_and_watches_as_many() {
        let (n, k) = (500u32, 4usize);
        let overlays: Vec<Overlay> = (0..n).map(|me| overlay(me, n, k)).collect();
        let mut watchers = vec![0usize; n as usize];
        for o in &overlays {
            let subjects = o.subjects();
            assert!((1..=k).contains(&subjects.len()));
            for s in subjects {
                watchers[s as usize] += 1;
            }
        }
        assert!(
            watchers.iter().all(|&w| (1..=k).contains(&w)),
            "{watchers:?}"
        );
        let mean = watchers.iter().sum::<usize>() as f64 / f64::from(n);
        assert!(mean > k as f64 * 0.9, "mean watchers {mean}");
    }

    #[test]
    fn a_join_changes_the_neighbours_of_only_the_members_next_to_it() {
        let (n, k) = (300u32, 4usize);
        let before: Vec<Vec<Slot>> = (0..n).map(|me| overlay(me, n, k).neighbours()).collect();
        let after: Vec<Vec<Slot>> = (0..n)
            .map(|me| overlay(me, n + 1, k).neighbours())
            .collect();
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(changed <= 2 * k, "{changed} members changed neighbours");
    }

    #[test]
    fn forgetting_a_neighbour_asks_for_a_rebuild_and_finds_the_next_one() {
        let mut o = overlay(0, 50, 3);
        let subject = o.subjects()[0];
        assert!(o.forget(subject));
        assert!(!o.forget(1000), "not a neighbour: nothing to rebuild");
        o.rebuild((0..50).filter(|&i| i != subject).map(|i| (i, hash(i))));
        assert!(!o.subjects().contains(&subject));
        assert!(!o.subjects().is_empty());
        assert!(
            o.would_watch(hash(subject)),
            "its old observer would watch it again"
        );
    }

    #[test]
    fn observers_of_a_member_are_the_members_that_watch_it() {
        let (n, k) = (60u32, 4usize);
        let overlays: Vec<Overlay> = (0..n).map(|me| overlay(me, n, k)).collect();
        for target in 0..n {
            let watching = overlays.iter().filter(|o| o.watches(target)).count();
            let counted =
                observers_of(k, (target, hash(target)), (0..n).map(|i| (i, hash(i)))).len();
            assert_eq!(watching, counted, "member {target}");
        }
    }

    #[test]
    fn the_overlay_is_an_expander_gossip_reaches_everyone_in_few_hops() {
        let (n, k) = (2000u32, 4usize);
        let neighbours: Vec<Vec<Slot>> = (0..n).map(|me| overlay(me, n, k).neighbours()).collect();
        let mut seen = vec![false; n as usize];
        let mut frontier = vec![0u32];
        seen[0] = true;
        let mut hops = 0;
        while seen.iter().any(|s| !s) {
            hops += 1;
            let mut next = Vec::new();
            for m in frontier {
                for &nb in &neighbours[m as usize] {
                    if !seen[nb as usize] {
                        seen[nb as usize] = true;
                        next.push(nb);
                    }
                }
            }
            assert!(!next.is_empty(), "the overlay is disconnected");
            frontier = next;
        }
        assert!(hops <= 12, "{hops} hops across {n} members");
    }
}
