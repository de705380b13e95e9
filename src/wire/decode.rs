//! Decoding bytes from peers. Every rule is checked while the msgpack is read, before anything
//! is allocated for it, and a packet's updates and notes stay encoded (checked) until the core
//! consumes them one at a time: decoding any input allocates at most 4× its size, whatever a
//! peer sends (`tests/decode_alloc.rs`).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::{
    ClusterId, DecodeError, HEADER_LEN, MAX_PEER_TAGS_LEN, VERSION, encode_note, encode_update,
};
use super::message::{
    Ack, Blob, Credential, Digest, MAX_CLOSED_WITNESSES, MAX_CREDENTIAL_LEN,
    MAX_MAINTENANCE_REASON, MAX_NOTE_LEN, MAX_PROOF_LEN, MAX_RELEASE_LEN, MAX_WANTED, Message,
    Nack, Note, Packet, Ping, PingReq, PushPull, Software, Tags, Update,
};
use super::types::{Incarnation, NodeName, State, WireAddr};

/// Shortest credential accepted, in bytes.
const MIN_CREDENTIAL_LEN: usize = 100;
/// Deepest msgpack nesting accepted (a packet needs 5).
const MAX_DEPTH: usize = 8;
/// Most elements in one msgpack array or map. Nothing swimd sends comes near (a push-pull
/// carries at most the 65,536 members an agent holds); a 16 MiB push-pull of minimal
/// updates would name 5.6 million members for the core to consider.
pub const MAX_ELEMENTS: usize = 65_536;

/// A packet as it arrived: its message decoded, its updates and notes checked against every
/// rule but still encoded, so that they cost their size until consumed (see [`Encoded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's name (the agent checks it against the connection's certificate).
    pub from: NodeName,
    /// The message; a push-pull's members are in [`Received::members`], not in it.
    pub message: Message,
    /// A push-pull's members (empty for any other message).
    pub members: Encoded<Update>,
    /// Piggybacked membership updates.
    pub updates: Encoded<Update>,
    /// Piggybacked application notes.
    pub notes: Encoded<Note>,
}

impl From<Packet> for Received {
    fn from(packet: Packet) -> Received {
        let Packet {
            from,
            mut message,
            updates,
            notes,
        } = packet;
        let members = match &mut message {
            Message::PushPull(push_pull) => std::mem::take(&mut push_pull.members),
            _ => Vec::new(),
        };
        Received {
            from,
            message,
            members: members.iter().collect(),
            updates: updates.iter().collect(),
            notes: notes.iter().collect(),
        }
    }
}

impl From<Received> for Packet {
    /// Decodes every update at once: for tests and tools; the core consumes them one by one.
    fn from(received: Received) -> Packet {
        let Received {
            from,
            mut message,
            members,
            updates,
            notes,
        } = received;
        if let Message::PushPull(push_pull) = &mut message {
            push_pull.members = members.to_vec();
        }
        Packet {
            from,
            message,
            updates: updates.to_vec(),
            notes: notes.to_vec(),
        }
    }
}

/// Values of one msgpack array as they arrived: checked, kept encoded (their size in memory is
/// their size on the wire), decoded each time they are iterated.
#[derive(Clone)]
pub struct Encoded<T> {
    bytes: Box<[u8]>,
    count: usize,
    element: PhantomData<fn() -> T>,
}

impl<T> Default for Encoded<T> {
    fn default() -> Self {
        Encoded {
            bytes: Box::default(),
            count: 0,
            element: PhantomData,
        }
    }
}

impl<T: Element> Encoded<T> {
    /// How many values the list holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the list holds no value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Decodes the values in order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let mut cursor = Cursor::new(&self.bytes);
        // The bytes were checked when they arrived, so reading them again cannot fail.
        (0..self.count).map_while(move |_| T::read(&mut cursor).ok())
    }

    /// Decodes every value.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.count);
        out.extend(self.iter());
        out
    }
}

impl<'a, T: Element + 'a> FromIterator<&'a T> for Encoded<T> {
    fn from_iter<I: IntoIterator<Item = &'a T>>(values: I) -> Self {
        let mut bytes = Vec::new();
        let mut count = 0;
        for value in values {
            value.write(&mut bytes);
            count += 1;
        }
        Encoded {
            bytes: bytes.into_boxed_slice(),
            count,
            element: PhantomData,
        }
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal if they decode to equal values (an older encoder's bytes may differ from today's).
impl<T: Element + PartialEq> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl<T: Element + Eq> Eq for Encoded<T> {}

/// A wire value that an [`Encoded`] list can hold. Sealed: implemented by the wire types only.
pub trait Element: Sized {
    /// Appends the value's encoding to `out`.
    fn write(&self, out: &mut Vec<u8>);
    /// Reads one value and checks it, allocating nothing.
    fn validate(cursor: &mut Cursor<'_>) -> Result<(), DecodeError>;
    /// Reads one value and decodes it.
    fn read(cursor: &mut Cursor<'_>) -> Result<Self, DecodeError>;
}

impl Element for Update {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&encode_update(self));
    }
    fn validate(cursor: &mut Cursor<'_>) -> Result<(), DecodeError> {
        UpdateRef::read(cursor).map(drop)
    }
    fn read(cursor: &mut Cursor<'_>) -> Result<Update, DecodeError> {
        UpdateRef::read(cursor).map(|u| u.to_update())
    }
}

impl Element for Note {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&encode_note(self));
    }
    fn validate(cursor: &mut Cursor<'_>) -> Result<(), DecodeError> {
        read_note(cursor).map(drop)
    }
    fn read(cursor: &mut Cursor<'_>) -> Result<Note, DecodeError> {
        read_note(cursor).map(|(key, from, proof)| Note {
            key: key.to_owned(),
            from: if from.is_empty() {
                NodeName::default()
            } else {
                NodeName::new(from)
            },
            proof: proof.map(|p| Blob(p.into())),
        })
    }
}

/// Decodes a packet of at most `limit` bytes, checking version, cluster and every rule; its
/// updates and notes stay encoded.
pub fn decode_received(
    cluster: ClusterId,
    bytes: &[u8],
    limit: usize,
) -> Result<Received, DecodeError> {
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
    // The structure pass bounds every declared length and the nesting, so that the typed
    // pass below never meets a length beyond the input.
    if validate_structure(body)? != body.len() {
        return Err(malformed("trailing bytes after the packet"));
    }
    read_packet(&mut Cursor::new(body))
}

/// Decodes a packet of at most `limit` bytes with all its updates: for tests and tools (the
/// agent keeps them encoded, see [`decode_received`]).
pub fn decode(cluster: ClusterId, bytes: &[u8], limit: usize) -> Result<Packet, DecodeError> {
    decode_received(cluster, bytes, limit).map(Packet::from)
}

fn malformed(why: &'static str) -> DecodeError {
    DecodeError::Malformed(Cow::Borrowed(why))
}

/// The packet array: `[from, kind, body, updates, notes]`, more fields skipped.
fn read_packet(cursor: &mut Cursor<'_>) -> Result<Received, DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let short = || malformed("packet array too short");
    let from = fields.next(cursor, Cursor::str)?.ok_or_else(short)?;
    NodeName::validate(from).map_err(DecodeError::Invalid)?;
    let kind = fields.next(cursor, Cursor::uint)?.ok_or_else(short)?;
    let mut members = Encoded::default();
    let message = match kind {
        0 => Message::Ping(fields.next(cursor, read_ping)?.ok_or_else(short)?),
        1 => Message::Ack(Ack {
            seq: fields.next(cursor, read_seq)?.ok_or_else(short)?,
        }),
        2 => Message::PingReq(fields.next(cursor, read_ping_req)?.ok_or_else(short)?),
        3 => Message::Nack(Nack {
            seq: fields.next(cursor, read_seq)?.ok_or_else(short)?,
        }),
        4 => {
            fields.next(cursor, Cursor::skip_value)?.ok_or_else(short)?;
            Message::Gossip
        }
        5 => {
            let (push_pull, pushed) = fields.next(cursor, read_push_pull)?.ok_or_else(short)?;
            members = pushed;
            Message::PushPull(push_pull)
        }
        other => {
            return Err(DecodeError::Malformed(Cow::Owned(format!(
                "unknown message kind {other}"
            ))));
        }
    };
    let updates = fields.next(cursor, Cursor::list)?.unwrap_or_default();
    let notes = fields.next(cursor, Cursor::list)?.unwrap_or_default();
    fields.finish(cursor)?;
    Ok(Received {
        from: NodeName::new(from),
        message,
        members,
        updates,
        notes,
    })
}

/// An `Ack`'s or `Nack`'s body: `[seq]`.
fn read_seq(cursor: &mut Cursor<'_>) -> Result<u32, DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let seq = fields.next(cursor, Cursor::u32)?.unwrap_or_default();
    fields.finish(cursor)?;
    Ok(seq)
}

fn read_ping(cursor: &mut Cursor<'_>) -> Result<Ping, DecodeError> {
    let (seq, target, _) = read_probe(cursor, false)?;
    Ok(Ping { seq, target })
}

fn read_ping_req(cursor: &mut Cursor<'_>) -> Result<PingReq, DecodeError> {
    let (seq, target, addr) = read_probe(cursor, true)?;
    Ok(PingReq {
        seq,
        target,
        addr: addr.unwrap_or_default(),
    })
}

/// A ping's `[seq, target]` or a ping-req's `[seq, target, addr]` (`with_addr`).
fn read_probe(
    cursor: &mut Cursor<'_>,
    with_addr: bool,
) -> Result<(u32, NodeName, Option<WireAddr>), DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let seq = fields.next(cursor, Cursor::u32)?.unwrap_or_default();
    let target = fields.next(cursor, Cursor::str)?.unwrap_or_default();
    let addr = if with_addr {
        fields.next(cursor, Cursor::addr)?
    } else {
        None
    };
    fields.finish(cursor)?;
    NodeName::validate(target).map_err(DecodeError::Invalid)?;
    Ok((seq, NodeName::new(target), addr))
}

fn read_push_pull(cursor: &mut Cursor<'_>) -> Result<(PushPull, Encoded<Update>), DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let join = fields.next(cursor, Cursor::bool)?.unwrap_or_default();
    let reply = fields.next(cursor, Cursor::bool)?.unwrap_or_default();
    let members = fields.next(cursor, Cursor::list)?.unwrap_or_default();
    let digest = fields.next(cursor, Cursor::bin)?.unwrap_or_default();
    let buckets = fields.next(cursor, read_buckets)?.unwrap_or_default();
    let want = fields.next(cursor, read_want)?.unwrap_or_default();
    let credentials = fields.next(cursor, read_credentials)?.unwrap_or_default();
    fields.finish(cursor)?;
    let mut hashes = Vec::with_capacity(digest.len() / 2);
    hashes.extend(
        digest
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
    );
    let push_pull = PushPull {
        join,
        reply,
        members: Vec::new(),
        digest: Digest(hashes),
        buckets,
        want,
        credentials,
    };
    Ok((push_pull, members))
}

fn read_want(cursor: &mut Cursor<'_>) -> Result<Vec<NodeName>, DecodeError> {
    let count = cursor.array_len()?;
    if count > MAX_WANTED {
        return Err(malformed("a push-pull wanting more than 64 credentials"));
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let name = cursor.str()?;
        NodeName::validate(name).map_err(DecodeError::Invalid)?;
        names.push(NodeName::new(name));
    }
    Ok(names)
}

fn read_credentials(cursor: &mut Cursor<'_>) -> Result<Vec<Credential>, DecodeError> {
    let count = cursor.array_len()?;
    // Each element took at least one byte of the input; each is checked before the next.
    let mut credentials = Vec::with_capacity(count.min(MAX_WANTED));
    for _ in 0..count {
        let mut fields = Fields::start(cursor)?;
        let name = fields.next(cursor, Cursor::str)?.unwrap_or_default();
        NodeName::validate(name).map_err(DecodeError::Invalid)?;
        let chain = fields.next(cursor, Cursor::bin)?.unwrap_or_default();
        fields.finish(cursor)?;
        // No certificate is shorter; the floor also keeps decoding within its size.
        if chain.len() < MIN_CREDENTIAL_LEN || chain.len() > MAX_CREDENTIAL_LEN {
            return Err(malformed(
                "a credential shorter than 100 bytes or longer than 8 KiB",
            ));
        }
        credentials.push(Credential {
            name: NodeName::new(name),
            chain: Blob(chain.into()),
        });
    }
    Ok(credentials)
}

fn read_buckets(cursor: &mut Cursor<'_>) -> Result<Vec<u8>, DecodeError> {
    let count = cursor.array_len()?;
    // Each element took at least one byte of the input.
    let mut buckets = Vec::with_capacity(count);
    for _ in 0..count {
        buckets.push(cursor.u8()?);
    }
    Ok(buckets)
}

fn read_note<'a>(
    cursor: &mut Cursor<'a>,
) -> Result<(&'a str, &'a str, Option<&'a [u8]>), DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let key = fields.next(cursor, Cursor::str)?.unwrap_or_default();
    let from = fields.next(cursor, Cursor::str)?.unwrap_or_default();
    let proof = fields.next(cursor, |c| c.option(Cursor::bin))?.flatten();
    fields.finish(cursor)?;
    if key.len() > MAX_NOTE_LEN {
        return Err(DecodeError::Invalid("note longer than 128 bytes"));
    }
    if !from.is_empty() {
        NodeName::validate(from).map_err(DecodeError::Invalid)?;
    }
    if proof.is_some_and(|p| p.len() > MAX_PROOF_LEN) {
        return Err(malformed("a proof longer than 600 bytes"));
    }
    Ok((key, from, proof))
}

/// An update read and checked, borrowing the input: nothing is allocated until
/// [`UpdateRef::to_update`], which allocates every collection at its exact size.
struct UpdateRef<'a> {
    name: &'a str,
    incarnation: u64,
    state: State,
    from: &'a str,
    addr: Option<WireAddr>,
    tags: Option<Strings<'a>>,
    failing: Option<Strings<'a>>,
    closed: Strings<'a>,
    maintenance: Option<&'a str>,
    software: Option<SoftwareRef<'a>>,
    proof: Option<&'a [u8]>,
}

struct SoftwareRef<'a> {
    release: &'a str,
    writes: u8,
    reads_from: u8,
    reads_to: u8,
}

impl<'a> UpdateRef<'a> {
    fn read(cursor: &mut Cursor<'a>) -> Result<UpdateRef<'a>, DecodeError> {
        let mut fields = Fields::start(cursor)?;
        let name = fields.next(cursor, Cursor::str)?.unwrap_or_default();
        // Refused at once, so that a list of empty arrays stops at the first.
        if name.is_empty() {
            return Err(malformed("an update without a member name"));
        }
        NodeName::validate(name).map_err(DecodeError::Invalid)?;
        let incarnation = fields.next(cursor, Cursor::uint)?.unwrap_or_default();
        let state = fields.next(cursor, read_state)?.unwrap_or_default();
        let from = fields.next(cursor, Cursor::str)?.unwrap_or_default();
        if !from.is_empty() {
            NodeName::validate(from).map_err(DecodeError::Invalid)?;
        }
        let addr = fields.next(cursor, |c| c.option(Cursor::addr))?.flatten();
        let tags = fields.next(cursor, |c| c.option(read_tags))?.flatten();
        let failing = fields.next(cursor, |c| c.option(read_failing))?.flatten();
        let closed = fields.next(cursor, read_closed)?.unwrap_or_default();
        let maintenance = fields.next(cursor, |c| c.option(Cursor::str))?.flatten();
        if maintenance.is_some_and(|reason| reason.len() > MAX_MAINTENANCE_REASON) {
            return Err(malformed("a maintenance reason longer than 256 bytes"));
        }
        let software = fields.next(cursor, |c| c.option(read_software))?.flatten();
        let proof = fields.next(cursor, |c| c.option(Cursor::bin))?.flatten();
        if proof.is_some_and(|p| p.len() > MAX_PROOF_LEN) {
            return Err(malformed("a proof longer than 600 bytes"));
        }
        fields.finish(cursor)?;
        Ok(UpdateRef {
            name,
            incarnation,
            state,
            from,
            addr,
            tags,
            failing,
            closed,
            maintenance,
            software,
            proof,
        })
    }

    fn to_update(&self) -> Update {
        let strings = |list: &Strings<'_>| {
            let mut out = Vec::with_capacity(list.count);
            out.extend(list.iter().map(str::to_owned));
            out
        };
        Update {
            name: NodeName::new(self.name),
            incarnation: Incarnation(self.incarnation),
            state: self.state,
            // One allocation for every update without an accuser.
            from: if self.from.is_empty() {
                NodeName::default()
            } else {
                NodeName::new(self.from)
            },
            addr: self.addr,
            tags: self.tags.as_ref().map(|tags| {
                let mut pairs = tags.iter();
                let mut map = Tags::new();
                while let (Some(key), Some(value)) = (pairs.next(), pairs.next()) {
                    map.insert(key.to_owned(), value.to_owned());
                }
                map
            }),
            failing: self.failing.as_ref().map(strings),
            closed: {
                let mut out = Vec::with_capacity(self.closed.count);
                out.extend(self.closed.iter().map(NodeName::new));
                out
            },
            maintenance: self.maintenance.map(str::to_owned),
            software: self.software.as_ref().map(|s| Software {
                release: s.release.to_owned(),
                writes: s.writes,
                reads_from: s.reads_from,
                reads_to: s.reads_to,
            }),
            proof: self.proof.map(|p| Blob(p.into())),
        }
    }
}

fn read_state(cursor: &mut Cursor<'_>) -> Result<State, DecodeError> {
    match cursor.uint()? {
        0 => Ok(State::Alive),
        1 => Ok(State::Suspect),
        2 => Ok(State::Failed),
        3 => Ok(State::Left),
        _ => Err(malformed("unknown member state")),
    }
}

/// A tag map: keys and values, at most [`MAX_PEER_TAGS_LEN`] bytes encoded as `tags_len` counts.
fn read_tags<'a>(cursor: &mut Cursor<'a>) -> Result<Strings<'a>, DecodeError> {
    let pairs = cursor.map_len()?;
    let start = cursor.pos;
    let mut len = 1;
    for _ in 0..pairs {
        len += cursor.str()?.len() + cursor.str()?.len() + 2;
        if len > MAX_PEER_TAGS_LEN {
            return Err(DecodeError::Invalid("member tags exceed 4096 bytes"));
        }
    }
    Ok(cursor.strings_since(start, 2 * pairs))
}

fn read_failing<'a>(cursor: &mut Cursor<'a>) -> Result<Strings<'a>, DecodeError> {
    let count = cursor.array_len()?;
    let start = cursor.pos;
    let mut len = 0;
    for _ in 0..count {
        len += cursor.str()?.len() + 1;
        if len > MAX_PEER_TAGS_LEN {
            return Err(DecodeError::Invalid("failing checks exceed 4096 bytes"));
        }
    }
    Ok(cursor.strings_since(start, count))
}

fn read_closed<'a>(cursor: &mut Cursor<'a>) -> Result<Strings<'a>, DecodeError> {
    let count = cursor.array_len()?;
    if count > MAX_CLOSED_WITNESSES {
        return Err(malformed("an update with too many closed-port witnesses"));
    }
    let start = cursor.pos;
    for _ in 0..count {
        cursor.str()?;
    }
    Ok(cursor.strings_since(start, count))
}

fn read_software<'a>(cursor: &mut Cursor<'a>) -> Result<SoftwareRef<'a>, DecodeError> {
    let mut fields = Fields::start(cursor)?;
    let release = fields.next(cursor, Cursor::str)?.unwrap_or_default();
    if release.len() > MAX_RELEASE_LEN {
        return Err(malformed("a release name longer than 32 bytes"));
    }
    let writes = fields.next(cursor, Cursor::u8)?.unwrap_or_default();
    let reads_from = fields.next(cursor, Cursor::u8)?.unwrap_or_default();
    let reads_to = fields.next(cursor, Cursor::u8)?.unwrap_or_default();
    fields.finish(cursor)?;
    Ok(SoftwareRef {
        release,
        writes,
        reads_from,
        reads_to,
    })
}

/// `count` msgpack strings back to back, already checked.
#[derive(Default)]
struct Strings<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Strings<'a> {
    fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let mut cursor = Cursor::new(self.bytes);
        (0..self.count).map_while(move |_| cursor.str().ok())
    }
}

/// The elements of a wire struct (a msgpack array): fields missing at its end take their
/// default, fields beyond those this build knows (appended by later versions) are skipped.
struct Fields {
    left: usize,
}

impl Fields {
    fn start(cursor: &mut Cursor<'_>) -> Result<Fields, DecodeError> {
        Ok(Fields {
            left: cursor.array_len()?,
        })
    }

    /// The next field read with `read`, or `None` past the array's end.
    fn next<'a, T>(
        &mut self,
        cursor: &mut Cursor<'a>,
        read: impl FnOnce(&mut Cursor<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        read(cursor).map(Some)
    }

    fn finish(self, cursor: &mut Cursor<'_>) -> Result<(), DecodeError> {
        for _ in 0..self.left {
            cursor.skip_value()?;
        }
        Ok(())
    }
}

/// `count` if an array or map may hold that many elements (see [`MAX_ELEMENTS`]).
fn bounded(count: usize) -> Result<usize, DecodeError> {
    if count > MAX_ELEMENTS {
        return Err(malformed(
            "an array or map of more than 65536 elements (MAX_ELEMENTS)",
        ));
    }
    Ok(count)
}

/// Walks one msgpack value and returns how many bytes it spans. Every declared length is
/// checked against the bytes left (an element takes at least one byte), nesting is bounded.
pub fn validate_structure(bytes: &[u8]) -> Result<usize, DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.value(0)?;
    Ok(cursor.pos)
}

/// A position in msgpack input. Reads fail with a [`DecodeError`] that quotes nothing of
/// the input, so that an error costs no more than a success.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let taken = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| malformed("a value runs past the end of the packet"))?;
        self.pos += n;
        Ok(taken)
    }

    fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(drop)
    }

    fn marker(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// A big-endian unsigned integer of `width` bytes (at most 8).
    fn be(&mut self, width: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0, |value, &byte| (value << 8) | u64::from(byte)))
    }

    fn declared_len(&mut self, width: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(width)?).map_err(|_| malformed("a length beyond this machine"))
    }

    fn elements(&mut self, count: usize, depth: usize) -> Result<(), DecodeError> {
        if count > self.remaining() {
            return Err(malformed("more elements declared than bytes left"));
        }
        for _ in 0..count {
            self.value(depth + 1)?;
        }
        Ok(())
    }

    /// Skips one value of any type, nested at most [`MAX_DEPTH`] deep.
    fn value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        let marker = self.marker()?;
        match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(()),
            0x80..=0x8f => self.elements(2 * usize::from(marker & 0x0f), depth),
            0x90..=0x9f => self.elements(usize::from(marker & 0x0f), depth),
            0xa0..=0xbf => self.advance(usize::from(marker & 0x1f)),
            0xc1 => Err(malformed("reserved msgpack marker 0xc1")),
            0xc4 | 0xd9 => {
                let n = self.declared_len(1)?;
                self.advance(n)
            }
            0xc5 | 0xda => {
                let n = self.declared_len(2)?;
                self.advance(n)
            }
            0xc6 | 0xdb => {
                let n = self.declared_len(4)?;
                self.advance(n)
            }
            0xc7 => {
                let n = self.declared_len(1)?;
                self.advance(n + 1)
            }
            0xc8 => {
                let n = self.declared_len(2)?;
                self.advance(n + 1)
            }
            0xc9 => {
                let n = self.declared_len(4)?;
                self.advance(n.saturating_add(1))
            }
            0xca | 0xce | 0xd2 => self.advance(4),
            0xcb | 0xcf | 0xd3 => self.advance(8),
            0xcc | 0xd0 => self.advance(1),
            0xcd | 0xd1 => self.advance(2),
            0xd4 => self.advance(2),
            0xd5 => self.advance(3),
            0xd6 => self.advance(5),
            0xd7 => self.advance(9),
            0xd8 => self.advance(17),
            0xdc => {
                let n = self.declared_len(2)?;
                self.elements(n, depth)
            }
            0xdd => {
                let n = bounded(self.declared_len(4)?)?;
                self.elements(n, depth)
            }
            0xde => {
                let n = self.declared_len(2)?;
                self.elements(n.saturating_mul(2), depth)
            }
            0xdf => {
                let n = bounded(self.declared_len(4)?)?;
                self.elements(n.saturating_mul(2), depth)
            }
        }
    }

    fn skip_value(&mut self) -> Result<(), DecodeError> {
        self.value(0)
    }

    fn array_len(&mut self) -> Result<usize, DecodeError> {
        let count = match self.marker()? {
            marker @ 0x90..=0x9f => usize::from(marker & 0x0f),
            0xdc => self.declared_len(2)?,
            0xdd => self.declared_len(4)?,
            _ => return Err(malformed("expected an array")),
        };
        self.count(count)
    }

    fn map_len(&mut self) -> Result<usize, DecodeError> {
        let count = match self.marker()? {
            marker @ 0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.declared_len(2)?,
            0xdf => self.declared_len(4)?,
            _ => return Err(malformed("expected a map")),
        };
        let pairs = bounded(count)?;
        if pairs.saturating_mul(2) > self.remaining() {
            return Err(malformed("more elements declared than bytes left"));
        }
        Ok(pairs)
    }

    /// `count` elements are about to be read: each takes at least a byte.
    fn count(&self, count: usize) -> Result<usize, DecodeError> {
        let count = bounded(count)?;
        if count > self.remaining() {
            return Err(malformed("more elements declared than bytes left"));
        }
        Ok(count)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = match self.marker()? {
            marker @ 0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.declared_len(1)?,
            0xda => self.declared_len(2)?,
            0xdb => self.declared_len(4)?,
            _ => return Err(malformed("expected a string")),
        };
        std::str::from_utf8(self.take(len)?).map_err(|_| malformed("a string that is not UTF-8"))
    }

    fn bin(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = match self.marker()? {
            0xc4 => self.declared_len(1)?,
            0xc5 => self.declared_len(2)?,
            0xc6 => self.declared_len(4)?,
            _ => return Err(malformed("expected bytes")),
        };
        self.take(len)
    }

    /// A non-negative integer in any of msgpack's integer forms.
    fn uint(&mut self) -> Result<u64, DecodeError> {
        let negative = || malformed("expected a non-negative integer");
        let signed = |value: i64| u64::try_from(value).map_err(|_| negative());
        match self.marker()? {
            marker @ 0x00..=0x7f => Ok(u64::from(marker)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => signed(self.be(8)? as i64),
            _ => Err(negative()),
        }
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uint()?).map_err(|_| malformed("a number out of range"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        u8::try_from(self.uint()?).map_err(|_| malformed("a number out of range"))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.marker()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(malformed("expected a boolean")),
        }
    }

    fn addr(&mut self) -> Result<WireAddr, DecodeError> {
        let bytes = self.bin()?;
        let (ip, port) = match bytes.len() {
            6 => {
                let (ip, port) = bytes.split_at(4);
                let octets: [u8; 4] = ip.try_into().map_err(|_| bad_addr())?;
                (Ipv4Addr::from(octets).into(), port)
            }
            18 => {
                let (ip, port) = bytes.split_at(16);
                let octets: [u8; 16] = ip.try_into().map_err(|_| bad_addr())?;
                (Ipv6Addr::from(octets).into(), port)
            }
            _ => return Err(bad_addr()),
        };
        let port: [u8; 2] = port.try_into().map_err(|_| bad_addr())?;
        Ok(WireAddr(SocketAddr::new(ip, u16::from_be_bytes(port))))
    }

    /// `nil` as `None`, anything else read with `read`.
    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Cursor<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.peek() == Some(0xc0) {
            self.pos += 1;
            return Ok(None);
        }
        read(self).map(Some)
    }

    /// An array of `T`, each checked, kept encoded.
    fn list<T: Element>(&mut self) -> Result<Encoded<T>, DecodeError> {
        let count = self.array_len()?;
        let start = self.pos;
        for _ in 0..count {
            T::validate(self)?;
        }
        let bytes = self.bytes.get(start..self.pos).unwrap_or_default();
        Ok(Encoded {
            bytes: bytes.into(),
            count,
            element: PhantomData,
        })
    }

    /// The `count` strings read since `start`.
    fn strings_since(&self, start: usize, count: usize) -> Strings<'a> {
        Strings {
            bytes: self.bytes.get(start..self.pos).unwrap_or_default(),
            count,
        }
    }
}

fn bad_addr() -> DecodeError {
    malformed("an address that is not 6 or 18 bytes")
}
