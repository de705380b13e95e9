//! Framing and the MessagePack codec: `[version][cluster id: 4 bytes][packet array]`.
//!
//! Decoding (total, bounded) is in `decode.rs`.

use std::borrow::Cow;

use serde::Serialize;

use super::message::{Message, Note, Packet, Update};
use super::types::{NodeName, State};

/// The wire format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes in front of every packet: the version byte and the cluster id.
pub const HEADER_LEN: usize = 5;
/// Largest datagram accepted (the UDP maximum); the send budget is far smaller.
pub const MAX_DATAGRAM_LEN: usize = 65_507;
/// Largest stream message accepted (a push-pull of about 200,000 members).
pub const MAX_STREAM_LEN: usize = 16 << 20;
/// Largest encoded tag map accepted from a peer.
pub const MAX_PEER_TAGS_LEN: usize = 4096;

/// Identifies a cluster on the wire: FNV-1a (32 bit) of its name. Not a secret: mTLS is the
/// access control; this only keeps two clusters sharing a CA from merging by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u32);

impl ClusterId {
    /// The id of the cluster called `name`.
    pub fn of(name: &str) -> ClusterId {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in name.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        ClusterId(hash)
    }
}

/// Why bytes from a peer were not a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header.
    #[error("packet truncated: {0} bytes is shorter than the 5-byte header")]
    Truncated(usize),
    /// Larger than the limit for its transport.
    #[error("packet of {len} bytes exceeds the {limit}-byte limit")]
    Oversize {
        /// The packet's length.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// A wire version this build does not speak.
    #[error("unsupported wire version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// Sent by a member of another cluster.
    #[error("packet for cluster id {0:#010x}, not ours")]
    ClusterMismatch(u32),
    /// Not well-formed msgpack, or not a packet. The reason quotes nothing of the input, so
    /// that refusing a packet costs no more than decoding it.
    #[error("malformed packet: {0}")]
    Malformed(Cow<'static, str>),
    /// Well-formed but breaks a rule (a bad name, oversized tags).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

impl DecodeError {
    /// A short reason for the `swimd_dropped_messages_total{reason}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::ClusterMismatch(_) => "cluster_mismatch",
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::Version(_) => "version",
            _ => "decode_error",
        }
    }
}

/// Encodes a single update, to be spliced into packets by [`encode_packet`].
pub fn encode_update(update: &Update) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    // Writing msgpack into a Vec cannot fail: the only errors are I/O errors of the writer.
    let _ = update.serialize(&mut rmp_serde::Serializer::new(&mut out));
    out
}

/// The bytes a member signs to state `update` about itself (its `alive` or `left`) or, as
/// its accuser, about another (`suspect`, `failed`): a domain tag, the cluster (so no proof
/// carries over to another cluster under the same CA) and the update without its
/// witnesses and proof (a `left` and an accusation without the details only an `alive`
/// carries, which relays may describe differently).
pub fn statement(cluster: ClusterId, update: &Update) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"swimd statement 1\0");
    out.extend_from_slice(&cluster.0.to_be_bytes());
    let bare = if update.state == State::Alive {
        Update {
            from: NodeName::default(),
            // No failing checks, said either way (relays say it as an empty list).
            failing: Some(update.failing.clone().unwrap_or_default()),
            closed: Vec::new(),
            proof: None,
            ..update.clone()
        }
    } else {
        // An accusation names its accuser; a `left` nobody else.
        let from = match update.state {
            State::Suspect | State::Failed => update.from.clone(),
            State::Alive | State::Left => NodeName::default(),
        };
        Update {
            name: update.name.clone(),
            incarnation: update.incarnation,
            state: update.state,
            from,
            ..Update::default()
        }
    };
    let _ = bare.serialize(&mut rmp_serde::Serializer::new(&mut out));
    out
}

/// The bytes a member signs to make a note: a domain tag, the cluster, the key and its name.
pub fn note_statement(cluster: ClusterId, note: &Note) -> Vec<u8> {
    let mut out = Vec::with_capacity(note.key.len() + 64);
    out.extend_from_slice(b"swimd note 1\0");
    out.extend_from_slice(&cluster.0.to_be_bytes());
    let _ = (&note.key, &note.from).serialize(&mut rmp_serde::Serializer::new(&mut out));
    out
}

/// Encodes a packet whose updates are already encoded (by [`encode_update`]).
pub fn encode_packet(
    cluster: ClusterId,
    from: &NodeName,
    message: &Message,
    updates: &[&[u8]],
    out: &mut Vec<u8>,
) {
    encode_head(cluster, from, message, out);
    encode_updates_len(updates.len(), out);
    for update in updates {
        out.extend_from_slice(update);
    }
}

/// Writes everything of a packet but its updates; [`encode_updates_len`] and the encoded
/// updates must follow.
pub fn encode_head(cluster: ClusterId, from: &NodeName, message: &Message, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.extend_from_slice(&cluster.0.to_be_bytes());
    // Vec<u8> writers are infallible, so the results below carry no information.
    let _ = rmp::encode::write_array_len(out, 4);
    let mut ser = rmp_serde::Serializer::new(&mut *out);
    let _ = from.serialize(&mut ser);
    let _ = message.kind().serialize(&mut ser);
    let _ = match message {
        Message::Ping(m) => m.serialize(&mut ser),
        Message::Ack(m) => m.serialize(&mut ser),
        Message::PingReq(m) => m.serialize(&mut ser),
        Message::Nack(m) => m.serialize(&mut ser),
        Message::Gossip => ().serialize(&mut ser),
        Message::PushPull(m) => m.serialize(&mut ser),
    };
}

/// Encodes a single note, to be appended by [`append_notes`].
pub fn encode_note(note: &Note) -> Vec<u8> {
    let mut out = Vec::with_capacity(note.key.len() + 4);
    let _ = note.serialize(&mut rmp_serde::Serializer::new(&mut out));
    out
}

/// Appends encoded notes to a packet that `out` holds completely (head and updates), turning
/// its 4-element array into a 5-element one. Nothing is written when `notes` is empty.
pub fn append_notes(out: &mut Vec<u8>, notes: &[&[u8]]) {
    // The packet array header is the fixarray byte right after the 5-byte frame header.
    let Some(array) = out.get_mut(HEADER_LEN) else {
        return;
    };
    if notes.is_empty() || *array != 0x94 {
        return;
    }
    *array = 0x95;
    let _ = rmp::encode::write_array_len(out, notes.len() as u32);
    for note in notes {
        out.extend_from_slice(note);
    }
}

/// Writes the header of the updates array (at most 3 bytes for up to 65,535 updates).
pub fn encode_updates_len(count: usize, out: &mut Vec<u8>) {
    let _ = rmp::encode::write_array_len(out, count as u32);
}

/// Encodes a whole packet (updates included): the convenient form for tests and tools.
pub fn encode(cluster: ClusterId, packet: &Packet) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = packet.updates.iter().map(encode_update).collect();
    let slices: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    encode_packet(cluster, &packet.from, &packet.message, &slices, &mut out);
    let notes: Vec<Vec<u8>> = packet.notes.iter().map(encode_note).collect();
    let notes: Vec<&[u8]> = notes.iter().map(Vec::as_slice).collect();
    append_notes(&mut out, &notes);
    out
}

/// Bytes a packet with this message and no updates takes, header included.
pub fn encoded_len(cluster: ClusterId, from: &NodeName, message: &Message) -> usize {
    let mut out = Vec::with_capacity(64);
    encode_packet(cluster, from, message, &[], &mut out);
    out.len()
}

/// The encoded size of a tag map (keys and values plus their msgpack headers).
pub fn tags_len(tags: &super::message::Tags) -> usize {
    tags.iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + 1
}
