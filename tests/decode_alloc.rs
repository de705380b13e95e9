//! Issue 18: "the decoder's peak allocation for any input is ≤ 4× its size". A counting
//! allocator measures `wire::decode_received`, what the agent runs on every packet, over the
//! worst cases at 16 MiB and 64 KiB, honest packets, the golden fixtures, and the prefixes and
//! corruptions of all of them. One test in this binary, so nothing else allocates meanwhile.

use swimd::wire::{self, ClusterId, MAX_STREAM_LEN};

pub mod decode_cases;

use decode_cases::Case;

/// The most `decode_received` allowed to allocate at once, per input byte.
const BOUND: usize = 4;

/// Bytes allocated at the peak of decoding `input` (the decoded packet still held), and
/// whether it decoded.
fn peak(cluster: ClusterId, input: &[u8]) -> (usize, bool) {
    let (decoded, peak) =
        decode_cases::peak_during(|| wire::decode_received(cluster, input, MAX_STREAM_LEN));
    (peak, decoded.is_ok())
}

fn fixtures() -> Vec<Case> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wire");
    let mut cases = Vec::new();
    for version in std::fs::read_dir(dir).expect("fixtures") {
        let version = version.expect("fixture folder").path();
        let Ok(files) = std::fs::read_dir(&version) else {
            continue;
        };
        for file in files {
            let path = file.expect("fixture").path();
            if path.extension().is_some_and(|e| e == "bin") {
                cases.push(Case {
                    name: path.display().to_string(),
                    bytes: std::fs::read(&path).expect("read fixture"),
                });
            }
        }
    }
    assert!(cases.len() >= 20, "the golden fixtures are where they were");
    cases
}

#[test]
fn decoding_any_input_allocates_at_most_four_times_its_size() {
    let cluster = decode_cases::cluster();
    let mut failures = Vec::new();
    let mut large = decode_cases::worst(16 << 20);
    large.extend(decode_cases::worst(64 << 10));
    large.extend(decode_cases::honest(10_000));
    for case in &large {
        let (peak, decoded) = peak(cluster, &case.bytes);
        let ratio = peak as f64 / case.bytes.len() as f64;
        println!(
            "{:<52} {:>9} B in, peak {:>9} B, {ratio:>4.2}× ({})",
            case.name,
            case.bytes.len(),
            peak,
            if decoded { "decoded" } else { "refused" }
        );
        assert!(
            decoded || !case.name.starts_with("honest"),
            "{} refused",
            case.name
        );
        if peak > BOUND * case.bytes.len() {
            failures.push(format!("{}: {ratio:.2}×", case.name));
        }
    }
    // Small inputs: the fixtures (they are addressed to the `golden` cluster) and the first
    // bytes of every case above, whole, cut short and corrupted.
    let golden = ClusterId::of("golden");
    let mut small: Vec<(ClusterId, Vec<u8>)> = Vec::new();
    let fixtures = fixtures();
    small.extend(
        decode_cases::small(&fixtures, 256)
            .into_iter()
            .map(|b| (golden, b)),
    );
    small.extend(
        decode_cases::small(&large, 48)
            .into_iter()
            .map(|b| (cluster, b)),
    );
    let mut worst = (0.0, Vec::new());
    for (cluster, input) in &small {
        let (peak, _) = peak(*cluster, input);
        let ratio = peak as f64 / input.len().max(1) as f64;
        if ratio > worst.0 {
            worst = (ratio, input.clone());
        }
        if peak > BOUND * input.len() {
            failures.push(format!("{input:02x?}: {ratio:.2}×"));
        }
    }
    println!(
        "{} small inputs, the most allocated: {:.2}× for {:02x?}",
        small.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "peak allocation above {BOUND}× the input:\n{}",
        failures.join("\n")
    );
}
