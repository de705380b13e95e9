//! Lifeguard's local health multiplier ("awareness"): how much this member distrusts its
//! own view. Failed probes without nacks and refutations raise it; successful probes lower it.

/// The local health score, `0..max`; probe interval and timeout are scaled by `score + 1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub(crate) fn new(max_multiplier: u32) -> Self {
        Awareness {
            score: 0,
            max: max_multiplier.max(1) - 1,
        }
    }

    pub(crate) fn apply(&mut self, delta: i32) {
        self.score = self.score.saturating_add_signed(delta).min(self.max);
    }

    pub(crate) fn score(self) -> u32 {
        self.score
    }

    /// The multiplier applied to probe interval and timeout.
    pub(crate) fn scale(self, d: std::time::Duration) -> std::time::Duration {
        d * (self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_clamped_to_range() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(std::time::Duration::from_secs(1)).as_secs(), 8);
    }
}
