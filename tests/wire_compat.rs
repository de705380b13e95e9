//! Rolling-upgrade safety of the wire format (docs/upgrading.md): the golden packets in
//! tests/fixtures/wire/ hold the exact bytes past encoders wrote (their README says which
//! and how). Today's decoder must read each one as the meaning it was written with, today's
//! encoder may only append fields to it, unknown trailing fields must be skipped, and a
//! packet of another wire version must be refused by name.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use swimd::wire::{
    Ack, Blob, ClusterId, Credential, DecodeError, Digest, HEADER_LEN, Incarnation, MAX_STREAM_LEN,
    Message, Nack, NodeName, Note, Packet, Ping, PingReq, PushPull, Software, State, Tags, Update,
    VERSION, WireAddr, decode, encode,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wire");

/// The cluster every fixture was encoded for.
fn golden() -> ClusterId {
    ClusterId::of("golden")
}

// The meanings, as the generators in tests/fixtures/wire/README.md wrote them. Struct
// literals end in `..Update::default()` so that fields appended later keep them valid: a
// packet written before a field existed must decode with that field at its default.

fn name(s: &str) -> NodeName {
    NodeName::new(s)
}

fn addr(s: &str) -> WireAddr {
    WireAddr(s.parse::<SocketAddr>().expect("socket address"))
}

fn alive_full() -> Update {
    Update {
        name: name("node-1"),
        incarnation: Incarnation(3),
        state: State::Alive,
        addr: Some(addr("10.0.0.1:7946")),
        tags: Some(Tags::from([
            ("role".into(), "web".into()),
            ("zone".into(), "eu-west-1".into()),
        ])),
        failing: Some(vec!["http".into(), "disk".into()]),
        ..Update::default()
    }
}

fn alive_ipv6() -> Update {
    Update {
        name: name("node-6"),
        incarnation: Incarnation(u64::MAX),
        state: State::Alive,
        addr: Some(addr("[2001:db8::6]:7946")),
        tags: Some(Tags::new()),
        failing: Some(vec![]),
        ..Update::default()
    }
}

fn suspect() -> Update {
    Update {
        name: name("node-3"),
        incarnation: Incarnation(300),
        state: State::Suspect,
        from: name("node-2"),
        ..Update::default()
    }
}

fn failed_closed() -> Update {
    Update {
        name: name("node-4"),
        incarnation: Incarnation(4_294_967_296),
        state: State::Failed,
        from: name("node-2"),
        closed: vec![name("node-2"), name("node-5")],
        ..Update::default()
    }
}

fn left() -> Update {
    Update {
        name: name("node-5"),
        incarnation: Incarnation(70_000),
        state: State::Left,
        from: name("node-5"),
        ..Update::default()
    }
}

fn every_state() -> Vec<Update> {
    vec![
        alive_full(),
        alive_ipv6(),
        suspect(),
        failed_closed(),
        left(),
    ]
}

fn in_maintenance() -> Update {
    Update {
        maintenance: Some("kernel 6.12 upgrade".into()),
        ..alive_full()
    }
}

fn software(release: &str, reads_to: u8) -> Software {
    Software {
        release: release.into(),
        writes: 1,
        reads_from: 1,
        reads_to,
    }
}

fn in_maintenance_with_software() -> Update {
    Update {
        software: Some(software("0.1.0", 1)),
        ..in_maintenance()
    }
}

fn packet(message: Message, updates: Vec<Update>, notes: &[&str]) -> Packet {
    Packet {
        from: name("node-1"),
        message,
        updates,
        notes: notes.iter().map(|k| Note::bare(*k)).collect(),
    }
}

/// Stand-in signature bytes in the `main-e6f20f1/` fixtures (the decoder does not check them).
fn proof(seed: u8) -> Option<Blob> {
    Some(Blob::from(
        (0..72u8).map(|i| seed.wrapping_add(i)).collect::<Vec<u8>>(),
    ))
}

fn alive_signed() -> Update {
    Update {
        tags: Some(Tags::from([("role".to_string(), "web".to_string())])),
        failing: Some(vec![]),
        software: Some(software("0.1.0", 1)),
        proof: proof(1),
        ..alive_full()
    }
}

fn suspect_signed() -> Update {
    Update {
        proof: proof(2),
        ..suspect()
    }
}

fn left_signed() -> Update {
    Update {
        from: NodeName::default(),
        addr: Some(addr("10.0.0.5:7946")),
        proof: proof(3),
        ..left()
    }
}

fn ping_piggyback() -> Packet {
    packet(
        Message::Ping(Ping {
            seq: 2_863_311_530,
            target: name("node-2"),
        }),
        every_state(),
        &["hook/lb/42"],
    )
}

/// Every fixture file (its path under tests/fixtures/wire/) and the packet it must decode to.
fn expectations() -> Vec<(&'static str, Packet)> {
    vec![
        // Encoded by v0.1.0 (2809e4c): 8-element updates, before `maintenance`.
        (
            "v0.1.0/ping.bin",
            packet(
                Message::Ping(Ping {
                    seq: 7,
                    target: name("node-2"),
                }),
                vec![],
                &[],
            ),
        ),
        ("v0.1.0/ping-piggyback.bin", ping_piggyback()),
        (
            "v0.1.0/ack.bin",
            packet(Message::Ack(Ack { seq: u32::MAX }), vec![alive_full()], &[]),
        ),
        (
            "v0.1.0/ping-req.bin",
            packet(
                Message::PingReq(PingReq {
                    seq: 300,
                    target: name("node-3"),
                    addr: addr("192.168.1.3:7946"),
                }),
                vec![suspect()],
                &[],
            ),
        ),
        (
            "v0.1.0/ping-req-ipv6.bin",
            packet(
                Message::PingReq(PingReq {
                    seq: 70_000,
                    target: name("node-6"),
                    addr: addr("[2001:db8::6]:7946"),
                }),
                vec![],
                &[],
            ),
        ),
        (
            "v0.1.0/nack.bin",
            packet(Message::Nack(Nack { seq: 300 }), vec![], &[]),
        ),
        (
            "v0.1.0/gossip-alive.bin",
            packet(Message::Gossip, vec![alive_full(), alive_ipv6()], &[]),
        ),
        (
            "v0.1.0/gossip-suspect.bin",
            packet(Message::Gossip, vec![suspect()], &[]),
        ),
        (
            "v0.1.0/gossip-failed-closed.bin",
            packet(Message::Gossip, vec![failed_closed()], &[]),
        ),
        (
            "v0.1.0/gossip-left.bin",
            packet(Message::Gossip, vec![left()], &[]),
        ),
        (
            "v0.1.0/gossip-notes.bin",
            packet(
                Message::Gossip,
                vec![],
                &["hook/lb/42", "hook/pager/node-4/failed/4294967296"],
            ),
        ),
        (
            "v0.1.0/push-pull-join-request.bin",
            packet(
                Message::PushPull(PushPull {
                    join: true,
                    members: vec![alive_full()],
                    digest: Digest(vec![0x1234, 0xabcd, 0, u16::MAX]),
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        (
            "v0.1.0/push-pull-request.bin",
            packet(
                Message::PushPull(PushPull {
                    members: vec![alive_full(), suspect()],
                    digest: Digest((0..64).map(|i| i * 1021).collect()),
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        (
            "v0.1.0/push-pull-reply.bin",
            packet(
                Message::PushPull(PushPull {
                    reply: true,
                    members: every_state(),
                    buckets: vec![0, 3, 63],
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        // Encoded by main at 69f5273: 9-element updates, with `maintenance`.
        ("main-69f5273/ping-piggyback.bin", ping_piggyback()),
        (
            "main-69f5273/gossip-maintenance.bin",
            packet(
                Message::Gossip,
                vec![
                    in_maintenance(),
                    Update {
                        maintenance: Some(String::new()),
                        ..alive_ipv6()
                    },
                ],
                &[],
            ),
        ),
        (
            "main-69f5273/push-pull-reply-maintenance.bin",
            packet(
                Message::PushPull(PushPull {
                    join: true,
                    reply: true,
                    members: vec![in_maintenance(), suspect(), failed_closed()],
                    buckets: vec![1, 2],
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        // Encoded by main at 62b06fd: 10-element updates, with `software`.
        ("main-62b06fd/ping-piggyback.bin", ping_piggyback()),
        (
            "main-62b06fd/gossip-software.bin",
            packet(
                Message::Gossip,
                vec![
                    in_maintenance_with_software(),
                    Update {
                        software: Some(software("0.3.0-rc.1", 2)),
                        ..alive_ipv6()
                    },
                ],
                &[],
            ),
        ),
        (
            "main-62b06fd/push-pull-reply-software.bin",
            packet(
                Message::PushPull(PushPull {
                    join: true,
                    reply: true,
                    members: vec![in_maintenance_with_software(), suspect(), failed_closed()],
                    buckets: vec![1, 2],
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        // Encoded by main at e6f20f1: signed statements, accusations and notes; a push-pull
        // asking for credentials and one carrying them.
        (
            "main-e6f20f1/gossip-signed.bin",
            Packet {
                notes: vec![Note {
                    key: "hook/lb/42".into(),
                    from: name("node-1"),
                    proof: proof(4),
                }],
                ..packet(
                    Message::Gossip,
                    vec![alive_signed(), suspect_signed(), left_signed()],
                    &[],
                )
            },
        ),
        (
            "main-e6f20f1/push-pull-want.bin",
            packet(
                Message::PushPull(PushPull {
                    members: vec![alive_signed()],
                    digest: Digest(vec![0x1234, 0xabcd]),
                    want: vec![name("node-3"), name("node-4")],
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
        (
            "main-e6f20f1/push-pull-reply-credentials.bin",
            packet(
                Message::PushPull(PushPull {
                    reply: true,
                    members: vec![alive_signed(), suspect_signed()],
                    buckets: vec![1],
                    credentials: vec![Credential {
                        name: name("node-3"),
                        chain: Blob::from((0..160u8).collect::<Vec<u8>>()),
                    }],
                    ..PushPull::default()
                }),
                vec![],
                &[],
            ),
        ),
    ]
}

/// Every file under tests/fixtures/wire/ but its README, as a path relative to it.
fn fixture_files() -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read the fixtures folder") {
            let path = entry.expect("fixture entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.file_name().is_some_and(|n| n != "README.md") {
                let relative = path.strip_prefix(root).expect("under the root");
                out.insert(relative.display().to_string());
            }
        }
    }
    let mut files = BTreeSet::new();
    walk(Path::new(FIXTURES), Path::new(FIXTURES), &mut files);
    files
}

fn read_fixture(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn decode_fixture(file: &str, bytes: &[u8]) -> Packet {
    decode(golden(), bytes, MAX_STREAM_LEN).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_fixture_has_an_expectation_and_every_expectation_a_fixture() {
    let files = fixture_files();
    let expected: BTreeSet<String> = expectations()
        .iter()
        .map(|(file, _)| file.to_string())
        .collect();
    let unexpected: Vec<&String> = files.difference(&expected).collect();
    let missing: Vec<&String> = expected.difference(&files).collect();
    assert!(
        unexpected.is_empty(),
        "fixtures without an expectation in tests/wire_compat.rs: {unexpected:?}"
    );
    assert!(
        missing.is_empty(),
        "expectations without a fixture (never delete one): {missing:?}"
    );
}

#[test]
fn every_fixture_decodes_to_the_meaning_it_was_written_with() {
    for (file, expected) in expectations() {
        let bytes = read_fixture(file);
        assert_eq!(bytes[0], VERSION, "{file}: version byte");
        assert_eq!(
            bytes[1..HEADER_LEN],
            golden().0.to_be_bytes(),
            "{file}: cluster id"
        );
        let packet = decode_fixture(file, &bytes);
        assert_eq!(packet.from, expected.from, "{file}: sender");
        assert_eq!(packet.message, expected.message, "{file}: message");
        assert_eq!(packet.notes, expected.notes, "{file}: notes");
        assert_eq!(packet.updates.len(), expected.updates.len(), "{file}");
        for (got, want) in packet.updates.iter().zip(&expected.updates) {
            assert_eq!(got, want, "{file}: update about {}", want.name);
        }
        assert_eq!(packet, expected, "{file}");
    }
}

#[test]
fn fields_unknown_to_v0_1_0_decode_to_their_defaults() {
    for (file, _) in expectations() {
        if !file.starts_with("v0.1.0/") {
            continue;
        }
        let bytes = read_fixture(file);
        // The fixture really is v0.1.0's: every update is its 8-element array.
        let tree = Value::parse(&bytes[HEADER_LEN..]);
        for update in tree.updates() {
            assert_eq!(update.array().len(), 8, "{file}: {update:?}");
        }
        let packet = decode_fixture(file, &bytes);
        let pushed = match &packet.message {
            Message::PushPull(push_pull) => push_pull.members.clone(),
            _ => vec![],
        };
        for update in packet.updates.iter().chain(&pushed) {
            assert_eq!(update.maintenance, None, "{file}: {}", update.name);
            assert_eq!(update.software, None, "{file}: {}", update.name);
        }
    }
}

#[test]
fn todays_encoding_of_a_fixture_only_appends_fields() {
    for (file, _) in expectations() {
        let old = read_fixture(file);
        let packet = decode_fixture(file, &old);
        let new = encode(golden(), &packet);
        assert_eq!(old[..HEADER_LEN], new[..HEADER_LEN], "{file}: header");
        let (old_tree, new_tree) = (
            Value::parse(&old[HEADER_LEN..]),
            Value::parse(&new[HEADER_LEN..]),
        );
        // The trees are faithful to the bytes, so the comparison below is one of bytes.
        assert_eq!(old_tree.to_bytes(), old[HEADER_LEN..], "{file}");
        assert_eq!(new_tree.to_bytes(), new[HEADER_LEN..], "{file}");
        assert!(
            new_tree.only_appends_to(&old_tree),
            "{file}: today's encoding changes more than appended fields\n old: {old_tree:?}\n new: {new_tree:?}"
        );
        assert_eq!(decode_fixture(file, &new), packet, "{file}: re-decoded");
    }
}

#[test]
fn later_encoders_write_v0_1_0_updates_with_nils_appended() {
    let old = Value::parse(&read_fixture("v0.1.0/ping-piggyback.bin")[HEADER_LEN..]);
    // `maintenance: None`, then also `software: None`: one nil each.
    for (file, nils) in [
        ("main-69f5273/ping-piggyback.bin", 1),
        ("main-62b06fd/ping-piggyback.bin", 2),
    ] {
        let new = Value::parse(&read_fixture(file)[HEADER_LEN..]);
        let (old_updates, new_updates) = (old.updates(), new.updates());
        assert_eq!(old_updates.len(), 5);
        assert_eq!(new_updates.len(), 5);
        for (old, new) in old_updates.iter().zip(&new_updates) {
            let (old, new) = (old.array(), new.array());
            assert_eq!(new.len(), 8 + nils, "{file}");
            assert_eq!(
                new[..8],
                old[..],
                "{file}: the first eight fields are unchanged"
            );
            assert!(new[8..].iter().all(|v| *v == Value::Nil), "{file}: {new:?}");
        }
    }
}

/// A field some later version may append: it nests, and holds what no field of ours holds.
fn future_field() -> Value {
    Value::Array(vec![
        Value::Str(b"future".to_vec()),
        Value::Map(vec![(Value::Str(b"k".to_vec()), Value::Uint(1))]),
        Value::Nil,
    ])
}

/// Today's encoding of `packet` with `change` applied to its msgpack tree, decoded.
fn decode_changed(
    packet: &Packet,
    change: impl FnOnce(&mut Vec<Value>),
) -> Result<Packet, DecodeError> {
    let bytes = encode(golden(), packet);
    let mut tree = Value::parse(&bytes[HEADER_LEN..]);
    let Value::Array(root) = &mut tree else {
        panic!("a packet is an array")
    };
    change(root);
    let mut changed = bytes[..HEADER_LEN].to_vec();
    changed.extend(tree.to_bytes());
    decode(golden(), &changed, MAX_STREAM_LEN)
}

#[test]
fn unknown_trailing_fields_are_skipped_at_every_level() {
    for (file, expected) in expectations() {
        let skipped = |what: &str, result: Result<Packet, DecodeError>| {
            assert_eq!(
                result.as_ref(),
                Ok(&expected),
                "{file}: a field appended to {what}"
            );
        };
        // The packet array: today's fifth element (notes) is written only when there are
        // notes, so an appended sixth needs it in place.
        skipped(
            "the packet",
            decode_changed(&expected, |root| {
                if root.len() == 4 {
                    root.push(Value::Array(vec![]));
                }
                root.push(future_field());
            }),
        );
        if expected.message != Message::Gossip {
            skipped(
                "the message body",
                decode_changed(&expected, |root| {
                    let body = root[2].array_mut();
                    // A push-pull's `want` and `credentials` are written only when not
                    // empty: an appended eighth field needs them in place.
                    if matches!(expected.message, Message::PushPull(_)) {
                        body.resize(7, Value::Array(vec![]));
                    }
                    body.push(future_field())
                }),
            );
        }
        // Likewise an update's `proof` (its eleventh field) when it has none.
        let with_proof = |update: &mut Vec<Value>| update.resize(11, Value::Nil);
        for i in 0..expected.updates.len() {
            skipped(
                "an update",
                decode_changed(&expected, |root| {
                    let update = root[3].array_mut()[i].array_mut();
                    with_proof(update);
                    update.push(future_field())
                }),
            );
        }
        for i in 0..expected.notes.len() {
            skipped(
                "a note",
                decode_changed(&expected, |root| {
                    // A note's maker and proof are written only when it has them.
                    let note = root[4].array_mut()[i].array_mut();
                    if note.len() < 3 {
                        note.resize(2, Value::Str(Vec::new()));
                        note.push(Value::Nil);
                    }
                    note.push(future_field())
                }),
            );
        }
        if let Message::PushPull(push_pull) = &expected.message {
            for i in 0..push_pull.members.len() {
                skipped(
                    "a push-pull member",
                    decode_changed(&expected, |root| {
                        let member = root[2].array_mut()[2].array_mut()[i].array_mut();
                        with_proof(member);
                        member.push(future_field())
                    }),
                );
            }
        }
    }
}

#[test]
fn a_gossip_body_is_ignored_whatever_it_holds() {
    let expected = packet(Message::Gossip, vec![suspect()], &[]);
    assert_eq!(
        decode_changed(&expected, |root| root[2] = future_field()),
        Ok(expected)
    );
}

#[test]
fn a_packet_of_another_wire_version_is_refused_by_name() {
    for (file, _) in expectations() {
        let mut bytes = read_fixture(file);
        for version in [0, VERSION + 1, u8::MAX] {
            bytes[0] = version;
            let refused = decode(golden(), &bytes, MAX_STREAM_LEN);
            assert_eq!(refused, Err(DecodeError::Version(version)), "{file}");
            let error = refused.unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("unsupported wire version {version} (this build speaks {VERSION})")
            );
            assert_eq!(error.reason(), "version");
        }
    }
}

#[test]
fn an_unknown_message_kind_is_refused_whole() {
    // What docs/upgrading.md says: a new kind reaches an older agent as a decode error, the
    // whole packet (its piggybacked updates too) dropped and counted.
    let expected = packet(Message::Gossip, vec![suspect()], &["hook/lb/42"]);
    let refused = decode_changed(&expected, |root| root[1] = Value::Uint(6));
    assert_eq!(
        refused,
        Err(DecodeError::Malformed("unknown message kind 6".into()))
    );
    assert_eq!(refused.unwrap_err().reason(), "decode_error");
}

/// A msgpack value, enough of the format to take the fixtures apart and put them back
/// together byte for byte.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The one value `bytes` holds, all of it.
    fn parse(bytes: &[u8]) -> Value {
        let mut rest = bytes;
        let value = Value::read(&mut rest);
        assert!(rest.is_empty(), "{} bytes after the value", rest.len());
        value
    }

    fn read(rest: &mut &[u8]) -> Value {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            head
        }
        fn uint(rest: &mut &[u8], n: usize) -> u64 {
            take(rest, n)
                .iter()
                .fold(0, |v, &b| (v << 8) | u64::from(b))
        }
        fn int(rest: &mut &[u8], n: usize) -> i64 {
            let bits = 64 - 8 * n as u32;
            ((uint(rest, n) << bits) as i64) >> bits
        }
        fn many(rest: &mut &[u8], n: u64) -> Vec<Value> {
            (0..n).map(|_| Value::read(rest)).collect()
        }
        fn pairs(rest: &mut &[u8], n: u64) -> Vec<(Value, Value)> {
            (0..n)
                .map(|_| (Value::read(rest), Value::read(rest)))
                .collect()
        }
        let marker = take(rest, 1)[0];
        match marker {
            0x00..=0x7f => Value::Uint(u64::from(marker)),
            0x80..=0x8f => Value::Map(pairs(rest, u64::from(marker & 0x0f))),
            0x90..=0x9f => Value::Array(many(rest, u64::from(marker & 0x0f))),
            0xa0..=0xbf => Value::Str(take(rest, usize::from(marker & 0x1f)).to_vec()),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = uint(rest, 1 << (marker - 0xc4)) as usize;
                Value::Bin(take(rest, n).to_vec())
            }
            0xcc..=0xcf => Value::Uint(uint(rest, 1 << (marker - 0xcc))),
            0xd0..=0xd3 => Value::Int(int(rest, 1 << (marker - 0xd0))),
            0xd9..=0xdb => {
                let n = uint(rest, 1 << (marker - 0xd9)) as usize;
                Value::Str(take(rest, n).to_vec())
            }
            0xdc | 0xdd => {
                let n = uint(rest, 2 << (marker - 0xdc));
                Value::Array(many(rest, n))
            }
            0xde | 0xdf => {
                let n = uint(rest, 2 << (marker - 0xde));
                Value::Map(pairs(rest, n))
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
            other => panic!("msgpack marker {other:#04x}: nothing swimd writes"),
        }
    }

    /// The smallest encoding of each value, as swimd's encoder writes it.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        use rmp::encode;
        // Writing into a Vec cannot fail.
        match self {
            Value::Nil => encode::write_nil(out).unwrap(),
            Value::Bool(b) => encode::write_bool(out, *b).unwrap(),
            Value::Uint(v) => {
                encode::write_uint(out, *v).unwrap();
            }
            Value::Int(v) => {
                encode::write_sint(out, *v).unwrap();
            }
            Value::Str(s) => {
                encode::write_str_len(out, s.len() as u32).unwrap();
                out.extend_from_slice(s);
            }
            Value::Bin(b) => encode::write_bin(out, b).unwrap(),
            Value::Array(items) => {
                encode::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|v| v.write(out));
            }
            Value::Map(pairs) => {
                encode::write_map_len(out, pairs.len() as u32).unwrap();
                for (k, v) in pairs {
                    k.write(out);
                    v.write(out);
                }
            }
        }
    }

    /// Whether `self` is `old` with, at most, elements appended to its arrays.
    fn only_appends_to(&self, old: &Value) -> bool {
        match (self, old) {
            (Value::Array(new), Value::Array(old)) => {
                new.len() >= old.len() && new.iter().zip(old).all(|(n, o)| n.only_appends_to(o))
            }
            (Value::Map(new), Value::Map(old)) => {
                new.len() == old.len()
                    && new
                        .iter()
                        .zip(old)
                        .all(|((nk, nv), (ok, ov))| nk == ok && nv.only_appends_to(ov))
            }
            (new, old) => new == old,
        }
    }

    fn array(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn array_mut(&mut self) -> &mut Vec<Value> {
        match self {
            Value::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// A packet's updates, piggybacked and (in a push-pull, kind 5) pushed.
    fn updates(&self) -> Vec<&Value> {
        let root = self.array();
        let mut updates: Vec<&Value> = root[3].array().iter().collect();
        if root[1] == Value::Uint(5) {
            updates.extend(root[2].array()[2].array());
        }
        updates
    }
}
