//! The rules of both time scales. Each returns an [`Intent`]; `Controller::apply` carries it out.

use core::time::Duration;

use super::detector::{secs, Ewma};
use super::{Controller, Reason, Stress};
use crate::{LatencySummary, Signals, Usage};

/// One latency epoch, folded: its tasks (with what was carried over) and the references it is
/// judged against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Folded {
    pub(super) summary: LatencySummary,
    pub(super) tolerance: f64,
    // The lowest epoch p90 and the lowest epoch mean of the baseline window.
    pub(super) baseline: Option<Duration>,
    pub(super) floor: Option<Duration>,
    // The average of the epochs before this one.
    pub(super) prior: Option<Ewma>,
    // Tasks in flight when the epoch began, and its length (Little's law).
    pub(super) in_flight_start: usize,
    pub(super) in_flight_end: usize,
    pub(super) elapsed: Duration,
    // Tasks in flight too long, if enough to be stress.
    pub(super) overdue: Option<Stress>,
}

/// Which time scale wants a change: the machine cycle's changes keep the cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    Machine,
    Latency,
}

/// What a rule wants done; `Controller::apply` does it and builds the [`Reason`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Intent {
    /// Keep the limit.
    Hold(Reason),
    /// Cut to `to` for `stress`.
    Cut {
        to: usize,
        stress: Stress,
        path: Path,
    },
    /// Grow to `to`.
    Grow {
        to: usize,
        reason: Reason,
        path: Path,
    },
    /// Keep the limit, and end slow start here (latency is climbing: the knee is near).
    EndSlowStart(Reason),
    /// Drop to `min_limit` to re-measure the baseline.
    StartProbe,
    /// Restore the limit from before the probe (`restore`), with the baseline it measured.
    EndProbe {
        baseline: Option<Duration>,
        restore: usize,
        reason: Reason,
    },
    /// Machine stress during a probe: give it up and stay low.
    AbandonProbe(Stress),
    /// Keep the limit and take the epoch's latency as the new baseline and floor: at
    /// `min_limit` the latency stayed over its references, so they are stale.
    Rebase { baseline: Duration, floor: Duration },
}

// Tuning of the epoch detector (chosen on the scenarios in tests/data/scenarios, see
// ARCHITECTURE.md): a cut needs the mean at the EWMA + 2.5 σ (Vector's band, robust to jitter
// because σ measures it) and at least 5 % over the average (a constant link has σ ≈ 0); growth
// stops while the mean is over the average + 1 σ and 2 % over it; Little's law flags a queue
// when the in-flight tasks imply over 2 × the average latency.
const DEVIATIONS: f64 = 2.5;
const RISE_FLOOR: f64 = 0.05;
const CLIMB_FLOOR: f64 = 0.02;
const QUEUE_RATIO: f64 = 2.0;
// Growth waits while the tasks in flight imply over 1.3 × the average latency: the last change
// has not shown its effect (a doubling's tasks still running).
pub(super) const LAG_RATIO: f64 = 1.3;
// The floor rule: an epoch's mean over the lowest epoch mean of the baseline window by 10 % plus
// its noise reads as a queue (a knee's first requests), half that holds growth. Epochs of fewer
// tasks are too noisy for it.
const RISE_MIN: f64 = 0.1;
pub(super) const FLOOR_MIN_SAMPLES: u32 = 4;
// Little's law needs a few tasks in flight to say anything.
const QUEUE_MIN_IN_FLIGHT: usize = 4;

impl Controller {
    /// The machine cycle's rule.
    pub(super) fn machine_rule(&mut self, now: Duration, s: &Signals, usage: Usage) -> Intent {
        let c = &self.config;
        let limit = self.limit;
        let stress = self.machine_stress(s);
        self.machine_stress = stress;
        if let Some(stress) = stress {
            if self.probing.is_some() {
                return Intent::AbandonProbe(stress);
            }
            let to = self.cut(limit);
            return if to < limit {
                Intent::Cut {
                    to,
                    stress,
                    path: Path::Machine,
                }
            } else {
                Intent::Hold(Reason::AtMinLimit(stress))
            };
        }
        let latency_on = c.latency_tolerance.is_some();
        if let Some(summary) = s.latency.filter(|_| latency_on) {
            return self.epoch_rule(now, &summary, usage);
        }
        if let Some(p) = self.probing {
            return Intent::Hold(Reason::Probing { restore: p.restore });
        }
        if !s.has_machine_health() {
            return Intent::Hold(Reason::NoSignals);
        }
        if latency_on && self.paced_until.is_some_and(|t| now < t) {
            return Intent::Hold(Reason::Paced);
        }
        let in_flight = usage.in_flight;
        // "≥ 80 %" and "≥ 50 %" in integers that cannot overflow, even at usize::MAX:
        // in_flight ≥ 0.8 × limit ⟺ in_flight ≥ limit − limit / 5 (rounded so that 16 of 20 is
        // exactly 80 %).
        let busy = in_flight >= limit - limit / 5 || usage.waiting > 0;
        let backlog = s
            .kafka_lag
            .filter(|&lag| lag > 0 && in_flight >= limit - limit / 2);
        if !busy && backlog.is_none() {
            return Intent::Hold(Reason::Idle { in_flight, limit });
        }
        if limit < self.ssthresh && limit < c.max_limit {
            return self.double(in_flight, Path::Machine);
        }
        let headroom = match (s.cpu_percent, s.memory_percent) {
            (Some(cpu), Some(mem))
                if cpu < c.cpu_increase_threshold && mem < c.memory_increase_threshold =>
            {
                Some((cpu, mem))
            }
            _ => None,
        };
        let step = if headroom.is_some() {
            c.increase_step.saturating_mul(2)
        } else {
            c.increase_step
        };
        let to = limit.saturating_add(step).min(c.max_limit);
        if to <= limit {
            return Intent::Hold(Reason::AtMaxLimit);
        }
        let reason = match (headroom, backlog) {
            (Some((cpu_percent, memory_percent)), _) => Reason::Headroom {
                in_flight,
                limit,
                cpu_percent,
                memory_percent,
            },
            (None, Some(kafka_lag)) if !busy => Reason::Backlog {
                kafka_lag,
                in_flight,
                limit,
            },
            _ => Reason::Busy { in_flight, limit },
        };
        Intent::Grow {
            to,
            reason,
            path: Path::Machine,
        }
    }

    /// Doubles the limit, capped by the slow-start ceiling and `max_limit`.
    pub(super) fn double(&self, in_flight: usize, path: Path) -> Intent {
        let limit = self.limit;
        let ceiling = self.ssthresh.min(self.config.max_limit);
        let to = limit.saturating_mul(2).min(ceiling).max(limit + 1);
        Intent::Grow {
            to,
            reason: Reason::SlowStart {
                in_flight,
                limit,
                ceiling,
            },
            path,
        }
    }

    /// The epoch's latency stress, in the order back-pressure, p90 over tolerance, a jump of the
    /// mean, a queue by Little's law.
    pub(super) fn latency_stress(&self, e: &Folded) -> Option<Stress> {
        let Folded {
            ref summary,
            tolerance,
            baseline,
            floor,
            prior,
            overdue,
            ..
        } = *e;
        let c = &self.config;
        let rate = summary.error_rate();
        if rate > c.latency_max_error_rate {
            return Some(Stress::Errors {
                rate,
                threshold: c.latency_max_error_rate,
            });
        }
        if overdue.is_some() {
            return overdue;
        }
        if !resolved(summary) {
            return None;
        }
        // Nothing under one tick of the clock is evidence (a reference of 0 included), nor a
        // rise under `latency_min_rise`.
        let tick = self.resolution;
        let grain = self.grain();
        if let Some(base) = baseline {
            let base_s = base.max(tick).max(Duration::from_micros(1)).as_secs_f64();
            // The epoch's own p90 must be over by more than its noise too.
            let noise = 1.0 + 2.0 * p90_standard_error(summary);
            if summary.p90.as_secs_f64() / base_s > tolerance * noise
                && summary.p90 > base.saturating_add(grain)
            {
                return Some(Stress::Latency {
                    latency: summary.p90,
                    baseline: base,
                    tolerance,
                });
            }
        }
        let mean = summary.mean.as_secs_f64();
        if let Some(floor) = floor.filter(|_| summary.samples >= FLOOR_MIN_SAMPLES) {
            let f = floor.as_secs_f64();
            let threshold = (f * (1.0 + rise(summary))).max(f + grain.as_secs_f64());
            if mean > threshold {
                return Some(Stress::Queued {
                    latency: summary.mean,
                    floor,
                    threshold: secs(threshold),
                });
            }
        }
        let a = prior?;
        let floor_rise = RISE_FLOOR + 3.0 * standard_error(summary);
        let threshold = (a.mean + DEVIATIONS * a.deviation())
            .max(a.mean * (1.0 + floor_rise))
            .max(a.mean + grain.as_secs_f64());
        if mean >= threshold {
            return Some(Stress::Rising {
                latency: summary.mean,
                average: secs(a.mean),
                threshold: secs(threshold),
            });
        }
        let queued = |(implied, average): &(f64, f64)| {
            *implied > (QUEUE_RATIO * average).max(average + grain.as_secs_f64())
        };
        if let Some((implied, average)) = little(e).filter(queued) {
            return Some(Stress::Queueing {
                implied: secs(implied),
                average: secs(average),
            });
        }
        None
    }

    /// The first present machine signal over its threshold, in the order CPU, memory, queue, lag.
    pub(super) fn machine_stress(&self, s: &Signals) -> Option<Stress> {
        let c = &self.config;
        if let Some(percent) = s.cpu_percent.filter(|&v| v > c.cpu_threshold) {
            return Some(Stress::Cpu {
                percent,
                threshold: c.cpu_threshold,
            });
        }
        if let Some(percent) = s.memory_percent.filter(|&v| v > c.memory_threshold) {
            return Some(Stress::Memory {
                percent,
                threshold: c.memory_threshold,
            });
        }
        if let Some(depth) = s.queue_depth.filter(|&v| v > c.queue_threshold) {
            return Some(Stress::Queue {
                depth,
                threshold: c.queue_threshold,
            });
        }
        if let Some(lag) = s.event_loop_lag.filter(|&v| v > c.event_loop_lag_threshold) {
            return Some(Stress::EventLoopLag {
                lag,
                threshold: c.event_loop_lag_threshold,
            });
        }
        None
    }

    /// The smallest rise of latency that counts as evidence of a queue: the clock's evident
    /// tick, and at least `latency_min_rise` (a rise under one scheduler hand-off is not a queue
    /// a cut can shorten).
    pub(super) fn grain(&self) -> Duration {
        self.resolution.max(self.config.latency_min_rise)
    }

    pub(super) fn probe_enabled(&self) -> bool {
        self.config.latency_probe_interval.is_some()
            && self.config.latency_tolerance.is_some()
            && self.config.min_limit < self.config.max_limit
    }
}

/// How far over the floor an epoch's mean may be before it reads as a queue: [`RISE_MIN`] plus
/// three standard errors of the mean, the per-task spread estimated from the epoch's p50 and
/// p90 (a normal's p90 is 1.28 σ over its median).
pub(super) fn rise(summary: &LatencySummary) -> f64 {
    RISE_MIN + 3.0 * standard_error(summary)
}

/// The epoch mean's standard error relative to it: the per-task spread estimated from the p50
/// and p90 (a normal's p90 is 1.28 σ over its median), over √n.
pub(super) fn standard_error(summary: &LatencySummary) -> f64 {
    let mean = summary.mean.as_secs_f64();
    if mean <= 0.0 {
        return 0.0;
    }
    let spread = (summary.p90.as_secs_f64() - summary.p50.as_secs_f64()).max(0.0) / 1.2816;
    let n = f64::from(summary.samples.max(1));
    spread / (mean * super::detector::sqrt(n))
}

/// The epoch p90's standard error relative to it: a normal's p90 estimated from n samples
/// varies by `sqrt(0.9 × 0.1 / n) / φ(1.2816)` = 1.709 σ / √n, σ estimated as in
/// [`standard_error`].
pub(super) fn p90_standard_error(summary: &LatencySummary) -> f64 {
    let p90 = summary.p90.as_secs_f64();
    if p90 <= 0.0 {
        return 0.0;
    }
    let spread = (p90 - summary.p50.as_secs_f64()).max(0.0) / 1.2816;
    let n = f64::from(summary.samples.max(1));
    1.709 * spread / (p90 * super::detector::sqrt(n))
}

/// The mean is over the average by more than one deviation and [`CLIMB_FLOOR`].
/// How far latency is over its reference, as the cut factor Gradient takes
/// (`reference / observed`, in (0, 1]); 1 for a stress without one.
pub(super) fn gradient(stress: &Stress) -> f64 {
    let ratio = |reference: Duration, observed: Duration| {
        let observed = observed.as_secs_f64();
        if observed > 0.0 {
            (reference.as_secs_f64() / observed).min(1.0)
        } else {
            1.0
        }
    };
    match *stress {
        Stress::Latency {
            latency,
            baseline,
            tolerance,
        } => ratio(baseline.mul_f64(tolerance), latency),
        Stress::Rising {
            latency, average, ..
        } => ratio(average, latency),
        Stress::Queued { latency, floor, .. } => ratio(floor, latency),
        Stress::Queueing { implied, average } => ratio(average, implied),
        _ => 1.0,
    }
}

/// Little's law over the epoch: the latency per task that the tasks in flight imply (in flight ×
/// the epoch's length ÷ the tasks that ended in it), and the average of past epochs, in seconds.
///
/// An epoch about one average long takes the count at its start, which stands for the epoch.
/// A longer one (it waited for tasks: few ended, as when a queue or hung tasks hold the slots)
/// takes the lower of the counts at its start and its end, so a level held throughout counts and
/// a burst at one end does not. Only below the 1,024 tasks an epoch where a manager starts timing
/// one task in 2^k (the count would then be short).
pub(super) fn little(e: &Folded) -> Option<(f64, f64)> {
    let a = e.prior?;
    let total = e.summary.total();
    let elapsed = e.elapsed.as_secs_f64();
    let in_flight = if elapsed > 2.0 * a.mean {
        e.in_flight_start.min(e.in_flight_end)
    } else {
        e.in_flight_start
    };
    if !(QUEUE_MIN_IN_FLIGHT..=1024).contains(&in_flight)
        || a.mean <= 0.0
        || total == 0
        || elapsed > 4.0 * a.mean
    {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "counts far below 2^52; a ratio needs no exactness"
    )]
    let implied = in_flight as f64 * elapsed / total as f64;
    Some((implied, a.mean))
}

/// `grain` is the smallest rise that counts ([`Controller::grain`]): a rise under it is no climb.
pub(super) fn climbing(mean: f64, a: &Ewma, grain: f64) -> bool {
    mean > (a.mean + a.deviation().max(grain)).max(a.mean * (1.0 + CLIMB_FLOOR))
}

/// The epoch has successes and the clock resolved its median task: a median of 0 (a coarse
/// clock, a cache hit) says nothing about a queue.
pub(super) fn resolved(summary: &LatencySummary) -> bool {
    summary.samples > 0 && !summary.p50.is_zero()
}
