//! Link checks (ours): an accused member whose own probes keep failing checks its links
//! before it refutes, so a member that cannot reach anyone does not keep the cluster busy.

use super::*;

impl Swim {
    /// Refutes `claimed` once our links are shown to work (see [`LinkCheck`]).
    pub(super) fn refute_after_link_check(&mut self, now: Instant, claimed: Incarnation) {
        self.pending_refutation = Some(claimed.max(self.pending_refutation.unwrap_or_default()));
        self.start_link_check(now);
    }

    pub(super) fn start_link_check(&mut self, now: Instant) {
        if self.pending_refutation.is_none()
            || self.link_check.is_some()
            || self.leaving
            || self.link_check_after.is_some_and(|t| now < t)
        {
            return;
        }
        // Alive members first: the ones most likely to answer if our links work.
        let me = self.me;
        let pings = LINK_CHECK_PINGS as usize;
        let mut targets =
            self.neighbours_then_random(pings, |s, m| s != me && m.state == State::Alive);
        if self.members.overlay().enabled() {
            // Our neighbours only (pings cycle over them): the connections we keep open.
            let neighbours = self.members.overlay().neighbours();
            targets.retain(|t| neighbours.contains(t));
        }
        if targets.len() < pings {
            let more = self.members.random(pings, &mut self.rng, |s, m| {
                s != me && matches!(m.state, State::Suspect | State::Failed)
            });
            targets.extend(more.into_iter().take(pings - targets.len()));
        }
        if targets.is_empty() {
            // Nobody to check against (nor anybody who could have accused us).
            if let Some(claimed) = self.pending_refutation.take() {
                self.refute(now, claimed);
            }
            return;
        }
        self.link_check_id = self.link_check_id.wrapping_add(1);
        let id = self.link_check_id;
        let rounds = pings.div_ceil(targets.len());
        self.link_check = Some(LinkCheck {
            id,
            seqs: Vec::with_capacity(pings),
            acks: 0,
            targets,
        });
        // With fewer targets than pings, each gets one per round (see LINK_CHECK_SPACING);
        // every ping has a full probe timeout for its answer.
        self.link_check_round(now, id);
        let last_round = LINK_CHECK_SPACING * u32::try_from(rounds - 1).unwrap_or(0);
        self.schedule(
            now + last_round + self.config.probe_timeout,
            Timer::LinkCheckDeadline(id),
        );
    }

    /// Sends the next round of link check `id`: one ping to each target, up to the total.
    pub(super) fn link_check_round(&mut self, now: Instant, id: u32) {
        let Some(check) = self.link_check.as_ref().filter(|c| c.id == id) else {
            return;
        };
        let left = (LINK_CHECK_PINGS as usize).saturating_sub(check.seqs.len());
        let round: Vec<Slot> = check.targets.iter().take(left).copied().collect();
        for target in &round {
            let seq = self.start_probe(now, *target, ProbeKind::LinkCheck);
            if let (Some(seq), Some(check)) = (seq, self.link_check.as_mut()) {
                check.seqs.push(seq);
            }
        }
        if left > round.len() {
            self.schedule(now + LINK_CHECK_SPACING, Timer::LinkCheckRound(id));
        }
    }

    pub(super) fn on_link_check_ack(&mut self, now: Instant, seq: u32) {
        let Some(check) = self.link_check.as_mut() else {
            return;
        };
        if !check.seqs.contains(&seq) {
            return;
        }
        check.acks += 1;
        if check.acks < LINK_CHECK_QUORUM {
            return;
        }
        let acks = check.acks;
        let me = self.my_info().name.clone();
        self.trace
            .record(now, &me, || Step::LinkCheck { acks, passed: true });
        self.end_link_check();
        self.stats.link_checks_passed += 1;
        self.link_check_after = None;
        self.link_check_backoff = Duration::ZERO;
        // The health score is left to our probes: after a lucky pass on bad links it keeps
        // the next accusation behind a check too.
        if let Some(claimed) = self.pending_refutation.take() {
            self.refute(now, claimed);
        }
    }

    pub(super) fn on_link_check_deadline(&mut self, now: Instant, id: u32) {
        let Some(acks) = self
            .link_check
            .as_ref()
            .filter(|c| c.id == id)
            .map(|c| c.acks)
        else {
            return;
        };
        let me = self.my_info().name.clone();
        self.trace.record(now, &me, || Step::LinkCheck {
            acks,
            passed: false,
        });
        self.end_link_check();
        self.stats.link_checks_failed += 1;
        // Retry soon (a suspicion runs out in seconds), then back off to 16 probe intervals,
        // so a member with bad links does not keep rolling the dice.
        self.link_check_backoff = (self.link_check_backoff * 2).clamp(
            self.config.probe_timeout,
            self.config.probe_interval * LINK_CHECK_MAX_BACKOFF,
        );
        let at = now + self.link_check_backoff;
        self.link_check_after = Some(at);
        self.schedule(at, Timer::LinkCheckRetry);
    }

    pub(super) fn end_link_check(&mut self) {
        if let Some(check) = self.link_check.take() {
            for seq in check.seqs {
                self.probes.remove(&seq);
            }
        }
    }
}
