//! The crash fast path (ours): "nothing listens on its port", corroborated by the member's
//! observers, fails a crashed member within about a round trip.

use super::*;

impl Swim {
    /// Pings `slot` again now, whatever probe of it is running: the error this ping draws
    /// cannot be an old one, or a forgery quoting an older packet.
    pub(super) fn reprobe(&mut self, now: Instant, slot: Slot) {
        let running = self
            .probes
            .iter()
            .find(|(_, p)| p.target == slot)
            .map(|(&seq, p)| (seq, p.target_name.clone()));
        match running {
            Some((seq, target)) => {
                if let Some(addr) = self.members.info(slot).map(|i| i.addr) {
                    self.send(addr, Some(slot), Message::Ping(Ping { seq, target }));
                }
            }
            None => {
                self.start_probe(now, slot, ProbeKind::Verify);
            }
        }
    }

    /// Our own packets found `slot`'s port closed: accuse it as a witness, and tell its
    /// observers at once (they confirm with their own packets) rather than by gossip.
    pub(super) fn witness_closed_port(&mut self, now: Instant, slot: Slot) {
        let Some((name, incarnation)) = self
            .members
            .get(slot)
            .map(|m| (m.info.name.clone(), m.incarnation))
        else {
            return;
        };
        self.trace.record(now, &name, || Step::PortClosed);
        let me = self.my_info().name.clone();
        self.suspect(
            now,
            slot,
            incarnation,
            (me.clone(), None),
            None,
            Source::Gossip,
        );
        if self.note_closed_witnesses(now, slot, std::slice::from_ref(&me), None) {
            return;
        }
        let Some(accuser) = self
            .suspicions
            .get(&slot)
            .map(|s| s.first_accuser().clone())
        else {
            return;
        };
        self.enqueue_suspect(now, slot, &accuser);
        for observer in self.live_observers(slot) {
            if observer == self.me {
                continue;
            }
            if let Some(addr) = self.members.info(observer).map(|i| i.addr) {
                self.send_with(addr, Some(observer), Message::Gossip, Some(slot));
            }
        }
    }

    /// Records members that say `slot`'s port is closed (`via`: who told us), and fails it
    /// at once when enough of its observers agree; true when it failed.
    pub(super) fn note_closed_witnesses(
        &mut self,
        now: Instant,
        slot: Slot,
        witnesses: &[NodeName],
        via: Option<&NodeName>,
    ) -> bool {
        let me = self.me;
        let mut news = false;
        for witness in witnesses.iter().take(MAX_CLOSED_WITNESSES) {
            // Only members we trust to accuse (as for any accusation), never the suspect.
            let trusted = self.members.find(witness.as_str()).is_some_and(|w| {
                w != slot
                    && (w == me || self.members.get(w).is_some_and(|m| m.state == State::Alive))
            });
            if !trusted {
                continue;
            }
            let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                return false;
            };
            if suspicion.add_closed(witness) {
                news = true;
                if suspicion.confirm(witness, None) {
                    let deadline = suspicion.deadline();
                    let confirmations = suspicion.confirmations();
                    self.schedule(deadline, Timer::Suspicion(slot));
                    if let Some(name) = self.members.info(slot).map(|i| i.name.clone()) {
                        self.trace.record(now, &name, || Step::Confirmed {
                            accuser: witness.clone(),
                            via: via.cloned(),
                            confirmations,
                        });
                    }
                }
            }
        }
        if !news {
            return false;
        }
        if self.closed_verdict_due(slot) {
            self.fail_closed(now, slot);
            return true;
        }
        if via.is_some()
            && let Some(accuser) = self
                .suspicions
                .get(&slot)
                .map(|s| s.first_accuser().clone())
        {
            // Pass the larger witness list on.
            self.enqueue_suspect(now, slot, &accuser);
            // Where any member's witness counts, look for ourselves: no observer will probe
            // it at once for us (in a large cluster, its observers do).
            let mine = self.my_info().name.clone();
            let witnessed = self
                .suspicions
                .get(&slot)
                .is_some_and(|s| s.closed().contains(&mine));
            if !witnessed && !self.probing(slot) && self.closed_port_judges(slot).is_none() {
                self.start_probe(now, slot, ProbeKind::Verify);
            }
        }
        false
    }

    /// The suspect's observers, or `None` when any member's witness counts: without an
    /// overlay, or when fewer than `CLOSED_WITNESSES_NEEDED` distinct members watch it (in a
    /// small cluster all rings may give it the same observer: one in 8 clusters of 3).
    pub(super) fn closed_port_judges(&self, slot: Slot) -> Option<Vec<Slot>> {
        if !self.members.overlay().enabled() {
            return None;
        }
        let observers = self.live_observers(slot);
        (observers.len() >= CLOSED_WITNESSES_NEEDED).then_some(observers)
    }

    /// The members that watch `slot` among those alive or suspect (a scan of the table).
    pub(super) fn live_observers(&self, slot: Slot) -> Vec<Slot> {
        let live = |st| matches!(st, State::Alive | State::Suspect);
        self.members.observers_of(slot, self.config.observers, live)
    }

    /// True when at least `CLOSED_WITNESSES_NEEDED` of the suspect's observers (see
    /// `closed_port_judges`) found its port closed.
    pub(super) fn closed_verdict_due(&self, slot: Slot) -> bool {
        let Some(witnesses) = self.suspicions.get(&slot).map(Suspicion::closed) else {
            return false;
        };
        if witnesses.len() < CLOSED_WITNESSES_NEEDED {
            return false;
        }
        let Some(observers) = self.closed_port_judges(slot) else {
            return true;
        };
        let agreeing = witnesses
            .iter()
            .filter(|w| {
                self.members
                    .find(w.as_str())
                    .is_some_and(|s| observers.contains(&s))
            })
            .count();
        agreeing >= CLOSED_WITNESSES_NEEDED
    }

    /// Declares `slot` failed now, and gossips the verdict with its witnesses so that every
    /// member can take it at once.
    pub(super) fn fail_closed(&mut self, now: Instant, slot: Slot) {
        let witnesses = self.closed_witnesses(slot);
        let Some((name, incarnation)) = self
            .members
            .get(slot)
            .filter(|m| m.state == State::Suspect)
            .map(|m| (m.info.name.clone(), m.incarnation))
        else {
            return;
        };
        self.stats.closed_port_verdicts += 1;
        self.trace.record(now, &name, || Step::ClosedVerdict {
            witnesses: witnesses.clone(),
        });
        // Kept while it stays failed, so that its broadcast and our packets name them.
        self.closed_verdicts.insert(slot, witnesses);
        self.transition(now, slot, State::Failed, incarnation, Source::Gossip);
        // And to each neighbour at once: the verdict is all there is to hear (no suspicion
        // spread first), and gossip alone missed a member now and then (1 crash in 500 at
        // 50 members, seen 22 s later in a push-pull). Costs a datagram per neighbour.
        let me = self.me;
        let neighbours = self.neighbours_or_random(2 * self.config.observers.max(4), |s, m| {
            s != me && s != slot && m.state == State::Alive
        });
        for neighbour in neighbours {
            if let Some(addr) = self.members.info(neighbour).map(|i| i.addr) {
                self.send_with(addr, Some(neighbour), Message::Gossip, Some(slot));
            }
        }
    }
}
