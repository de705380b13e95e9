//! The SWIM protocol with Lifeguard, sans-IO: a deterministic state machine.
//!
//! No sockets, no tokio, no clock, no global RNG: time is passed in, randomness comes from a
//! seed, bytes come out. `sim` and `agent` are its only drivers:
//!
//! ```text
//! let mut swim = Swim::new(identity, config, seed, now);
//! swim.handle_packet(now, from, packet);   // a decoded packet from a peer
//! swim.handle_timeout(now);                // when `swim.poll_timeout()` is due
//! while let Some(t) = swim.poll_transmit() { /* send t.payload to t.to */ }
//! while let Some(e) = swim.poll_event() { /* membership events */ }
//! ```

mod awareness;
mod broadcast;
mod config;
mod keyring;
mod members;
mod notes;
mod overlay;
mod suspicion;
mod swim;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use config::{Config, ConfigError, Profile};
pub use keyring::{Keyring, ModelKeyring, Proven};
pub use members::{Health, MemberInfo};
pub use swim::{ForceLeaveError, Identity, NoteError, Swim, TagsError};
pub use trace::{Step, TraceEntry};

pub use crate::wire::{Incarnation, NodeName, State, Tags};

/// A member as restored from a state directory: identity, incarnation, state, and the
/// member's proof of that statement when it made one (so that it can be passed on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMember {
    /// Its identity.
    pub info: Arc<MemberInfo>,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its state.
    pub state: State,
    /// Its signature over [`KnownMember::update`], for `alive` and `left`.
    pub proof: Option<crate::wire::Blob>,
    /// Its certificate chain as last learnt (checked again when restored).
    pub credential: Option<crate::wire::Blob>,
}

impl KnownMember {
    /// A member known without its proof.
    pub fn new(info: Arc<MemberInfo>, incarnation: Incarnation, state: State) -> Self {
        KnownMember {
            info,
            incarnation,
            state,
            proof: None,
            credential: None,
        }
    }

    /// The update that describes it, as relays pass it on (its proof signs this).
    pub fn update(&self) -> crate::wire::Update {
        swim::describe(&self.info, self.incarnation, self.state, self.proof.clone())
    }
}

/// Bytes for one peer, produced by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination address.
    pub to: SocketAddr,
    /// Destination member, when known (seeds are only addresses).
    pub to_name: Option<NodeName>,
    /// The encoded packet, header included.
    pub payload: Vec<u8>,
    /// How it must travel.
    pub channel: Channel,
    /// The message kind, an index into [`crate::wire::KIND_NAMES`] (for metrics).
    pub kind: u8,
}

/// Transport class of a transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Unreliable, one datagram (probes, acks, gossip).
    Datagram,
    /// Reliable and ordered (push-pull), may be large.
    Stream,
}

/// A membership change seen by this member, in the project's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A member not known before (or known as left) is alive.
    Joined,
    /// An alive member changed its address or tags, or refuted a suspicion.
    Updated,
    /// A member is suspected.
    Suspect,
    /// A member is declared failed.
    Failed,
    /// A failed member is alive again.
    Recovered,
    /// A member left gracefully.
    Left,
    /// A failed or left member was forgotten.
    Reaped,
    /// An alive member's service checks started failing.
    Critical,
    /// An alive member's service checks all pass again.
    Passing,
    /// A member went into planned maintenance.
    Maintenance,
    /// A member came out of maintenance (its checks pass).
    Ready,
}

impl EventKind {
    /// Every kind, in the vocabulary's order.
    pub const ALL: [EventKind; 11] = [
        EventKind::Joined,
        EventKind::Updated,
        EventKind::Suspect,
        EventKind::Failed,
        EventKind::Recovered,
        EventKind::Left,
        EventKind::Reaped,
        EventKind::Critical,
        EventKind::Passing,
        EventKind::Maintenance,
        EventKind::Ready,
    ];

    /// The kind named `name` (e.g. `member.failed`), if there is one.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The vocabulary name, e.g. `member.failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "member.joined",
            EventKind::Updated => "member.updated",
            EventKind::Suspect => "member.suspect",
            EventKind::Failed => "member.failed",
            EventKind::Recovered => "member.recovered",
            EventKind::Left => "member.left",
            EventKind::Reaped => "member.reaped",
            EventKind::Critical => "member.critical",
            EventKind::Passing => "member.passing",
            EventKind::Maintenance => "member.maintenance",
            EventKind::Ready => "member.ready",
        }
    }
}

/// One membership event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The member as it is now.
    pub member: MemberView,
    /// Its state before the change (`None` for a member not known before).
    pub previous: Option<State>,
}

/// A read-only snapshot of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Name, address and tags.
    pub info: Arc<MemberInfo>,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its state in this member's view.
    pub state: State,
    /// When it entered that state (driver's clock).
    pub since: Instant,
}

/// Counters only the core can keep; the agent turns them into metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Probes answered directly.
    pub probes_direct_ok: u64,
    /// Probes answered through a relay only.
    pub probes_indirect_ok: u64,
    /// Probes that got no answer.
    pub probes_failed: u64,
    /// Suspicions this member started or joined.
    pub suspicions: u64,
    /// Times this member refuted a suspicion or failure of itself.
    pub refutations: u64,
    /// Link checks that passed: accused while its own probes kept failing, this member
    /// showed its links work and refuted.
    pub link_checks_passed: u64,
    /// Link checks that did not pass (too few answers): the accusation stood.
    pub link_checks_failed: u64,
    /// Times this member held back its own `failed` verdict because it had been accused and
    /// its link check had not passed (its own probes are not to be trusted then).
    pub verdicts_deferred: u64,
    /// Push-pull exchanges started.
    pub push_pulls_started: u64,
    /// Push-pull requests answered.
    pub push_pulls_answered: u64,
    /// Packets ignored because they were not for us (wrong ping target, unknown seq).
    pub stray_packets: u64,
    /// Acks ignored because they came from a member other than the one asked.
    pub acks_misattributed: u64,
    /// Ping-reqs refused: their target is not a member we know (we dial only known members).
    pub ping_reqs_refused: u64,
    /// Claims whose incarnation was lowered to what the sender may say (see
    /// `MAX_INCARNATION_STEP`): accusations above the known incarnation, jumps too large.
    pub incarnations_bounded: u64,
    /// New members refused because `MAX_MEMBERS` were held already.
    pub members_refused: u64,
    /// Refutations postponed because we had refuted `MAX_REFUTATIONS_PER_SEC` times in
    /// the last second.
    pub refutations_deferred: u64,
    /// "Port unreachable" errors for our packets the driver reported.
    pub ports_unreachable: u64,
    /// Members declared failed at once because their observers found their port closed.
    pub closed_port_verdicts: u64,
    /// Statements about another member passed on without its proof, refused.
    pub statements_unsigned: u64,
    /// Statements whose proof did not check out, even with a fresh credential, or for
    /// which none came: refused.
    pub statements_unproven: u64,
    /// Notes without a proof by the member they name (from v0.1.0 agents, or forged):
    /// neither handed over nor passed on.
    pub notes_unproven: u64,
    /// Credentials received that did not check out (not from the cluster CA, revoked,
    /// naming another member).
    pub credentials_refused: u64,
    /// Sum and count of direct-probe round trips, in microseconds.
    pub rtt_us_sum: u64,
    /// Number of round trips summed in `rtt_us_sum`.
    pub rtt_count: u64,
}

#[cfg(test)]
mod tests;
