//! Timers: scheduling, the wall-clock-aligned probe slots, and what each timer does when
//! it fires.

use super::*;

impl Swim {
    pub(super) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    /// Tells the core the wall-clock time at `now` (since the Unix epoch), so that its probe
    /// slots line up with every other member's (see `probe_next`). Clock skew between hosts
    /// only spreads the slots: nothing else depends on it.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall_clock = (now, since_epoch);
    }

    /// The probe slot `t` falls in: its number on the wall clock and when it began.
    pub(super) fn probe_slot(&self, t: Instant) -> (u64, Instant) {
        let (base, wall) = self.wall_clock;
        let wall = if t >= base {
            wall + (t - base)
        } else {
            wall.saturating_sub(base - t)
        };
        let interval = self.config.probe_interval.as_nanos().max(1);
        let into = wall.as_nanos() % interval;
        let slot = (wall.as_nanos() / interval) as u64;
        let into = Duration::from_nanos(u64::try_from(into).unwrap_or(u64::MAX));
        (slot, t.checked_sub(into).unwrap_or(t))
    }

    pub(super) fn random_fraction_of(&mut self, d: Duration) -> Duration {
        d.mul_f64(unit_fraction(self.rng.next_u64()))
    }

    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Probe => {
                let interval = self.awareness.scale(self.config.probe_interval);
                let next = if self.members.overlay().enabled() {
                    self.probe_slot(now + interval).1 + self.probe_phase
                } else {
                    now + interval
                };
                self.schedule(next, Timer::Probe);
                if !self.leaving {
                    self.probe_next(now);
                }
            }
            Timer::Gossip => {
                self.gossip_scheduled = false;
                self.gossip(now);
            }
            Timer::PushPull => {
                self.schedule(now + self.config.push_pull_interval, Timer::PushPull);
                self.sync_with_random_member(now);
            }
            Timer::SyncAfterJoin(round) => {
                // First with the member that answered our join: in a cluster starting
                // together it has heard from every joiner since, while a random member may
                // have joined before most of them.
                match self
                    .join_peer
                    .take()
                    .filter(|&p| self.members.get(p).is_some_and(|m| m.state == State::Alive))
                {
                    Some(peer) if !self.leaving => self.push_pull(now, peer, false),
                    _ => self.sync_with_random_member(now),
                }
                if round < SYNCS_AFTER_JOIN - 1 {
                    let delay = self.config.gossip_interval * (4 << (2 * round));
                    self.schedule(now + delay, Timer::SyncAfterJoin(round + 1));
                }
            }
            Timer::SyncAgain => {
                self.sync_again_scheduled = false;
                self.sync_with_random_member(now);
            }
            Timer::Reconnect => {
                self.schedule(now + self.config.reconnect_interval, Timer::Reconnect);
                self.reconnect(now);
            }
            Timer::SeedRetry => {
                if !self.leaving && self.members.live() <= 1 && !self.seeds.is_empty() {
                    self.contact_seeds(now);
                }
                self.schedule(now + self.config.seed_retry_interval, Timer::SeedRetry);
            }
            Timer::DirectTimeout(seq) => self.on_direct_timeout(now, seq),
            Timer::ProbeDeadline(seq) => self.on_probe_deadline(now, seq),
            Timer::RelayNack(seq) => {
                if let Some(relay) = self.relays.get(&seq) {
                    let (requester, msg) =
                        (relay.requester, Message::Nack(Nack { seq: relay.seq }));
                    let to = self.members.find(relay.requester_name.as_str());
                    self.send(requester, to, msg);
                }
            }
            Timer::RelayTimeout(seq) => {
                // A late ack still goes back until now (after our nack: the prober counts both).
                self.relays.remove(&seq);
            }
            Timer::Suspicion(slot) => {
                let due = self.suspicions.get(&slot).map(Suspicion::deadline);
                if due.is_none_or(|d| d > now) {
                    return;
                }
                if self.hold_own_verdict(now, slot) {
                    return;
                }
                if let (Some(s), Some(info)) = (self.suspicions.get(&slot), self.members.info(slot))
                {
                    let confirmations = s.confirmations();
                    self.trace
                        .record(now, &info.name, || Step::Failed { confirmations });
                }
                self.end_suspicion(slot);
                if let Some(m) = self.members.get(slot).filter(|m| m.state == State::Suspect) {
                    let incarnation = m.incarnation;
                    self.transition(now, slot, State::Failed, incarnation, Source::Gossip);
                }
            }
            Timer::SuspicionCheck(slot, started) => {
                // Halfway to the earliest verdict we may have missed the refutation: gossip
                // reaches all but a few members. Ask the member ourselves; the ping tells it
                // what we believe, so a live member answers with its news. Short of
                // confirmations, each round a fresh few members chosen by hash (as fast
                // confirmers are) make it a full probe: in a partition the first confirmers
                // may sit on the far side. Only a few: were every suspecting member to probe,
                // the few probes that fail by chance under loss (3% each at 15%) would add up
                // to confirmations of a healthy member, more of them the larger the cluster.
                let Some(wants_confirmations) = self
                    .suspicions
                    .get(&slot)
                    .filter(|s| s.started() == started)
                    .map(Suspicion::wants_confirmations)
                else {
                    return;
                };
                // Again while it lasts: the ping or its answer may be lost.
                let (min, _) = self.config.suspicion_bounds(self.members.live());
                self.schedule(now + min / 2, Timer::SuspicionCheck(slot, started));
                if !self.leaving && !self.probing(slot) {
                    let round = now.saturating_duration_since(started).as_nanos()
                        / (min / 2).as_nanos().max(1);
                    let incarnation = self.members.get(slot).map(|m| m.incarnation);
                    let selected = if self.members.overlay().enabled() {
                        // Its observers among the members we believe alive: in a partition
                        // the far side turns suspect, and the watchers on our side step in
                        // (the rings' own observers may mostly sit across the cut).
                        self.members
                            .observers_of(slot, self.config.observers, |s| s == State::Alive)
                            .contains(&self.me)
                    } else {
                        incarnation.is_some_and(|inc| {
                            self.selected_to_confirm(
                                slot,
                                inc,
                                u32::try_from(round).unwrap_or(u32::MAX),
                            )
                        })
                    };
                    if self.members.overlay().enabled() && !selected {
                        // Not one of its observers: ask a neighbour rather than dial the
                        // suspect; one that knows the refutation answers with it.
                        self.ask_a_neighbour_about(slot);
                        return;
                    }
                    let kind = if wants_confirmations && selected {
                        ProbeKind::Check
                    } else {
                        ProbeKind::Verify
                    };
                    self.start_probe(now, slot, kind);
                }
            }
            Timer::Reap(slot) => self.reap(now, slot),
            Timer::LinkCheckDeadline(id) => self.on_link_check_deadline(now, id),
            Timer::LinkCheckRetry => self.start_link_check(now),
            Timer::DeferredRefutation => {
                if let Some(claimed) = self.deferred_refutation.take() {
                    self.refute(now, claimed);
                }
            }
            Timer::LinkCheckRound(id) => self.link_check_round(now, id),
            Timer::AskCredentials => self.ask_credentials(now),
        }
    }

    /// Ours: a verdict that rests on our probes alone waits while we believe our own links
    /// are down (accused, link check not passed): a member with heavy outbound loss fails
    /// others in its own view otherwise, and gossips it. Verdicts from others still count.
    /// It is held one minimum timeout at a time, so once our links are back the suspect has
    /// that long (and our suspicion checks) to refute. True when the verdict was held.
    pub(super) fn hold_own_verdict(&mut self, now: Instant, slot: Slot) -> bool {
        if self.pending_refutation.is_none() {
            return false;
        }
        let me = self.me;
        let Some(s) = self.suspicions.get_mut(&slot) else {
            return false;
        };
        if !s.uncorroborated() || self.members.find(s.first_accuser().as_str()) != Some(me) {
            return false;
        }
        let at = s.hold(now + s.min());
        self.stats.verdicts_deferred += 1;
        if let Some(info) = self.members.info(slot) {
            self.trace.record(now, &info.name, || Step::VerdictHeld);
        }
        self.schedule(at, Timer::Suspicion(slot));
        true
    }
}
