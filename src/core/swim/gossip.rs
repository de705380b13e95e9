//! Dissemination: piggybacked gossip and the packets that carry it.

use super::*;

impl Swim {
    pub(super) fn schedule_gossip(&mut self, now: Instant) {
        if self.gossip_scheduled {
            return;
        }
        self.gossip_scheduled = true;
        let at = match self.last_gossip {
            Some(last) => (last + self.config.gossip_interval).max(now),
            None => now,
        };
        // A little jitter keeps members from gossiping in lockstep: rounds that all fire at
        // the same instant race with the very updates they carry.
        let jitter = self.random_fraction_of(self.config.gossip_interval / 5);
        self.schedule(at + jitter, Timer::Gossip);
    }

    pub(super) fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() && self.notes.is_empty() {
            return;
        }
        self.last_gossip = Some(now);
        let me = self.me;
        let dead_window = self.config.gossip_to_the_dead;
        let overlay = self.members.overlay().clone();
        let mut targets = self.neighbours_or_random(self.config.gossip_nodes, |s, m| {
            s != me
                && match m.state {
                    State::Alive | State::Suspect => true,
                    State::Failed => now.saturating_duration_since(m.since) < dead_window,
                    State::Left => false,
                }
        });
        if overlay.enabled() {
            // The dead we would watch, so a member failed by mistake hears it and refutes.
            let dead = self.members.random_failed(&mut self.rng, &[], |m| {
                now.saturating_duration_since(m.since) < dead_window
                    && overlay.would_watch(m.info.ring_hash)
            });
            targets.extend(dead);
        }
        for target in targets {
            if let Some(addr) = self.members.info(target).map(|i| i.addr) {
                self.send(addr, Some(target), Message::Gossip);
            }
        }
        if !self.broadcasts.is_empty() || !self.notes.is_empty() {
            self.schedule_gossip(now);
        }
    }

    /// Encodes a datagram to `to` with as many queued updates as fit the budget. A member we
    /// believe suspect or failed gets our view of itself first (Lifeguard's buddy system,
    /// extended to failure), so it can refute at once.
    pub(super) fn send(&mut self, to: SocketAddr, slot: Option<Slot>, message: Message) {
        self.send_with(to, slot, message, None);
    }

    /// [`Swim::send`], with our current view of member `about` first in the packet.
    pub(super) fn send_with(
        &mut self,
        to: SocketAddr,
        slot: Option<Slot>,
        message: Message,
        about: Option<Slot>,
    ) {
        let kind = message.kind();
        let mut payload = Vec::with_capacity(self.config.datagram_budget);
        wire::encode_head(
            self.cluster,
            &self.my_info().name.clone(),
            &message,
            &mut payload,
        );
        let mut updates = Vec::new();
        let mut count = 0;
        let room = self
            .config
            .datagram_budget
            .saturating_sub(payload.len() + UPDATES_HEADER_LEN);
        let buddy = slot.filter(|&s| {
            self.members
                .get(s)
                .is_some_and(|m| matches!(m.state, State::Suspect | State::Failed))
        });
        for member_slot in [buddy, about].into_iter().flatten() {
            let Some(member) = self.members.get(member_slot) else {
                continue;
            };
            let mut update = update_of(member);
            // Name the first accuser, so the suspect can answer it directly.
            update.from = match update.state {
                State::Suspect => self
                    .suspicions
                    .get(&member_slot)
                    .map(|s| s.first_accuser().clone())
                    .unwrap_or_else(|| self.my_info().name.clone()),
                State::Failed => self.my_info().name.clone(),
                _ => NodeName::default(),
            };
            update.closed = self.closed_witnesses(member_slot);
            if matches!(update.state, State::Suspect | State::Failed) {
                update.proof = self.accusation_proof(member_slot, &update);
            }
            let bytes = wire::encode_update(&update);
            if bytes.len() <= room.saturating_sub(updates.len()) {
                updates.extend_from_slice(&bytes);
                count += 1;
            }
        }
        let limit = self.config.retransmit_limit(self.members.live());
        // Only packets to members we believe alive use up an update's transmissions; those
        // to suspect or failed members (probes, reconnects, gossip to the dead) carry
        // updates too, but in a partition they are lost, and the members on our side would
        // miss the verdicts (ours).
        let counted = slot
            .and_then(|s| self.members.get(s))
            .is_none_or(|m| m.state == State::Alive);
        let room = room - updates.len();
        // `about` is in the packet already; sending it twice would also count a transmission
        // of it that gossip still has to make.
        let exclude = [slot, about];
        count += if !counted {
            self.broadcasts.fill_uncounted(room, &exclude, &mut updates)
        } else {
            self.broadcasts.fill(room, limit, &exclude, &mut updates)
        };
        wire::encode_updates_len(count, &mut payload);
        payload.extend_from_slice(&updates);
        if !self.notes.is_empty() {
            // One byte turns the packet array into five elements, plus the notes' header.
            let room = self
                .config
                .datagram_budget
                .saturating_sub(payload.len() + NOTES_HEADER_LEN);
            let mut notes = Vec::new();
            self.notes.fill(room, limit, &mut notes);
            let notes: Vec<&[u8]> = notes.iter().map(Vec::as_slice).collect();
            wire::append_notes(&mut payload, &notes);
        }
        self.transmits.push_back(Transmit {
            to,
            to_name: slot
                .and_then(|s| self.members.info(s))
                .map(|i| i.name.clone()),
            payload,
            channel: Channel::Datagram,
            kind,
        });
    }
}
