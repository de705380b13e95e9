//! Framing and the MessagePack codec: `[version][cluster id: 4 bytes][packet array]`.
//!
//! Decoding is total: any byte string gives a [`Packet`] or a [`DecodeError`]. Before serde
//! sees the bytes, [`check_structure`] walks the msgpack tree and rejects any declared
//! length that exceeds what is left of the input, so nothing allocates more than the input's
//! size suggests, and nesting is bounded.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::message::{
    Ack, MAX_NOTE_LEN, Message, Nack, Note, Packet, Ping, PingReq, PushPull, Update,
};
use super::types::NodeName;

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
/// Deepest msgpack nesting accepted (a packet needs 5).
const MAX_DEPTH: usize = 8;
/// Most elements in one msgpack array or map. Nothing swimd sends comes near (a push-pull
/// carries at most the 65,536 members an agent holds); a 16 MiB push-pull of minimal
/// updates would name 1.3 million members and cost the receiver 320 MiB to decode.
pub const MAX_ELEMENTS: usize = 65_536;

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
    /// Not well-formed msgpack, or not a packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
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

/// Decodes a packet of at most `limit` bytes, checking version, cluster and every rule.
pub fn decode(cluster: ClusterId, bytes: &[u8], limit: usize) -> Result<Packet, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::Oversize {
            len: bytes.len(),
            limit,
        });
    }
    let (header, body) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(DecodeError::Truncated(bytes.len()))?;
    let [version, id @ ..] = *header;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let id = u32::from_be_bytes(id);
    if id != cluster.0 {
        return Err(DecodeError::ClusterMismatch(id));
    }
    let used = check_structure(body)?;
    if used != body.len() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the packet",
            body.len() - used
        )));
    }
    let packet: Packet =
        rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    validate(&packet)?;
    Ok(packet)
}

fn validate(packet: &Packet) -> Result<(), DecodeError> {
    NodeName::validate(packet.from.as_str()).map_err(DecodeError::Invalid)?;
    let target = match &packet.message {
        Message::Ping(m) => Some(&m.target),
        Message::PingReq(m) => Some(&m.target),
        _ => None,
    };
    if let Some(target) = target {
        NodeName::validate(target.as_str()).map_err(DecodeError::Invalid)?;
    }
    let pushed = match &packet.message {
        Message::PushPull(m) => m.members.as_slice(),
        _ => &[],
    };
    for update in packet.updates.iter().chain(pushed) {
        NodeName::validate(update.name.as_str()).map_err(DecodeError::Invalid)?;
        if !update.from.as_str().is_empty() {
            NodeName::validate(update.from.as_str()).map_err(DecodeError::Invalid)?;
        }
        if let Some(tags) = &update.tags
            && tags_len(tags) > MAX_PEER_TAGS_LEN
        {
            return Err(DecodeError::Invalid("member tags exceed 4096 bytes"));
        }
        if let Some(failing) = &update.failing
            && failing.iter().map(|c| c.len() + 1).sum::<usize>() > MAX_PEER_TAGS_LEN
        {
            return Err(DecodeError::Invalid("failing checks exceed 4096 bytes"));
        }
    }
    if packet.notes.iter().any(|n| n.key.len() > MAX_NOTE_LEN) {
        return Err(DecodeError::Invalid("note longer than 128 bytes"));
    }
    Ok(())
}

/// The encoded size of a tag map (keys and values plus their msgpack headers).
pub fn tags_len(tags: &super::message::Tags) -> usize {
    tags.iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + 1
}

impl<'de> Deserialize<'de> for Packet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PacketVisitor;
        impl<'de> Visitor<'de> for PacketVisitor {
            type Value = Packet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a packet array [from, kind, body, updates, notes]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Packet, A::Error> {
                let missing = || de::Error::custom("packet array too short");
                let from: NodeName = seq.next_element()?.ok_or_else(missing)?;
                let kind: u8 = seq.next_element()?.ok_or_else(missing)?;
                let message = match kind {
                    0 => Message::Ping(seq.next_element::<Ping>()?.ok_or_else(missing)?),
                    1 => Message::Ack(seq.next_element::<Ack>()?.ok_or_else(missing)?),
                    2 => Message::PingReq(seq.next_element::<PingReq>()?.ok_or_else(missing)?),
                    3 => Message::Nack(seq.next_element::<Nack>()?.ok_or_else(missing)?),
                    4 => {
                        seq.next_element::<IgnoredAny>()?.ok_or_else(missing)?;
                        Message::Gossip
                    }
                    5 => Message::PushPull(seq.next_element::<PushPull>()?.ok_or_else(missing)?),
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "unknown message kind {other}"
                        )));
                    }
                };
                let updates: Vec<Update> = seq.next_element()?.unwrap_or_default();
                let notes: Vec<Note> = seq.next_element()?.unwrap_or_default();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Packet {
                    from,
                    message,
                    updates,
                    notes,
                })
            }
        }
        d.deserialize_seq(PacketVisitor)
    }
}

/// `count` if an array or map may hold that many elements (see [`MAX_ELEMENTS`]).
fn bounded(count: usize) -> Result<usize, DecodeError> {
    if count > MAX_ELEMENTS {
        return Err(DecodeError::Malformed(format!(
            "{count} elements in one array or map, more than {MAX_ELEMENTS}"
        )));
    }
    Ok(count)
}

/// Walks one msgpack value and returns how many bytes it spans. Every declared length is
/// checked against the bytes left (an element takes at least one byte), nesting is bounded.
pub fn check_structure(bytes: &[u8]) -> Result<usize, DecodeError> {
    let mut cursor = Cursor { bytes, pos: 0 };
    cursor.value(0)?;
    Ok(cursor.pos)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed(format!(
                "value of {n} bytes at offset {} runs past the end",
                self.pos
            )));
        }
        self.pos += n;
        Ok(())
    }

    fn uint(&mut self, width: usize) -> Result<usize, DecodeError> {
        let start = self.pos;
        self.skip(width)?;
        let mut value: usize = 0;
        for &byte in self.bytes.get(start..start + width).unwrap_or_default() {
            value = (value << 8) | usize::from(byte);
        }
        Ok(value)
    }

    fn elements(&mut self, count: usize, depth: usize) -> Result<(), DecodeError> {
        if count > self.remaining() {
            return Err(DecodeError::Malformed(format!(
                "{count} elements declared with {} bytes left",
                self.remaining()
            )));
        }
        for _ in 0..count {
            self.value(depth + 1)?;
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Malformed("nested too deeply".into()));
        }
        let marker = self.uint(1)? as u8;
        match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(()),
            0x80..=0x8f => self.elements(2 * usize::from(marker & 0x0f), depth),
            0x90..=0x9f => self.elements(usize::from(marker & 0x0f), depth),
            0xa0..=0xbf => self.skip(usize::from(marker & 0x1f)),
            0xc1 => Err(DecodeError::Malformed(
                "reserved msgpack marker 0xc1".into(),
            )),
            0xc4 | 0xd9 => {
                let n = self.uint(1)?;
                self.skip(n)
            }
            0xc5 | 0xda => {
                let n = self.uint(2)?;
                self.skip(n)
            }
            0xc6 | 0xdb => {
                let n = self.uint(4)?;
                self.skip(n)
            }
            0xc7 => {
                let n = self.uint(1)?;
                self.skip(n + 1)
            }
            0xc8 => {
                let n = self.uint(2)?;
                self.skip(n + 1)
            }
            0xc9 => {
                let n = self.uint(4)?;
                self.skip(n.saturating_add(1))
            }
            0xca | 0xce | 0xd2 => self.skip(4),
            0xcb | 0xcf | 0xd3 => self.skip(8),
            0xcc | 0xd0 => self.skip(1),
            0xcd | 0xd1 => self.skip(2),
            0xd4 => self.skip(2),
            0xd5 => self.skip(3),
            0xd6 => self.skip(5),
            0xd7 => self.skip(9),
            0xd8 => self.skip(17),
            0xdc => {
                let n = self.uint(2)?;
                self.elements(n, depth)
            }
            0xdd => {
                let n = bounded(self.uint(4)?)?;
                self.elements(n, depth)
            }
            0xde => {
                let n = self.uint(2)?;
                self.elements(n.saturating_mul(2), depth)
            }
            0xdf => {
                let n = bounded(self.uint(4)?)?;
                self.elements(n.saturating_mul(2), depth)
            }
        }
    }
}
