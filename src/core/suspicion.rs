//! Lifeguard's dynamic suspicion timeout: it starts at a maximum and shrinks towards a
//! minimum as independent confirmations arrive.

use std::time::{Duration, Instant};

use crate::wire::{Blob, MAX_CLOSED_WITNESSES, NodeName};

/// One running suspicion of a member.
#[derive(Debug)]
pub(crate) struct Suspicion {
    started: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations after which the timeout is `min`.
    expected: u32,
    /// Who has suspected the member independently (the first accuser included).
    accusers: Vec<NodeName>,
    /// Each accuser's signature over its accusation, when it came with one (passed on).
    proofs: Vec<Option<Blob>>,
    /// A `failed` verdict arrived while the suspicion was young: it takes effect then.
    verdict_at: Option<Instant>,
    /// Our own verdict waits until then (see `hold`).
    held_until: Option<Instant>,
    /// Members that found nothing listening on the suspect's port (bounded).
    closed: Vec<NodeName>,
}

impl Suspicion {
    pub(crate) fn new(
        now: Instant,
        (accuser, proof): (NodeName, Option<Blob>),
        expected: u32,
        (min, max): (Duration, Duration),
    ) -> Self {
        Suspicion {
            started: now,
            min,
            max,
            expected,
            accusers: vec![accuser],
            proofs: vec![proof],
            verdict_at: None,
            held_until: None,
            closed: Vec::new(),
        }
    }

    /// Records that `witness` found the suspect's port closed; true when it is news.
    pub(crate) fn add_closed(&mut self, witness: &NodeName) -> bool {
        if self.closed.len() >= MAX_CLOSED_WITNESSES || self.closed.contains(witness) {
            return false;
        }
        self.closed.push(witness.clone());
        true
    }

    /// The members that found the suspect's port closed.
    pub(crate) fn closed(&self) -> &[NodeName] {
        &self.closed
    }

    /// Records an accusation; true when it came from a member not heard before.
    pub(crate) fn confirm(&mut self, accuser: &NodeName, proof: Option<Blob>) -> bool {
        if self.accusers.len() > self.expected as usize || self.accusers.contains(accuser) {
            return false;
        }
        self.accusers.push(accuser.clone());
        self.proofs.push(proof);
        true
    }

    /// `accuser`'s signature over its accusation, if it came with one.
    pub(crate) fn proof_of(&self, accuser: &NodeName) -> Option<Blob> {
        let i = self.accusers.iter().position(|a| a == accuser)?;
        self.proofs.get(i).cloned().flatten()
    }

    /// Who suspected the member first.
    pub(crate) fn first_accuser(&self) -> &NodeName {
        match self.accusers.first() {
            Some(accuser) => accuser,
            None => unreachable!("a suspicion starts with its accuser"),
        }
    }

    /// Independent confirmations so far (accusers beyond the first).
    pub(crate) fn confirmations(&self) -> u32 {
        self.accusers.len().saturating_sub(1) as u32
    }

    /// True while confirmations could still shorten the timeout.
    pub(crate) fn wants_confirmations(&self) -> bool {
        self.confirmations() < self.expected
    }

    /// When the suspicion began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Records a verdict to accept at `at` (the earliest one wins); returns the new deadline.
    pub(crate) fn accept_verdict_at(&mut self, at: Instant) -> Instant {
        self.verdict_at = Some(self.verdict_at.map_or(at, |v| v.min(at)));
        self.deadline()
    }

    /// True when the only evidence is the first accuser's: no confirmation, no verdict.
    pub(crate) fn uncorroborated(&self) -> bool {
        self.confirmations() == 0 && self.verdict_at.is_none()
    }

    /// Holds our own verdict until `until` (a verdict from others still wins); returns the
    /// new deadline.
    pub(crate) fn hold(&mut self, until: Instant) -> Instant {
        self.held_until = Some(until);
        self.deadline()
    }

    /// The minimum timeout of this suspicion.
    pub(crate) fn min(&self) -> Duration {
        self.min
    }

    /// When the member is declared failed, given the confirmations so far.
    pub(crate) fn deadline(&self) -> Instant {
        let own = self.started + timeout(self.confirmations(), self.expected, self.min, self.max);
        let own = self.held_until.map_or(own, |h| h.max(own));
        self.verdict_at.map_or(own, |v| v.min(own))
    }
}

/// `max - (max - min) · log(c + 1) / log(k + 1)`, never below `min` (Lifeguard, §4.2).
fn timeout(confirmations: u32, expected: u32, min: Duration, max: Duration) -> Duration {
    if expected == 0 {
        return min;
    }
    let fraction = f64::from(confirmations + 1).ln() / f64::from(expected + 1).ln();
    let shrink = (max.as_secs_f64() - min.as_secs_f64()) * fraction;
    Duration::from_secs_f64((max.as_secs_f64() - shrink).max(min.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(12);

    #[test]
    fn timeout_starts_at_max_and_reaches_min_after_expected_confirmations() {
        assert_eq!(timeout(0, 3, MIN, MAX), MAX);
        let one = timeout(1, 3, MIN, MAX);
        let two = timeout(2, 3, MIN, MAX);
        assert!(one < MAX && two < one && two > MIN, "{one:?} {two:?}");
        assert_eq!(timeout(3, 3, MIN, MAX), MIN);
        assert_eq!(timeout(9, 3, MIN, MAX), MIN);
    }

    #[test]
    fn no_expected_confirmations_means_minimum_timeout() {
        assert_eq!(timeout(0, 0, MIN, MAX), MIN);
    }

    #[test]
    fn only_new_accusers_confirm() {
        let now = Instant::now();
        let mut s = Suspicion::new(now, ("a".into(), None), 2, (MIN, MAX));
        assert_eq!(s.deadline(), now + MAX);
        assert!(!s.confirm(&"a".into(), None));
        assert!(s.confirm(&"b".into(), None));
        assert!(!s.confirm(&"b".into(), None));
        assert!(s.confirm(&"c".into(), None));
        assert!(
            !s.confirm(&"d".into(), None),
            "beyond the expected count nothing changes"
        );
        assert_eq!(s.deadline(), now + MIN);
    }

    #[test]
    fn a_hold_postpones_our_verdict_but_not_one_from_others() {
        let now = Instant::now();
        let mut s = Suspicion::new(now, ("a".into(), None), 2, (MIN, MAX));
        assert!(s.uncorroborated());
        let later = now + MAX + MIN;
        assert_eq!(s.hold(later), later);
        assert_eq!(s.hold(now), now + MAX, "a hold never advances the verdict");
        assert_eq!(s.accept_verdict_at(now + MIN), now + MIN);
        assert!(!s.uncorroborated());
    }
}
