//! Peak heap allocated while decoding worst-case inputs, as a multiple of the input's size
//! (issue 18: "the decoder's peak allocation for any input is ≤ 4× its size").
//! `cargo bench --bench decode`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use swimd::wire::{self, ClusterId, Message, NodeName, Packet, PushPull, State, Update, WireAddr};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A push-pull whose members are `count` copies of the encoded update `member`.
fn push_pull(cluster: ClusterId, member: &[u8], count: usize) -> Vec<u8> {
    let head = Packet {
        from: NodeName::new("mallory"),
        message: Message::PushPull(PushPull {
            members: Vec::new(),
            ..PushPull::default()
        }),
        updates: Vec::new(),
        notes: Vec::new(),
    };
    let encoded = wire::encode(cluster, &head);
    // The empty members array (0x90) follows the two booleans of the push-pull body.
    let at = encoded
        .windows(3)
        .position(|w| w == [0xc2, 0xc2, 0x90])
        .expect("an empty members array")
        + 2;
    let mut out = encoded[..at].to_vec();
    out.push(0xdd);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    for _ in 0..count {
        out.extend_from_slice(member);
    }
    out.extend_from_slice(&encoded[at + 1..]);
    out
}

fn measure(name: &str, cluster: ClusterId, input: &[u8]) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = wire::decode(cluster, input, wire::MAX_STREAM_LEN);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "{name:<52} {:>10} B in, peak {:>11} B allocated, {:>6.1}× ({})",
        input.len(),
        peak,
        peak as f64 / input.len() as f64,
        match &result {
            Ok(_) => "decoded".to_string(),
            Err(e) => format!("rejected: {e}"),
        }
    );
}

fn main() {
    let cluster = ClusterId::of("bench");
    let members = 1 << 20;
    measure(
        "push-pull of empty arrays (0x90 each)",
        cluster,
        &push_pull(cluster, &[0x90], members),
    );
    let minimal = wire::encode_update(&Update {
        name: NodeName::new("a"),
        state: State::Failed,
        ..Update::default()
    });
    measure(
        &format!(
            "push-pull of minimal failed updates ({} B each)",
            minimal.len()
        ),
        cluster,
        &push_pull(cluster, &minimal, members / 8),
    );
    let real = wire::encode_update(&Update {
        name: NodeName::new("node-1234"),
        state: State::Alive,
        addr: Some(WireAddr("10.1.2.3:7946".parse().expect("addr"))),
        ..Update::default()
    });
    measure(
        &format!("push-pull of alive updates ({} B each)", real.len()),
        cluster,
        &push_pull(cluster, &real, members / 16),
    );
}
