//! The scheduled baseline probe (`latency_probe_interval`) and its seeded jitter.

use core::time::Duration;

/// A baseline probe in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probing {
    pub(super) restore: usize,
    pub(super) started: Duration,
    pub(super) epochs: u32,
    pub(super) best: Option<Duration>,
}

/// A xorshift64* generator: the core has no RNG, and replays must be deterministic.
#[derive(Debug, Clone, Copy)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) const fn new() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }

    pub(super) fn seeded(seed: u64) -> Self {
        // xorshift needs a non-zero state; mix so that small seeds differ in every bit.
        Self(
            (seed ^ 0x9E37_79B9_7F4A_7C15)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                .max(1),
        )
    }

    /// `every` with ± 25 % jitter; saturates rather than overflowing.
    pub(super) fn around(&mut self, every: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 bits fit an f64's mantissa exactly"
        )]
        let unit = bits as f64 / (1u64 << 53) as f64;
        super::detector::secs(every.as_secs_f64() * (0.75 + 0.5 * unit))
    }
}
