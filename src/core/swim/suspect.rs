//! Suspicion: starting, confirming and timing out accusations (Lifeguard's dynamic
//! timeouts and independent confirmations).

use super::*;

impl Swim {
    /// `accuser` suspects `slot` at `incarnation`: start or confirm a suspicion.
    pub(super) fn suspect(
        &mut self,
        now: Instant,
        slot: Slot,
        incarnation: Incarnation,
        (accuser, proof): (NodeName, Option<Blob>),
        via: Option<&NodeName>,
        source: Source,
    ) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        if incarnation < member.incarnation {
            return;
        }
        let name = member.info.name.clone();
        match member.state {
            State::Suspect => {
                let current = member.incarnation;
                let confirmed = self
                    .suspicions
                    .get_mut(&slot)
                    .is_some_and(|s| s.confirm(&accuser, proof));
                if incarnation > current {
                    self.members
                        .set_state(slot, State::Suspect, incarnation, now);
                }
                if confirmed {
                    let confirmations = self
                        .suspicions
                        .get(&slot)
                        .map_or(0, Suspicion::confirmations);
                    self.trace.record(now, &name, || Step::Confirmed {
                        accuser: accuser.clone(),
                        via: via.cloned(),
                        confirmations,
                    });
                    if let Some(deadline) = self.suspicions.get(&slot).map(Suspicion::deadline) {
                        self.schedule(deadline, Timer::Suspicion(slot));
                    }
                    self.enqueue_suspect(now, slot, &accuser);
                }
            }
            State::Alive => {
                self.stats.suspicions += 1;
                self.trace.record(now, &name, || Step::Suspected {
                    accuser: accuser.clone(),
                    via: via.cloned(),
                    incarnation,
                });
                let n = self.members.live();
                let wanted = self.config.suspicion_confirmations;
                let expected = if self.members.overlay().enabled() {
                    // Only the suspect's other observers confirm: a few, now and then fewer
                    // than `wanted` (two rings may give it the same observer).
                    let others = self.live_observers(slot).len().saturating_sub(1);
                    wanted.min(u32::try_from(others).unwrap_or(u32::MAX))
                } else if n.saturating_sub(2) < wanted as usize {
                    0
                } else {
                    wanted
                };
                let bounds = self.config.suspicion_bounds(n);
                let suspicion = Suspicion::new(now, (accuser.clone(), proof), expected, bounds);
                self.schedule(suspicion.deadline(), Timer::Suspicion(slot));
                self.schedule(now + bounds.0 / 2, Timer::SuspicionCheck(slot, now));
                self.suspicions.insert(slot, suspicion);
                self.transition(now, slot, State::Suspect, incarnation, source);
                self.enqueue_suspect(now, slot, &accuser);
                if accuser != self.my_info().name && self.selected_to_confirm(slot, incarnation, 0)
                {
                    self.start_probe(now, slot, ProbeKind::Check);
                }
            }
            State::Failed | State::Left => {}
        }
    }

    /// Our improvement over memberlist: a few members, chosen by hash of (suspect,
    /// incarnation, prober), probe a new suspect at once, so confirmations (or the suspect's
    /// refutation) arrive within about one probe round. Expected set size is
    /// `fast_confirm_probes` whatever the cluster size: O(1) probes per suspicion.
    pub(super) fn selected_to_confirm(
        &self,
        slot: Slot,
        incarnation: Incarnation,
        round: u32,
    ) -> bool {
        if self.config.fast_confirm_probes == 0 || self.leaving {
            return false;
        }
        if self.members.overlay().enabled() {
            // The suspect's observers: at most `observers`, connected to it already.
            return self.members.overlay().watches(slot);
        }
        let Some(suspect) = self.members.info(slot) else {
            return false;
        };
        let others = self.members.live().saturating_sub(2).max(1) as f64;
        let share = (f64::from(self.config.fast_confirm_probes) / others).min(1.0);
        let mut key =
            Vec::with_capacity(suspect.name.as_str().len() + self.name().as_str().len() + 5);
        key.extend_from_slice(suspect.name.as_str().as_bytes());
        key.push(0);
        // The low 32 bits, as when incarnations were 32-bit: the same members are chosen.
        key.extend_from_slice(&(incarnation.0 as u32).to_be_bytes());
        key.extend_from_slice(&round.to_be_bytes());
        key.extend_from_slice(self.name().as_str().as_bytes());
        (hash64(&key, 0x5357_494d) as f64) < share * u64::MAX as f64
    }

    pub(super) fn enqueue_suspect(&mut self, now: Instant, slot: Slot, accuser: &NodeName) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let mut update = Update {
            name: member.info.name.clone(),
            incarnation: member.incarnation,
            state: State::Suspect,
            from: accuser.clone(),
            addr: None,
            tags: None,
            failing: None,
            closed: self.closed_witnesses(slot),
            maintenance: None,
            software: None,
            proof: None,
        };
        // Ours signed, another's with its accuser's proof: relayed, it still confirms.
        update.proof = self.accusation_proof(slot, &update);
        self.broadcasts.push(slot, wire::encode_update(&update));
        self.schedule_gossip(now);
    }

    /// True when we suspect `slot` at exactly `incarnation`.
    pub(super) fn suspected_at(&self, slot: Slot, incarnation: Incarnation) -> bool {
        self.members
            .get(slot)
            .is_some_and(|m| m.state == State::Suspect && m.incarnation == incarnation)
    }

    pub(super) fn closed_witnesses(&self, slot: Slot) -> Vec<NodeName> {
        match self.suspicions.get(&slot) {
            Some(s) => s.closed().to_vec(),
            None => self.closed_verdicts.get(&slot).cloned().unwrap_or_default(),
        }
    }
}
