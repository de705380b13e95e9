//! The four C math functions swimd and its dependencies call (`f64::ln` and friends lower
//! to them), defined here from the pure-Rust `libm` crate. The linker then resolves them
//! in the binary and drops libm.so (linked `--as-needed`): loading it ran its IFUNC
//! resolvers across its code and kept ~0.5 MiB of every agent resident for four functions.
//! A new call to another libm function brings libm.so back (it still works);
//! `binary_does_not_load_libm` in tests/agent.rs then fails, so add the function here.

/// `exp(3)`: hickory-resolver's server ranking.
#[unsafe(no_mangle)]
pub extern "C" fn exp(x: f64) -> f64 {
    libm::exp(x)
}

/// `log(3)`: the Lifeguard suspicion timeout.
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

/// `log10(3)`: retransmission counts and suspicion bounds.
#[unsafe(no_mangle)]
pub extern "C" fn log10(x: f64) -> f64 {
    libm::log10(x)
}

/// `pow(3)`: tokio's scheduler statistics.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_function_matches_its_definition() {
        let close = |a: f64, b: f64| (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0);
        assert!(close(super::exp(1.0), std::f64::consts::E));
        assert!(close(super::log(std::f64::consts::E), 1.0));
        assert_eq!(super::log10(1000.0), 3.0);
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert!(super::log(-1.0).is_nan());
        assert_eq!(super::log(0.0), f64::NEG_INFINITY);
    }
}
