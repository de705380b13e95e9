//! State changes and the claims that cause them: applying updates from peers, refuting
//! claims about ourselves, emitting events, reaping.

use super::proof::Admit;
use super::*;

impl Swim {
    /// Moves a member to a new state, with its event and, unless restored, its broadcast.
    pub(super) fn transition(
        &mut self,
        now: Instant,
        slot: Slot,
        state: State,
        incarnation: Incarnation,
        source: Source,
    ) {
        self.transition_proven(now, slot, state, incarnation, source, None);
    }

    /// [`Swim::transition`] to a statement of the member's own, with its proof (passed on
    /// with it).
    pub(super) fn transition_proven(
        &mut self,
        now: Instant,
        slot: Slot,
        state: State,
        incarnation: Incarnation,
        source: Source,
        proof: Option<Blob>,
    ) {
        let Some(previous) = self.members.get(slot).map(|m| m.state) else {
            return;
        };
        self.members.set_state(slot, state, incarnation, now);
        self.members.set_proof(slot, proof);
        if state != State::Suspect {
            self.end_suspicion(slot);
            self.closed_ports.remove(&slot);
        }
        if state != State::Failed {
            self.closed_verdicts.remove(&slot);
        }
        match state {
            State::Failed => self.schedule(now + self.config.reap_failed_after, Timer::Reap(slot)),
            State::Left => self.schedule(now + self.config.reap_left_after, Timer::Reap(slot)),
            _ => {}
        }
        if source != Source::Restore {
            let kind = match (previous, state) {
                (State::Failed, State::Alive) => EventKind::Recovered,
                (State::Left, State::Alive) => EventKind::Joined,
                (_, State::Alive) => EventKind::Updated,
                (_, State::Suspect) => EventKind::Suspect,
                (_, State::Failed) => EventKind::Failed,
                (_, State::Left) => EventKind::Left,
            };
            self.emit(kind, slot, Some(previous));
        }
        // A recovery learnt in a push-pull is news for everyone on our side of a healed
        // partition too: pass it on (other sync state stays with us).
        let recovered = previous == State::Failed && state == State::Alive;
        if (source == Source::Gossip || (source == Source::Sync && recovered))
            && state != State::Suspect
        {
            self.enqueue_broadcast(slot);
            self.schedule_gossip(now);
        }
    }

    /// Forgets the suspicion of `slot`, if any, keeping how many confirmations it had.
    pub(super) fn end_suspicion(&mut self, slot: Slot) {
        if let Some(suspicion) = self.suspicions.remove(&slot) {
            push_sample(&mut self.confirmation_samples, suspicion.confirmations());
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind, slot: Slot, previous: Option<State>) {
        if let Some(member) = self.members.get(slot) {
            self.events.push_back(Event {
                kind,
                member: view(member),
                previous,
            });
        }
    }

    pub(super) fn enqueue_broadcast(&mut self, slot: Slot) {
        if slot == self.me {
            self.sign_own();
        }
        if let Some(member) = self.members.get(slot) {
            let mut update = update_of(member);
            if update.state == State::Failed {
                update.from = self.my_info().name.clone();
                update.closed = self.closed_witnesses(slot);
                update.proof = self.sign(&update);
            }
            self.broadcasts.push(slot, wire::encode_update(&update));
        }
    }

    pub(super) fn announce_self(&mut self, now: Instant) {
        self.enqueue_broadcast(self.me);
        self.schedule_gossip(now);
    }

    pub(super) fn refute(&mut self, now: Instant, claimed: Incarnation) {
        if claimed < self.incarnation() {
            return; // answered already
        }
        while self
            .recent_refutations
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.recent_refutations.pop_front();
        }
        if self.recent_refutations.len() >= MAX_REFUTATIONS_PER_SEC {
            self.stats.refutations_deferred += 1;
            let first = self.deferred_refutation.is_none();
            self.deferred_refutation =
                Some(self.deferred_refutation.map_or(claimed, |d| d.max(claimed)));
            if first && let Some(&oldest) = self.recent_refutations.front() {
                self.schedule(oldest + Duration::from_secs(1), Timer::DeferredRefutation);
            }
            return;
        }
        self.recent_refutations.push_back(now);
        let incarnation = claimed.max(self.incarnation()).next();
        self.members
            .set_state(self.me, State::Alive, incarnation, now);
        self.stats.refutations += 1;
        self.awareness.apply(1);
        self.announce_self(now);
    }

    /// Applies one claim about a member. `sender` is the peer the claim came through.
    pub(super) fn apply_update(
        &mut self,
        now: Instant,
        update: Update,
        sender: Option<&NodeName>,
        source: Source,
    ) {
        let mut update = update;
        let Some(slot) = self.members.find(update.name.as_str()) else {
            if matches!(update.state, State::Alive) || source == Source::Restore {
                if source != Source::Restore
                    && !signed_statement(&update)
                    && bound_incarnation(&mut update, Incarnation(0), false)
                {
                    self.stats.incarnations_bounded += 1;
                }
                if matches!(update.state, State::Alive)
                    && !matches!(self.admit(now, &update, sender, source, None), Admit::Yes)
                {
                    return;
                }
                self.add_member(now, update, source);
            }
            return;
        };
        if slot == self.me {
            if source != Source::Restore {
                self.update_about_me(now, update, sender);
            }
            return;
        }
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let (current, state) = (member.incarnation, member.state);
        let held = Some(state);
        if source != Source::Restore {
            let itself = sender.is_some_and(|s| *s == update.name);
            if !signed_statement(&update) && bound_incarnation(&mut update, current, itself) {
                self.stats.incarnations_bounded += 1;
            }
        }
        if matches!(update.state, State::Suspect | State::Failed)
            && update.incarnation < current
            && state == State::Alive
            && self.members.overlay().enabled()
        {
            self.answer_stale_accusation(slot, sender);
            return;
        }
        // The accuser: named in the update when it sent it or signed it, else the peer it
        // came from (push-pull from an older agent, or a name it cannot prove). Such an
        // accusation may start a suspicion but never confirms one: the peer may only be
        // passing on somebody else's, or making names up.
        let accusation = matches!(update.state, State::Suspect | State::Failed);
        let named = accusation
            && !update.from.as_str().is_empty()
            && (sender == Some(&update.from)
                || source == Source::Restore
                || ((update.incarnation >= current
                    && matches!(state, State::Alive | State::Suspect))
                    && self.proven_accusation(&update)));
        if accusation && !named {
            update.from = sender.cloned().unwrap_or_default();
            update.proof = None;
        }
        // Accusations from members we believe suspect or failed are not trusted: a member
        // that cannot hear acks, or the far side of a healed partition, would otherwise
        // fail healthy members (ours).
        if matches!(update.state, State::Suspect | State::Failed) {
            let distrusted = self
                .members
                .find(update.from.as_str())
                .filter(|&s| s != self.me)
                .and_then(|s| self.members.get(s))
                .is_some_and(|m| matches!(m.state, State::Suspect | State::Failed));
            if distrusted {
                return;
            }
        }
        let source = match source {
            Source::Sync if sender.is_some_and(|s| *s == update.name) => Source::Gossip,
            other => other,
        };
        match update.state {
            State::Alive => {
                let newer = update.incarnation > current;
                // The same claim again, but whole: an agent older than the maintenance and
                // software fields relays a claim without them, and whoever heard that first
                // holds it stripped (no software: every newer member states its own). The
                // member's own word, or a relay that carries its software, completes it.
                // Details only: it refutes nothing (that takes a higher incarnation).
                let completes = update.incarnation == current
                    && state == State::Alive
                    && (sender.is_some_and(|s| *s == update.name)
                        || (member.info.software.is_none() && update.software.is_some()));
                if !newer && source != Source::Restore && !completes {
                    return;
                }
                if !matches!(self.admit(now, &update, sender, source, held), Admit::Yes) {
                    return;
                }
                let proof = update.proof.take();
                let Some(member) = self.members.get(slot) else {
                    return;
                };
                let same_claim = !newer && source != Source::Restore;
                let mut changed = false;
                let before = member.info.health();
                let mut after = before;
                if let (Some(addr), Some(tags)) = (update.addr, update.tags) {
                    let info = member.info.clone();
                    let fresh = MemberInfo::new(info.name.clone(), addr.0, tags)
                        .with_failing(update.failing.unwrap_or_default())
                        .with_maintenance(update.maintenance)
                        .with_software(update.software);
                    after = fresh.health();
                    if *info != fresh {
                        changed = true;
                        self.members.set_info(slot, Arc::new(fresh));
                    }
                }
                if same_claim {
                    // Not gossiped again: every holder of a stripped copy doing so would send
                    // N x N updates at once after a restore or an upgrade; the member's own
                    // gossip and its push-pulls complete the others. No event unless the
                    // health itself turned (the release alone is no membership change).
                    if changed {
                        self.members.set_proof(slot, proof);
                    }
                    if changed && before != after {
                        self.emit_health(slot, before, after);
                    }
                    return;
                }
                if state == State::Alive {
                    self.members
                        .set_state(slot, State::Alive, update.incarnation, now);
                    self.members.set_proof(slot, proof);
                    if changed && source != Source::Restore {
                        self.emit_health(slot, before, after);
                    }
                    if source == Source::Gossip {
                        self.enqueue_broadcast(slot);
                        self.schedule_gossip(now);
                    }
                } else {
                    self.trace.record(now, &update.name, || Step::Alive {
                        incarnation: update.incarnation,
                        via: sender.cloned(),
                    });
                    self.transition_proven(
                        now,
                        slot,
                        State::Alive,
                        update.incarnation,
                        source,
                        proof,
                    );
                }
            }
            State::Suspect if named || state == State::Alive => {
                let (incarnation, from, proof) = (update.incarnation, update.from, update.proof);
                self.suspect(now, slot, incarnation, (from, proof), sender, source);
                if !update.closed.is_empty() && self.suspected_at(slot, incarnation) {
                    self.note_closed_witnesses(now, slot, &update.closed, sender);
                }
            }
            State::Suspect => {}
            State::Failed => {
                if update.incarnation < current || matches!(state, State::Failed | State::Left) {
                    return;
                }
                if state == State::Alive {
                    let accuser = (update.from.clone(), update.proof.clone());
                    self.suspect(now, slot, update.incarnation, accuser, sender, source);
                }
                if !update.closed.is_empty()
                    && self.suspected_at(slot, update.incarnation)
                    && self.note_closed_witnesses(now, slot, &update.closed, sender)
                {
                    return; // its observers found its port closed: no need to wait
                }
                // A verdict on a member we did not suspect, or only just began to: check it
                // ourselves and accept the verdict only once our suspicion is half its minimum
                // old, so the member gets a chance to refute in our eyes. A crashed member
                // costs nothing more (we rarely hear a verdict before the suspicion); a
                // confused member, or the far side of a healed partition, cannot fail a
                // healthy one (ours).
                let half_min = self.config.suspicion_bounds(self.members.live()).0 / 2;
                let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                    return;
                };
                let accepted = now >= suspicion.started() + half_min;
                self.trace.record(now, &update.name, || Step::VerdictHeard {
                    accuser: update.from.clone(),
                    via: sender.cloned(),
                    accepted,
                });
                let Some(suspicion) = self.suspicions.get_mut(&slot) else {
                    return;
                };
                if !accepted {
                    let at = suspicion.accept_verdict_at(suspicion.started() + half_min);
                    self.schedule(at, Timer::Suspicion(slot));
                    if !self.probing(slot) {
                        self.start_probe(now, slot, ProbeKind::Check);
                    }
                    return;
                }
                self.transition(now, slot, State::Failed, update.incarnation, source);
            }
            State::Left => {
                if update.incarnation < current || state == State::Left {
                    return;
                }
                if !matches!(self.admit(now, &update, sender, source, held), Admit::Yes) {
                    return;
                }
                let proof = update.proof.take();
                let incarnation = update.incarnation;
                self.transition_proven(now, slot, State::Left, incarnation, source, proof);
            }
        }
    }

    pub(super) fn insert_member(
        &mut self,
        now: Instant,
        info: Arc<MemberInfo>,
        incarnation: Incarnation,
        state: State,
    ) -> Slot {
        let slot = self.members.insert(
            Member {
                info,
                incarnation,
                state,
                since: now,
                proof: None,
            },
            &mut self.rng,
        );
        match state {
            State::Failed => self.schedule(now + self.config.reap_failed_after, Timer::Reap(slot)),
            State::Left => self.schedule(now + self.config.reap_left_after, Timer::Reap(slot)),
            State::Alive | State::Suspect => {}
        }
        slot
    }

    pub(super) fn add_member(&mut self, now: Instant, mut update: Update, source: Source) {
        if self.members.len() >= MAX_MEMBERS {
            self.stats.members_refused += 1;
            return;
        }
        let proof = update.proof.take();
        let addr = update.addr.map(|a| a.0).unwrap_or(WireAddr::default().0);
        let info = Arc::new(
            MemberInfo::new(update.name, addr, update.tags.unwrap_or_default())
                .with_failing(update.failing.unwrap_or_default())
                .with_maintenance(update.maintenance.filter(|_| update.state == State::Alive))
                .with_software(update.software.filter(|_| update.state == State::Alive)),
        );
        let slot = self.insert_member(now, info, update.incarnation, update.state);
        self.members.set_proof(slot, proof);
        if self.members.live() > 1 {
            self.joined = true;
        }
        if source != Source::Restore {
            self.emit(EventKind::Joined, slot, None);
        }
        if source == Source::Gossip {
            self.enqueue_broadcast(slot);
            self.schedule_gossip(now);
        }
    }

    pub(super) fn update_about_me(
        &mut self,
        now: Instant,
        update: Update,
        sender: Option<&NodeName>,
    ) {
        let current = self.incarnation();
        if self.leaving {
            return;
        }
        // A claim is followed at most one step above what we hold: had we jumped to a
        // forged `left@u64::MAX`, its repeats would look stale to us while the others,
        // holding us far lower, took them; and our answer to a forged `alive@u64::MAX`
        // would be signed at the top, where we could never outbid anything again. An
        // alive claim's step is one more than the others take an unsigned one (only in a
        // rolling upgrade), so that our answer outbids what they hold.
        let mut update = update;
        let bound = if update.state == State::Alive {
            current
        } else {
            Incarnation(current.0.saturating_add(MAX_INCARNATION_STEP - 1))
        };
        if bound_incarnation(&mut update, bound, false) {
            self.stats.incarnations_bounded += 1;
        }
        match update.state {
            State::Alive => {
                let me = self.my_info();
                let differs = update.addr.is_some_and(|a| a.0 != me.addr)
                    || update.tags.as_ref().is_some_and(|t| *t != me.tags)
                    || update.failing.as_ref().is_some_and(|f| *f != me.failing)
                    // `None` is also what an agent that predates maintenance relays: were
                    // it a difference, each relay would make us refute again.
                    || update.maintenance.as_ref().is_some_and(|r| Some(r) != me.maintenance.as_ref());
                // A newer incarnation of us (from before a restart that lost our state), or
                // the same one with other details: outbid it.
                if update.incarnation > current || (update.incarnation == current && differs) {
                    self.refute(now, update.incarnation);
                }
            }
            State::Suspect => {
                if update.incarnation >= current {
                    let after_link_check = self.awareness.score() > 0;
                    self.trace_refuting(now, &update, sender, after_link_check);
                    if after_link_check {
                        // Some of our own probes failed without nacks: we may be the culprit,
                        // so we refute only once our links are shown to work.
                        self.refute_after_link_check(now, update.incarnation);
                        return;
                    }
                    self.refute(now, update.incarnation);
                }
                if sender != Some(&update.from) {
                    self.tell_accuser(&update.from);
                }
                if let Some(sender) = sender {
                    // The sender still holds the suspicion: it missed our refutation.
                    self.tell_sender(sender);
                }
            }
            State::Failed | State::Left => {
                if update.incarnation >= current {
                    self.trace_refuting(now, &update, sender, true);
                    // The cluster agreed we are gone: claim otherwise only once our links
                    // are shown to work, whatever our health score says.
                    self.refute_after_link_check(now, update.incarnation);
                    return;
                }
                if sender != Some(&update.from) {
                    self.tell_accuser(&update.from);
                }
                if let Some(sender) = sender {
                    self.tell_sender(sender);
                }
            }
        }
    }

    pub(super) fn trace_refuting(
        &mut self,
        now: Instant,
        update: &Update,
        sender: Option<&NodeName>,
        after_link_check: bool,
    ) {
        self.trace.record(now, &update.name, || Step::Refuting {
            claimed: update.incarnation,
            accuser: update.from.clone(),
            via: sender.cloned(),
            after_link_check,
        });
    }

    /// Sends our view of `slot` to a random neighbour (see `answer_stale_accusation`).
    pub(super) fn ask_a_neighbour_about(&mut self, slot: Slot) {
        let me = self.me;
        let peers =
            self.neighbours_or_random(1, |s, m| s != me && s != slot && m.state == State::Alive);
        if let Some(&peer) = peers.first()
            && let Some(addr) = self.members.info(peer).map(|i| i.addr)
        {
            self.send_with(addr, Some(peer), Message::Gossip, Some(slot));
        }
    }

    /// A peer accused `slot` at an incarnation it has already refuted: answer with our view,
    /// so the peer (which missed the refutation) does not fail a live member when its
    /// suspicion runs out. One answer per such packet, so this cannot amplify.
    pub(super) fn answer_stale_accusation(&mut self, slot: Slot, sender: Option<&NodeName>) {
        let Some(peer) = sender
            .and_then(|s| self.members.find(s.as_str()))
            .filter(|&p| p != self.me && p != slot)
        else {
            return;
        };
        if let Some(addr) = self.members.info(peer).map(|i| i.addr) {
            self.send_with(addr, Some(peer), Message::Gossip, Some(slot));
        }
    }

    /// Answers a packet that carried a stale accusation of us with our current view: the
    /// sender missed our refutation (gossip reaches all but a few members; a missed one
    /// would fail us when its suspicion runs out). One answer per such packet, so this
    /// cannot amplify; the packet may be lost, so every one is answered.
    pub(super) fn tell_sender(&mut self, sender: &NodeName) {
        let Some(slot) = self.members.find(sender.as_str()).filter(|&s| s != self.me) else {
            return;
        };
        let Some(addr) = self.members.info(slot).map(|i| i.addr) else {
            return;
        };
        let me = self.me;
        self.send_with(addr, Some(slot), Message::Gossip, Some(me));
    }

    /// Sends our refutation straight to whoever accused us (at most 8 per incarnation): its
    /// suspicion started first, so its timer runs out first, and gossip alone may reach it
    /// late.
    pub(super) fn tell_accuser(&mut self, accuser: &NodeName) {
        let incarnation = self.incarnation();
        if self.told_accusers.0 != incarnation {
            self.told_accusers = (incarnation, Vec::new());
        }
        if accuser.as_str().is_empty()
            || self.told_accusers.1.contains(accuser)
            || self.told_accusers.1.len() >= 8
        {
            return;
        }
        let Some(slot) = self.members.find(accuser.as_str()) else {
            return;
        };
        let Some(addr) = self.members.info(slot).map(|i| i.addr) else {
            return;
        };
        self.told_accusers.1.push(accuser.clone());
        let me = self.me;
        self.send_with(addr, Some(slot), Message::Gossip, Some(me));
    }

    pub(super) fn reap(&mut self, now: Instant, slot: Slot) {
        let Some(member) = self.members.get(slot) else {
            return;
        };
        let after = match member.state {
            State::Failed => self.config.reap_failed_after,
            State::Left => self.config.reap_left_after,
            _ => return,
        };
        if now.saturating_duration_since(member.since) < after {
            return;
        }
        let name = member.info.name.clone();
        self.emit(EventKind::Reaped, slot, Some(member.state));
        self.broadcasts.remove(slot);
        self.suspicions.remove(&slot);
        self.closed_ports.remove(&slot);
        self.closed_verdicts.remove(&slot);
        self.keyring.forget(&name);
        self.signers.remove(&name);
        self.members.remove(slot);
    }
}

/// A statement that carries its member's proof: taken whole once the proof checks out (the
/// member's own word may raise its incarnation as far as it likes; `admit` refuses it
/// otherwise), so it is not bounded like a third party's claim.
fn signed_statement(update: &Update) -> bool {
    update.proof.is_some() && matches!(update.state, State::Alive | State::Left)
}
