//! brpc's auto concurrency limiter.

use super::{Rule, NS};

/// brpc's auto concurrency limiter (`auto_cl_*` flags at their defaults), with the limit formula
/// of its docs: `max_concurrency = max_qps × ((2 + α) × min_latency − latency)`, α = 0.3, at
/// least `bthread_concurrency` (9 by default).
///
/// Responses are sampled at most one per 0.1 ms. A sampling window closes after 1 s with at
/// least 100 samples, or at 200 samples; a 1 s window with fewer than 100 is discarded. At the
/// close: `latency` = (successes' + failures' latency) / successes; `min_latency` takes it when
/// lower, through an EMA of factor 0.1; `max_qps` = successes per second when higher, else an
/// EMA of factor 0.01. A window of failures only halves the limit. Every 25–50 s the no-load
/// latency is measured again: the limit drops to `0.9 × max_qps × min_latency`, samples are
/// ignored for twice the latency, and `min_latency` restarts. Starts at 40.
#[derive(Debug, Clone)]
pub struct Brpc {
    limit: usize,
    max: usize,
    window_start: Option<u64>,
    succ_count: u32,
    failed_count: u32,
    succ_s: f64,
    failed_s: f64,
    total_succ: u64,
    last_sampling: Option<u64>,
    min_latency: Option<f64>,
    max_qps: Option<f64>,
    remeasure_at: u64,
    reset_latency_at: Option<u64>,
    rng: fastrand::Rng,
}

impl Brpc {
    const ALPHA: f64 = 0.3;
    const MIN_CONCURRENCY: usize = 9;
    const SAMPLING_INTERVAL: f64 = 0.1e-3;
    const WINDOW: f64 = 1.0;
    const MIN_SAMPLES: u32 = 100;
    const MAX_SAMPLES: u32 = 200;
    const EMA: f64 = 0.1;
    const REMEASURE_INTERVAL: f64 = 50.0;
    const REDUCE_WHILE_REMEASURE: f64 = 0.9;
    const FAIL_PUNISH: f64 = 1.0;

    /// The limiter at `initial`, capped at `max`.
    pub fn new(initial: usize, max: usize, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let remeasure_at = Self::next_reset(0, &mut rng);
        Self {
            limit: initial.clamp(1, max.max(1)),
            max,
            window_start: None,
            succ_count: 0,
            failed_count: 0,
            succ_s: 0.0,
            failed_s: 0.0,
            total_succ: 0,
            last_sampling: None,
            min_latency: None,
            max_qps: None,
            remeasure_at,
            reset_latency_at: None,
            rng,
        }
    }

    fn next_reset(now: u64, rng: &mut fastrand::Rng) -> u64 {
        let half = Self::REMEASURE_INTERVAL / 2.0;
        now + ((half + rng.f64() * half) * NS) as u64
    }

    fn reset_window(&mut self, now: u64) {
        self.total_succ = 0;
        self.window_start = Some(now);
        self.succ_count = 0;
        self.failed_count = 0;
        self.succ_s = 0.0;
        self.failed_s = 0.0;
    }

    fn adjust(&mut self, next: f64) {
        let next = if next.is_finite() {
            next.max(0.0) as usize
        } else {
            0
        };
        self.limit = next.max(Self::MIN_CONCURRENCY).min(self.max.max(1));
    }

    fn add_sample(&mut self, now: u64, latency: f64, ok: bool) {
        if let Some(reset_at) = self.reset_latency_at {
            if reset_at > now {
                // Waiting for the load to drain before the no-load latency is measured again.
                return;
            }
            self.min_latency = None;
            self.reset_latency_at = None;
            self.remeasure_at = Self::next_reset(now, &mut self.rng);
            self.reset_window(now);
        }
        let start = *self.window_start.get_or_insert(now);
        if ok {
            self.succ_count += 1;
            self.succ_s += latency;
        } else {
            self.failed_count += 1;
            self.failed_s += latency;
        }
        let samples = self.succ_count + self.failed_count;
        let age = (now - start) as f64 / NS;
        if samples < Self::MIN_SAMPLES {
            if age >= Self::WINDOW {
                self.reset_window(now);
            }
            return;
        }
        if age < Self::WINDOW && samples < Self::MAX_SAMPLES {
            return;
        }
        if self.succ_count > 0 {
            self.update(now, start);
        } else {
            // Every request failed.
            self.adjust((self.limit / 2) as f64);
        }
        self.reset_window(now);
    }

    fn update(&mut self, now: u64, start: u64) {
        let latency =
            (self.failed_s * Self::FAIL_PUNISH + self.succ_s) / f64::from(self.succ_count);
        let qps = self.total_succ as f64 / ((now - start) as f64 / NS).max(1e-9);
        let min_latency = match self.min_latency {
            Some(m) if latency < m => latency * Self::EMA + m * (1.0 - Self::EMA),
            Some(m) => m,
            None => latency,
        };
        self.min_latency = Some(min_latency);
        let max_qps = match self.max_qps {
            Some(m) if qps < m => qps * Self::EMA / 10.0 + m * (1.0 - Self::EMA / 10.0),
            _ => qps,
        };
        self.max_qps = Some(max_qps);
        if self.remeasure_at <= now {
            self.reset_latency_at = Some(now + (latency * 2.0 * NS) as u64);
            self.adjust((max_qps * min_latency * Self::REDUCE_WHILE_REMEASURE).ceil());
        } else {
            self.adjust(max_qps * ((2.0 + Self::ALPHA) * min_latency - latency));
        }
    }
}

impl Rule for Brpc {
    fn limit(&self) -> usize {
        self.limit
    }

    fn attempt(&mut self, now: u64, rtt_s: f64, ok: bool, _in_flight: usize) {
        if ok {
            self.total_succ += 1;
        }
        let due = self
            .last_sampling
            .is_none_or(|last| (now - last) as f64 / NS >= Self::SAMPLING_INTERVAL);
        if due {
            self.last_sampling = Some(now);
            self.add_sample(now, rtt_s, ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `n` successes of `latency` seconds spread evenly over one second from `t` (ns).
    fn window(b: &mut Brpc, t: u64, n: u64, latency: f64) -> u64 {
        for i in 1..=n {
            b.attempt(t + i * 1000 * MS / n, latency, true, 0);
        }
        t + 1000 * MS
    }

    #[test]
    fn should_allow_max_qps_times_min_latency_times_one_plus_alpha_at_no_load() {
        // 200 samples in 1 s at 50 ms: max_qps 200, min_latency = latency = 50 ms, so
        // 200 × (2.3 × 0.05 − 0.05) = 13.
        let mut b = Brpc::new(40, 1000, 1);
        window(&mut b, 0, 200, 0.05);
        assert_eq!(b.limit(), 13);
    }

    #[test]
    fn should_shrink_as_latency_rises_above_the_minimum() {
        // Then latency 1.2 × the minimum: 200 × (2.3 × 0.05 − 0.06) = 11.
        let mut b = Brpc::new(40, 1000, 1);
        let t = window(&mut b, 0, 200, 0.05);
        window(&mut b, t, 200, 0.06);
        assert_eq!(b.limit(), 11);
    }

    #[test]
    fn should_fall_to_its_minimum_when_latency_passes_2_3_times_the_minimum() {
        let mut b = Brpc::new(40, 1000, 1);
        let t = window(&mut b, 0, 200, 0.05);
        window(&mut b, t, 200, 0.2);
        assert_eq!(b.limit(), 9);
    }

    #[test]
    fn should_drop_to_nine_tenths_of_the_no_load_concurrency_to_remeasure() {
        // Every 25–50 s: the limit falls to 0.9 × max_qps × min_latency, samples are ignored
        // for twice the latency, then min_latency is measured afresh.
        let mut b = Brpc::new(40, 1000, 1);
        let mut t = 0;
        for _ in 0..60 {
            t = window(&mut b, t, 200, 0.05);
            if b.reset_latency_at.is_some() {
                break;
            }
        }
        assert!(
            b.reset_latency_at.is_some(),
            "a remeasure began within 60 s"
        );
        let (qps, min) = (b.max_qps.unwrap(), b.min_latency.unwrap());
        assert_eq!(b.limit(), ((qps * min * 0.9).ceil() as usize).max(9));
        // The next sample after the wait restarts min_latency.
        b.attempt(t + 200 * MS, 0.08, true, 0);
        assert_eq!(b.min_latency, None);
        assert!(b.reset_latency_at.is_none());
    }

    #[test]
    fn should_discard_a_window_with_too_few_samples() {
        let mut b = Brpc::new(40, 1000, 1);
        let t = window(&mut b, 0, 50, 0.05);
        window(&mut b, t, 50, 0.05);
        assert_eq!(b.limit(), 40);
    }
}
