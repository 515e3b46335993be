//! The latency epoch, in three steps: [`Controller::fold_epoch`] folds the tasks' outcomes into
//! the epoch and the latency references; [`Controller::probe_step`] runs a scheduled baseline
//! probe; [`Controller::epoch_intent`] is the rule, a pure function of the folded epoch and the
//! controller's state.

use core::time::Duration;

use super::detector::{secs, Ewma};
use super::rules::{
    climbing, gradient, little, p90_standard_error, resolved, rise, standard_error, Folded, Intent,
    Path, FLOOR_MIN_SAMPLES, LAG_RATIO,
};
use super::{Controller, Reason, Stress, MIN_EPOCH};
use crate::{LatencySummary, Usage};

// A cut follows Gradient's `reference / observed` with twice the headroom: a rise of 30 % keeps
// the gentle `latency_decrease_factor` (the knee's sawtooth), 3 × over cuts by a third, and 4 ×
// or more by `decrease_factor`.
const GRADIENT_HEADROOM: f64 = 2.0;
const GRADIENT_SAMPLES: u32 = 10;
// Epochs at `min_limit` under a reference's stress before the references count as stale.
const STALE_EPOCHS: u32 = 8;
// An epoch enters the floor's window with this many successes, or with fewer (the floor rule's
// minimum, or less at a low limit) while the means agree to STEADY. At 4, an epoch of 4 whose
// p50–p90 spread happened to be small entered 11 % under a 50 ms link (`errors_above_knee`:
// the floor rule then cut a steady limit of 30 to 9).
const FLOOR_WINDOW_SAMPLES: u32 = 5;
// Epochs too small for the floor rule still set the floor while the means agree to 5 %.
const STEADY: f64 = 0.05;

/// `x^y` for x in (0, 1] and y in [0, 1] without `std`: exp(y × ln x) by the bits of the
/// exponent and a short series; plenty for a cut factor.
fn powf(x: f64, y: f64) -> f64 {
    if x <= 0.0 || y <= 0.0 {
        return 1.0;
    }
    // x = m × 2^e with m in [1, 2): ln x = ln m + e ln 2, ln m by atanh's series.
    let bits = x.to_bits();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "an f64 exponent fits an i32"
    )]
    let e = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let ln_m =
        2.0 * t * (1.0 + t2 / 3.0 + t2 * t2 / 5.0 + t2 * t2 * t2 / 7.0 + t2 * t2 * t2 * t2 / 9.0);
    let ln = ln_m + f64::from(e) * core::f64::consts::LN_2;
    // exp(z) for z ≤ 0: halve until small, Taylor, square back.
    let mut z = y * ln;
    let mut halvings = 0;
    while z < -0.0625 {
        z /= 2.0;
        halvings += 1;
    }
    let mut r = 1.0 + z * (1.0 + z / 2.0 * (1.0 + z / 3.0 * (1.0 + z / 4.0 * (1.0 + z / 5.0))));
    for _ in 0..halvings {
        r *= r;
    }
    r
}

impl Controller {
    /// The latency epoch's rule: fold the epoch, step a probe, then judge.
    pub(super) fn epoch_rule(
        &mut self,
        now: Duration,
        fresh: &LatencySummary,
        usage: Usage,
    ) -> Intent {
        let Some(tolerance) = self.config.latency_tolerance else {
            self.next_epoch = now.saturating_add(self.config.adjustment_interval);
            return Intent::Hold(Reason::NoSignals);
        };
        let epoch = match self.fold_epoch(now, fresh, usage, tolerance) {
            Ok(epoch) => epoch,
            Err(gathering) => return Intent::Hold(gathering),
        };
        if let Some(intent) = self.probe_step(now, &epoch.summary) {
            return intent;
        }
        self.epoch_intent(now, &epoch, usage)
    }

    /// Adds `fresh` to what was carried over. With too few tasks the epoch is carried over again
    /// (`Err` with [`Reason::Gathering`]); otherwise it closes: the references take it in and
    /// the next epoch is scheduled one average latency on.
    fn fold_epoch(
        &mut self,
        now: Duration,
        fresh: &LatencySummary,
        usage: Usage,
        tolerance: f64,
    ) -> Result<Folded, Reason> {
        let interval = self.config.adjustment_interval;
        // Every call counts its admissions (carried over or not): the finer the steps, the
        // tighter the bound on the tasks in flight too long.
        self.admissions.push(now, fresh.admitted);
        if let Some((stuck, _)) = self.overdue_count(now, usage) {
            // Those overdue at the last cut that have ended since are no longer its reason.
            self.admissions.at_cut = self.admissions.at_cut.min(stuck);
        }
        let summary = match self.pending.take() {
            Some(p) => p.merge(fresh),
            None => *fresh,
        };
        let tasks = summary.total();
        // At a low limit a round trip brings few tasks: one epoch is at least one round trip's
        // worth (limit / 2) or `latency_min_samples`, whichever is less.
        let needed = u64::from(self.epoch_tasks());
        let elapsed = now.saturating_sub(self.epoch_start);
        // Tasks stuck in flight close the epoch at once: they may never bring it enough tasks.
        let overdue = self.overdue(now, usage);
        if tasks < needed && overdue.is_none() {
            self.pending = Some(summary);
            // Look again after as long again (at most one interval): an idle program costs one
            // wake-up per interval, a slow downstream is waited for.
            let wait = elapsed.clamp(MIN_EPOCH, interval.max(MIN_EPOCH));
            self.next_epoch = now.saturating_add(wait);
            return Err(Reason::Gathering { tasks, needed });
        }
        let in_flight_start = self.epoch_in_flight;
        self.epochs_since_change = self.epochs_since_change.saturating_add(1);
        self.epoch_start = now;
        self.epoch_in_flight = usage.in_flight;
        self.paced_until = Some(now.saturating_add(interval.saturating_mul(2)));
        let prior = self.average;
        self.update_references(now, &summary);
        let average = self.average.map_or(0.0, |a| a.mean);
        self.next_epoch =
            now.saturating_add(secs(average).clamp(MIN_EPOCH, interval.max(MIN_EPOCH)));
        let baseline = self.baseline.get(now);
        self.last_baseline = baseline;
        Ok(Folded {
            summary,
            tolerance,
            baseline,
            floor: self.floor.get(now),
            prior,
            in_flight_start,
            in_flight_end: usage.in_flight,
            elapsed,
            overdue,
        })
    }

    /// The closed epoch's successes update the baseline (its p90), the floor (its mean) and the
    /// average.
    fn update_references(&mut self, now: Duration, summary: &LatencySummary) {
        if summary.samples == 0 {
            return;
        }
        if summary.p50.is_zero() {
            // The clock read 0 for the median task: its tick is at most the shortest nonzero
            // percentile (a coarse clock, a millisecond header, or tasks faster than the clock).
            let tick = [summary.p90, summary.p99]
                .into_iter()
                .filter(|d| !d.is_zero())
                .min();
            if let Some(tick) = tick {
                self.resolution = match self.resolution {
                    Duration::ZERO => tick,
                    known => known.min(tick),
                };
            }
        }
        let mean = summary.mean.as_secs_f64();
        // A handful of samples gives a p90 or a minimum far below the truth: the references
        // take epochs of `latency_min_samples` successes only.
        // The lowest of many noisy p90s is biased low as the lowest mean is: each is stored
        // two of its standard errors up (on a high-variance link, Erlang 2, a p90 of 10 tasks
        // varies by a quarter; the lowest of a minute's epochs was half the true p90, and 1.5 ×
        // of it read as stress at the knee's own latency).
        if summary.samples >= self.config.latency_min_samples {
            let unbiased = summary.p90.as_secs_f64() * (1.0 + 2.0 * p90_standard_error(summary));
            self.baseline.insert(now, secs(unbiased));
        }
        // The lowest of many noisy means is biased low by about two standard errors: store
        // each one two standard errors up, so the floor is the unloaded mean.
        // An epoch of fewer successes (a limit under 8) says nothing of its own noise: it counts
        // only while the epochs so far agree (their deviation within STEADY of their average),
        // as on a link of constant latency, never on a high-variance one.
        let steady = self.average.is_some_and(|a| {
            a.deviation() <= STEADY * a.mean && (a.mean - mean).abs() <= STEADY * a.mean
        });
        if summary.samples >= FLOOR_WINDOW_SAMPLES
            || (summary.samples >= self.floor_samples() && steady)
        {
            let unbiased = mean * (1.0 + 2.0 * standard_error(summary));
            self.floor.insert(now, secs(unbiased));
        }
        self.average = Some(self.average.map_or(Ewma::new(mean), |mut a| {
            a.update(mean);
            a
        }));
    }

    /// The tasks that close an epoch: one round trip's worth (limit / 2) or
    /// `latency_min_samples`, whichever is less, at least one.
    fn epoch_tasks(&self) -> u32 {
        let round_trip = u32::try_from(self.limit / 2).unwrap_or(u32::MAX).max(1);
        self.config.latency_min_samples.min(round_trip)
    }

    /// The successes an epoch needs for the floor rule: [`FLOOR_MIN_SAMPLES`], or a whole
    /// epoch's worth at a limit too low to bring that many (at limits 1–7 the floor is all
    /// the evidence of a queue a linear link gives).
    pub(super) fn floor_samples(&self) -> u32 {
        FLOOR_MIN_SAMPLES.min(self.epoch_tasks())
    }

    /// A baseline probe in progress measures and decides alone: it holds at `min_limit`, then
    /// restores the limit. Otherwise schedules the next probe if none is.
    fn probe_step(&mut self, now: Duration, summary: &LatencySummary) -> Option<Intent> {
        let Some(p) = &mut self.probing else {
            if self.next_probe.is_none() && self.probe_enabled() {
                self.next_probe = Some(now + self.rng_interval());
            }
            return None;
        };
        p.epochs += 1;
        // The first epoch after the drop still holds tasks admitted at the old limit.
        if p.epochs >= 2 && summary.samples > 0 {
            p.best = Some(p.best.map_or(summary.p90, |b| b.min(summary.p90)));
        }
        let waited = now.saturating_sub(p.started) >= self.config.cooldown;
        Some(if waited && (p.best.is_some() || p.epochs > 8) {
            Intent::EndProbe {
                baseline: p.best,
                restore: p.restore,
                reason: Reason::ProbeDone {
                    restored: p.restore,
                    baseline: p.best,
                },
            }
        } else {
            Intent::Hold(Reason::Probing { restore: p.restore })
        })
    }

    /// The rule over a folded epoch (see the type's docs): stress cuts, an unreached limit or a
    /// climbing latency holds, otherwise growth. Pure: it reads the state and changes nothing.
    fn epoch_intent(&self, now: Duration, e: &Folded, usage: Usage) -> Intent {
        let limit = self.limit;
        let in_flight = usage.in_flight;
        if let Some(stress) = self.latency_stress(e) {
            if let Some(rebase) = self.stale_references(e, stress) {
                return rebase;
            }
            // While the last cut drains, stress neither cuts again nor lets the limit grow.
            return if now < self.cut_quiet_until || self.draining(now, usage) {
                Intent::Hold(Reason::Stressed(stress))
            } else {
                self.latency_cut(e, stress)
            };
        }
        let reached = e.summary.limit_reached || usage.waiting > 0 || in_flight >= limit;
        if !reached {
            return Intent::Hold(Reason::Idle { in_flight, limit });
        }
        if let Some(stress) = self.machine_stress {
            // Machine stress vetoes growth; its own cycle cuts.
            return Intent::Hold(Reason::Stressed(stress));
        }
        if self.probe_enabled()
            && limit > self.config.min_limit
            && self.next_probe.is_some_and(|t| now >= t)
        {
            return Intent::StartProbe;
        }
        let grain = self.grain().as_secs_f64();
        let lagging = little(e).filter(|&(i, a)| i > (LAG_RATIO * a).max(a + grain));
        if let Some((implied, average)) = lagging.filter(|_| limit < self.ssthresh) {
            // Slow start doubles on evidence only: more in flight than the completions account
            // for means the last doubling has not shown its effect (tasks stuck, or a queue
            // starting).
            return Intent::Hold(Reason::Lagging {
                implied: secs(implied),
                average: secs(average),
            });
        }
        if let Some(reason) = self.climb(e) {
            return if limit < self.ssthresh {
                Intent::EndSlowStart(reason)
            } else {
                Intent::Hold(reason)
            };
        }
        self.latency_growth(in_flight)
    }

    /// At `min_limit` for [`STALE_EPOCHS`] epochs, latency still over the references that cut
    /// it there: the downstream got slower (its latency leapt or rose, brpc's
    /// `latency_leap_raise`), no queue of ours is left to drain, and the references are stale.
    /// The epoch's latency becomes the baseline and floor (as a probe's would: the limit at its
    /// minimum is a probe), instead of holding `min_limit` until the window forgets them.
    fn stale_references(&self, e: &Folded, stress: Stress) -> Option<Intent> {
        let referenced = matches!(
            stress,
            Stress::Latency { .. } | Stress::Queued { .. } | Stress::Rising { .. }
        );
        let s = &e.summary;
        // Flat: the epoch's mean within the average's deviation (at least STEADY) of it. A
        // latency still falling is a queue draining (other sharers cutting too), not a new level.
        let mean = s.mean.as_secs_f64();
        let flat = e
            .prior
            .is_some_and(|a| (mean - a.mean).abs() <= a.deviation().max(STEADY * a.mean));
        if !referenced
            || !flat
            || self.limit > self.config.min_limit
            || self.epochs_since_change < STALE_EPOCHS
            || s.samples < self.floor_samples()
            || !resolved(s)
        {
            return None;
        }
        let baseline = s.p90.as_secs_f64() * (1.0 + 2.0 * p90_standard_error(s));
        let floor = s.mean.as_secs_f64() * (1.0 + 2.0 * standard_error(s));
        Some(Intent::Rebase {
            baseline: secs(baseline),
            floor: secs(floor),
        })
    }

    /// A latency cut: by `decrease_factor` until the knee is known, then by
    /// `latency_decrease_factor`.
    ///
    /// Deeper the further latency is over its reference (Gradient's `reference / observed`),
    /// never below `decrease_factor`: 41 × over cuts by `decrease_factor` at once, not by 0.9
    /// a dozen times.
    ///
    /// An epoch that began with more in flight than the limit holds tasks admitted before the
    /// last cut: their latency tells of the limit they were admitted at, so the cut is measured
    /// from that limit (an overshoot cut once is not cut again for its own slow tasks).
    fn latency_cut(&self, e: &Folded, stress: Stress) -> Intent {
        let samples = e.summary.samples;
        let floor = self.config.decrease_factor;
        let factor = if self.knee_known {
            self.config.latency_decrease_factor
        } else {
            floor
        };
        // A few samples' percentile is noise: the gradient counts in full from
        // GRADIENT_SAMPLES successes, and shrinks toward 1 below (ratio^(n / GRADIENT_SAMPLES)).
        let weight = f64::from(samples.min(GRADIENT_SAMPLES)) / f64::from(GRADIENT_SAMPLES);
        let gradient = powf(gradient(&stress), weight);
        let factor = factor.min((GRADIENT_HEADROOM * gradient).max(floor));
        let stale = e.in_flight_start > self.limit && matches!(stress, Stress::Latency { .. });
        let from = if stale {
            self.limit.max(self.limit_before_cut)
        } else {
            self.limit
        };
        let to = self.cut_by(from, factor).min(self.limit);
        if to < self.limit {
            Intent::Cut {
                to,
                stress,
                path: Path::Latency,
            }
        } else if stale {
            Intent::Hold(Reason::Stressed(stress))
        } else {
            Intent::Hold(Reason::AtMinLimit(stress))
        }
    }

    /// [`Reason::Climbing`] if the epoch's mean is above the floor by half the queue threshold,
    /// or above the average by one deviation: the knee is near.
    fn climb(&self, e: &Folded) -> Option<Reason> {
        let summary = &e.summary;
        let mean = summary.mean.as_secs_f64();
        let grain = self.grain().as_secs_f64();
        let warm = e.floor.is_some_and(|f| {
            let f = f.as_secs_f64();
            summary.samples >= self.floor_samples()
                && mean > (f * (1.0 + rise(summary) / 2.0)).max(f + grain)
        });
        let a = e
            .prior
            .filter(|a| resolved(summary) && (warm || climbing(mean, a, grain)))?;
        Some(Reason::Climbing {
            latency: summary.mean,
            average: secs(a.mean),
        })
    }

    /// Growth on a healthy epoch: slow start doubles once per round trip, then `increase_step`.
    fn latency_growth(&self, in_flight: usize) -> Intent {
        let limit = self.limit;
        let max = self.config.max_limit;
        if limit < self.ssthresh && limit < max {
            // Double per round trip, as TCP: this epoch's tasks were admitted before the last
            // doubling; the next one shows what it did.
            if self.epochs_since_change < 2 {
                return Intent::Hold(Reason::SlowStart {
                    in_flight,
                    limit,
                    ceiling: self.ssthresh,
                });
            }
            return self.double(in_flight, Path::Latency);
        }
        let step = self.config.increase_step;
        // Near a confirmed knee, one step per round trip: the first epoch after a step holds
        // tasks admitted before it, so stepping every epoch reaches the knee's latency a step
        // late, and each overshoot costs a cut and the epochs below the knee after it.
        let near = self.knee_confirmed
            && limit.saturating_add(step.saturating_mul(2)) >= self.limit_before_cut;
        if near && self.epochs_since_change < 2 {
            return Intent::Hold(Reason::Busy { in_flight, limit });
        }
        let to = limit.saturating_add(step).min(max);
        if to <= limit {
            return Intent::Hold(Reason::AtMaxLimit);
        }
        Intent::Grow {
            to,
            reason: Reason::Busy { in_flight, limit },
            path: Path::Latency,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn powf_is_close_enough() {
        for (x, y, want) in [
            (0.5, 1.0, 0.5),
            (0.25, 0.5, 0.5),
            (0.01, 0.5, 0.1),
            (1.0, 0.3, 1.0),
            (0.9, 0.0, 1.0),
            (1e-6, 1.0, 1e-6),
        ] {
            let got = super::powf(x, y);
            assert!(
                (got - want).abs() <= want * 1e-4,
                "{x}^{y} = {got}, not {want}"
            );
        }
    }
}
