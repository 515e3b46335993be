//! Envoy's adaptive concurrency filter, gradient controller.

use super::{Rule, NS};

/// Envoy's adaptive concurrency gradient controller, at its documented defaults with the
/// required fields as in its docs' example: sample window (`concurrency_update_interval`)
/// 100 ms, minRTT `interval` 60 s, `request_count` 50, `jitter` 15 %, `min_concurrency` 3,
/// `buffer` 25 %, `sample_aggregate_percentile` p50, `max_concurrency_limit` 1000.
///
/// It starts in a minRTT window: the limit is pinned to 3 until 50 requests sent since then have
/// completed; their p50 is the minRTT, and the limit returns to what it was. Then every 100 ms
/// the window's p50 (the sample RTT) gives `gradient = clamp(minRTT × 1.25 / sampleRTT, 0.5, 2)`
/// and the limit becomes `limit × gradient + sqrt(limit × gradient)` (truncated), within
/// [3, max]. The minRTT is measured again after 60–69 s, or when the limit has been set to 3
/// for 5 windows in a row.
#[derive(Debug, Clone)]
pub struct Envoy {
    limit: usize,
    max: usize,
    /// The limit to return to when the minRTT window ends; `Some` while in one.
    deferred: Option<usize>,
    min_rtt: f64,
    samples: Vec<f64>,
    /// Requests sent before this (ns) do not count towards the minRTT.
    min_rtt_epoch: u64,
    next_window: u64,
    next_min_rtt: u64,
    consecutive_min: u32,
    rng: fastrand::Rng,
}

impl Envoy {
    const WINDOW: f64 = 0.1;
    const MIN_RTT_INTERVAL: f64 = 60.0;
    const JITTER: f64 = 0.15;
    const REQUEST_COUNT: usize = 50;
    const MIN_CONCURRENCY: usize = 3;
    const BUFFER: f64 = 0.25;
    const PERCENTILE: f64 = 0.5;
    const MAX_LIMIT: usize = 1000;

    /// The controller at the start of its first minRTT window, returning to `initial` (3 when
    /// not given) when it ends; capped at `max` (and at its own maximum of 1000).
    pub fn new(initial: Option<usize>, max: usize, seed: u64) -> Self {
        let max = max.min(Self::MAX_LIMIT);
        let initial = initial.unwrap_or(Self::MIN_CONCURRENCY).clamp(1, max);
        Self {
            limit: Self::MIN_CONCURRENCY.min(max),
            max,
            deferred: Some(initial),
            min_rtt: 0.0,
            samples: Vec::new(),
            min_rtt_epoch: 0,
            next_window: u64::MAX,
            next_min_rtt: u64::MAX,
            consecutive_min: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The measured minRTT, in seconds (0 before the first window ends).
    pub fn min_rtt(&self) -> f64 {
        self.min_rtt
    }

    fn percentile(samples: &mut [f64]) -> f64 {
        samples.sort_by(f64::total_cmp);
        let rank =
            ((samples.len() as f64 * Self::PERCENTILE).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    }

    fn set_limit(&mut self, new: usize, now: u64) {
        let old = self.limit;
        self.limit = new;
        if self.deferred.is_none() && old == Self::MIN_CONCURRENCY && new == Self::MIN_CONCURRENCY {
            self.consecutive_min += 1;
        } else {
            self.consecutive_min = 0;
        }
        // Pinned at the minimum for 5 windows: the minRTT may be wrong; measure it again now.
        if self.consecutive_min >= 5 {
            self.enter_min_rtt_window(now);
        }
    }

    fn enter_min_rtt_window(&mut self, now: u64) {
        if self.deferred.is_some() {
            return;
        }
        self.deferred = Some(self.limit);
        self.limit = Self::MIN_CONCURRENCY.min(self.max);
        self.consecutive_min = 0;
        self.samples.clear();
        self.min_rtt_epoch = now;
    }

    /// Fires the timers due by `now`: sample windows and the minRTT window's start.
    fn fire(&mut self, now: u64) {
        while self.deferred.is_none() {
            let next = self.next_window.min(self.next_min_rtt);
            if next > now {
                break;
            }
            if self.next_min_rtt <= self.next_window {
                self.enter_min_rtt_window(self.next_min_rtt);
                break;
            }
            self.next_window += (Self::WINDOW * NS) as u64;
            if self.samples.is_empty() {
                continue;
            }
            let sample_rtt = Self::percentile(&mut self.samples);
            self.samples.clear();
            let buffered = self.min_rtt + self.min_rtt * Self::BUFFER;
            let gradient = (buffered / sample_rtt.max(1e-9)).clamp(0.5, 2.0);
            let limit = self.limit as f64 * gradient;
            let new = ((limit + limit.sqrt()) as usize).clamp(Self::MIN_CONCURRENCY, self.max);
            self.set_limit(new, now);
        }
    }
}

impl Rule for Envoy {
    fn limit(&self) -> usize {
        self.limit
    }

    fn advance(&mut self, now: u64) {
        self.fire(now);
    }

    fn attempt(&mut self, now: u64, rtt_s: f64, _ok: bool, _in_flight: usize) {
        self.fire(now);
        let sent = now.saturating_sub((rtt_s * NS) as u64);
        if sent < self.min_rtt_epoch {
            // Sent before the minRTT window began: not a sample of the ideal latency.
            return;
        }
        self.samples.push(rtt_s);
        if let Some(deferred) = self.deferred {
            if self.samples.len() >= Self::REQUEST_COUNT {
                self.min_rtt = Self::percentile(&mut self.samples);
                self.samples.clear();
                // Set while still in the window, so that it does not count as a window at 3.
                self.set_limit(deferred, now);
                self.deferred = None;
                let jitter = self.rng.f64() * Self::JITTER;
                self.next_min_rtt = now + (Self::MIN_RTT_INTERVAL * (1.0 + jitter) * NS) as u64;
                self.next_window = now + (Self::WINDOW * NS) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Ends the first minRTT window with 50 samples of `rtt` seconds at `t`.
    fn measured(rtt: f64, initial: Option<usize>) -> Envoy {
        let mut e = Envoy::new(initial, 1000, 1);
        assert_eq!(e.limit(), 3, "pinned to min_concurrency while measuring");
        for _ in 0..50 {
            e.attempt(1000 * MS, rtt, true, 3);
        }
        assert!((e.min_rtt() - rtt).abs() < 1e-12);
        e
    }

    #[test]
    fn should_hold_three_during_the_min_rtt_window_then_return() {
        let e = measured(0.1, Some(40));
        assert_eq!(e.limit(), 40);
    }

    #[test]
    fn should_grow_by_gradient_and_sqrt_headroom() {
        // Sample RTT = minRTT: gradient 1.25, so 40 → 50 + sqrt(50) = 57.
        let mut e = measured(0.1, Some(40));
        e.attempt(1050 * MS, 0.1, true, 40);
        e.advance(1101 * MS);
        assert_eq!(e.limit(), 57);
    }

    #[test]
    fn should_halve_at_most_per_window() {
        // Sample RTT 10 × minRTT: the gradient is clamped to 0.5, so 40 → 20 + sqrt(20) = 24.
        let mut e = measured(0.1, Some(40));
        e.attempt(1050 * MS, 1.0, true, 40);
        e.advance(1101 * MS);
        assert_eq!(e.limit(), 24);
    }

    #[test]
    fn should_remeasure_after_five_windows_at_the_minimum() {
        let mut e = measured(0.1, Some(3));
        let mut t = 1000 * MS;
        for _ in 0..5 {
            t += 100 * MS;
            e.attempt(t - MS, 10.0, true, 3);
            e.advance(t + MS);
        }
        assert!(e.deferred.is_some(), "a new minRTT window began");
        assert_eq!(e.limit(), 3);
    }
}
