//! Vector's adaptive request concurrency rule.

use super::{Rule, NS};

/// Vector's adaptive request concurrency rule, as published (its `adaptive_concurrency`
/// controller, default settings).
///
/// Per response it averages the attempts' RTTs of the current epoch; an epoch lasts one mean
/// RTT of the past. At the end of an epoch: **+1** if the limit was reached at some admission,
/// there was no back-pressure and the epoch's mean RTT is at most the EWMA (α 0.4) of past
/// epochs; **× 0.9** (floor, at least 1) on back-pressure or a mean at least the EWMA plus 2.5
/// standard deviations. Starts at 1 (Vector's `initial_concurrency` default).
#[derive(Debug, Clone)]
pub struct Vector {
    limit: usize,
    max: usize,
    past: Option<(f64, f64)>,
    next_update: u64,
    sum: f64,
    count: u64,
    back_pressure: bool,
    reached: bool,
}

impl Vector {
    const ALPHA: f64 = 0.4;
    const DEVIATION_SCALE: f64 = 2.5;
    const DECREASE: f64 = 0.9;

    /// The rule at `initial`, growing up to `max`.
    pub fn new(initial: usize, max: usize) -> Self {
        Self {
            limit: initial.clamp(1, max.max(1)),
            max,
            past: None,
            next_update: 0,
            sum: 0.0,
            count: 0,
            back_pressure: false,
            reached: false,
        }
    }
}

impl Rule for Vector {
    fn limit(&self) -> usize {
        self.limit
    }

    fn admitted(&mut self, _now: u64, in_flight: usize) {
        if in_flight >= self.limit {
            self.reached = true;
        }
    }

    fn attempt(&mut self, _now: u64, rtt_s: f64, ok: bool, _in_flight: usize) {
        // A refused or timed-out attempt is back-pressure and carries no RTT.
        self.back_pressure |= !ok;
        if ok {
            self.sum += rtt_s;
            self.count += 1;
        }
    }

    fn task_done(&mut self, now: u64) {
        // Vector's own test rounds to the microsecond so that a constant link reads constant.
        let current = (self.count > 0).then(|| (self.sum / self.count as f64 * 1e6).round() / 1e6);
        let Some((mean, var)) = self.past else {
            if let Some(c) = current {
                self.past = Some((c, 0.0));
                self.next_update = now + (c * NS) as u64;
            }
            return;
        };
        if now < self.next_update {
            return;
        }
        let threshold = var.sqrt() * Self::DEVIATION_SCALE;
        if self.limit < self.max
            && self.reached
            && !self.back_pressure
            && current.is_some_and(|c| c <= mean)
        {
            self.limit += 1;
        } else if self.limit > 1
            && (self.back_pressure || current.unwrap_or(0.0) >= mean + threshold)
        {
            self.limit = ((self.limit as f64 * Self::DECREASE) as usize).max(1);
        }
        let (mut mean, mut var) = (mean, var);
        if let Some(c) = current {
            let diff = c - mean;
            let incr = Self::ALPHA * diff;
            mean += incr;
            var = (1.0 - Self::ALPHA) * (var + diff * incr);
            self.past = Some((mean, var));
        }
        self.next_update = now + (mean * NS) as u64;
        self.sum = 0.0;
        self.count = 0;
        self.back_pressure = false;
        self.reached = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One epoch of `n` tasks at `rtt` seconds, each admitted at the limit; returns the time after.
    fn epoch(v: &mut Vector, t: u64, rtt: f64, ok: bool) -> u64 {
        let t = t + (rtt * NS) as u64;
        let limit = v.limit();
        v.admitted(t, limit);
        v.attempt(t, rtt, ok, limit);
        v.task_done(t);
        t
    }

    #[test]
    fn should_add_one_per_epoch_on_a_constant_link() {
        // Vector's "constant link" scenario: the limit climbs by one per round trip.
        let mut v = Vector::new(1, 200);
        let mut t = 0;
        for _ in 0..11 {
            t = epoch(&mut v, t, 0.1, true);
        }
        assert_eq!(v.limit(), 11);
    }

    #[test]
    fn should_cut_by_a_tenth_on_back_pressure() {
        let mut v = Vector::new(20, 200);
        let mut t = epoch(&mut v, 0, 0.1, true);
        t = epoch(&mut v, t, 0.1, true);
        assert_eq!(v.limit(), 21);
        epoch(&mut v, t, 0.1, false);
        // floor(21 × 0.9) = 18
        assert_eq!(v.limit(), 18);
    }
}
