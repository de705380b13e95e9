//! Application notes: opaque keys spread like membership updates (piggybacked, each sent a
//! bounded number of times by every member that learns it) and handed to the application
//! once per member, with the member that made it (its proof checked by the core). Hooks
//! confirm cluster-wide deliveries with them.

use std::collections::{HashSet, VecDeque};

use super::broadcast::BroadcastQueue;
use super::members::Slot;
use crate::wire::{self, NodeName, Note};

/// Keys remembered for deduplication; the oldest is forgotten first. A note lives for a few
/// gossip rounds, so this only has to outlast its spread.
const REMEMBERED: usize = 4096;

#[derive(Default)]
pub(crate) struct Notes {
    queue: BroadcastQueue,
    next: Slot,
    seen: HashSet<String>,
    order: VecDeque<String>,
    inbox: VecDeque<(String, NodeName)>,
}

impl Notes {
    /// Starts spreading a note of ours (signed); false if it was already known.
    pub(crate) fn publish(&mut self, note: Note) -> bool {
        if !self.remember(&note.key) {
            return false;
        }
        self.enqueue(&note);
        true
    }

    /// A note from a peer, its maker proven: new ones are passed on and handed to the
    /// application.
    pub(crate) fn receive(&mut self, note: Note) {
        if note.key.len() > wire::MAX_NOTE_LEN || !self.remember(&note.key) {
            return;
        }
        self.enqueue(&note);
        self.inbox.push_back((note.key, note.from));
    }

    /// Whether a note with this key is known already.
    pub(crate) fn knows(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    pub(crate) fn poll(&mut self) -> Option<(String, NodeName)> {
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

    fn enqueue(&mut self, note: &Note) {
        self.next = self.next.wrapping_add(1);
        self.queue.push(self.next, wire::encode_note(note));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(key: &str) -> Note {
        Note {
            key: key.into(),
            from: NodeName::new("n1"),
            proof: None,
        }
    }

    #[test]
    fn a_note_is_handed_over_once_with_its_maker_and_passed_on() {
        let mut notes = Notes::default();
        notes.receive(note("a"));
        notes.receive(note("a"));
        assert_eq!(notes.poll(), Some(("a".into(), NodeName::new("n1"))));
        assert_eq!(notes.poll(), None);
        assert_eq!(notes.queue.len(), 1, "queued for gossip once");
        let mut out = Vec::new();
        assert_eq!(notes.fill(100, 1, &mut out), 1);
        assert_eq!(out, vec![wire::encode_note(&note("a"))]);
        assert!(notes.is_empty());
    }

    #[test]
    fn our_own_note_is_not_handed_back() {
        let mut notes = Notes::default();
        assert!(notes.publish(note("k")));
        assert!(!notes.publish(note("k")));
        notes.receive(note("k"));
        assert_eq!(notes.poll(), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut notes = Notes::default();
        for i in 0..REMEMBERED + 10 {
            notes.receive(note(&i.to_string()));
        }
        assert_eq!(notes.seen.len(), REMEMBERED);
        notes.receive(note("0"));
        assert_eq!(
            notes.inbox.back().map(|(key, _)| key.as_str()),
            Some("0"),
            "forgotten, so new"
        );
    }
}
