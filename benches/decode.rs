//! Peak heap allocated while decoding worst-case inputs, as a multiple of the input's size
//! (issue 18: "the decoder's peak allocation for any input is ≤ 4× its size"; asserted by
//! tests/decode_alloc.rs). `cargo bench --bench decode`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use swimd::wire;

#[path = "../tests/decode_cases/mod.rs"]
pub mod decode_cases;

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

fn measure(name: &str, input: &[u8]) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = wire::decode_received(decode_cases::cluster(), input, wire::MAX_STREAM_LEN);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "{name:<52} {:>10} B in, peak {:>11} B allocated, {:>6.1}× ({})",
        input.len(),
        peak,
        peak as f64 / input.len() as f64,
        match &result {
            Ok(_) => "decoded".to_string(),
            Err(e) => {
                let e = e.to_string();
                format!("rejected: {}", e.get(..80.min(e.len())).unwrap_or(&e))
            }
        }
    );
}

fn main() {
    for size in [16 << 20, 64 << 10] {
        for case in decode_cases::worst(size) {
            measure(&case.name, &case.bytes);
        }
    }
    for case in decode_cases::honest(10_000) {
        measure(&case.name, &case.bytes);
    }
}
