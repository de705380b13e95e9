//! SWIM message types. Every struct is a msgpack array; fields are only ever appended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Incarnation, NodeName, State, WireAddr};

/// Most members one update may name as having found the member's port closed.
pub const MAX_CLOSED_WITNESSES: usize = 16;

/// Longest maintenance reason a member may publish, in bytes.
pub const MAX_MAINTENANCE_REASON: usize = 256;

/// Small key/value metadata a member publishes about itself.
pub type Tags = BTreeMap<String, String>;

/// Declares a wire struct: serialized as an array; decoding fills missing trailing fields with
/// their `Default` and skips unknown trailing fields, so older and newer agents interoperate.
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        wire_struct!(@check |_value: &$name| Ok(()); $(#[$m])* pub struct $name { $($(#[$fm])* pub $field : $ty),* });
    };
    // `check` runs on each decoded value, so that a sequence of bogus values stops at the
    // first rather than after all of them were allocated.
    (@check $check:expr; $(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        wire_struct!(@deserialize $check; $name { $($field : $ty),* });
    };
    // Serialized by hand: trailing fields left out when empty, so that older packets keep
    // their exact bytes.
    (@manual $check:expr; $(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        wire_struct!(@deserialize $check; $name { $($field : $ty),* });
    };
    (@deserialize $check:expr; $name:ident { $($field:ident : $ty:ty),* }) => {

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct SeqVisitor;
                impl<'de> serde::de::Visitor<'de> for SeqVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " array"))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$name, A::Error> {
                        $(let $field: $ty = seq.next_element()?.unwrap_or_default();)*
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        let value = $name { $($field),* };
                        let check: fn(&$name) -> Result<(), &'static str> = $check;
                        check(&value).map_err(serde::de::Error::custom)?;
                        Ok(value)
                    }
                }
                d.deserialize_seq(SeqVisitor)
            }
        }
    };
}

wire_struct! {
    // An empty array would decode into a whole `Update` (128 bytes from 1): refused at once.
    @manual |update: &Update| if update.name.as_str().is_empty() {
        Err("an update without a member name")
    } else if update.closed.len() > MAX_CLOSED_WITNESSES {
        Err("an update with too many closed-port witnesses")
    } else if update.maintenance.as_ref().is_some_and(|r| r.len() > MAX_MAINTENANCE_REASON) {
        Err("a maintenance reason longer than 256 bytes")
    } else if update.software.as_ref().is_some_and(|s| s.release.len() > MAX_RELEASE_LEN) {
        Err("a release name longer than 32 bytes")
    } else if update.proof.as_ref().is_some_and(|p| p.0.len() > MAX_PROOF_LEN) {
        Err("a proof longer than 600 bytes")
    } else {
        Ok(())
    };
    /// One piggybacked membership update: what the sender believes about `name`.
    pub struct Update {
        /// The member the update is about.
        pub name: NodeName,
        /// The member's incarnation the update refers to.
        pub incarnation: Incarnation,
        /// The state claimed.
        pub state: State,
        /// For `suspect`/`failed`: the member that made the accusation; empty otherwise.
        pub from: NodeName,
        /// For `alive`: where the member listens.
        pub addr: Option<WireAddr>,
        /// For `alive`: the member's tags.
        pub tags: Option<Tags>,
        /// For `alive`: the names of its failing service checks (empty: passing).
        pub failing: Option<Vec<String>>,
        /// For `suspect`/`failed`: members that found nothing listening on the member's
        /// port (ICMP port unreachable for their own packets); at most `MAX_CLOSED_WITNESSES`.
        pub closed: Vec<NodeName>,
        /// For `alive`: the member is in planned maintenance, for this reason (possibly
        /// empty); `None` when it is not.
        pub maintenance: Option<String>,
        /// For `alive`: the software the member runs (`None` from v0.1.0 agents).
        pub software: Option<Software>,
        /// For `alive` and `left`: the member's signature over the statement
        /// ([`crate::wire::statement`]), so that a relayed copy proves who made it. `None`
        /// for accusations, and from v0.1.0 agents.
        pub proof: Option<Blob>,
    }
}

impl Serialize for Update {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let len = if self.proof.is_some() { 11 } else { 10 };
        let mut t = s.serialize_tuple(len)?;
        t.serialize_element(&self.name)?;
        t.serialize_element(&self.incarnation)?;
        t.serialize_element(&self.state)?;
        t.serialize_element(&self.from)?;
        t.serialize_element(&self.addr)?;
        t.serialize_element(&self.tags)?;
        t.serialize_element(&self.failing)?;
        t.serialize_element(&self.closed)?;
        t.serialize_element(&self.maintenance)?;
        t.serialize_element(&self.software)?;
        if let Some(proof) = &self.proof {
            t.serialize_element(proof)?;
        }
        t.end()
    }
}

/// Longest proof (signature) accepted, in bytes: an RSA-4096 signature takes 512.
pub const MAX_PROOF_LEN: usize = 600;

/// Longest credential (a member's certificate chain) accepted, in bytes.
pub const MAX_CREDENTIAL_LEN: usize = 8192;

/// Most credentials one push-pull may ask for (`want`); a reply carries at most
/// [`MAX_ELEMENTS`](crate::wire::MAX_ELEMENTS).
pub const MAX_WANTED: usize = 64;

/// Opaque bytes on the wire (a msgpack `bin`), shared without copying once decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub std::sync::Arc<[u8]>);

impl Blob {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Blob {
        Blob(bytes.into())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl serde::de::Visitor<'_> for BytesVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Blob, E> {
                Ok(Blob(b.into()))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

wire_struct! {
    /// A member's certificate chain (DER certificates back to back, leaf first), passed on
    /// so that others can check its statements' proofs.
    pub struct Credential {
        /// The member.
        pub name: NodeName,
        /// Its chain.
        pub chain: Blob,
    }
}

/// Longest release name a member may advertise, in bytes.
pub const MAX_RELEASE_LEN: usize = 32;

wire_struct! {
    /// What a member runs, so that a rolling upgrade can be watched: its release and the
    /// packet format versions (the header's first byte) it writes and reads.
    pub struct Software {
        /// Its release and build, as `swimd --version` prints them, e.g. `0.2.0 (1a2b3c4d5e6f)`.
        pub release: String,
        /// The format version it writes.
        pub writes: u8,
        /// The oldest format version it reads.
        pub reads_from: u8,
        /// The newest format version it reads.
        pub reads_to: u8,
    }
}

impl Software {
    /// This build.
    pub fn current() -> Software {
        Software {
            // The build too: between two releases, upgraded hosts are told apart by it.
            release: crate::VERSION.to_string(),
            writes: super::codec::VERSION,
            reads_from: super::codec::VERSION,
            reads_to: super::codec::VERSION,
        }
    }
}

wire_struct! {
    /// A direct probe: the receiver answers [`Ack`] if it is `target`.
    pub struct Ping {
        /// The sender's probe sequence number, echoed in the answer.
        pub seq: u32,
        /// Who the sender thinks it is probing (addresses can be reused).
        pub target: NodeName,
    }
}

wire_struct! {
    /// The answer to a [`Ping`] (or a relayed answer to a [`PingReq`]).
    pub struct Ack {
        /// The sequence number being answered.
        pub seq: u32,
    }
}

wire_struct! {
    /// Asks the receiver to probe `target` on the sender's behalf.
    pub struct PingReq {
        /// The requester's sequence number, echoed in the relayed [`Ack`] or [`Nack`].
        pub seq: u32,
        /// The member to probe.
        pub target: NodeName,
        /// Where to probe it.
        pub addr: WireAddr,
    }
}

wire_struct! {
    /// Lifeguard: the relay could not reach the target (so the requester's own link is fine).
    pub struct Nack {
        /// The requester's sequence number.
        pub seq: u32,
    }
}

wire_struct! {
    @manual |_: &PushPull| Ok(());
    /// Anti-entropy: the sender's view of (part of) the membership.
    pub struct PushPull {
        /// Sent by a joining member: the answer carries the full membership.
        pub join: bool,
        /// This is the answer to a push-pull request.
        pub reply: bool,
        /// The members described.
        pub members: Vec<Update>,
        /// The sender's anti-entropy digest: one 16-bit hash per ring bucket (requests).
        pub digest: Digest,
        /// In an answer: the buckets whose members are included, and that the requester
        /// should send its own members of in return.
        pub buckets: Vec<u8>,
        /// In a request: members whose credentials the sender lacks (it heard their
        /// statements from us); at most [`MAX_WANTED`].
        pub want: Vec<NodeName>,
        /// Credentials: in an answer, those wanted (and in a join answer, every member's).
        pub credentials: Vec<Credential>,
    }
}

impl Serialize for PushPull {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let len = if !self.credentials.is_empty() {
            7
        } else if !self.want.is_empty() {
            6
        } else {
            5
        };
        let mut t = s.serialize_tuple(len)?;
        t.serialize_element(&self.join)?;
        t.serialize_element(&self.reply)?;
        t.serialize_element(&self.members)?;
        t.serialize_element(&self.digest)?;
        t.serialize_element(&self.buckets)?;
        if len > 5 {
            t.serialize_element(&self.want)?;
        }
        if len > 6 {
            t.serialize_element(&self.credentials)?;
        }
        t.end()
    }
}

/// Per-bucket membership hashes, as one msgpack `bin` (2 bytes per bucket, big-endian).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest(pub Vec<u16>);

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|h| h.to_be_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl serde::de::Visitor<'_> for BytesVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("digest bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Digest, E> {
                Ok(Digest(
                    b.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                ))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

wire_struct! {
    @manual |_: &Note| Ok(());
    /// An application note gossiped once around the cluster (hooks confirm deliveries with
    /// it): an opaque key, deduplicated by every member, signed by the member that made it.
    pub struct Note {
        /// The note; at most [`MAX_NOTE_LEN`] bytes.
        pub key: String,
        /// Who made it (empty from v0.1.0 agents).
        pub from: NodeName,
        /// Its maker's signature over [`crate::wire::note_statement`].
        pub proof: Option<Blob>,
    }
}

impl Note {
    /// A note without a maker (as v0.1.0 agents write them).
    pub fn bare(key: impl Into<String>) -> Note {
        Note {
            key: key.into(),
            ..Note::default()
        }
    }
}

impl Serialize for Note {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let signed = !self.from.as_str().is_empty() || self.proof.is_some();
        let mut t = s.serialize_tuple(if signed { 3 } else { 1 })?;
        t.serialize_element(&self.key)?;
        if signed {
            t.serialize_element(&self.from)?;
            t.serialize_element(&self.proof)?;
        }
        t.end()
    }
}

/// Longest note key accepted, in bytes.
pub const MAX_NOTE_LEN: usize = 128;

/// A message body; its kind is the byte that precedes it in a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Direct probe.
    Ping(Ping),
    /// Probe answer.
    Ack(Ack),
    /// Indirect probe request.
    PingReq(PingReq),
    /// Indirect probe failed.
    Nack(Nack),
    /// Nothing but piggybacked updates.
    Gossip,
    /// State exchange (sent on a stream).
    PushPull(PushPull),
}

impl Message {
    /// The kind byte on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Ping(_) => 0,
            Message::Ack(_) => 1,
            Message::PingReq(_) => 2,
            Message::Nack(_) => 3,
            Message::Gossip => 4,
            Message::PushPull(_) => 5,
        }
    }

    /// A short name for logs and metric labels.
    pub fn name(&self) -> &'static str {
        KIND_NAMES
            .get(usize::from(self.kind()))
            .copied()
            .unwrap_or("unknown")
    }
}

/// Metric label of each kind byte, in kind order.
pub const KIND_NAMES: [&str; 6] = ["ping", "ack", "ping_req", "nack", "gossip", "push_pull"];

/// A decoded packet: who sent it, the message, and the updates riding along.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The sender's name (the agent checks it against the connection's certificate).
    pub from: NodeName,
    /// The message.
    pub message: Message,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
    /// Piggybacked application notes (a fifth array element, absent when empty).
    pub notes: Vec<Note>,
}
