//! The latency detector's two references: the windowed minimum (the unloaded latency) and the
//! EWMA with its deviation (the recent average and its noise).

use core::time::Duration;

/// Slots in the baseline window: a windowed minimum kept in fixed memory.
const BASELINE_SLOTS: usize = 8;

/// The lowest reading of the last `window`, in [`BASELINE_SLOTS`] slots of `window / SLOTS`.
#[derive(Debug, Clone)]
pub(super) struct Baseline {
    slot_nanos: u128,
    slots: [Option<(u128, Duration)>; BASELINE_SLOTS],
}

impl Baseline {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            slot_nanos: (window.as_nanos() / BASELINE_SLOTS as u128).max(1),
            slots: [None; BASELINE_SLOTS],
        }
    }

    fn slot(&self, now: Duration) -> u128 {
        now.as_nanos() / self.slot_nanos
    }

    pub(super) fn insert(&mut self, now: Duration, value: Duration) {
        let id = self.slot(now);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the remainder is below BASELINE_SLOTS"
        )]
        let entry = &mut self.slots[(id % BASELINE_SLOTS as u128) as usize];
        match entry {
            Some((slot, min)) if *slot == id => *min = (*min).min(value),
            _ => *entry = Some((id, value)),
        }
    }

    pub(super) fn get(&self, now: Duration) -> Option<Duration> {
        let id = self.slot(now);
        self.slots
            .iter()
            .flatten()
            .filter(|(slot, _)| *slot <= id && id - *slot < BASELINE_SLOTS as u128)
            .map(|&(_, min)| min)
            .min()
    }

    pub(super) fn reset(&mut self, now: Duration, value: Duration) {
        self.slots = [None; BASELINE_SLOTS];
        self.insert(now, value);
    }
}

/// An exponentially weighted mean and variance of epoch latencies, in seconds (Welford's form
/// for an EWMA, as Vector's `EwmaVar`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ewma {
    pub(super) mean: f64,
    pub(super) var: f64,
}

/// The weight of a new epoch in the average: 0.4, Vector's tuned value (about the last 2–3 epochs).
const ALPHA: f64 = 0.4;

impl Ewma {
    pub(super) fn new(first: f64) -> Self {
        Self {
            mean: first,
            var: 0.0,
        }
    }

    pub(super) fn update(&mut self, x: f64) {
        let diff = x - self.mean;
        let incr = ALPHA * diff;
        self.mean += incr;
        self.var = (1.0 - ALPHA) * (self.var + diff * incr);
    }

    pub(super) fn deviation(&self) -> f64 {
        sqrt(self.var)
    }
}

/// √x for x ≥ 0 (0 otherwise) without `std`: Newton's method from the exponent-halving guess,
/// exact to the last bits after six steps.
pub(super) fn sqrt(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return x;
    }
    // Halve the exponent: within a factor √2 of the root.
    let mut y = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + x / y);
    }
    y
}

/// `Duration::from_secs_f64` that saturates instead of panicking on huge or invalid values.
pub(super) fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqrt_is_exact_enough() {
        for x in [1e-12, 1e-6, 0.01, 0.5, 1.0, 2.0, 9.0, 1e6, 1e300] {
            let y = super::sqrt(x);
            assert!((y * y - x).abs() <= x * 1e-12, "{x}: {y}");
        }
        assert_eq!(super::sqrt(0.0), 0.0);
        assert_eq!(super::sqrt(-1.0), 0.0);
        assert_eq!(super::sqrt(f64::NAN), 0.0);
    }
}
