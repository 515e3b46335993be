//! The AIMD [`Controller`] and the [`Decision`] it returns.
//!
//! - `decision`: [`Decision`], [`Action`], [`Reason`], [`Stress`] and their sentences;
//! - `detector`: the latency references (windowed minimum, EWMA with deviation);
//! - `probe`: the scheduled baseline probe and its seeded jitter;
//! - `rules`: the machine cycle's rule and the latency stress tests, each returning an `Intent`;
//! - `epoch`: the latency epoch (fold it, step a probe, then the pure rule over it);
//! - `apply`: the one place that moves the limit, with the fleet ceiling as a pre-pass.

use core::time::Duration;

use crate::{AimdConfig, ConfigError, LatencySummary, Signals, Usage};

mod apply;
mod decision;
mod detector;
mod epoch;
mod overdue;
mod probe;
mod rules;
#[cfg(test)]
mod tests;

pub use decision::{Action, Decision, Reason, Stress};

use detector::{Baseline, Ewma};
use probe::{Jitter, Probing};

/// The AIMD controller: pure decision logic, no clock, no I/O.
///
/// It runs on two time scales, both with the time passed in:
///
/// - [`decide`](Self::decide), the **machine cycle** (every `adjustment_interval`, 2 s): CPU,
///   memory, queue depth and executor lag, read as the rules of the Python package
///   ace-concurrency say;
/// - [`epoch`](Self::epoch), the **latency epoch** (about one smoothed round trip, see
///   [`next_epoch`](Self::next_epoch)): the tasks' latencies and failures since the last epoch.
///
/// Both move one limit and return a [`Decision`] with a typed [`Reason`].
///
/// # The machine cycle
///
/// 1. **Stress → decrease.** If any present machine signal is over its threshold (`cpu_percent >
///    cpu_threshold`, `memory_percent > memory_threshold`, `queue_depth > queue_threshold`,
///    `event_loop_lag > event_loop_lag_threshold`), the limit becomes
///    `max(min_limit, floor(limit × decrease_factor))`. Two such changes are never closer than
///    `cooldown` (a change wanted during it becomes a hold that says so), with one exception: a
///    cut right after an increase of the machine cycle is not deferred (the increase caused it).
///    While a machine signal is over its threshold the latency epochs never grow the limit.
/// 2. **No health signal → hold** (fail-open: monitoring that fails never stops or shrinks work).
/// 3. **Latency in charge → hold.** While latency epochs are deciding (one has closed in the last
///    two cycles), a healthy machine cycle holds ([`Reason::Paced`]): growth is the epochs' job.
/// 4. Otherwise, the Python package's additive rules: **healthy but unused → hold** (growth needs at least
///    80 % of the limit in flight, or tasks waiting, or a positive `kafka_lag` with 50 % in
///    flight: an idle limit never creeps up); **slow start** doubles the limit while below the
///    slow-start ceiling; **healthy and used → increase** by `increase_step`, or by twice it with
///    plenty of headroom (`cpu_percent < cpu_increase_threshold` and `memory_percent <
///    memory_increase_threshold`, both present); **bounds** always hold.
///
/// # The latency epoch
///
/// Each epoch reads the tasks' outcomes since the last one (a [`LatencySummary`] from a
/// [`LatencyRecorder`](crate::LatencyRecorder)): successes with their mean and percentiles,
/// failures (back-pressure), and whether the limit was reached at some admission. An epoch
/// with fewer than `min(latency_min_samples, limit / 2)` tasks (at least one) is carried over
/// into the next, never read as "no signal", so even a limit of 1 in front of a 1 s downstream
/// grows. Then, in order:
///
/// 1. **Back-pressure → cut.** More than `latency_max_error_rate` of the tasks failed.
/// 2. **In flight too long → cut.** With admission counts from the recorder
///    ([`LatencyRecorder::record_admission`](crate::LatencyRecorder::record_admission)), tasks
///    still running past 4 × the reference latency (the larger of the baseline p90 and the
///    average) count before any of them completes: a retry loop inside the task shows at once,
///    and closes an epoch that would otherwise wait for tasks.
/// 3. **Latency far up → cut.** The p90 is over `latency_tolerance` × the baseline (the lowest
///    epoch p90 of the last `latency_baseline_window`, each stored two standard errors up), by
///    more than its own two standard errors (after 8 epochs at `min_limit` with the latency
///    flat and still over them, the references are stale and the epoch's latency replaces
///    them); or the epoch's mean is over the floor
///    (the lowest epoch mean) by 10 % and its noise; or it reached the average of past epochs
///    (an EWMA) plus 2.5 standard deviations; or, by Little's law, the tasks in flight imply over
///    twice the average latency (a queue builds before any of them completes). A cut multiplies
///    by `decrease_factor` until a first deep cut (typically the end of the cold start), then by
///    `latency_decrease_factor` — deeper the further latency is over its reference (Gradient's
///    `reference / observed` with twice the headroom, over enough samples), never below
///    `decrease_factor`. While half the tasks in flight were admitted before the last cut, their
///    latency earns no second cut. An epoch whose median task reads 0 (a coarse clock) is not
///    judged on latency, and no rise under the clock's evident tick or `latency_min_rise` (20 µs,
///    about one scheduler hand-off) counts, whatever its ratio: on tasks of nanoseconds the
///    cores' jitter is no queue.
/// 4. **Not reached → hold.** The limit grows only when it was reached at some admission (or
///    tasks wait).
/// 5. **Climbing → hold.** The mean is above the average plus one deviation; slow start ends.
/// 6. **Grow.** In slow start (from a cold start, and after a run of cuts up to 0.85 × the limit
///    where the stress struck: fast recovery) the limit **doubles** per epoch, as TCP's does per
///    round trip — but only once the last doubling has shown its effect: its epoch's tasks came
///    back at the rate the limit implies (Little's law within 1.3 × the average), else
///    [`Reason::Lagging`] holds. Slow start ends at the first climb, cut or back-pressure.
///    Otherwise the limit grows by `increase_step` per epoch.
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
/// Latency epochs, with no machine signal at all:
///
/// ```
/// use ace_core::{Action, AimdConfig, Controller, LatencySummary, Usage};
/// use core::time::Duration;
///
/// let mut c = Controller::new(AimdConfig { initial_limit: 10, ..AimdConfig::default() })?;
/// let busy = |limit| Usage { limit, in_flight: limit, waiting: 5 };
/// let ms = Duration::from_millis;
/// // 20 tasks of 50 ms, the limit reached: slow start doubles.
/// let d = c.epoch(ms(50), &LatencySummary::uniform(ms(50), 20, 0).reached(), busy(10));
/// assert_eq!((d.action, d.new_limit), (Action::Increase, 20));
/// // The next epoch is due one round trip later.
/// assert_eq!(c.next_epoch(), ms(100));
/// // The mean jumps to 80 ms: a cut (by `decrease_factor`, the first one).
/// let d = c.epoch(ms(100), &LatencySummary::uniform(ms(80), 20, 0).reached(), busy(20));
/// assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
/// # Ok::<(), ace_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Controller {
    config: AimdConfig,
    limit: usize,
    // The machine cycle's last change, for its cooldown, and whether it was an increase.
    machine_change: Option<(Duration, bool)>,
    // The last change of either path.
    last_change: Option<Duration>,
    // The machine signal over its threshold at the last machine cycle, if one was.
    machine_stress: Option<Stress>,
    // The latency epochs decide until this time (two cycles after the last epoch with tasks).
    paced_until: Option<Duration>,
    // Lowest epoch p90, and lowest epoch mean, in the baseline window.
    baseline: Baseline,
    floor: Baseline,
    // The average (and noise) of past epochs' mean latency.
    average: Option<Ewma>,
    // The baseline read by the last decision, for logs.
    last_baseline: Option<Duration>,
    // The epoch in progress: its start, the in-flight count then, and what was carried over.
    epoch_start: Duration,
    epoch_in_flight: usize,
    pending: Option<LatencySummary>,
    next_epoch: Duration,
    // Epochs closed since the last change: growth waits for an epoch of tasks admitted at the
    // new limit.
    epochs_since_change: u32,
    // Latency cuts wait until the tasks admitted before the last one have drained.
    cut_quiet_until: Duration,
    // The last cut of the latency epochs: its tasks admitted before it drain first.
    last_cut: Option<Duration>,
    // The limit the last cut came from: the epoch that began with the cut holds the tasks
    // admitted at it, and a second cut for their latency is measured from it.
    limit_before_cut: usize,
    // Two latency cuts in a row came from levels within a tenth of each other: the knee is
    // there, and growth near it waits a round trip per step.
    knee_confirmed: bool,
    // The last growth was a slow-start doubling: a cut now ends slow start without fast
    // recovery (the doubling overshot).
    doubled: bool,
    // Slow start doubles while `limit < ssthresh`; 0 when slow start is off.
    ssthresh: usize,
    // The last change was a decrease: the next cut continues a run and keeps `ssthresh`.
    cutting: bool,
    // A cut by `decrease_factor` has happened: latency cuts may now be gentle.
    knee_known: bool,
    // The clock's evident tick: the shortest nonzero percentile of an epoch whose median read 0
    // (0 while no reading has shown one). A rise smaller than one tick is not evidence.
    resolution: Duration,
    // Admissions of the last epochs, for tasks in flight too long.
    admissions: overdue::Admissions,
    next_probe: Option<Duration>,
    probing: Option<Probing>,
    rng: Jitter,
    // A ceiling set from outside (a fleet grant): see `set_ceiling`.
    ceiling: Option<crate::Ceiling>,
}

/// Fast recovery: after the first cut of a run, slow start climbs back to this share of the limit
/// where the stress struck (W_max), then growth is additive: the sawtooth spends its time just
/// under the knee instead of half of it far below. 0.85 is CUBIC's neighbourhood of W_max.
const RECOVERY: f64 = 0.85;

/// The shortest latency epoch: tasks of a few microseconds would otherwise decide thousands of
/// times a second for no better control.
pub(crate) const MIN_EPOCH: Duration = Duration::from_millis(5);

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
            machine_change: None,
            last_change: None,
            machine_stress: None,
            paced_until: None,
            baseline: Baseline::new(config.latency_baseline_window),
            floor: Baseline::new(config.latency_baseline_window),
            average: None,
            last_baseline: None,
            epoch_start: Duration::ZERO,
            epoch_in_flight: 0,
            pending: None,
            next_epoch: MIN_EPOCH,
            // No change yet: every task so far was admitted at the current limit.
            epochs_since_change: 2,
            cut_quiet_until: Duration::ZERO,
            last_cut: None,
            limit_before_cut: 0,
            knee_confirmed: false,
            doubled: false,
            ssthresh: if config.slow_start {
                config.max_limit
            } else {
                0
            },
            cutting: false,
            knee_known: false,
            resolution: Duration::ZERO,
            admissions: overdue::Admissions::new(),
            next_probe: None,
            probing: None,
            rng: Jitter::new(),
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
        self.rng = Jitter::seeded(seed);
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

    /// The average latency of past epochs (an EWMA of their means), once one has closed.
    pub fn latency_average(&self) -> Option<Duration> {
        self.average.map(|a| detector::secs(a.mean))
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

    /// When the next latency epoch is due: about one average latency after the last one closed
    /// (at least 5 ms, at most `adjustment_interval`), later while epochs are carried over for
    /// want of tasks. Call [`epoch`](Self::epoch) then.
    pub fn next_epoch(&self) -> Duration {
        self.next_epoch
    }

    /// Sets the limit by hand (a manager's `set_limit`), clamped to `[min_limit, max_limit]`,
    /// and returns the [`Decision`] with [`Reason::Manual`].
    ///
    /// The controller goes on from there as from one of its own changes: the latency references
    /// (baseline, floor, average and its deviation), the slow-start ceiling and the cooldown of
    /// the machine cycle are kept, growth waits for an epoch of tasks admitted at the new limit,
    /// and a baseline probe in progress is given up. A ceiling set by
    /// [`set_ceiling`](Self::set_ceiling) still binds: the next decision cuts to it.
    ///
    /// ```
    /// use ace_core::{Action, AimdConfig, Controller, Reason};
    /// use core::time::Duration;
    ///
    /// let mut c = Controller::new(AimdConfig::default())?;
    /// let d = c.override_limit(Duration::from_secs(1), 500);
    /// assert_eq!((d.action, d.previous_limit, d.new_limit), (Action::Increase, 20, 200));
    /// assert_eq!(d.reason, Reason::Manual { requested: 500 });
    /// assert_eq!(c.limit(), 200);
    /// # Ok::<(), ace_core::ConfigError>(())
    /// ```
    pub fn override_limit(&mut self, now: Duration, limit: usize) -> Decision {
        let previous = self.limit;
        let new_limit = limit.clamp(self.config.min_limit, self.config.max_limit);
        if self.probing.take().is_some() {
            self.next_probe = Some(now + self.rng_interval());
        }
        let action = match new_limit.cmp(&previous) {
            core::cmp::Ordering::Greater => Action::Increase,
            core::cmp::Ordering::Less => Action::Decrease,
            core::cmp::Ordering::Equal => Action::Hold,
        };
        if new_limit != previous {
            self.limit = new_limit;
            self.last_change = Some(now);
            self.epochs_since_change = 0;
            // Not a run of cuts nor a doubling: the next cut starts a run of its own.
            self.cutting = false;
            self.doubled = false;
        }
        Decision {
            at: now,
            action,
            previous_limit: previous,
            new_limit,
            reason: Reason::Manual { requested: limit },
            signals: Signals::default(),
            usage: Usage {
                limit: previous,
                ..Usage::default()
            },
        }
    }

    /// The machine cycle: decides from one snapshot of signals; see the type's docs for the
    /// rules.
    ///
    /// `now` is any monotonic time (only differences matter). `usage.in_flight` and
    /// `usage.waiting` measure demand; `usage.limit` is recorded, but the controller's own limit
    /// is the one it moves. A snapshot that carries a latency summary (`signals.latency`) is
    /// also read as a latency epoch ending now, unless a machine signal is stressed: callers
    /// with one cycle only get both paths in one call.
    pub fn decide(&mut self, now: Duration, signals: &Signals, usage: Usage) -> Decision {
        let intent = self.machine_rule(now, signals, usage);
        self.apply(now, intent, signals, usage)
    }

    /// A latency epoch ends at `now` with `summary`, the tasks' outcomes since the last one; see
    /// the type's docs for the rules.
    ///
    /// Call it at [`next_epoch`](Self::next_epoch) (earlier or later works too: epochs are
    /// measured by the times passed in). An epoch with too few tasks is carried over: the
    /// decision holds with [`Reason::Gathering`] and the summary is merged into the next one.
    pub fn epoch(&mut self, now: Duration, summary: &LatencySummary, usage: Usage) -> Decision {
        let signals = Signals {
            latency: Some(*summary),
            ..Signals::default()
        };
        let intent = self.epoch_rule(now, summary, usage);
        let before = self.limit;
        let d = self.apply(now, intent, &signals, usage);
        if d.action == Action::Decrease {
            let previous = self.limit_before_cut;
            self.knee_confirmed = previous.abs_diff(before) <= previous / 10;
            self.limit_before_cut = before;
            // The tasks admitted before the cut still complete slowly for about one latency.
            let drain = summary.p99.max(self.latency_average().unwrap_or_default());
            self.cut_quiet_until = now.saturating_add(drain);
            self.last_cut = Some(now);
        }
        d
    }

    fn rng_interval(&mut self) -> Duration {
        let every = self.config.latency_probe_interval.unwrap_or_default();
        self.rng.around(every)
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
            reason = "factor in (0, 1): the product is below limit and ≥ 0 (a cast saturates)"
        )]
        let cut = ((limit as f64) * factor) as usize;
        cut.max(self.config.min_limit).min(limit)
    }
}
