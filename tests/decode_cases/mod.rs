//! Inputs that make a decoder allocate the most for their size, and honest packets to compare
//! with: shared by `tests/decode_alloc.rs` (which asserts the bound) and `benches/decode.rs`
//! (which prints the figures in release).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use swimd::wire::{
    self, ClusterId, HEADER_LEN, Incarnation, MAX_ELEMENTS, MAX_STREAM_LEN, Message, NodeName,
    Packet, Software, State, Tags, Update, VERSION, WireAddr,
};

/// The allocator of every binary that includes this module: the system's, counting the
/// bytes held now and at the peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what it returned and the most bytes it had allocated at once (what
/// it returns still held). Single-threaded callers only: other threads' allocations count.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(before))
}

/// The cluster every case is addressed to.
pub fn cluster() -> ClusterId {
    ClusterId::of("decode-alloc")
}

/// One input: what it is and its bytes.
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
}

fn header() -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&cluster().0.to_be_bytes());
    out
}

fn array_len(out: &mut Vec<u8>, len: usize) {
    let _ = rmp::encode::write_array_len(out, len as u32);
}

/// How many copies of an element of `each` bytes fit in a packet of at most `size` bytes
/// (leaving room for the packet around them), at most [`MAX_ELEMENTS`].
fn fit(size: usize, each: usize) -> usize {
    (size.saturating_sub(64) / each).clamp(1, MAX_ELEMENTS)
}

/// A push-pull from `mallory` whose members are `count` copies of the encoded `member`.
pub fn push_pull(member: &[u8], count: usize) -> Vec<u8> {
    let mut out = header();
    array_len(&mut out, 4);
    let _ = rmp::encode::write_str(&mut out, "mallory");
    out.push(5);
    array_len(&mut out, 5);
    out.extend_from_slice(&[0xc2, 0xc2]);
    array_len(&mut out, count);
    for _ in 0..count {
        out.extend_from_slice(member);
    }
    let _ = rmp::encode::write_bin(&mut out, &[]);
    array_len(&mut out, 0);
    array_len(&mut out, 0);
    out
}

/// A gossip packet from `mallory` with `updates` (each encoded, `count` copies) and `notes`.
fn gossip(update: &[u8], count: usize, note: &[u8], notes: usize) -> Vec<u8> {
    let mut out = header();
    array_len(&mut out, 5);
    let _ = rmp::encode::write_str(&mut out, "mallory");
    out.push(4);
    out.push(0xc0);
    array_len(&mut out, count);
    for _ in 0..count {
        out.extend_from_slice(update);
    }
    array_len(&mut out, notes);
    for _ in 0..notes {
        out.extend_from_slice(note);
    }
    out
}

/// An update about `a` (8 fields: through `closed`) whose tail is `rest`, a raw msgpack
/// suffix holding `fields` more fields after `name, incarnation, state`.
fn update_about_a(rest: &[u8], fields: usize) -> Vec<u8> {
    let mut out = Vec::new();
    array_len(&mut out, 3 + fields);
    out.extend_from_slice(&[0xa1, b'a', 0x00, 0x02]);
    out.extend_from_slice(rest);
    out
}

/// The hostile inputs, each as large as it can be up to `size` bytes.
pub fn worst(size: usize) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        cases.push(Case {
            name: name.to_string(),
            bytes,
        })
    };
    // The smallest update a peer may send: a one-letter name, every other field defaulted.
    let minimal = [0x91, 0xa1, b'a'];
    add(
        "push-pull of minimal updates [\"a\"] (3 B)",
        push_pull(&minimal, fit(size, minimal.len())),
    );
    add(
        "gossip of minimal updates [\"a\"] (3 B)",
        gossip(&minimal, fit(size, minimal.len()), &[], 0),
    );
    let alive = wire::encode_update(&Update {
        name: NodeName::new("node-1234"),
        state: State::Alive,
        addr: Some(WireAddr("10.1.2.3:7946".parse().expect("addr"))),
        ..Update::default()
    });
    add(
        "push-pull of alive updates (27 B)",
        push_pull(&alive, fit(size, alive.len())),
    );
    // failing: the most empty strings the 4096-byte budget allows.
    let mut failing = vec![0xa0, 0xc0, 0xc0]; // from, addr, tags
    failing.extend_from_slice(&[0xdc, 0x0f, 0xff]);
    failing.extend(std::iter::repeat_n(0xa0, 4095));
    let failing = update_about_a(&failing, 4);
    add(
        "push-pull of updates failing 4095 empty check names",
        push_pull(&failing, fit(size, failing.len())),
    );
    // tags: the most distinct two-letter keys with empty values the budget allows.
    let mut tags = vec![0xa0, 0xc0]; // from, addr
    tags.extend_from_slice(&[0xde, 0x03, 0xff]);
    for i in 0..1023u16 {
        tags.extend_from_slice(&[0xa2, b'A' + (i / 64) as u8, b'0' + (i % 64) as u8, 0xa0]);
    }
    let tags = update_about_a(&tags, 3);
    add(
        "push-pull of updates with 1023 tiny tags",
        push_pull(&tags, fit(size, tags.len())),
    );
    // closed: the most witnesses allowed, one-letter names.
    let mut closed = vec![0xa1, b'b', 0xc0, 0xc0, 0xc0, 0xdc, 0x00, 0x10];
    for _ in 0..16 {
        closed.extend_from_slice(&[0xa1, b'c']);
    }
    let closed = update_about_a(&closed, 5);
    add(
        "push-pull of failed updates with 16 witnesses",
        push_pull(&closed, fit(size, closed.len())),
    );
    // notes: empty keys.
    let note = [0x91, 0xa0];
    add(
        "gossip of empty notes (2 B)",
        gossip(&[], 0, &note, fit(size, note.len())),
    );
    // An error that would quote the input: a string where the kind byte belongs, of control
    // characters (each escaped to 6 bytes by Debug).
    let mut kind = header();
    array_len(&mut kind, 3);
    let _ = rmp::encode::write_str(&mut kind, "mallory");
    let len = size.saturating_sub(kind.len() + 8).max(1);
    let _ = rmp::encode::write_str_len(&mut kind, len as u32);
    kind.extend(std::iter::repeat_n(0x01, len));
    kind.push(0xc0);
    add("a kind that is a string of control bytes", kind);
    // A digest as large as the packet.
    let mut digest = header();
    array_len(&mut digest, 3);
    let _ = rmp::encode::write_str(&mut digest, "mallory");
    digest.push(5);
    array_len(&mut digest, 4);
    digest.extend_from_slice(&[0xc2, 0xc2, 0x90]);
    let len = size.saturating_sub(digest.len() + 8).max(2) & !1;
    let _ = rmp::encode::write_bin_len(&mut digest, len as u32);
    digest.extend(std::iter::repeat_n(0xab, len));
    add("push-pull with a digest filling the packet", digest);
    cases.retain(|c| c.bytes.len() <= MAX_STREAM_LEN);
    cases
}

/// A member as an agent describes it: address, three tags, software (about 120 B).
pub fn realistic(i: usize) -> Update {
    let tags: Tags = [("role", "web"), ("zone", "eu-west-1b"), ("rack", "r12")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Update {
        name: NodeName::new(&format!("web-{i:05}.eu-west-1.example.net")),
        incarnation: Incarnation(7 + i as u64 % 5),
        state: State::Alive,
        addr: Some(WireAddr(
            format!("10.{}.{}.{}:7946", i / 65536, i / 256 % 256, i % 256)
                .parse()
                .expect("addr"),
        )),
        tags: Some(tags),
        failing: Some(vec![]),
        software: Some(Software::current()),
        ..Update::default()
    }
}

/// Honest packets: a push-pull of `members` realistic members, and a full gossip datagram.
pub fn honest(members: usize) -> Vec<Case> {
    let push_pull = Packet {
        from: NodeName::new("web-00000.eu-west-1.example.net"),
        message: Message::PushPull(wire::PushPull {
            reply: true,
            members: (0..members).map(realistic).collect(),
            ..wire::PushPull::default()
        }),
        updates: Vec::new(),
        notes: Vec::new(),
    };
    // A datagram as the core fills it: updates until the 1,150-byte budget, a mix of
    // alive members and suspicions.
    let mut updates = Vec::new();
    let mut len = 40;
    for i in 0.. {
        let update = if i % 3 == 2 {
            Update {
                name: NodeName::new(&format!("web-{i:05}.eu-west-1.example.net")),
                incarnation: Incarnation(3),
                state: State::Suspect,
                from: NodeName::new("web-00001.eu-west-1.example.net"),
                ..Update::default()
            }
        } else {
            realistic(i)
        };
        len += wire::encode_update(&update).len();
        if len > 1150 {
            break;
        }
        updates.push(update);
    }
    let datagram = Packet {
        from: NodeName::new("web-00000.eu-west-1.example.net"),
        message: Message::Gossip,
        updates,
        notes: Vec::new(),
    };
    vec![
        Case {
            name: format!("honest push-pull of {members} members"),
            bytes: wire::encode(cluster(), &push_pull),
        },
        Case {
            name: "honest gossip datagram".to_string(),
            bytes: wire::encode(cluster(), &datagram),
        },
    ]
}

/// Every prefix of every case up to `max` bytes long, and every single-byte corruption of
/// the first `max` bytes: small inputs, mostly refused.
pub fn small(cases: &[Case], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for case in cases {
        let short = &case.bytes[..case.bytes.len().min(max)];
        for end in 0..=short.len() {
            out.push(short[..end].to_vec());
        }
        for at in HEADER_LEN..short.len() {
            for byte in [0x00, 0x7f, 0x90, 0xa0, 0xc0, 0xdc, 0xdd, 0xff] {
                let mut changed = short.to_vec();
                changed[at] = byte;
                out.push(changed);
            }
        }
    }
    out
}
