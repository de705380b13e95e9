//! Probing: picking whom to probe, direct and indirect probes, acks, nacks, and
//! answering pings and ping-reqs for others.

use super::*;

impl Swim {
    pub(super) fn probe_next(&mut self, now: Instant) {
        let me = self.me;
        let probeable =
            |s: Slot, m: &Member| s != me && matches!(m.state, State::Alive | State::Suspect);
        while let Some(slot) = self.probe_next_queue.pop_front() {
            let due =
                self.members.get(slot).is_some_and(|m| probeable(slot, m)) && !self.probing(slot);
            if due {
                self.start_probe(now, slot, ProbeKind::Check);
                return;
            }
        }
        if self.members.overlay().enabled() {
            // Our subject on the slot's ring: a member's observers sit on different rings,
            // so one of them probes it in every slot (a crash is noticed within one probe
            // interval, not within one of several observers' random turns).
            let rings = self.members.overlay().rings().max(1);
            let ring = (self.probe_slot(now).0 % rings as u64) as usize;
            let on_ring = self.members.overlay().subject_on(ring).filter(|&s| {
                self.members.get(s).is_some_and(|m| probeable(s, m)) && !self.probing(s)
            });
            if let Some(target) = on_ring.or_else(|| self.next_subject(probeable)) {
                self.start_probe(now, target, ProbeKind::Check);
            }
            return;
        }
        let ring = self.config.ring_probes && self.next_is_ring_probe;
        self.next_is_ring_probe = !self.next_is_ring_probe;
        let target = if ring {
            self.members.ring_successor(me, probeable)
        } else {
            self.members.next_round_robin(&mut self.rng, probeable)
        };
        if let Some(target) = target {
            self.start_probe(now, target, ProbeKind::Check);
        }
    }

    /// The next of our subjects, in ring order (overlay mode): each is probed once every
    /// `observers` intervals, never twice as late as a reshuffled order could make it.
    pub(super) fn next_subject(
        &mut self,
        probeable: impl Fn(Slot, &Member) -> bool,
    ) -> Option<Slot> {
        for _ in 0..2 {
            while let Some(slot) = self.subject_cycle.pop() {
                if self.members.get(slot).is_some_and(|m| probeable(slot, m))
                    && self.members.overlay().watches(slot)
                {
                    return Some(slot);
                }
            }
            self.subject_cycle = self.members.overlay().subjects();
            self.subject_cycle.reverse();
        }
        None
    }

    /// Up to `count` of our overlay neighbours, in random order, that `eligible` accepts.
    pub(super) fn random_neighbours(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        let mut picked: Vec<Slot> = self
            .members
            .overlay()
            .neighbours()
            .into_iter()
            .filter(|&s| self.members.get(s).is_some_and(|m| eligible(s, m)))
            .collect();
        crate::core::members::shuffle(&mut picked, &mut self.rng);
        picked.truncate(count);
        picked
    }

    /// Up to `count` random neighbours that `eligible` accepts, then, if there are too few
    /// (or no overlay), random members.
    pub(super) fn neighbours_then_random(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        let mut picked = self.random_neighbours(count, &eligible);
        if picked.len() < count {
            let more = self.members.random(count, &mut self.rng, |s, m| {
                eligible(s, m) && !picked.contains(&s)
            });
            picked.extend(more.into_iter().take(count - picked.len()));
        }
        picked
    }

    /// Up to `count` random neighbours (or, without an overlay, members) that `eligible`
    /// accepts: the members we keep connections to.
    pub(super) fn neighbours_or_random(
        &mut self,
        count: usize,
        eligible: impl Fn(Slot, &Member) -> bool,
    ) -> Vec<Slot> {
        if self.members.overlay().enabled() {
            self.random_neighbours(count, eligible)
        } else {
            self.members.random(count, &mut self.rng, eligible)
        }
    }

    /// A fresh sequence number, in use by no probe or relay.
    pub(super) fn new_seq(&mut self) -> u32 {
        loop {
            let seq = self.seq_rng.next_u32();
            if !self.probes.contains_key(&seq) && !self.relays.contains_key(&seq) {
                return seq;
            }
        }
    }

    /// True while a probe of `slot` runs.
    pub(super) fn probing(&self, slot: Slot) -> bool {
        self.probes.values().any(|p| p.target == slot)
    }

    /// Pings `target` and returns the probe's sequence number.
    pub(super) fn start_probe(
        &mut self,
        now: Instant,
        target: Slot,
        kind: ProbeKind,
    ) -> Option<u32> {
        let info = self.members.info(target).cloned()?;
        let incarnation = self.members.get(target)?.incarnation;
        let seq = self.new_seq();
        self.probes.insert(
            seq,
            Probe {
                target,
                target_name: info.name.clone(),
                incarnation,
                kind,
                sent: now,
                indirect: false,
                silent_helpers: Vec::new(),
                helpers: Vec::new(),
                nacks: 0,
            },
        );
        let ping = Message::Ping(Ping {
            seq,
            target: info.name.clone(),
        });
        self.send(info.addr, Some(target), ping);
        let timeout = self.awareness.scale(self.config.probe_timeout);
        let interval = self.awareness.scale(self.config.probe_interval);
        match kind {
            ProbeKind::Check => self.schedule(now + timeout, Timer::DirectTimeout(seq)),
            ProbeKind::Reconnect | ProbeKind::LinkCheck | ProbeKind::Verify => {}
        }
        if kind != ProbeKind::LinkCheck {
            self.schedule(now + interval, Timer::ProbeDeadline(seq));
        }
        Some(seq)
    }

    pub(super) fn on_direct_timeout(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probes.get(&seq) else {
            return;
        };
        let (target, target_name) = (probe.target, probe.target_name.clone());
        let Some(addr) = self.members.info(target).map(|i| i.addr) else {
            return;
        };
        let me = self.me;
        // Relays we keep a connection to, so only their hop to the target may need a
        // handshake.
        let helpers = self.neighbours_then_random(self.config.indirect_checks, |s, m| {
            s != me && s != target && m.state == State::Alive
        });
        for &helper in &helpers {
            let Some(helper_addr) = self.members.info(helper).map(|i| i.addr) else {
                continue;
            };
            let req = Message::PingReq(PingReq {
                seq,
                target: target_name.clone(),
                addr: WireAddr(addr),
            });
            self.send(helper_addr, Some(helper), req);
        }
        let names = helpers
            .iter()
            .filter_map(|&h| self.members.info(h).map(|i| i.name.clone()))
            .collect();
        if let Some(probe) = self.probes.get_mut(&seq) {
            probe.indirect = true;
            probe.silent_helpers = helpers;
            probe.helpers = names;
        }
        let _ = now;
    }

    pub(super) fn on_probe_deadline(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probes.remove(&seq) else {
            return;
        };
        if probe.kind != ProbeKind::Check {
            return;
        }
        self.stats.probes_failed += 1;
        // Lifeguard: without nacks our own links may be the problem. Unlike memberlist we
        // count one step, and none once any nack arrived: a nack proves our links to that
        // relay work, and in a partition the relays across it can never answer.
        self.awareness.apply(i32::from(probe.nacks == 0));
        // A relay that did not even nack, while others did, may be unreachable too (ours):
        // probe it next instead of at its round-robin turn, which can be 2N probes away.
        // In a partition this finds the far side's members in a few rounds.
        if probe.nacks > 0 {
            for helper in probe.silent_helpers {
                if !self.probe_next_queue.contains(&helper)
                    && self.probe_next_queue.len() < MAX_PROBE_NEXT
                {
                    self.probe_next_queue.push_back(helper);
                }
            }
        }
        let Some(member) = self.members.get(probe.target) else {
            return;
        };
        if member.info.name != probe.target_name {
            return;
        }
        // Alive again at a higher incarnation since we pinged (a restart, a refutation):
        // our silence is about the old one (a crash failed on the fast path and restarted
        // within a probe interval was suspected again by the probe of its dead process).
        if member.incarnation != probe.incarnation {
            return;
        }
        let incarnation = member.incarnation;
        let nacks = probe.nacks;
        self.trace
            .record(now, &probe.target_name, || Step::ProbeFailed { nacks });
        let me = self.my_info().name.clone();
        self.suspect(
            now,
            probe.target,
            incarnation,
            (me, None),
            None,
            Source::Gossip,
        );
    }

    pub(super) fn on_ack(&mut self, now: Instant, ack: Ack, sender: &NodeName) {
        // An ack is evidence only from whom we asked: the member pinged, or (for an
        // indirect probe) a relay we asked. Anyone else's is ignored, and the probe waits on.
        if let Some(relay) = self.relays.get(&ack.seq) {
            if relay.target != *sender {
                self.stats.acks_misattributed += 1;
                return;
            }
            let to = self.members.find(relay.requester_name.as_str());
            let (requester, seq) = (relay.requester, relay.seq);
            self.relays.remove(&ack.seq);
            self.send(requester, to, Message::Ack(Ack { seq }));
            return;
        }
        let Some(probe) = self.probes.get(&ack.seq) else {
            self.stats.stray_packets += 1;
            return;
        };
        if probe.target_name != *sender && !(probe.indirect && probe.helpers.contains(sender)) {
            self.stats.acks_misattributed += 1;
            return;
        }
        let Some(probe) = self.probes.remove(&ack.seq) else {
            return;
        };
        match probe.kind {
            ProbeKind::Check if !probe.indirect => {
                self.stats.probes_direct_ok += 1;
                let rtt = now.saturating_duration_since(probe.sent);
                self.stats.rtt_us_sum += rtt.as_micros() as u64;
                self.stats.rtt_count += 1;
                push_sample(&mut self.rtt_samples, rtt);
                self.awareness.apply(-1);
                // Our links may be back: no need to wait out the backoff.
                if self.pending_refutation.is_some() {
                    self.link_check_after = None;
                    self.start_link_check(now);
                }
            }
            ProbeKind::Check => self.stats.probes_indirect_ok += 1,
            ProbeKind::Reconnect => {
                // It is back: sync views now, and try the next failed member soon after.
                if let Some(m) = self.members.get(probe.target)
                    && m.info.name == probe.target_name
                {
                    self.push_pull(now, probe.target, false);
                }
                self.reconnect(now);
            }
            ProbeKind::LinkCheck => self.on_link_check_ack(now, ack.seq),
            ProbeKind::Verify => {}
        }
    }

    pub(super) fn on_nack(&mut self, nack: Nack, sender: &NodeName) {
        let from = self.members.find(sender.as_str());
        if let Some(probe) = self.probes.get_mut(&nack.seq) {
            probe.nacks += 1;
            probe.silent_helpers.retain(|&h| Some(h) != from);
        }
    }

    pub(super) fn on_ping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: &NodeName,
        ping: Ping,
    ) {
        if ping.target != self.my_info().name {
            // An address reused by another member: let the prober time out.
            self.stats.stray_packets += 1;
            return;
        }
        let to = self.members.find(sender.as_str());
        self.send(from, to, Message::Ack(Ack { seq: ping.seq }));
        let _ = now;
    }

    pub(super) fn on_ping_req(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: NodeName,
        req: PingReq,
    ) {
        // We ping only a member we know, at the address we know (the request's is ignored):
        // a ping-req must not make us dial wherever a peer names.
        let target = self
            .members
            .find(req.target.as_str())
            .filter(|&t| t != self.me)
            .and_then(|t| self.members.info(t).map(|i| (t, i.addr)));
        let Some((target, addr)) = target.filter(|_| self.relays.len() < MAX_RELAYS) else {
            // The nack tells the requester its own link to us works (Lifeguard).
            self.stats.ping_reqs_refused += 1;
            let to = self.members.find(sender.as_str());
            self.send(from, to, Message::Nack(Nack { seq: req.seq }));
            return;
        };
        let seq = self.new_seq();
        self.relays.insert(
            seq,
            Relay {
                requester: from,
                requester_name: sender,
                seq: req.seq,
                target: req.target.clone(),
            },
        );
        self.send(
            addr,
            Some(target),
            Message::Ping(Ping {
                seq,
                target: req.target,
            }),
        );
        // The requester sent this at its probe timeout and decides at its probe interval
        // (twice as late by default): a nack at the full timeout would arrive just after that
        // decision and never count (then every failed probe looked like our own fault).
        self.schedule(
            now + self.config.probe_timeout * RELAY_NACK_AT.0 / RELAY_NACK_AT.1,
            Timer::RelayNack(seq),
        );
        self.schedule(now + self.config.probe_timeout, Timer::RelayTimeout(seq));
    }
}
