//! Any byte string decodes to a packet or an error: never a panic, never a large allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swimd::wire::{self, ClusterId};

fuzz_target!(|data: &[u8]| {
    let cluster = ClusterId::of("fuzz");
    let _ = wire::decode(cluster, data, wire::MAX_STREAM_LEN);
    // Also with a valid header, so the fuzzer spends its time in the msgpack body.
    let mut framed = vec![wire::VERSION];
    framed.extend_from_slice(&cluster.0.to_be_bytes());
    framed.extend_from_slice(data);
    if let Ok(packet) = wire::decode(cluster, &framed, wire::MAX_STREAM_LEN) {
        // What decodes must encode and decode to the same packet.
        let again = wire::encode(cluster, &packet);
        assert_eq!(wire::decode(cluster, &again, wire::MAX_STREAM_LEN).ok(), Some(packet));
    }
});
