//! Anti-entropy: seeds, push-pull exchanges, reconnecting to failed members.

use super::*;

impl Swim {
    pub(super) fn contact_seeds(&mut self, now: Instant) {
        let my_addr = self.my_info().addr;
        let seeds: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|&s| s != my_addr)
            .collect();
        for seed in seeds {
            self.send_push_pull(now, seed, None, true, false);
        }
    }

    pub(super) fn push_pull(&mut self, now: Instant, slot: Slot, join: bool) {
        if let Some(addr) = self.members.info(slot).map(|i| i.addr) {
            self.send_push_pull(now, addr, Some(slot), join, false);
        }
    }

    /// Starts a push-pull. A join sends everything; otherwise we send ourselves, the peer as
    /// we see it (so it can refute), and our digest: the peer answers with its members of
    /// every ring bucket where the digests differ and we send ours back, so the exchange
    /// costs a few hundred bytes when views agree and heals exactly what differs.
    pub(super) fn send_push_pull(
        &mut self,
        now: Instant,
        to: SocketAddr,
        peer: Option<Slot>,
        join: bool,
        reply: bool,
    ) {
        self.sign_own();
        let (members, digest) = if join {
            (
                self.members
                    .iter()
                    .map(|(s, m)| self.describe(s, m))
                    .collect(),
                Digest::default(),
            )
        } else {
            (
                self.self_and_peer(peer),
                Digest(self.members.digest().to_vec()),
            )
        };
        self.stats.push_pulls_started += 1;
        let message = PushPull {
            join,
            reply,
            members,
            digest,
            credentials: self.own_credential(now),
            ..PushPull::default()
        };
        self.send_stream(now, to, peer, message);
    }

    pub(super) fn self_and_peer(&self, peer: Option<Slot>) -> Vec<Update> {
        let mut slots = vec![self.me];
        slots.extend(peer.filter(|&p| p != self.me));
        slots
            .iter()
            .filter_map(|&s| self.members.get(s).map(|m| self.describe(s, m)))
            .collect()
    }

    /// Our members of `buckets`, stopping before `push_pull_max_members`; returns the
    /// buckets actually covered.
    pub(super) fn bucket_members(
        &self,
        buckets: impl Iterator<Item = usize>,
        out: &mut Vec<Update>,
    ) -> Vec<u8> {
        let mut covered = Vec::new();
        for bucket in buckets {
            let members: Vec<Update> = self
                .members
                .bucket(bucket)
                .filter(|&s| s != self.me)
                .filter_map(|s| self.members.get(s).map(|m| self.describe(s, m)))
                .collect();
            if !covered.is_empty() && out.len() + members.len() > self.config.push_pull_max_members
            {
                break;
            }
            out.extend(members);
            covered.push(bucket as u8);
        }
        covered
    }

    pub(super) fn send_stream(
        &mut self,
        now: Instant,
        to: SocketAddr,
        peer: Option<Slot>,
        message: PushPull,
    ) {
        let to_name = peer
            .and_then(|s| self.members.info(s))
            .map(|i| i.name.clone());
        self.send_stream_to(now, to, to_name, message);
    }

    /// [`Swim::send_stream`] to a peer known by name only (it may be news to us).
    pub(super) fn send_stream_to(
        &mut self,
        now: Instant,
        to: SocketAddr,
        to_name: Option<NodeName>,
        message: PushPull,
    ) {
        let mut payload = Vec::new();
        let message = Message::PushPull(message);
        let kind = message.kind();
        wire::encode_packet(
            self.cluster,
            &self.my_info().name.clone(),
            &message,
            &[],
            &mut payload,
        );
        self.transmits.push_back(Transmit {
            to,
            to_name,
            payload,
            channel: Channel::Stream,
            kind,
        });
        let _ = now;
    }

    pub(super) fn on_push_pull(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: &NodeName,
        push_pull: PushPull,
        members: &Encoded<Update>,
    ) {
        // A received push-pull's members are in `members`, still encoded.
        let PushPull {
            join,
            reply,
            members: _,
            digest,
            buckets,
            want,
            credentials,
        } = push_pull;
        self.take_credentials(now, &credentials);
        let before = *self.members.digest();
        for update in members.iter() {
            self.apply_update(now, update, Some(sender), Source::Sync);
        }
        let taught = before != *self.members.digest();
        let peer = self.members.find(sender.as_str());
        if reply {
            // A sync that taught us something (gossip missed it) suggests more is missing:
            // sync again soon with another neighbour, until one teaches nothing. Members
            // hear gossip from their few neighbours only, and in a burst of joins now and
            // then all of them send an update elsewhere.
            if taught && !join && !self.sync_again_scheduled && !self.leaving {
                self.sync_again_scheduled = true;
                let delay = self.config.gossip_interval * SYNC_AGAIN_AFTER;
                self.schedule(now + delay, Timer::SyncAgain);
            }
            if join {
                self.join_peer = peer;
                // Members that joined just before us may not have reached the seed yet, and
                // gossip of joins in a fresh cluster misses a few (an update is sent a
                // bounded number of times): digest exchanges about 1, 5, 20 and 80 gossip
                // intervals after joining settle it, the first with this peer.
                let delay = self.config.gossip_interval
                    + self.random_fraction_of(self.config.gossip_interval);
                self.schedule(now + delay, Timer::SyncAfterJoin(0));
            }
            self.joined = true;
            if !buckets.is_empty() {
                // Second half of a digest exchange: our members of the buckets that differed.
                let mut members = Vec::new();
                let wanted = buckets
                    .iter()
                    .map(|&b| usize::from(b))
                    .filter(|&b| b < DIGEST_BUCKETS);
                self.bucket_members(wanted, &mut members);
                let message = PushPull {
                    reply: true,
                    members,
                    ..PushPull::default()
                };
                self.send_stream(now, from, peer, message);
            }
            return;
        }
        self.stats.push_pulls_answered += 1;
        self.sign_own();
        let mut members = if join {
            self.members
                .iter()
                .map(|(s, m)| self.describe(s, m))
                .collect()
        } else {
            self.self_and_peer(peer)
        };
        let mut covered = Vec::new();
        if !join {
            let ours = self.members.digest();
            let differing: Vec<usize> = (0..DIGEST_BUCKETS)
                .filter(|&b| digest.0.get(b) != ours.get(b))
                .collect();
            // Start at a random differing bucket so capped exchanges cover all in turn.
            let offset = (self.rng.next_u64() % differing.len().max(1) as u64) as usize;
            let rotated = differing
                .iter()
                .cycle()
                .skip(offset)
                .take(differing.len())
                .copied();
            covered = self.bucket_members(rotated, &mut members);
        }
        // A joiner learns every credential with the members (it can check every proof at
        // once); others get those they asked for, having heard statements they could not
        // check from us.
        let credentials = if join {
            let names: Vec<NodeName> = members.iter().map(|u| u.name.clone()).collect();
            self.credentials_for(names.iter())
        } else {
            let mut credentials = self.credentials_for(want.iter().take(wire::MAX_WANTED));
            credentials.extend(self.own_credential(now));
            credentials
        };
        let message = PushPull {
            join,
            reply: true,
            members,
            buckets: covered,
            credentials,
            ..PushPull::default()
        };
        self.send_stream(now, from, peer, message);
    }

    pub(super) fn sync_with_random_member(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let me = self.me;
        let peers = self.neighbours_or_random(1, |s, m| s != me && m.state == State::Alive);
        if let Some(&peer) = peers.first() {
            self.push_pull(now, peer, false);
        }
    }

    pub(super) fn reconnect(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let pending: Vec<Slot> = self
            .probes
            .values()
            .filter(|p| p.kind == ProbeKind::Reconnect)
            .map(|p| p.target)
            .collect();
        // With the overlay, a failed member is retried by the members that would watch it
        // (about `observers` of them), not by everyone: each retry to a dead address costs
        // a handshake's Initial packets.
        let overlay = self.members.overlay();
        let watched = |m: &Member| !overlay.enabled() || overlay.would_watch(m.info.ring_hash);
        if let Some(slot) = self.members.random_failed(&mut self.rng, &pending, watched) {
            self.start_probe(now, slot, ProbeKind::Reconnect);
        }
    }
}
