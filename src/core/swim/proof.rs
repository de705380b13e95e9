//! Statements belong to their maker: a member's `alive` (with its address, tags, health)
//! and its `left` are taken from a third party only with the member's proof; an accuser's
//! name counts only with its proof (or from itself); a note only with its maker's.
//! Credentials to check proofs come from handshakes or are asked of whoever passed the
//! statement on (then of the member itself).

use super::*;

/// Statements held while the credential to check them is fetched, at most.
const MAX_PENDING_STATEMENTS: usize = 256;
/// A held statement is dropped (and counted unproven) once this old.
const PENDING_FOR: Duration = Duration::from_secs(10);
/// A credential is asked for again, of anybody, after this long without an answer.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Members whose credentials are being asked for, at most (each for `PENDING_FOR`).
const MAX_ASKED: usize = 1024;
/// Notes held while their maker's credential is fetched, at most.
const MAX_PENDING_NOTES: usize = 64;
/// How long our push-pulls carry our credential after a new keyring: long enough for
/// several push-pulls with each neighbour (one per `push_pull_interval`, 30 s).
const TELL_CREDENTIAL_FOR: Duration = Duration::from_secs(300);

/// What to do with a statement about another member.
pub(super) enum Admit {
    /// Take it.
    Yes,
    /// Refuse it (counted).
    No,
    /// Held until the credential to check it arrives.
    Later,
}

/// A statement held for its maker's credential.
#[derive(Debug)]
pub(super) struct Pending {
    update: Update,
    sender: NodeName,
    source: Source,
    since: Instant,
}

impl Swim {
    /// Replaces the keyring (the agent's, after [`Swim::new`] or a certificate reload) and
    /// signs our statement with it.
    pub fn set_keyring(&mut self, keyring: Box<dyn Keyring>) {
        self.keyring = keyring;
        self.members.set_proof(self.me, None);
        self.sign_own();
    }

    /// Our certificate changed: our push-pulls carry our credential for a while, so that
    /// members holding the old one can check what we sign from now on.
    pub fn tell_credential(&mut self, now: Instant) {
        self.tell_credential_until = Some(now + TELL_CREDENTIAL_FOR);
    }

    /// Whether we hold a credential for `name`.
    pub fn knows_credential(&self, name: &NodeName) -> bool {
        self.keyring.knows(name)
    }

    /// A credential a peer presented in its handshake: learnt unless held already (a
    /// renewed certificate replaces the one held), so that statements it makes can be
    /// checked when others pass them on.
    pub fn learn_credential(&mut self, now: Instant, name: &NodeName, chain: &[u8]) {
        if chain.is_empty() || self.keyring.holds(name, chain) {
            return;
        }
        if self.keyring.learn(name, chain) {
            self.release_pending(now, name);
        } else {
            self.stats.credentials_refused += 1;
        }
    }

    /// Our signature over `update` (one of our statements or accusations).
    pub(super) fn sign(&self, update: &Update) -> Option<Blob> {
        let statement = wire::statement(self.cluster, update);
        self.keyring.sign(&statement).map(Blob::from)
    }

    /// The proof to pass `update` (an accusation about `slot`) on with: ours signed now, or
    /// the accuser's as it came to us.
    pub(super) fn accusation_proof(&self, slot: Slot, update: &Update) -> Option<Blob> {
        if update.from == self.my_info().name {
            self.sign(update)
        } else {
            self.suspicions
                .get(&slot)
                .and_then(|s| s.proof_of(&update.from))
        }
    }

    /// Whether an accusation passed on by a third party carries its accuser's proof.
    /// Unproven, the accuser it names counts for nothing (see `apply_update`).
    pub(super) fn proven_accusation(&self, update: &Update) -> bool {
        let Some(proof) = &update.proof else {
            return false;
        };
        let statement = wire::statement(self.cluster, update);
        self.keyring
            .verify(&update.from, &statement, proof.as_bytes())
            == Proven::Yes
    }

    /// A note from a peer: taken (handed over and passed on) only with its maker's proof,
    /// so that nobody can confirm a delivery in another member's name.
    pub(super) fn receive_note(&mut self, now: Instant, note: Note, sender: Option<&NodeName>) {
        if self.notes.knows(&note.key) {
            return;
        }
        let Some(proof) = &note.proof else {
            self.stats.notes_unproven += 1;
            return;
        };
        let statement = wire::note_statement(self.cluster, &note);
        match self
            .keyring
            .verify(&note.from, &statement, proof.as_bytes())
        {
            Proven::Yes => self.notes.receive(note),
            Proven::No => self.stats.notes_unproven += 1,
            // Held, and the maker's credential asked of the peer that passed it on.
            Proven::Unknown => {
                let Some(sender) = sender.cloned() else {
                    self.stats.notes_unproven += 1;
                    return;
                };
                while self.pending_notes.len() >= MAX_PENDING_NOTES {
                    self.pending_notes.pop_front();
                    self.stats.notes_unproven += 1;
                }
                let maker = note.from.clone();
                self.pending_notes.push_back((note, now));
                self.expire_pending(now);
                let asked = self
                    .asked
                    .get(&maker)
                    .is_some_and(|&at| now.saturating_duration_since(at) < ASK_AGAIN_AFTER);
                if !asked && self.asked.len() < MAX_ASKED {
                    self.asked.insert(maker.clone(), now);
                    self.want(now, sender, None, maker);
                }
            }
        }
    }

    /// Signs our statement as held, if it is not signed yet.
    pub(super) fn sign_own(&mut self) {
        let Some(member) = self.members.get(self.me) else {
            return;
        };
        if member.proof.is_some() {
            return;
        }
        let statement = wire::statement(self.cluster, &update_of(member));
        let proof = self.keyring.sign(&statement).map(Blob::from);
        self.members.set_proof(self.me, proof);
    }

    /// Whether a statement (`alive` or `left`) about another member may be taken. Ours to
    /// read from disk, its own word, or a copy with its proof; unsigned copies only under
    /// `accept_unsigned` and for members never seen signing, or a `left` for a member we
    /// hold failed (a forced leave: it fails nobody).
    pub(super) fn admit(
        &mut self,
        now: Instant,
        update: &Update,
        sender: Option<&NodeName>,
        source: Source,
        held: Option<State>,
    ) -> Admit {
        if source == Source::Restore {
            return Admit::Yes;
        }
        if sender.is_some_and(|s| *s == update.name) {
            if update.proof.is_some() {
                self.seen_signing(&update.name);
            }
            return Admit::Yes;
        }
        let Some(proof) = &update.proof else {
            let reaping = update.state == State::Left && held == Some(State::Failed);
            let legacy = self.config.accept_unsigned && !self.signers.contains(&update.name);
            if reaping || legacy {
                return Admit::Yes;
            }
            self.stats.statements_unsigned += 1;
            return Admit::No;
        };
        let statement = wire::statement(self.cluster, update);
        match self
            .keyring
            .verify(&update.name, &statement, proof.as_bytes())
        {
            Proven::Yes => {
                self.seen_signing(&update.name);
                Admit::Yes
            }
            // Unknown, or signed with a key newer than the credential held (a renewed
            // certificate): the peer that passed it on holds the credential it checked.
            Proven::No | Proven::Unknown => match sender {
                Some(sender) => {
                    self.hold(now, update.clone(), sender.clone(), source);
                    Admit::Later
                }
                None => {
                    self.stats.statements_unproven += 1;
                    Admit::No
                }
            },
        }
    }

    /// Remembers that `name` signs, so that unsigned copies of its statements are refused
    /// even under `accept_unsigned` (kept only then: otherwise every unsigned copy is).
    fn seen_signing(&mut self, name: &NodeName) {
        if self.config.accept_unsigned && !self.signers.contains(name) {
            self.signers.insert(name.clone());
        }
    }

    /// Holds a statement for its maker's credential and asks the peer that passed it on.
    fn hold(&mut self, now: Instant, update: Update, sender: NodeName, source: Source) {
        self.expire_pending(now);
        let name = update.name.clone();
        if let Some(held) = self.pending.get(&name)
            && held.update.incarnation > update.incarnation
        {
            return;
        }
        if self.pending.len() >= MAX_PENDING_STATEMENTS && !self.pending.contains_key(&name) {
            self.stats.statements_unproven += 1;
            return;
        }
        self.pending.insert(
            name.clone(),
            Pending {
                update,
                sender: sender.clone(),
                source,
                since: now,
            },
        );
        let asked = self.asked.get(&name).copied();
        if asked.is_some_and(|at| now.saturating_duration_since(at) < ASK_AGAIN_AFTER)
            || (asked.is_none() && self.asked.len() >= MAX_ASKED)
        {
            return;
        }
        self.asked.insert(name.clone(), now);
        // Asked before, and no relay had it (an agent restarted since it learnt it, say):
        // ask the member itself, whose handshake shows it.
        let direct = asked.is_some();
        let addr = self
            .pending
            .get(&name)
            .and_then(|p| p.update.addr)
            .map(|a| a.0);
        match (direct, addr) {
            (true, Some(addr)) => self.want(now, name.clone(), Some(addr), name),
            _ => self.want(now, sender, None, name),
        }
    }

    /// Batches a request for `name`'s credential to `sender` (at `addr`, else where we know
    /// it, else the peer of the packet being handled).
    fn want(&mut self, now: Instant, sender: NodeName, addr: Option<SocketAddr>, name: NodeName) {
        let addr = addr
            .or_else(|| {
                self.members
                    .find(sender.as_str())
                    .and_then(|s| self.members.info(s))
                    .map(|i| i.addr)
            })
            .or(self.packet_from);
        let Some(addr) = addr else {
            return;
        };
        let (_, batch) = self.wanted.entry(sender).or_insert((addr, Vec::new()));
        if batch.len() < wire::MAX_WANTED && !batch.contains(&name) {
            batch.push(name);
        }
        if !self.ask_scheduled {
            self.ask_scheduled = true;
            self.schedule(now, Timer::AskCredentials);
        }
    }

    /// Sends the credential requests batched since the last call: one push-pull per peer.
    pub(super) fn ask_credentials(&mut self, now: Instant) {
        self.ask_scheduled = false;
        for (peer, (addr, want)) in std::mem::take(&mut self.wanted) {
            let slot = self.members.find(peer.as_str());
            self.sign_own();
            self.stats.push_pulls_started += 1;
            let message = PushPull {
                members: self.self_and_peer(slot),
                digest: Digest(self.members.digest().to_vec()),
                want,
                credentials: self.own_credential(now),
                ..PushPull::default()
            };
            self.send_stream_to(now, addr, Some(peer), message);
        }
    }

    /// Learns the credentials a push-pull carries, then takes the statements they prove.
    pub(super) fn take_credentials(&mut self, now: Instant, credentials: &[Credential]) {
        for credential in credentials {
            if self
                .keyring
                .learn(&credential.name, credential.chain.as_bytes())
            {
                self.release_pending(now, &credential.name);
            } else {
                self.stats.credentials_refused += 1;
            }
        }
    }

    /// Our credential, while a new one must reach the members holding the old one.
    pub(super) fn own_credential(&mut self, now: Instant) -> Vec<Credential> {
        if self.tell_credential_until.is_none_or(|until| now >= until) {
            self.tell_credential_until = None;
            return Vec::new();
        }
        let me = self.my_info().name.clone();
        self.credentials_for(std::iter::once(&me))
    }

    /// The credentials of `names` we hold, for a push-pull answer.
    pub(super) fn credentials_for<'a>(
        &self,
        names: impl Iterator<Item = &'a NodeName>,
    ) -> Vec<Credential> {
        names
            .filter_map(|name| {
                self.keyring.credential(name).map(|chain| Credential {
                    name: name.clone(),
                    chain: Blob::from(chain),
                })
            })
            .collect()
    }

    /// A credential for `name` arrived: its held statement and notes are taken if they now
    /// check out.
    fn release_pending(&mut self, now: Instant, name: &NodeName) {
        self.asked.remove(name);
        let (notes, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_notes)
            .into_iter()
            .filter(|(_, since)| now.saturating_duration_since(*since) < PENDING_FOR)
            .partition(|(note, _)| note.from == *name);
        self.pending_notes = others.into();
        for (note, _) in notes {
            self.receive_note(now, note, None);
        }
        let Some(pending) = self.pending.remove(name) else {
            return;
        };
        let Some(proof) = &pending.update.proof else {
            return;
        };
        let statement = wire::statement(self.cluster, &pending.update);
        if self.keyring.verify(name, &statement, proof.as_bytes()) != Proven::Yes {
            self.stats.statements_unproven += 1;
            return;
        }
        self.apply_update(now, pending.update, Some(&pending.sender), pending.source);
    }

    /// Drops held statements whose credential never came.
    fn expire_pending(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.since) < PENDING_FOR);
        self.stats.statements_unproven += (before - self.pending.len()) as u64;
        self.asked
            .retain(|_, &mut at| now.saturating_duration_since(at) < PENDING_FOR);
    }
}
