use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

const CLUSTER: ClusterId = ClusterId(0xdead_beef);

fn name() -> impl Strategy<Value = NodeName> {
    "[a-z0-9._-]{1,20}".prop_map(|s| NodeName::new(&s))
}

fn addr() -> impl Strategy<Value = WireAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| WireAddr(SocketAddr::from((ip, port)))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| WireAddr(SocketAddr::from((ip, port)))),
    ]
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Alive),
        Just(State::Suspect),
        Just(State::Failed),
        Just(State::Left)
    ]
}

fn update() -> impl Strategy<Value = Update> {
    (
        name(),
        any::<u32>(),
        state(),
        prop_oneof![Just(NodeName::default()), name()],
        proptest::option::of(addr()),
        proptest::option::of(proptest::collection::btree_map(
            "[a-z]{1,8}",
            "[ -~]{0,16}",
            0..4,
        )),
        proptest::option::of(proptest::collection::vec("[a-z]{1,8}", 0..3)),
        proptest::collection::vec(name(), 0..3),
        proptest::option::of("[ -~]{0,24}"),
        proptest::option::of(("[0-9.]{1,8}", any::<u8>(), any::<u8>())),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
    )
        .prop_map(
            |(
                name,
                inc,
                state,
                from,
                addr,
                tags,
                failing,
                closed,
                maintenance,
                software,
                proof,
            )| Update {
                name,
                incarnation: Incarnation(u64::from(inc)),
                state,
                from,
                addr,
                tags,
                failing,
                closed,
                maintenance,
                software: software.map(|(release, writes, reads)| Software {
                    release,
                    writes,
                    reads_from: reads.min(writes),
                    reads_to: reads.max(writes),
                }),
                proof: proof.map(Blob::from),
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), name()).prop_map(|(seq, target)| Message::Ping(Ping { seq, target })),
        any::<u32>().prop_map(|seq| Message::Ack(Ack { seq })),
        (any::<u32>(), name(), addr()).prop_map(|(seq, target, addr)| Message::PingReq(PingReq {
            seq,
            target,
            addr
        })),
        any::<u32>().prop_map(|seq| Message::Nack(Nack { seq })),
        Just(Message::Gossip),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(update(), 0..5),
            proptest::collection::vec(any::<u16>(), 0..64),
            proptest::collection::vec(0u8..64, 0..8),
            proptest::collection::vec(name(), 0..3),
            proptest::collection::vec(
                (name(), proptest::collection::vec(any::<u8>(), 100..300)),
                0..3
            ),
        )
            .prop_map(
                |(join, reply, members, digest, buckets, want, credentials)| Message::PushPull(
                    PushPull {
                        join,
                        reply,
                        members,
                        digest: Digest(digest),
                        buckets,
                        want,
                        credentials: credentials
                            .into_iter()
                            .map(|(name, chain)| Credential {
                                name,
                                chain: Blob::from(chain)
                            })
                            .collect(),
                    }
                )
            ),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        name(),
        message(),
        proptest::collection::vec(update(), 0..8),
        proptest::collection::vec("[a-z0-9/._-]{0,128}", 0..3),
    )
        .prop_map(|(from, message, updates, notes)| Packet {
            from,
            message,
            updates,
            notes: notes.into_iter().map(Note::bare).collect(),
        })
}

proptest! {
    #[test]
    fn every_packet_round_trips(p in packet()) {
        let bytes = encode(CLUSTER, &p);
        prop_assert_eq!(decode(CLUSTER, &bytes, MAX_STREAM_LEN), Ok(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN);
        let mut framed = vec![VERSION];
        framed.extend_from_slice(&CLUSTER.0.to_be_bytes());
        framed.extend_from_slice(&bytes);
        let _ = decode(CLUSTER, &framed, MAX_DATAGRAM_LEN);
    }

    #[test]
    fn corrupted_packets_never_panic(p in packet(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = encode(CLUSTER, &p);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        let _ = decode(CLUSTER, &bytes, MAX_STREAM_LEN);
    }

    #[test]
    fn truncated_packets_are_errors(p in packet(), cut in any::<usize>()) {
        let bytes = encode(CLUSTER, &p);
        let cut = cut % bytes.len();
        prop_assert!(decode(CLUSTER, &bytes[..cut], MAX_STREAM_LEN).is_err());
    }
}

/// An update as serde decoded it, with the rules `decode` checked afterwards, until the
/// reader of decode.rs replaced both: the reference the reader must agree with.
fn serde_update(bytes: &[u8]) -> Option<Update> {
    let update: Update = rmp_serde::from_slice(bytes).ok()?;
    NodeName::validate(update.name.as_str()).ok()?;
    if !update.from.as_str().is_empty() {
        NodeName::validate(update.from.as_str()).ok()?;
    }
    let failing_len = |f: &Vec<String>| f.iter().map(|c| c.len() + 1).sum::<usize>();
    if update
        .tags
        .as_ref()
        .is_some_and(|t| tags_len(t) > MAX_PEER_TAGS_LEN)
        || update
            .failing
            .as_ref()
            .is_some_and(|f| failing_len(f) > MAX_PEER_TAGS_LEN)
    {
        return None;
    }
    Some(update)
}

/// The update `bytes` decoded by `decode`, riding alone in a gossip packet.
fn reader_update(bytes: &[u8]) -> Option<Update> {
    let mut packet = Vec::new();
    encode_head(CLUSTER, &NodeName::new("n"), &Message::Gossip, &mut packet);
    encode_updates_len(1, &mut packet);
    packet.extend_from_slice(bytes);
    let mut updates = decode(CLUSTER, &packet, MAX_STREAM_LEN).ok()?.updates;
    updates.pop()
}

proptest! {
    #[test]
    fn the_reader_agrees_with_serde_on_every_update(u in update(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut bytes = encode_update(&u);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        // Only whole values: serde would read a prefix of the bytes and leave the rest.
        prop_assume!(validate_structure(&bytes) == Ok(bytes.len()));
        prop_assert_eq!(reader_update(&bytes), serde_update(&bytes), "{:02x?}", bytes);
    }
}

fn sample() -> Packet {
    Packet {
        from: NodeName::new("node-1"),
        message: Message::Ping(Ping {
            seq: 7,
            target: NodeName::new("node-2"),
        }),
        updates: vec![],
        notes: vec![],
    }
}

#[test]
fn other_cluster_is_rejected() {
    let bytes = encode(ClusterId::of("blue"), &sample());
    assert_eq!(
        decode(ClusterId::of("green"), &bytes, MAX_DATAGRAM_LEN),
        Err(DecodeError::ClusterMismatch(ClusterId::of("blue").0))
    );
}

#[test]
fn unknown_version_is_rejected() {
    let mut bytes = encode(CLUSTER, &sample());
    bytes[0] = 9;
    assert_eq!(
        decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN),
        Err(DecodeError::Version(9))
    );
}

#[test]
fn oversize_is_rejected_before_parsing() {
    let bytes = vec![0u8; 2000];
    assert!(matches!(
        decode(CLUSTER, &bytes, 1200),
        Err(DecodeError::Oversize {
            len: 2000,
            limit: 1200
        })
    ));
}

#[test]
fn declared_lengths_beyond_the_input_are_rejected() {
    // An array claiming 2^32-1 elements in 5 bytes must not allocate for them.
    let mut bytes = vec![VERSION];
    bytes.extend_from_slice(&CLUSTER.0.to_be_bytes());
    bytes.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN),
        Err(DecodeError::Malformed(_))
    ));
    // A string claiming 4 GiB.
    assert!(validate_structure(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
}

#[test]
fn an_update_without_a_name_stops_the_decoding_at_once() {
    // Empty arrays as updates: each would decode into a whole default `Update` (128 bytes
    // from 1); the first one ends the decoding (`cargo bench --bench decode`: 1.0× the
    // input at the peak, 192× before).
    let mut p = sample();
    p.updates = vec![];
    let mut bytes = encode(CLUSTER, &p);
    assert_eq!(
        bytes.pop(),
        Some(0x90),
        "the empty updates array ends the packet"
    );
    bytes.extend_from_slice(&[0xdc, 0x10, 0x00]);
    bytes.extend(std::iter::repeat_n(0x90, 0x1000));
    match decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN) {
        Err(DecodeError::Malformed(why)) => assert!(why.contains("without a member name"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_is_rejected() {
    let bytes = vec![0x91; 64];
    assert!(validate_structure(&bytes).is_err());
}

#[test]
fn invalid_names_are_rejected() {
    let mut p = sample();
    p.from = NodeName::new("bad name");
    assert!(matches!(
        decode(CLUSTER, &encode(CLUSTER, &p), MAX_DATAGRAM_LEN),
        Err(DecodeError::Invalid(_))
    ));
    p.from = NodeName::new("");
    assert!(matches!(
        decode(CLUSTER, &encode(CLUSTER, &p), MAX_DATAGRAM_LEN),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn oversized_peer_tags_are_rejected() {
    let mut p = sample();
    let tags: Tags = (0..100)
        .map(|i| (format!("key{i}"), "v".repeat(40)))
        .collect();
    p.updates.push(Update {
        name: NodeName::new("x"),
        tags: Some(tags),
        ..Update::default()
    });
    assert_eq!(
        decode(CLUSTER, &encode(CLUSTER, &p), MAX_STREAM_LEN),
        Err(DecodeError::Invalid("member tags exceed 4096 bytes"))
    );
}

#[test]
fn newer_fields_are_skipped_and_missing_ones_default() {
    // An Ack from a future version with two extra trailing fields.
    let mut bytes = vec![VERSION];
    bytes.extend_from_slice(&CLUSTER.0.to_be_bytes());
    let mut body = Vec::new();
    rmp::encode::write_array_len(&mut body, 6).unwrap(); // packet with one extra field
    rmp::encode::write_str(&mut body, "node-1").unwrap();
    rmp::encode::write_uint(&mut body, 1).unwrap();
    rmp::encode::write_array_len(&mut body, 3).unwrap(); // Ack { seq, extra, extra }
    rmp::encode::write_uint(&mut body, 42).unwrap();
    rmp::encode::write_str(&mut body, "future").unwrap();
    rmp::encode::write_nil(&mut body).unwrap();
    rmp::encode::write_array_len(&mut body, 1).unwrap(); // one update with only a name
    rmp::encode::write_array_len(&mut body, 1).unwrap();
    rmp::encode::write_str(&mut body, "node-2").unwrap();
    rmp::encode::write_array_len(&mut body, 0).unwrap(); // no notes
    rmp::encode::write_bool(&mut body, true).unwrap(); // the extra packet field
    bytes.extend_from_slice(&body);
    let packet = decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN).unwrap();
    assert_eq!(packet.message, Message::Ack(Ack { seq: 42 }));
    assert_eq!(
        packet.updates,
        vec![Update {
            name: NodeName::new("node-2"),
            ..Update::default()
        }]
    );
}

#[test]
fn ping_is_compact() {
    // Header 5 + array 1 + "node-1" 7 + kind 1 + [seq, "node-2"] 9 + updates 1.
    assert_eq!(encode(CLUSTER, &sample()).len(), 24);
}

#[test]
fn unknown_message_kind_is_an_error() {
    let mut bytes = encode(CLUSTER, &sample());
    // The kind byte follows the header, the array marker and the 7-byte name.
    bytes[5 + 1 + 7] = 42;
    assert!(matches!(
        decode(CLUSTER, &bytes, MAX_DATAGRAM_LEN),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn packets_without_notes_keep_the_four_element_form() {
    let bytes = encode(CLUSTER, &sample());
    assert_eq!(bytes[HEADER_LEN], 0x94);
    let mut with_note = sample();
    with_note.notes.push(Note::bare("k"));
    let bytes = encode(CLUSTER, &with_note);
    assert_eq!(bytes[HEADER_LEN], 0x95);
    assert_eq!(decode(CLUSTER, &bytes, MAX_STREAM_LEN), Ok(with_note));
}

#[test]
fn overlong_note_is_invalid() {
    let mut p = sample();
    p.notes.push(Note::bare("x".repeat(MAX_NOTE_LEN + 1)));
    let bytes = encode(CLUSTER, &p);
    assert!(matches!(
        decode(CLUSTER, &bytes, MAX_STREAM_LEN),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn no_array_holds_more_than_max_elements() {
    let push_pull = |n: usize| Packet {
        from: NodeName::new("node-1"),
        message: Message::PushPull(PushPull {
            members: (0..n)
                .map(|i| Update {
                    name: NodeName::new(&format!("g{i:x}")),
                    ..Update::default()
                })
                .collect(),
            ..PushPull::default()
        }),
        updates: vec![],
        notes: vec![],
    };
    let fits = encode(CLUSTER, &push_pull(MAX_ELEMENTS));
    assert_eq!(
        decode(CLUSTER, &fits, MAX_STREAM_LEN).map(|p| p.message),
        Ok(push_pull(MAX_ELEMENTS).message)
    );
    let over = encode(CLUSTER, &push_pull(MAX_ELEMENTS + 1));
    assert!(matches!(
        decode(CLUSTER, &over, MAX_STREAM_LEN),
        Err(DecodeError::Malformed(m)) if m.contains("more than 65536")
    ));
}
