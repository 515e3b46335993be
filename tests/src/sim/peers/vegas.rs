//! Netflix concurrency-limits' Vegas.

use super::Rule;

/// Netflix concurrency-limits' `VegasLimit`, at its builder's defaults: initial limit 20, maximum
/// 1000, smoothing 1, probe multiplier 30, and the log10 functions: with `l = log10(limit)`
/// (at least 1; `sqrt(limit)` from 1000), alpha `3 l`, beta `6 l`, threshold `l`, increase
/// `+ l`, decrease `− l`.
///
/// Per sample: the no-load RTT is the smallest seen, re-probed (set to the current sample) every
/// `jitter × 30 × limit` samples, jitter uniform in [0.5, 1). The queue estimate is
/// `ceil(limit × (1 − rtt_noload / rtt))`. A drop decreases; fewer than half the limit in flight
/// holds; a queue at most the threshold adds beta; below alpha adds `l`; above beta removes `l`.
#[derive(Debug, Clone)]
pub struct Vegas {
    estimated: f64,
    max: f64,
    rtt_noload: f64,
    probe_count: u64,
    probe_jitter: f64,
    rng: fastrand::Rng,
}

impl Vegas {
    const MAX_LIMIT: usize = 1000;
    const PROBE_MULTIPLIER: f64 = 30.0;

    /// The rule at `initial`, capped at `max` (and at its own maximum of 1000).
    pub fn new(initial: usize, max: usize, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let probe_jitter = 0.5 + rng.f64() * 0.5;
        Self {
            estimated: initial as f64,
            max: max.min(Self::MAX_LIMIT) as f64,
            rtt_noload: 0.0,
            probe_count: 0,
            probe_jitter,
            rng,
        }
    }

    /// `Log10RootFunction`: `max(1, floor(log10(n)))` below 1000, `floor(sqrt(n))` from there.
    fn log10(n: usize) -> f64 {
        if n < 1000 {
            ((n.max(1) as f64).log10().floor()).max(1.0)
        } else {
            (n as f64).sqrt().floor()
        }
    }
}

impl Rule for Vegas {
    fn limit(&self) -> usize {
        self.estimated as usize
    }

    fn attempt(&mut self, _now: u64, rtt_s: f64, ok: bool, in_flight: usize) {
        let rtt = rtt_s.max(1e-9);
        self.probe_count += 1;
        if self.probe_jitter * Self::PROBE_MULTIPLIER * self.estimated <= self.probe_count as f64 {
            self.probe_jitter = 0.5 + self.rng.f64() * 0.5;
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return;
        }
        if self.rtt_noload == 0.0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return;
        }
        let limit = self.estimated as usize;
        let l = Self::log10(limit);
        let queue = (self.estimated * (1.0 - self.rtt_noload / rtt)).ceil();
        let new = if !ok {
            // A drop (a timeout) always decreases.
            self.estimated - l
        } else if (in_flight as f64) * 2.0 < self.estimated {
            return;
        } else if queue <= l {
            self.estimated + 6.0 * l
        } else if queue < 3.0 * l {
            self.estimated + l
        } else if queue > 6.0 * l {
            self.estimated - l
        } else {
            return;
        };
        self.estimated = new.clamp(1.0, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmed(limit: usize) -> Vegas {
        let mut v = Vegas::new(limit, 1000, 7);
        // The first sample sets the no-load RTT and changes nothing.
        v.attempt(0, 0.1, true, limit);
        assert_eq!(v.limit(), limit);
        v
    }

    #[test]
    fn should_add_beta_when_there_is_no_queue() {
        // At 20, log10 = 1: no queue (≤ threshold 1) adds beta = 6.
        let mut v = warmed(20);
        v.attempt(0, 0.1, true, 20);
        assert_eq!(v.limit(), 26);
    }

    #[test]
    fn should_grow_by_log10_below_alpha() {
        // At 100, log10 = 2: alpha 6, threshold 2. RTT 0.1 → 0.104: queue ceil(100 × 0.0385) =
        // 4, above the threshold and below alpha: + log10(100) = 2.
        let mut v = warmed(100);
        v.attempt(0, 0.104, true, 100);
        assert_eq!(v.limit(), 102);
    }

    #[test]
    fn should_shrink_by_log10_above_beta() {
        // At 100: beta 12. RTT doubles: queue 50 > 12, so − 2.
        let mut v = warmed(100);
        v.attempt(0, 0.2, true, 100);
        assert_eq!(v.limit(), 98);
    }

    #[test]
    fn should_hold_between_alpha_and_beta() {
        // At 100: queue ceil(100 × (1 − 0.1 / 0.11)) = 10, within [6, 12].
        let mut v = warmed(100);
        v.attempt(0, 0.11, true, 100);
        assert_eq!(v.limit(), 100);
    }

    #[test]
    fn should_probe_the_no_load_rtt_within_30_times_the_limit_samples() {
        // The probe takes the current sample as the no-load RTT, even a slower one, after
        // jitter × 30 × limit samples (jitter in [0.5, 1)).
        let mut v = warmed(20);
        for _ in 0..600 {
            v.attempt(0, 0.2, true, 0);
            if v.rtt_noload > 0.1 {
                break;
            }
        }
        assert!((v.rtt_noload - 0.2).abs() < 1e-12);
    }

    #[test]
    fn should_decrease_on_a_drop_and_hold_when_app_limited() {
        let mut v = warmed(100);
        v.attempt(0, 0.1, false, 100);
        assert_eq!(v.limit(), 98);
        v.attempt(0, 0.1, true, 10);
        assert_eq!(v.limit(), 98);
    }
}
