//! The queue of updates waiting to be piggybacked: one entry per member (a newer update
//! replaces an older one), least-transmitted first and newest first among equals, each sent
//! a bounded number of times (memberlist's TransmitLimitedQueue).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::members::Slot;

struct Entry {
    bytes: Vec<u8>,
    transmits: u32,
    id: u64,
}

#[derive(Default)]
pub(crate) struct BroadcastQueue {
    entries: HashMap<Slot, Entry>,
    order: BTreeSet<(u32, Reverse<u64>, Slot)>,
    next_id: u64,
}

impl BroadcastQueue {
    /// Queues an encoded update about `slot`, replacing any older one about the same member.
    pub(crate) fn push(&mut self, slot: Slot, bytes: Vec<u8>) {
        self.remove(slot);
        self.next_id += 1;
        let entry = Entry {
            bytes,
            transmits: 0,
            id: self.next_id,
        };
        self.order.insert((0, Reverse(entry.id), slot));
        self.entries.insert(slot, entry);
    }

    pub(crate) fn remove(&mut self, slot: Slot) {
        if let Some(old) = self.entries.remove(&slot) {
            self.order.remove(&(old.transmits, Reverse(old.id), slot));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn contains(&self, slot: Slot) -> bool {
        self.entries.contains_key(&slot)
    }

    /// Appends to `out` the updates that fit in `budget` bytes, skipping the members in `exclude`, and counts
    /// a transmission for each; an update sent `limit` times leaves the queue.
    pub(crate) fn fill(
        &mut self,
        budget: usize,
        limit: u32,
        exclude: &[Option<Slot>],
        out: &mut Vec<u8>,
    ) -> usize {
        self.fill_inner(budget, Some(limit), exclude, out, None)
    }

    /// [`BroadcastQueue::fill`] without counting the transmissions: for packets to members
    /// we believe failed, which most likely never arrive.
    pub(crate) fn fill_uncounted(
        &mut self,
        budget: usize,
        exclude: &[Option<Slot>],
        out: &mut Vec<u8>,
    ) -> usize {
        self.fill_inner(budget, None, exclude, out, None)
    }

    /// [`BroadcastQueue::fill`], also recording each entry's size in `sizes`.
    pub(crate) fn fill_sized(
        &mut self,
        budget: usize,
        limit: u32,
        out: &mut Vec<u8>,
        sizes: &mut Vec<usize>,
    ) -> usize {
        self.fill_inner(budget, Some(limit), &[], out, Some(sizes))
    }

    fn fill_inner(
        &mut self,
        budget: usize,
        limit: Option<u32>,
        exclude: &[Option<Slot>],
        out: &mut Vec<u8>,
        mut sizes: Option<&mut Vec<usize>>,
    ) -> usize {
        let mut used = 0;
        let mut picked = Vec::new();
        for &(transmits, id, slot) in &self.order {
            if budget.saturating_sub(used) < 8 {
                break;
            }
            if exclude.contains(&Some(slot)) {
                continue;
            }
            let Some(entry) = self.entries.get(&slot) else {
                continue;
            };
            if entry.bytes.len() <= budget.saturating_sub(used) {
                used += entry.bytes.len();
                out.extend_from_slice(&entry.bytes);
                if let Some(sizes) = sizes.as_deref_mut() {
                    sizes.push(entry.bytes.len());
                }
                picked.push((transmits, id, slot));
            }
        }
        let Some(limit) = limit else {
            return picked.len();
        };
        for key in &picked {
            self.order.remove(key);
            let (transmits, id, slot) = *key;
            if transmits + 1 >= limit {
                self.entries.remove(&slot);
            } else {
                if let Some(entry) = self.entries.get_mut(&slot) {
                    entry.transmits = transmits + 1;
                }
                self.order.insert((transmits + 1, id, slot));
            }
        }
        picked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_sent_and_newest_go_first_and_each_is_sent_a_bounded_number_of_times() {
        let mut q = BroadcastQueue::default();
        q.push(1, vec![1; 10]);
        q.push(2, vec![2; 10]);
        let mut out = Vec::new();
        assert_eq!(q.fill(15, 2, &[], &mut out), 1);
        assert_eq!(out, vec![2; 10], "newest first");
        out.clear();
        assert_eq!(q.fill(15, 2, &[], &mut out), 1);
        assert_eq!(out, vec![1; 10], "then the least sent");
        out.clear();
        assert_eq!(q.fill(100, 2, &[], &mut out), 2);
        assert!(q.is_empty(), "every update was sent twice");
    }

    #[test]
    fn newer_update_replaces_older_about_same_member() {
        let mut q = BroadcastQueue::default();
        q.push(1, vec![1; 4]);
        q.push(1, vec![9; 4]);
        assert_eq!(q.len(), 1);
        let mut out = Vec::new();
        q.fill(100, 5, &[], &mut out);
        assert_eq!(out, vec![9; 4]);
    }

    #[test]
    fn uncounted_sends_do_not_use_up_an_update() {
        let mut q = BroadcastQueue::default();
        q.push(1, vec![1; 4]);
        let mut out = Vec::new();
        for _ in 0..5 {
            assert_eq!(q.fill_uncounted(100, &[], &mut out), 1);
        }
        assert_eq!(q.fill(100, 1, &[], &mut out), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn excluded_member_is_skipped() {
        let mut q = BroadcastQueue::default();
        q.push(1, vec![1; 4]);
        let mut out = Vec::new();
        assert_eq!(q.fill(100, 5, &[Some(1)], &mut out), 0);
        assert!(q.contains(1));
    }
}
