//! The wire format: message types and their compact MessagePack encoding.

mod codec;
mod decode;
mod message;
mod types;

pub use codec::{
    ClusterId, DecodeError, HEADER_LEN, MAX_DATAGRAM_LEN, MAX_PEER_TAGS_LEN, MAX_STREAM_LEN,
    VERSION, append_notes, encode, encode_head, encode_note, encode_packet, encode_update,
    encode_updates_len, encoded_len, note_statement, statement, tags_len,
};
pub use decode::{Encoded, MAX_ELEMENTS, Received, decode, decode_received, validate_structure};
pub use message::{
    Ack, Blob, Credential, Digest, KIND_NAMES, MAX_CLOSED_WITNESSES, MAX_CREDENTIAL_LEN,
    MAX_MAINTENANCE_REASON, MAX_NOTE_LEN, MAX_PROOF_LEN, MAX_RELEASE_LEN, MAX_WANTED, Message,
    Nack, Note, Packet, Ping, PingReq, PushPull, Software, Tags, Update,
};
pub use types::{Incarnation, MAX_NAME_LEN, NodeName, State, WireAddr};

#[cfg(test)]
mod tests;
