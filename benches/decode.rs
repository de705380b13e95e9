//! Peak heap allocated while decoding worst-case inputs, as a multiple of the input's size
//! (issue 18: "the decoder's peak allocation for any input is ≤ 4× its size"; asserted by
//! tests/decode_alloc.rs). `cargo bench --bench decode`.

use swimd::wire;

#[path = "../tests/decode_cases/mod.rs"]
pub mod decode_cases;

fn measure(name: &str, input: &[u8]) {
    let (result, peak) = decode_cases::peak_during(|| {
        wire::decode_received(decode_cases::cluster(), input, wire::MAX_STREAM_LEN)
    });
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
