//! Application notes: opaque keys spread like membership updates (piggybacked, each sent a
//! bounded number of times by every member that learns it) and handed to the application
//! once per member. Hooks confirm cluster-wide deliveries with them.

use std::collections::{HashSet, VecDeque};

use super::broadcast::BroadcastQueue;
use super::members::Slot;
use crate::wire::{self, Note};

/// Keys remembered for deduplication; the oldest is forgotten first. A note lives for a few
/// gossip rounds, so this only has to outlast its spread.
const REMEMBERED: usize = 4096;

#[derive(Default)]
pub(crate) struct Notes {
    queue: BroadcastQueue,
    next: Slot,
    seen: HashSet<String>,
    order: VecDeque<String>,
    inbox: VecDeque<String>,
}

impl Notes {
    /// Starts spreading a note of ours; false if it was already known.
    pub(crate) fn publish(&mut self, key: String) -> bool {
        if !self.remember(&key) {
            return false;
        }
        self.enqueue(key);
        true
    }

    /// A note from a peer: new ones are passed on and handed to the application.
    pub(crate) fn receive(&mut self, key: String) {
        if key.len() > wire::MAX_NOTE_LEN || !self.remember(&key) {
            return;
        }
        self.inbox.push_back(key.clone());
        self.enqueue(key);
    }

    pub(crate) fn poll(&mut self) -> Option<String> {
        self.inbox.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends encoded notes that fit `budget` bytes; returns how many.
    pub(crate) fn fill(&mut self, budget: usize, limit: u32, out: &mut Vec<Vec<u8>>) -> usize {
        let mut bytes = Vec::new();
        let mut sizes = Vec::new();
        let count = self.queue.fill_sized(budget, limit, &mut bytes, &mut sizes);
        let mut rest = bytes.as_slice();
        for size in sizes {
            let (one, tail) = rest.split_at(size.min(rest.len()));
            out.push(one.to_vec());
            rest = tail;
        }
        count
    }

    fn remember(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() == REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.to_string());
        self.order.push_back(key.to_string());
        true
    }

    fn enqueue(&mut self, key: String) {
        self.next = self.next.wrapping_add(1);
        self.queue.push(self.next, wire::encode_note(&Note { key }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_handed_over_once_and_passed_on() {
        let mut notes = Notes::default();
        notes.receive("a".into());
        notes.receive("a".into());
        assert_eq!(notes.poll().as_deref(), Some("a"));
        assert_eq!(notes.poll(), None);
        assert_eq!(notes.queue.len(), 1, "queued for gossip once");
        let mut out = Vec::new();
        assert_eq!(notes.fill(100, 1, &mut out), 1);
        assert_eq!(out, vec![wire::encode_note(&Note { key: "a".into() })]);
        assert!(notes.is_empty());
    }

    #[test]
    fn our_own_note_is_not_handed_back() {
        let mut notes = Notes::default();
        assert!(notes.publish("k".into()));
        assert!(!notes.publish("k".into()));
        notes.receive("k".into());
        assert_eq!(notes.poll(), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut notes = Notes::default();
        for i in 0..REMEMBERED + 10 {
            notes.receive(i.to_string());
        }
        assert_eq!(notes.seen.len(), REMEMBERED);
        notes.receive("0".into());
        assert_eq!(
            notes.inbox.back().map(String::as_str),
            Some("0"),
            "forgotten, so new"
        );
    }
}
