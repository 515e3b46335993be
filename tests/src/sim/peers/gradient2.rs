//! Netflix concurrency-limits' Gradient2.

use super::Rule;

/// Netflix concurrency-limits' `Gradient2Limit`, at its builder's defaults: initial limit 20,
/// minimum 20, maximum 200, queue size 4, smoothing 0.2, long window 600 samples (10 of warm-up).
///
/// Per sample: the short RTT is the sample; the long RTT its exponential average
/// (`2 / (600 + 1)`), cut by 10 % whenever it exceeds twice the short one. Unless fewer than
/// half the limit were in flight at the sample's start (app-limited), the limit moves to
/// `limit × (1 − 0.2) + (limit × gradient + 4) × 0.2` with `gradient = clamp(long / short, 0.5,
/// 1)`. Drops carry no special meaning: their RTT is a sample like any other.
#[derive(Debug, Clone)]
pub struct Gradient2 {
    estimated: f64,
    min: f64,
    max: f64,
    long_rtt: f64,
    long_count: u32,
    long_sum: f64,
}

impl Gradient2 {
    const MIN_LIMIT: usize = 20;
    const MAX_LIMIT: usize = 200;
    const QUEUE_SIZE: f64 = 4.0;
    const SMOOTHING: f64 = 0.2;
    const LONG_WINDOW: f64 = 600.0;
    const WARMUP: u32 = 10;

    /// The rule at `initial`, capped at `max` (and at its own maximum of 200).
    pub fn new(initial: usize, max: usize) -> Self {
        let max = max.min(Self::MAX_LIMIT);
        Self {
            estimated: initial as f64,
            min: Self::MIN_LIMIT.min(max) as f64,
            max: max as f64,
            long_rtt: 0.0,
            long_count: 0,
            long_sum: 0.0,
        }
    }

    /// The long-term RTT average, in seconds.
    pub fn long_rtt(&self) -> f64 {
        self.long_rtt
    }

    fn add_long(&mut self, rtt: f64) -> f64 {
        // `ExpAvgMeasurement`: a plain mean over the warm-up, then an EMA.
        if self.long_count < Self::WARMUP {
            self.long_count += 1;
            self.long_sum += rtt;
            self.long_rtt = self.long_sum / f64::from(self.long_count);
        } else {
            let factor = 2.0 / (Self::LONG_WINDOW + 1.0);
            self.long_rtt = self.long_rtt * (1.0 - factor) + rtt * factor;
        }
        self.long_rtt
    }
}

impl Rule for Gradient2 {
    fn limit(&self) -> usize {
        self.estimated as usize
    }

    fn attempt(&mut self, _now: u64, rtt_s: f64, _ok: bool, in_flight: usize) {
        let short = rtt_s.max(1e-9);
        let long = self.add_long(short);
        // Latency back to normal after a long overload: bring the long RTT down faster.
        if long / short > 2.0 {
            self.long_rtt *= 0.9;
        }
        if (in_flight as f64) < self.estimated / 2.0 {
            return;
        }
        let gradient = (long / short).clamp(0.5, 1.0);
        let new = self.estimated * gradient + Self::QUEUE_SIZE;
        let new = self.estimated * (1.0 - Self::SMOOTHING) + new * Self::SMOOTHING;
        self.estimated = new.clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_grow_by_the_queue_size_share_while_latency_holds() {
        // Steady state: long = short, gradient 1, so each sample adds 0.2 × 4 = 0.8.
        let mut g = Gradient2::new(20, 200);
        for _ in 0..10 {
            g.attempt(0, 0.1, true, 20);
        }
        assert!((g.estimated - 28.0).abs() < 1e-9, "{}", g.estimated);
    }

    #[test]
    fn should_shrink_with_the_long_to_short_rtt_ratio() {
        let mut g = Gradient2::new(100, 200);
        for _ in 0..50 {
            g.attempt(0, 0.1, true, 100);
        }
        let before = g.estimated;
        // The short RTT doubles: gradient = long / short ≈ 0.5, so the limit moves a fifth of
        // the way to half of itself, plus the queue size.
        g.attempt(0, 0.2, true, 100);
        let long = g.long_rtt();
        let gradient = (long / 0.2).clamp(0.5, 1.0);
        let expected = before * 0.8 + (before * gradient + 4.0) * 0.2;
        assert!(
            (g.estimated - expected).abs() < 1e-9,
            "{} vs {expected}",
            g.estimated
        );
        assert!(g.estimated < before);
    }

    #[test]
    fn should_pull_the_long_rtt_down_when_latency_recovers() {
        // "Transition from load to steady state": once the long RTT is over twice the short
        // one, it is cut by 10 % per sample instead of waiting for the 600-sample average.
        let mut g = Gradient2::new(20, 200);
        for _ in 0..10 {
            g.attempt(0, 1.0, true, 20);
        }
        let long = g.long_rtt();
        g.attempt(0, 0.1, true, 20);
        let factor = 2.0 / 601.0;
        let expected = (long * (1.0 - factor) + 0.1 * factor) * 0.9;
        assert!(
            (g.long_rtt() - expected).abs() < 1e-12,
            "{} vs {expected}",
            g.long_rtt()
        );
    }

    #[test]
    fn should_hold_when_app_limited() {
        let mut g = Gradient2::new(100, 200);
        g.attempt(0, 0.1, true, 49);
        assert_eq!(g.limit(), 100);
    }

    #[test]
    fn should_not_go_below_its_minimum_of_20() {
        let mut g = Gradient2::new(20, 200);
        // Past the 10-sample warm-up, in which the long RTT is a plain mean and follows fast.
        for _ in 0..20 {
            g.attempt(0, 0.1, true, 20);
        }
        for _ in 0..100 {
            g.attempt(0, 10.0, true, 20);
        }
        assert_eq!(g.limit(), 20);
    }
}
