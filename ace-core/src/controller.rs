//! The AIMD [`Controller`] and the [`Decision`] it returns.

use core::fmt;
use core::time::Duration;

use crate::{AimdConfig, ConfigError, LatencySummary, Signals, Usage};

/// The AIMD controller: pure decision logic, no clock, no I/O.
///
/// Each call to [`decide`](Self::decide) takes the time, one snapshot of signals and the usage of
/// the limit, and returns a [`Decision`]. The rules, in order:
///
/// 1. **Stress → decrease.** If any present health signal is over its threshold (`cpu_percent >
///    cpu_threshold`, `memory_percent > memory_threshold`, `queue_depth > queue_threshold`,
///    `event_loop_lag > event_loop_lag_threshold`, the cycle's task error rate >
///    `latency_max_error_rate`, or its p90 latency > `latency_tolerance` × the baseline), the
///    limit becomes `max(min_limit, floor(limit × factor))`. The factor is `decrease_factor`
///    (0.5) for machine stress, and for latency and error stress until a first cut by
///    `decrease_factor` has happened (typically the one that ends the cold-start slow start: it may
///    have overshot by 2 ×, and a deep cut unloads a downstream whose baseline was measured
///    overloaded). After that, latency and error stress cut by `latency_decrease_factor` (0.7):
///    the sawtooth stays near the knee instead of spending half its time far below it.
/// 2. **No health signal → hold** (fail-open: monitoring that fails never stops or shrinks work).
/// 3. **Healthy but unused → hold.** The limit grows only when it is really used: at least 80 % of
///    it in flight, or tasks waiting, or (Kafka lag is demand) a positive `kafka_lag` with at least
///    50 % in flight. An idle program's limit never creeps up.
/// 4. **Slow start.** Healthy, used and below the slow-start ceiling → **double** the limit
///    (capped by the ceiling). The ceiling starts at `max_limit` (cold start); the first cut of
///    each run of cuts sets it to `max(level cut to, floor(0.85 × W_max))`, W_max being the limit
///    where that stress struck (fast recovery, as CUBIC remembers W_max): after a cut the limit
///    doubles back to just under where the trouble started, then grows additively. Slow start
///    also ends, without a cut, as soon as the p90 latency exceeds half the
///    tolerance (`1 + (latency_tolerance − 1) / 2` × baseline), as TCP's HyStart does.
///    `slow_start: false` turns it off.
/// 5. **Healthy and used → increase** by `increase_step`; by **twice `increase_step`** when there
///    is plenty of headroom (both `cpu_percent < cpu_increase_threshold` and
///    `memory_percent < memory_increase_threshold` are present and true, and the latency is not
///    climbing: p90 at most `1 + (latency_tolerance − 1) / 2` × the baseline; local CPU and
///    memory say nothing about a downstream).
/// 6. **Bounds** always hold (`min_limit ≤ limit ≤ max_limit`), and two changes of the limit are
///    never closer than `cooldown`; a change wanted during the cooldown becomes a hold that says so.
///    One exception: a cut for stress right after an increase is not deferred. Nothing else
///    changed in between, so the increase caused the stress; waiting out its cooldown would only
///    keep the system overloaded (p99 and goodput pay for it). The cut itself starts a full
///    cooldown, so the exception cannot repeat until the next increase.
///
/// # The latency baseline
///
/// The controller reads the cycle's [`LatencySummary`] (`Signals::latency`) and keeps the
/// baseline itself: the lowest cycle p90 seen in the last `latency_baseline_window`. A cycle
/// with fewer than `latency_min_samples` tasks is no signal. The minimum follows a downstream that
/// gets faster at once and one that gets slower after a window; it does not ratchet up with the
/// overload it measures, because every multiplicative cut unloads the downstream and so puts a
/// fresh unloaded cycle in the window. With `latency_probe_interval` set, the controller also
/// re-measures on purpose, as Envoy's gradient controller does: every interval (± 25 % jitter from
/// a seeded generator, see [`with_seed`](Self::with_seed)) it drops to `min_limit`, waits for the
/// cooldown and one clean cycle, takes that cycle's p90 as the baseline, and restores the limit.
///
/// ```
/// use ace_core::{Action, AimdConfig, Controller, Signals, Usage};
/// use core::time::Duration;
///
/// let mut c = Controller::new(AimdConfig::default())?;
/// let hot = Signals { cpu_percent: Some(95.0), ..Signals::default() };
/// let d = c.decide(Duration::ZERO, &hot, Usage { limit: 20, in_flight: 20, waiting: 3 });
/// assert_eq!(d.action, Action::Decrease);
/// assert_eq!((d.previous_limit, d.new_limit), (20, 10));
/// assert_eq!(d.reason.to_string(), "cpu 95.0% is over the 80.0% threshold");
/// # Ok::<(), ace_core::ConfigError>(())
/// ```
///
/// Latency as stress, with no machine signal at all:
///
/// ```
/// use ace_core::{Action, AimdConfig, Controller, LatencySummary, Signals, Usage};
/// use core::time::Duration;
///
/// let mut c = Controller::new(AimdConfig { cooldown: Duration::ZERO, ..AimdConfig::default() })?;
/// let cycle = |ms| Signals {
///     latency: Some(LatencySummary::uniform(Duration::from_millis(ms), 50, 0)),
///     ..Signals::default()
/// };
/// let busy = Usage { limit: 20, in_flight: 20, waiting: 5 };
/// // 10 ms is the baseline; the limit doubles (slow start).
/// assert_eq!(c.decide(Duration::from_secs(2), &cycle(10), busy).new_limit, 40);
/// // 40 ms is 4 × the baseline: cut by `decrease_factor`.
/// let d = c.decide(Duration::from_secs(4), &cycle(40), busy);
/// assert_eq!((d.action, d.new_limit), (Action::Decrease, 20));
/// assert_eq!(d.reason.to_string(), "p90 latency 40.0ms is over 1.5 × the 10.0ms baseline");
/// # Ok::<(), ace_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Controller {
    config: AimdConfig,
    limit: usize,
    last_change: Option<Duration>,
    baseline: Baseline,
    // The baseline read by the last decision, for logs.
    last_baseline: Option<Duration>,
    // Slow start doubles while `limit < ssthresh`; 0 when slow start is off.
    ssthresh: usize,
    // The last change was a decrease: the next cut continues a run and keeps `ssthresh`.
    cutting: bool,
    // The last change was an increase: a cut for stress may follow it at once.
    last_increase: bool,
    // A cut by `decrease_factor` has happened: latency cuts may now be gentle.
    knee_known: bool,
    next_probe: Option<Duration>,
    probing: Option<Probing>,
    rng: u64,
    ceiling: Option<crate::Ceiling>,
}

/// A baseline probe in progress.
#[derive(Debug, Clone, Copy)]
struct Probing {
    restore: usize,
    cycles: u32,
    best: Option<Duration>,
}

/// Slots in the baseline window: a windowed minimum kept in fixed memory.
const BASELINE_SLOTS: usize = 8;

/// The lowest cycle p90 of the last `window`, in [`BASELINE_SLOTS`] slots of `window / SLOTS`.
#[derive(Debug, Clone)]
struct Baseline {
    slot_nanos: u128,
    slots: [Option<(u128, Duration)>; BASELINE_SLOTS],
}

impl Baseline {
    fn new(window: Duration) -> Self {
        Self {
            slot_nanos: (window.as_nanos() / BASELINE_SLOTS as u128).max(1),
            slots: [None; BASELINE_SLOTS],
        }
    }

    fn slot(&self, now: Duration) -> u128 {
        now.as_nanos() / self.slot_nanos
    }

    fn insert(&mut self, now: Duration, p90: Duration) {
        let id = self.slot(now);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the remainder is below BASELINE_SLOTS"
        )]
        let entry = &mut self.slots[(id % BASELINE_SLOTS as u128) as usize];
        match entry {
            Some((slot, min)) if *slot == id => *min = (*min).min(p90),
            _ => *entry = Some((id, p90)),
        }
    }

    fn get(&self, now: Duration) -> Option<Duration> {
        let id = self.slot(now);
        self.slots
            .iter()
            .flatten()
            .filter(|(slot, _)| *slot <= id && id - *slot < BASELINE_SLOTS as u128)
            .map(|&(_, min)| min)
            .min()
    }

    fn reset(&mut self, now: Duration, p90: Duration) {
        self.slots = [None; BASELINE_SLOTS];
        self.insert(now, p90);
    }
}

/// Fast recovery: after the first cut of a run, slow start climbs back to this share of the limit
/// where the stress struck (W_max), then growth is additive: the sawtooth spends its time just
/// under the knee instead of half of it far below. 0.85 sits under the stress point of a knee
/// detected at 1.5 × the baseline latency, and is CUBIC's neighbourhood of W_max.
const RECOVERY: f64 = 0.85;

// A baseline under 1 µs is a rounding artefact of very short tasks: compare against at least this.
const BASELINE_FLOOR: Duration = Duration::from_micros(1);

/// The middle of the tolerance band, `1 + (tolerance − 1) / 2`: over it, latency is "warm".
fn warm_ratio(tolerance: f64) -> f64 {
    1.0 + (tolerance - 1.0) / 2.0
}

/// The cycle's usable latency reading: the summary and the baseline it is compared with.
#[derive(Debug, Clone, Copy)]
struct Reading {
    summary: LatencySummary,
    /// `None` when the cycle had enough tasks in all but failures (too few successes).
    baseline: Option<Duration>,
}

impl Reading {
    /// p90 / baseline, when both are known.
    fn ratio(&self) -> Option<f64> {
        let base = self.baseline?.max(BASELINE_FLOOR);
        (self.summary.samples > 0).then(|| self.summary.p90.as_secs_f64() / base.as_secs_f64())
    }
}

impl Controller {
    /// A controller starting at `config.initial_limit`.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`] if the config breaks a rule.
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            limit: config.initial_limit,
            last_change: None,
            baseline: Baseline::new(config.latency_baseline_window),
            last_baseline: None,
            ssthresh: if config.slow_start {
                config.max_limit
            } else {
                0
            },
            cutting: false,
            last_increase: false,
            knee_known: false,
            next_probe: None,
            probing: None,
            rng: 0x9E37_79B9_7F4A_7C15,
            ceiling: None,
            config,
        })
    }

    /// Seeds the generator of the baseline probe's jitter (deterministic: the core has no RNG).
    ///
    /// Give each controller that shares a downstream its own seed, so that their probes do not
    /// line up. Only matters with `latency_probe_interval` set.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        // xorshift needs a non-zero state; mix so that small seeds differ in every bit.
        self.rng = (seed ^ 0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .max(1);
        self
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The config this controller was built with.
    pub fn config(&self) -> &AimdConfig {
        &self.config
    }

    /// The time of the last change of the limit, if there was one.
    pub fn last_change(&self) -> Option<Duration> {
        self.last_change
    }

    /// The latency baseline the last decision compared with, if it had one.
    pub fn latency_baseline(&self) -> Option<Duration> {
        self.last_baseline
    }

    /// The ceiling slow start doubles up to, while the limit is below it; `None` once growth is
    /// additive (or with `slow_start: false`).
    pub fn slow_start_ceiling(&self) -> Option<usize> {
        (self.limit < self.ssthresh).then_some(self.ssthresh)
    }

    /// Sets (or with `None` lifts) a ceiling from outside, such as a fleet grant: from the next
    /// decision on, the limit never rises past it and is cut to it when it is lower, with
    /// [`Reason::FleetCap`]; the limit stays within `[min_limit, max_limit]`.
    pub fn set_ceiling(&mut self, ceiling: Option<crate::Ceiling>) {
        self.ceiling = ceiling;
    }

    /// The ceiling set by [`set_ceiling`](Self::set_ceiling), if any.
    pub fn ceiling(&self) -> Option<crate::Ceiling> {
        self.ceiling
    }

    /// True while a baseline probe holds the limit at `min_limit`.
    pub fn is_probing(&self) -> bool {
        self.probing.is_some()
    }

    /// Decides the next limit from one snapshot; see the type's docs for the rules.
    ///
    /// `now` is any monotonic time (only differences matter). `usage.in_flight` and
    /// `usage.waiting` measure demand; `usage.limit` is recorded, but the controller's own limit
    /// is the one it moves.
    pub fn decide(&mut self, now: Duration, signals: &Signals, usage: Usage) -> Decision {
        let previous = self.limit;
        let reading = self.read_latency(now, signals);
        self.last_baseline = reading.and_then(|r| r.baseline);
        // HyStart: latency is climbing, so the knee is near; stop doubling before it is hit.
        if self.is_warm(reading) && self.limit < self.ssthresh {
            self.ssthresh = self.limit;
        }
        if let Some(p) = &mut self.probing {
            p.cycles += 1;
            // The first cycle after the drop still holds tasks admitted at the old limit.
            if p.cycles >= 2 {
                if let Some(r) = reading.filter(|r| r.summary.samples > 0) {
                    p.best = Some(p.best.map_or(r.summary.p90, |b| b.min(r.summary.p90)));
                }
            }
        }
        if self.next_probe.is_none() && self.probe_enabled() {
            self.next_probe = Some(now + self.jittered_probe_interval());
        }

        let (wanted, reason) = self.rule(now, signals, usage, reading);
        let (action, new_limit, reason) = match wanted {
            None => (Action::Hold, previous, reason),
            Some((action, target)) => {
                let since = self.last_change.map(|t| now.saturating_sub(t));
                // An increase that caused stress is undone at once: waiting out its cooldown only
                // keeps the downstream overloaded (see the type's docs, rule 6).
                let skip = action == Action::Decrease
                    && self.last_increase
                    && matches!(reason, Reason::Stressed(_));
                match since {
                    Some(since) if since < self.config.cooldown && !skip => (
                        Action::Hold,
                        previous,
                        Reason::Cooldown {
                            wanted: action,
                            remaining: self.config.cooldown - since,
                        },
                    ),
                    _ => (action, target, reason),
                }
            }
        };
        let cap = self.ceiling.map_or(usize::MAX, |c| {
            c.grant.clamp(self.config.min_limit, self.config.max_limit)
        });
        let (action, new_limit, reason) =
            crate::ceiling::cap(self.ceiling, cap, previous, (action, new_limit, reason));
        self.after(now, action, previous, new_limit, &reason);
        Decision {
            at: now,
            action,
            previous_limit: previous,
            new_limit,
            reason,
            signals: *signals,
            usage,
        }
    }

    /// Updates the state that follows from what was decided: the limit, the slow-start ceiling,
    /// the probe.
    fn after(
        &mut self,
        now: Duration,
        action: Action,
        previous: usize,
        new_limit: usize,
        reason: &Reason,
    ) {
        let changed = new_limit != self.limit;
        if changed {
            self.limit = new_limit;
            self.last_change = Some(now);
            self.last_increase = action == Action::Increase;
        }
        match (action, reason) {
            (Action::Decrease, Reason::Probe { limit }) => {
                self.probing = Some(Probing {
                    restore: *limit,
                    cycles: 0,
                    best: None,
                });
            }
            (Action::Increase, Reason::ProbeDone { baseline, .. }) => {
                if let Some(b) = baseline {
                    self.baseline.reset(now, *b);
                }
                self.probing = None;
                self.next_probe = Some(now + self.jittered_probe_interval());
            }
            // A fleet grant is not a sign of stress: it leaves slow start and the knee alone.
            (_, Reason::FleetCap { .. }) => {}
            (Action::Decrease, _) => {
                if new_limit <= self.cut(previous) {
                    self.knee_known = true;
                }
                // The first cut of a run sets the ceiling that slow start climbs back to.
                // The first cut of a run remembers where the stress struck (W_max) and sets the
                // ceiling that slow start climbs back to: RECOVERY × W_max (fast recovery).
                if !self.cutting && self.config.slow_start {
                    self.ssthresh = new_limit.max(self.cut_by(previous, RECOVERY));
                }
                self.cutting = true;
            }
            (Action::Increase, _) => self.cutting = false,
            (Action::Hold, Reason::AtMinLimit(_)) if self.probing.is_some() => {
                // Stress during a probe: give the probe up, stay low, let slow start climb back.
                if let Some(p) = self.probing.take() {
                    if self.config.slow_start {
                        self.ssthresh = self.ssthresh.max(self.cut(p.restore));
                    }
                    self.cutting = true;
                    self.next_probe = Some(now + self.jittered_probe_interval());
                }
            }
            (Action::Hold, _) => {}
        }
    }

    /// The cycle's latency reading, if the latency signal is on and the cycle had enough tasks;
    /// feeds the baseline window.
    fn read_latency(&mut self, now: Duration, s: &Signals) -> Option<Reading> {
        self.config.latency_tolerance?;
        let summary = s
            .latency
            .filter(|l| l.total() >= u64::from(self.config.latency_min_samples))?;
        if summary.samples >= self.config.latency_min_samples {
            self.baseline.insert(now, summary.p90);
        }
        Some(Reading {
            summary,
            baseline: self.baseline.get(now),
        })
    }

    /// Latency is climbing: the p90 is over the middle of the tolerance band.
    fn is_warm(&self, reading: Option<Reading>) -> bool {
        match (
            reading.and_then(|r| r.ratio()),
            self.config.latency_tolerance,
        ) {
            (Some(ratio), Some(tolerance)) => ratio > warm_ratio(tolerance),
            _ => false,
        }
    }

    fn probe_enabled(&self) -> bool {
        self.config.latency_probe_interval.is_some()
            && self.config.latency_tolerance.is_some()
            && self.config.min_limit < self.config.max_limit
    }

    /// The probe interval with ± 25 % jitter from a xorshift64* generator.
    fn jittered_probe_interval(&mut self) -> Duration {
        let every = self.config.latency_probe_interval.unwrap_or_default();
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 bits fit an f64's mantissa exactly"
        )]
        let unit = bits as f64 / (1u64 << 53) as f64;
        every.mul_f64(0.75 + 0.5 * unit)
    }

    /// `max(min_limit, floor(limit × decrease_factor))`, never above `limit`.
    fn cut(&self, limit: usize) -> usize {
        self.cut_by(limit, self.config.decrease_factor)
    }

    fn cut_by(&self, limit: usize, factor: f64) -> usize {
        // floor, not round: with factor 0.9, round(2 × 0.9) = 2 would never decrease.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "limit ≤ max_limit and factor in (0, 1): the product fits and is ≥ 0"
        )]
        let cut = ((limit as f64) * factor) as usize;
        cut.max(self.config.min_limit).min(limit)
    }

    /// The rule that applies: the change it wants (if any) and why.
    fn rule(
        &self,
        now: Duration,
        s: &Signals,
        usage: Usage,
        reading: Option<Reading>,
    ) -> (Option<(Action, usize)>, Reason) {
        let c = &self.config;
        let limit = self.limit;
        if let Some(p) = self.probing {
            // A probe holds at min_limit; only machine stress ends it early (and keeps it low).
            if let Some(stress) = self.machine_stress(s) {
                return (None, Reason::AtMinLimit(stress));
            }
            // Give up after a few cycles without tasks to measure: restore, keep the baseline.
            let give_up = p.cycles > 8;
            return if p.best.is_some() || give_up {
                (
                    Some((Action::Increase, p.restore)),
                    Reason::ProbeDone {
                        restored: p.restore,
                        baseline: p.best,
                    },
                )
            } else {
                (None, Reason::Probing { restore: p.restore })
            };
        }
        if let Some(stress) = self.stress(s, reading) {
            // Every stress, latency included, cuts by the same factor: that is what makes
            // independent controllers sharing a downstream converge to fair shares, and what
            // unloads the downstream so that the baseline window sees a fresh unloaded cycle.
            // (A cut proportional to baseline / latency, as gradient controllers do, keeps a
            // lone controller ~6 % closer to its knee but never unloads a downstream that several
            // controllers overloaded from the start: their baselines stay inflated.)
            let factor = match stress {
                Stress::Latency { .. } | Stress::Errors { .. } if self.knee_known => {
                    c.latency_decrease_factor
                }
                _ => c.decrease_factor,
            };
            let target = self.cut_by(limit, factor);
            return if target < limit {
                (Some((Action::Decrease, target)), Reason::Stressed(stress))
            } else {
                (None, Reason::AtMinLimit(stress))
            };
        }
        let has_health = s.has_machine_health() || reading.is_some();
        if !has_health {
            return (None, Reason::NoSignals);
        }
        let in_flight = usage.in_flight;
        // Integer forms of "≥ 80 %" and "≥ 50 %": no float rounding at the edges.
        let busy = in_flight * 5 >= limit * 4 || usage.waiting > 0;
        let backlog = s.kafka_lag.filter(|&lag| lag > 0 && in_flight * 2 >= limit);
        if !busy && backlog.is_none() {
            return (None, Reason::Idle { in_flight, limit });
        }
        if busy
            && self.probe_enabled()
            && limit > c.min_limit
            && self.next_probe.is_some_and(|t| now >= t)
        {
            return (
                Some((Action::Decrease, c.min_limit)),
                Reason::Probe { limit },
            );
        }
        if limit < self.ssthresh && limit < c.max_limit {
            let ceiling = self.ssthresh.min(c.max_limit);
            let target = limit.saturating_mul(2).min(ceiling).max(limit + 1);
            return (
                Some((Action::Increase, target)),
                Reason::SlowStart {
                    in_flight,
                    limit,
                    ceiling,
                },
            );
        }
        // CPU and memory headroom is local: it says nothing about a downstream whose latency is
        // already climbing, so the latency signal can veto the larger step.
        let warm = self.is_warm(reading);
        let headroom = match (s.cpu_percent, s.memory_percent) {
            (Some(cpu), Some(mem))
                if !warm && cpu < c.cpu_increase_threshold && mem < c.memory_increase_threshold =>
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
        let target = limit.saturating_add(step).min(c.max_limit);
        if target <= limit {
            return (None, Reason::AtMaxLimit);
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
        (Some((Action::Increase, target)), reason)
    }

    /// The first signal over its threshold, in the order CPU, memory, queue, lag, task errors,
    /// latency.
    fn stress(&self, s: &Signals, reading: Option<Reading>) -> Option<Stress> {
        if let Some(stress) = self.machine_stress(s) {
            return Some(stress);
        }
        let c = &self.config;
        let tolerance = c.latency_tolerance?;
        let r = reading?;
        let rate = r.summary.error_rate();
        if rate > c.latency_max_error_rate {
            return Some(Stress::Errors {
                rate,
                threshold: c.latency_max_error_rate,
            });
        }
        if r.summary.samples < c.latency_min_samples {
            return None;
        }
        let baseline = r.baseline?;
        r.ratio()
            .filter(|&ratio| ratio > tolerance)
            .map(|_| Stress::Latency {
                latency: r.summary.p90,
                baseline,
                tolerance,
            })
    }

    /// The first present machine signal over its threshold, in the order CPU, memory, queue, lag.
    fn machine_stress(&self, s: &Signals) -> Option<Stress> {
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
}

/// What a [`Decision`] does to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The limit grows.
    Increase,
    /// The limit shrinks.
    Decrease,
    /// The limit stays.
    Hold,
}

impl Action {
    /// The lowercase name used in logs: `"increase"`, `"decrease"` or `"hold"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Increase => "increase",
            Self::Decrease => "decrease",
            Self::Hold => "hold",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health signal over its decrease threshold: which one, its value, and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Stress {
    /// CPU use over `cpu_threshold`.
    Cpu {
        /// The reading, in percent.
        percent: f64,
        /// The threshold, in percent.
        threshold: f64,
    },
    /// Memory use over `memory_threshold`.
    Memory {
        /// The reading, in percent.
        percent: f64,
        /// The threshold, in percent.
        threshold: f64,
    },
    /// Queue depth over `queue_threshold`.
    Queue {
        /// The reading.
        depth: u64,
        /// The threshold.
        threshold: u64,
    },
    /// Executor lag over `event_loop_lag_threshold`.
    EventLoopLag {
        /// The reading.
        lag: Duration,
        /// The threshold.
        threshold: Duration,
    },
    /// The cycle's p90 task latency over `tolerance` × the baseline.
    Latency {
        /// The cycle's p90.
        latency: Duration,
        /// The baseline: the lowest cycle p90 in the baseline window.
        baseline: Duration,
        /// `latency_tolerance`.
        tolerance: f64,
    },
    /// The share of the cycle's tasks that failed or timed out over `latency_max_error_rate`.
    Errors {
        /// The share of failures, in [0, 1].
        rate: f64,
        /// The threshold.
        threshold: f64,
    },
}

impl Stress {
    /// The signal's name as in [`Signals`]: `"cpu_percent"`, `"memory_percent"`, ...
    pub const fn signal(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu_percent",
            Self::Memory { .. } => "memory_percent",
            Self::Queue { .. } => "queue_depth",
            Self::EventLoopLag { .. } => "event_loop_lag",
            Self::Latency { .. } | Self::Errors { .. } => "latency",
        }
    }
}

impl fmt::Display for Stress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu { percent, threshold } => {
                write!(f, "cpu {percent:.1}% is over the {threshold:.1}% threshold")
            }
            Self::Memory { percent, threshold } => {
                write!(
                    f,
                    "memory {percent:.1}% is over the {threshold:.1}% threshold"
                )
            }
            Self::Queue { depth, threshold } => {
                write!(
                    f,
                    "queue depth {depth} is over the threshold of {threshold}"
                )
            }
            Self::EventLoopLag { lag, threshold } => {
                write!(
                    f,
                    "executor lag {lag:?} is over the {threshold:?} threshold"
                )
            }
            Self::Latency {
                latency,
                baseline,
                tolerance,
            } => write!(
                f,
                "p90 latency {latency:.1?} is over {tolerance} × the {baseline:.1?} baseline"
            ),
            Self::Errors { rate, threshold } => write!(
                f,
                "{:.1}% of tasks failed, over the {:.1}% threshold",
                rate * 100.0,
                threshold * 100.0
            ),
        }
    }
}

/// Why a [`Decision`] was taken. [`Display`](fmt::Display) gives the human sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// A health signal is over its threshold: decrease.
    Stressed(Stress),
    /// Stressed, but the limit is already `min_limit`: hold.
    AtMinLimit(Stress),
    /// Healthy and the limit is used: increase by `increase_step`.
    Busy {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
    },
    /// Healthy, used, and CPU and memory are under their increase thresholds: increase by twice
    /// `increase_step`.
    Headroom {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
        /// The CPU reading, under `cpu_increase_threshold`.
        cpu_percent: f64,
        /// The memory reading, under `memory_increase_threshold`.
        memory_percent: f64,
    },
    /// Healthy, half used, and Kafka lag says there is more work: increase by `increase_step`.
    Backlog {
        /// The Kafka lag.
        kafka_lag: u64,
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
    },
    /// Healthy, used, and below the slow-start ceiling: double the limit (capped by the ceiling).
    SlowStart {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
        /// The ceiling slow start stops at.
        ceiling: usize,
    },
    /// A scheduled baseline probe (`latency_probe_interval`): drop to `min_limit` to measure the
    /// unloaded latency.
    Probe {
        /// The limit before the probe, restored after it.
        limit: usize,
    },
    /// A baseline probe is measuring at `min_limit`: hold.
    Probing {
        /// The limit the probe will restore.
        restore: usize,
    },
    /// A baseline probe is done: restore the limit from before it.
    ProbeDone {
        /// The limit restored.
        restored: usize,
        /// The new baseline, or `None` if the probe saw too few tasks to measure one.
        baseline: Option<Duration>,
    },
    /// Healthy but the limit is not used enough to need more: hold.
    Idle {
        /// Permits held.
        in_flight: usize,
        /// The limit.
        limit: usize,
    },
    /// Healthy and used, but the limit is already `max_limit`: hold.
    AtMaxLimit,
    /// A change was wanted, but the last one was less than `cooldown` ago: hold.
    Cooldown {
        /// The change the rules wanted.
        wanted: Action,
        /// How long until a change is allowed.
        remaining: Duration,
    },
    /// No health signal could be read: hold (fail-open).
    NoSignals,
    /// The rules wanted more than a ceiling set from outside allows (a fleet grant): the limit
    /// is held at, or cut to, the ceiling.
    FleetCap {
        /// The grant: this instance's share of the fleet's budget.
        grant: usize,
        /// How many instances share the budget.
        members: usize,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stressed(s) => write!(f, "{s}"),
            Self::AtMinLimit(s) => write!(f, "{s}, but the limit is already at min_limit"),
            Self::Busy { in_flight, limit } => {
                write!(f, "healthy and busy: {in_flight} of {limit} in flight")
            }
            Self::Headroom {
                in_flight,
                limit,
                cpu_percent,
                memory_percent,
            } => write!(
                f,
                "healthy, busy ({in_flight} of {limit} in flight) and plenty of headroom \
                 (cpu {cpu_percent:.1}%, memory {memory_percent:.1}%)"
            ),
            Self::Backlog {
                kafka_lag,
                in_flight,
                limit,
            } => write!(
                f,
                "healthy with a backlog: kafka lag {kafka_lag}, {in_flight} of {limit} in flight"
            ),
            Self::SlowStart {
                in_flight,
                limit,
                ceiling,
            } => write!(
                f,
                "slow start: healthy and busy ({in_flight} of {limit} in flight), doubling up to \
                 {ceiling}"
            ),
            Self::Probe { limit } => write!(
                f,
                "latency probe: dropping to min_limit to re-measure the baseline (limit {limit} \
                 restored after)"
            ),
            Self::Probing { restore } => {
                write!(
                    f,
                    "latency probe: measuring at min_limit, then back to {restore}"
                )
            }
            Self::ProbeDone {
                restored,
                baseline: Some(b),
            } => write!(
                f,
                "latency probe done: baseline {b:?}, limit back to {restored}"
            ),
            Self::ProbeDone {
                restored,
                baseline: None,
            } => write!(
                f,
                "latency probe done without enough tasks to measure; limit back to {restored}"
            ),
            Self::Idle { in_flight, limit } => {
                write!(f, "healthy but not busy: {in_flight} of {limit} in flight")
            }
            Self::AtMaxLimit => {
                f.write_str("healthy and busy, but the limit is already at max_limit")
            }
            Self::Cooldown { wanted, remaining } => {
                write!(f, "cooldown: {wanted} deferred for {remaining:?}")
            }
            Self::NoSignals => f.write_str("no health signal could be read; holding (fail-open)"),
            Self::FleetCap { grant, members } => write!(
                f,
                "fleet cap: this instance's grant is {grant} of a budget shared by {members}"
            ),
        }
    }
}

/// One decision of the [`Controller`]: every input and the output, so it can be logged and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The time passed to [`Controller::decide`].
    pub at: Duration,
    /// What happened to the limit.
    pub action: Action,
    /// The limit before.
    pub previous_limit: usize,
    /// The limit after (equal to `previous_limit` on a hold).
    pub new_limit: usize,
    /// Why.
    pub reason: Reason,
    /// The signals the decision read.
    pub signals: Signals,
    /// The usage the decision read.
    pub usage: Usage,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}: {}",
            self.action, self.previous_limit, self.new_limit, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const SEC: Duration = Duration::from_secs(1);

    /// The additive rules alone: slow start has its own tests.
    fn config() -> AimdConfig {
        AimdConfig {
            min_limit: 5,
            max_limit: 50,
            initial_limit: 20,
            cooldown: Duration::ZERO,
            slow_start: false,
            ..AimdConfig::default()
        }
    }

    fn ctl(config: AimdConfig) -> Controller {
        Controller::new(config).unwrap()
    }

    fn usage(in_flight: usize, limit: usize) -> Usage {
        Usage {
            limit,
            in_flight,
            waiting: 0,
        }
    }

    fn healthy() -> Signals {
        // Healthy, but not enough headroom for the aggressive step.
        Signals {
            cpu_percent: Some(60.0),
            memory_percent: Some(60.0),
            ..Signals::default()
        }
    }

    #[test]
    fn decreases_when_cpu_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(80.1),
            ..healthy()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!(d.action, Action::Decrease);
        assert_eq!(d.new_limit, 10);
        assert!(matches!(d.reason, Reason::Stressed(Stress::Cpu { .. })));
        assert_eq!(c.limit(), 10);
    }

    #[test]
    fn holds_when_cpu_exactly_at_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(80.0),
            ..healthy()
        };
        assert_eq!(c.decide(SEC, &s, usage(20, 20)).action, Action::Increase);
    }

    #[test]
    fn decreases_when_memory_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            memory_percent: Some(90.0),
            ..healthy()
        };
        let d = c.decide(SEC, &s, usage(0, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert!(matches!(d.reason, Reason::Stressed(Stress::Memory { .. })));
    }

    #[test]
    fn decreases_when_queue_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            queue_depth: Some(101),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert_eq!(
            d.reason.to_string(),
            "queue depth 101 is over the threshold of 100"
        );
    }

    #[test]
    fn decreases_when_event_loop_lag_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            event_loop_lag: Some(Duration::from_millis(51)),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert!(matches!(
            d.reason,
            Reason::Stressed(Stress::EventLoopLag { .. })
        ));
    }

    #[test]
    fn decrease_rounds_down_and_stops_at_min_limit() {
        let mut c = ctl(AimdConfig {
            initial_limit: 7,
            decrease_factor: 0.9,
            ..config()
        });
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..Signals::default()
        };
        // floor(7 × 0.9) = 6
        assert_eq!(c.decide(SEC, &hot, usage(7, 7)).new_limit, 6);
        // floor(6 × 0.9) = 5 = min
        assert_eq!(c.decide(2 * SEC, &hot, usage(6, 6)).new_limit, 5);
        let d = c.decide(3 * SEC, &hot, usage(5, 5));
        assert_eq!((d.action, d.new_limit), (Action::Hold, 5));
        assert!(matches!(d.reason, Reason::AtMinLimit(_)));
    }

    #[test]
    fn increases_by_step_when_healthy_and_busy() {
        let mut c = ctl(config());
        // 16 of 20 is exactly 80 %.
        let d = c.decide(SEC, &healthy(), usage(16, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
        assert!(matches!(d.reason, Reason::Busy { .. }));
    }

    #[test]
    fn increases_when_tasks_wait_even_if_few_in_flight() {
        // After a shrink, in-flight can read low while work queues at the semaphore.
        let mut c = ctl(config());
        let u = Usage {
            limit: 20,
            in_flight: 2,
            waiting: 5,
        };
        assert_eq!(c.decide(SEC, &healthy(), u).action, Action::Increase);
    }

    #[test]
    fn increases_twice_the_step_with_headroom() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(10.0),
            memory_percent: Some(20.0),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 24));
        assert!(matches!(d.reason, Reason::Headroom { .. }));
    }

    #[test]
    fn headroom_needs_both_cpu_and_memory() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(10.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(SEC, &s, usage(20, 20)).new_limit, 22);
    }

    #[test]
    fn holds_when_idle() {
        let mut c = ctl(config());
        let idle = Signals {
            cpu_percent: Some(1.0),
            memory_percent: Some(1.0),
            ..Signals::default()
        };
        for t in 1..100 {
            let d = c.decide(t * SEC, &idle, usage(15, 20));
            assert_eq!(d.action, Action::Hold);
            assert!(matches!(d.reason, Reason::Idle { .. }));
        }
        assert_eq!(c.limit(), 20);
    }

    #[test]
    fn holds_when_no_signal_can_be_read() {
        let mut c = ctl(config());
        let d = c.decide(SEC, &Signals::default(), usage(20, 20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
    }

    #[test]
    fn kafka_lag_alone_is_not_health() {
        let mut c = ctl(config());
        let s = Signals {
            kafka_lag: Some(1_000_000),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
    }

    #[test]
    fn kafka_lag_is_demand_never_stress() {
        let mut c = ctl(config());
        let s = Signals {
            kafka_lag: Some(u64::MAX),
            ..healthy()
        };
        // Half used with a backlog: grow.
        let d = c.decide(SEC, &s, usage(10, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
        assert!(matches!(d.reason, Reason::Backlog { .. }));
        // Huge lag never shrinks the limit, whatever the usage.
        for t in 2..50 {
            assert_ne!(c.decide(t * SEC, &s, usage(0, 20)).action, Action::Decrease);
        }
    }

    #[test]
    fn never_exceeds_max_limit() {
        let mut c = ctl(AimdConfig {
            initial_limit: 49,
            ..config()
        });
        assert_eq!(c.decide(SEC, &healthy(), usage(49, 49)).new_limit, 50);
        let d = c.decide(2 * SEC, &healthy(), usage(50, 50));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::AtMaxLimit));
    }

    #[test]
    fn fixed_limit_always_holds() {
        let mut c = ctl(AimdConfig::fixed(8));
        let hot = Signals {
            cpu_percent: Some(100.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(SEC, &hot, usage(8, 8)).action, Action::Hold);
        assert_eq!(
            c.decide(SEC * 10, &healthy(), usage(8, 8)).action,
            Action::Hold
        );
    }

    #[test]
    fn cooldown_defers_a_change() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        assert_eq!(
            c.decide(SEC, &healthy(), usage(20, 20)).action,
            Action::Increase
        );
        let d = c.decide(3 * SEC, &healthy(), usage(22, 22));
        assert_eq!(d.action, Action::Hold);
        assert_eq!(
            d.reason,
            Reason::Cooldown {
                wanted: Action::Increase,
                remaining: 3 * SEC
            }
        );
    }

    #[test]
    fn a_cut_waits_for_the_cooldown_after_a_cut() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(SEC, &hot, usage(20, 20)).new_limit, 10);
        // Still hot: the next cut waits until the first one has had its effect.
        let d = c.decide(5 * SEC, &hot, usage(10, 10));
        assert_eq!(
            (d.action, d.reason),
            (
                Action::Hold,
                Reason::Cooldown {
                    wanted: Action::Decrease,
                    remaining: SEC
                }
            )
        );
        assert_eq!(c.decide(6 * SEC, &hot, usage(10, 10)).new_limit, 5);
    }

    #[test]
    fn a_cut_undoes_the_increase_that_caused_it_without_waiting() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        assert_eq!(c.decide(SEC, &lat(10), busy(20)).new_limit, 22);
        // The next cycle reads stress: the increase overloaded the downstream; cut now, not in 5 s.
        let d = c.decide(3 * SEC, &lat(20), busy(22));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 11));
        // Only that one: the cut itself is followed by a full cooldown.
        let d = c.decide(5 * SEC, &lat(20), busy(11));
        assert!(matches!(
            d.reason,
            Reason::Cooldown {
                wanted: Action::Decrease,
                ..
            }
        ));
    }

    #[test]
    fn a_hold_does_not_restart_the_cooldown() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        assert_eq!(c.decide(SEC, &healthy(), usage(0, 20)).action, Action::Hold);
        assert_eq!(
            c.decide(2 * SEC, &healthy(), usage(20, 20)).action,
            Action::Increase
        );
    }

    fn lat(ms: u64) -> Signals {
        Signals {
            latency: Some(LatencySummary::uniform(Duration::from_millis(ms), 50, 0)),
            ..Signals::default()
        }
    }

    fn busy(limit: usize) -> Usage {
        Usage {
            limit,
            in_flight: limit,
            waiting: 5,
        }
    }

    #[test]
    fn decreases_when_latency_over_tolerance() {
        let mut c = ctl(config());
        assert_eq!(c.decide(SEC, &lat(10), busy(20)).action, Action::Increase);
        assert_eq!(c.limit(), 22);
        // 16 ms is 1.6 × the 10 ms baseline: cut by decrease_factor, as for any stress.
        let d = c.decide(2 * SEC, &lat(16), busy(22));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 11));
        assert_eq!(
            d.reason,
            Reason::Stressed(Stress::Latency {
                latency: Duration::from_millis(16),
                baseline: Duration::from_millis(10),
                tolerance: 1.5
            })
        );
        assert_eq!(c.latency_baseline(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn latency_cuts_are_gentle_once_a_deep_cut_found_the_knee() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(10), busy(20));
        // The first latency cut halves (it may end a slow-start overshoot of 2 ×) ...
        assert_eq!(c.decide(2 * SEC, &lat(20), busy(22)).new_limit, 11);
        assert_eq!(c.decide(3 * SEC, &lat(10), busy(11)).new_limit, 13);
        // ... the next ones cut by latency_decrease_factor (0.7): floor(13 × 0.7) = 9.
        let d = c.decide(4 * SEC, &lat(20), busy(13));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 9));
        // Task errors are part of the latency signal: gentle too.
        c.decide(5 * SEC, &lat(10), busy(9));
        let errors = Signals {
            latency: Some(LatencySummary::uniform(Duration::from_millis(10), 40, 10)),
            ..Signals::default()
        };
        assert_eq!(c.decide(6 * SEC, &errors, busy(11)).new_limit, 7);
    }

    #[test]
    fn machine_stress_keeps_decrease_factor_after_gentle_latency_cuts() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(10), busy(20));
        c.decide(2 * SEC, &lat(20), busy(22)); // deep: 11
        c.decide(3 * SEC, &lat(10), busy(11)); // 13
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..lat(10)
        };
        assert_eq!(c.decide(4 * SEC, &hot, busy(13)).new_limit, 6);
    }

    #[test]
    fn no_double_step_while_latency_climbs() {
        let mut c = ctl(config());
        let cold = Signals {
            cpu_percent: Some(10.0),
            memory_percent: Some(10.0),
            ..lat(10)
        };
        // Idle CPU and memory, latency at the baseline: twice the step.
        assert_eq!(c.decide(SEC, &cold, busy(20)).new_limit, 24);
        // Same CPU and memory, but p90 at 1.3 × the baseline (over the middle of the band).
        let warm = Signals {
            latency: lat(13).latency,
            ..cold
        };
        let d = c.decide(2 * SEC, &warm, busy(24));
        assert_eq!(
            (d.new_limit, d.reason),
            (
                26,
                Reason::Busy {
                    in_flight: 24,
                    limit: 24
                }
            )
        );
    }

    #[test]
    fn holds_or_grows_when_latency_within_tolerance() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(10), busy(20));
        let d = c.decide(2 * SEC, &lat(15), busy(22));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 24));
    }

    #[test]
    fn latency_alone_is_a_health_signal() {
        let mut c = ctl(config());
        let d = c.decide(SEC, &lat(10), busy(20));
        assert!(matches!(d.reason, Reason::Busy { .. }));
    }

    #[test]
    fn latency_with_too_few_samples_is_absent() {
        let mut c = ctl(config());
        let few = Signals {
            latency: Some(LatencySummary::uniform(Duration::from_millis(10), 9, 0)),
            ..Signals::default()
        };
        let d = c.decide(SEC, &few, busy(20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
        assert_eq!(c.latency_baseline(), None);
    }

    #[test]
    fn failures_are_stress_not_fast_samples() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(100), busy(20));
        // Fast-failing tasks: the successes look fast, but 20 % failed.
        let s = Signals {
            latency: Some(LatencySummary::uniform(Duration::from_millis(1), 40, 10)),
            ..Signals::default()
        };
        let d = c.decide(2 * SEC, &s, busy(22));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 11));
        assert!(matches!(d.reason, Reason::Stressed(Stress::Errors { .. })));
        assert_eq!(
            d.reason.to_string(),
            "20.0% of tasks failed, over the 10.0% threshold"
        );
    }

    #[test]
    fn all_tasks_timing_out_is_stress_not_absence() {
        let mut c = ctl(config());
        let s = Signals {
            latency: Some(LatencySummary::uniform(Duration::ZERO, 0, 30)),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, busy(20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
    }

    #[test]
    fn baseline_follows_a_faster_downstream_at_once() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(100), busy(20));
        c.decide(2 * SEC, &lat(20), busy(22));
        assert_eq!(c.latency_baseline(), Some(Duration::from_millis(20)));
        // 40 ms was fine against the old baseline; against the new one it is 2 ×.
        assert_eq!(
            c.decide(3 * SEC, &lat(40), busy(24)).action,
            Action::Decrease
        );
    }

    #[test]
    fn baseline_follows_a_slower_downstream_after_the_window() {
        let mut c = ctl(config());
        c.decide(SEC, &lat(10), busy(20));
        // The world got 3 × slower: stress until the 10 ms cycle leaves the 60 s window.
        assert_eq!(
            c.decide(2 * SEC, &lat(30), busy(22)).action,
            Action::Decrease
        );
        let mut t = 2;
        while c.latency_baseline() != Some(Duration::from_millis(30)) {
            t += 2;
            assert!(t <= 62, "baseline stuck at {:?}", c.latency_baseline());
            c.decide(t * SEC, &lat(30), busy(c.limit()));
        }
        assert_eq!(
            c.decide((t + 2) * SEC, &lat(30), busy(c.limit())).action,
            Action::Increase
        );
    }

    #[test]
    fn latency_off_switch_gives_the_seed_rules() {
        let mut c = ctl(AimdConfig {
            latency_tolerance: None,
            ..config()
        });
        c.decide(SEC, &lat(10), busy(20));
        let d = c.decide(2 * SEC, &lat(1000), busy(20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
        assert_eq!(AimdConfig::default().seed_rules().latency_tolerance, None);
        assert!(!AimdConfig::default().seed_rules().slow_start);
    }

    #[test]
    fn slow_start_doubles_from_cold_start_until_the_first_stress() {
        let mut c = ctl(AimdConfig {
            initial_limit: 5,
            max_limit: 200,
            slow_start: true,
            ..config()
        });
        let mut limits = alloc::vec![];
        for t in 1..=4 {
            let d = c.decide(t * SEC, &healthy(), busy(c.limit()));
            assert!(matches!(d.reason, Reason::SlowStart { ceiling: 200, .. }));
            limits.push(d.new_limit);
        }
        assert_eq!(limits, [10, 20, 40, 80]);
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..healthy()
        };
        assert_eq!(c.decide(5 * SEC, &hot, busy(80)).new_limit, 40);
        // One cut: fast recovery to 0.85 × 80, then additive growth.
        assert_eq!(c.slow_start_ceiling(), Some(68));
        assert_eq!(c.decide(6 * SEC, &healthy(), busy(40)).new_limit, 68);
        let d = c.decide(7 * SEC, &healthy(), busy(68));
        assert_eq!(
            (d.new_limit, d.reason),
            (
                70,
                Reason::Busy {
                    in_flight: 68,
                    limit: 68
                }
            )
        );
        assert_eq!(c.slow_start_ceiling(), None);
    }

    #[test]
    fn slow_start_after_a_deep_cut_climbs_back_near_where_stress_struck() {
        let mut c = ctl(AimdConfig {
            initial_limit: 40,
            slow_start: true,
            ..config()
        });
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..healthy()
        };
        for t in 1..=3 {
            c.decide(t * SEC, &hot, busy(c.limit()));
        }
        assert_eq!(c.limit(), 5); // 40 → 20 → 10 → 5
                                  // W_max = 40, where the first cut of the run struck: climb back to 0.85 × 40.
        assert_eq!(c.slow_start_ceiling(), Some(34));
        let grown: alloc::vec::Vec<_> = (4..=8)
            .map(|t| c.decide(t * SEC, &healthy(), busy(c.limit())).new_limit)
            .collect();
        assert_eq!(grown, [10, 20, 34, 36, 38]);
    }

    #[test]
    fn slow_start_ends_without_a_cut_when_latency_climbs() {
        let mut c = ctl(AimdConfig {
            initial_limit: 10,
            slow_start: true,
            ..config()
        });
        assert_eq!(c.decide(SEC, &lat(10), busy(10)).new_limit, 20);
        // 13 ms: 1.3 × the baseline, over half the tolerance (1.25) and under it (1.5).
        let d = c.decide(2 * SEC, &lat(13), busy(20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
        assert!(matches!(d.reason, Reason::Busy { .. }));
    }

    #[test]
    fn idle_limit_does_not_grow_with_good_latency() {
        let mut c = ctl(AimdConfig {
            slow_start: true,
            ..config()
        });
        for t in 1..50 {
            let d = c.decide(t * SEC, &lat(10), usage(3, 20));
            assert_eq!(d.action, Action::Hold);
        }
    }

    fn probing() -> AimdConfig {
        AimdConfig {
            cooldown: 3 * SEC,
            adjustment_interval: 2 * SEC,
            latency_baseline_window: 20 * SEC,
            latency_probe_interval: Some(20 * SEC),
            ..config()
        }
    }

    #[test]
    fn probe_drops_to_min_limit_and_restores_with_a_fresh_baseline() {
        let mut c = ctl(probing());
        let mut t = 0;
        let mut step = |c: &mut Controller, ms| {
            t += 2;
            c.decide(t * SEC, &lat(ms), busy(c.limit()))
        };
        // Load grows latency: the baseline (10 ms) is stale, the world is now 20 ms at any load.
        step(&mut c, 10);
        let mut seen = alloc::vec![];
        for _ in 0..20 {
            let d = step(&mut c, 20);
            seen.push(d.reason);
            if matches!(d.reason, Reason::ProbeDone { .. }) {
                break;
            }
        }
        let probe = seen.iter().position(|r| matches!(r, Reason::Probe { .. }));
        let done = seen
            .iter()
            .position(|r| matches!(r, Reason::ProbeDone { .. }));
        assert!(probe.is_some() && done > probe, "{seen:?}");
        assert!(matches!(
            seen[done.unwrap()],
            Reason::ProbeDone { baseline: Some(b), .. } if b == Duration::from_millis(20)
        ));
        assert!(!c.is_probing());
        assert_eq!(c.latency_baseline(), Some(Duration::from_millis(20)));
    }

    #[test]
    fn probe_jitter_is_seeded_and_deterministic() {
        let times = |seed| {
            let mut c = ctl(probing()).with_seed(seed);
            (1..200u32)
                .filter(|&t| {
                    let d = c.decide(t * SEC, &lat(10), busy(c.limit()));
                    matches!(d.reason, Reason::Probe { .. })
                })
                .collect::<alloc::vec::Vec<_>>()
        };
        assert_eq!(times(1), times(1));
        assert_ne!(times(1), times(2));
        assert!(!times(1).is_empty());
    }

    #[test]
    fn rejects_invalid_latency_config() {
        for (bad, field) in [
            (
                AimdConfig {
                    latency_tolerance: Some(1.0),
                    ..AimdConfig::default()
                },
                "latency_tolerance",
            ),
            (
                AimdConfig {
                    latency_tolerance: Some(f64::NAN),
                    ..AimdConfig::default()
                },
                "latency_tolerance",
            ),
            (
                AimdConfig {
                    latency_decrease_factor: 1.0,
                    ..AimdConfig::default()
                },
                "latency_decrease_factor",
            ),
            (
                AimdConfig {
                    latency_min_samples: 0,
                    ..AimdConfig::default()
                },
                "latency_min_samples",
            ),
            (
                AimdConfig {
                    latency_max_error_rate: 0.0,
                    ..AimdConfig::default()
                },
                "latency_max_error_rate",
            ),
            (
                AimdConfig {
                    latency_baseline_window: SEC,
                    ..AimdConfig::default()
                },
                "latency_baseline_window",
            ),
            (
                AimdConfig {
                    latency_probe_interval: Some(10 * SEC),
                    ..AimdConfig::default()
                },
                "latency_probe_interval",
            ),
        ] {
            assert_eq!(Controller::new(bad).unwrap_err().field(), field);
        }
        let off = AimdConfig {
            latency_tolerance: None,
            ..AimdConfig::default()
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn rejects_invalid_config() {
        let bad = AimdConfig {
            min_limit: 0,
            ..AimdConfig::default()
        };
        assert_eq!(Controller::new(bad).unwrap_err().field(), "min_limit");
    }
}
