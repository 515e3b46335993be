//! [`AimdConfig`]: the bounds, steps, thresholds and timing of the AIMD controller.

use core::fmt;
use core::time::Duration;

#[cfg(feature = "serde")]
pub(crate) mod text;

/// The configuration of the AIMD controller.
///
/// Field names and defaults are those of the Python `ace-concurrency` package, with durations as
/// [`Duration`] and limits as integers. Build one with struct update syntax and check it with
/// [`validate`](Self::validate) (every constructor that takes a config validates it too):
///
/// ```
/// use ace_core::AimdConfig;
/// use core::time::Duration;
///
/// let config = AimdConfig {
///     min_limit: 5,
///     max_limit: 50,
///     initial_limit: 10,
///     cooldown: Duration::from_secs(2),
///     ..AimdConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
///
/// # Serde
///
/// With the `serde` feature, `AimdConfig` is `Serialize` and `Deserialize` (`no_std` too):
/// durations are text (`"2s"`, `"50ms"`, `"1.5s"`, `"1h"`), `latency_tolerance` and
/// `latency_probe_interval` take `"off"` (or `false`) for `None`, a missing field takes its
/// default, and an unknown field is an error. Deserializing does not validate: call
/// [`validate`](Self::validate), or load through `ace_std::config::from_toml`, which does.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct AimdConfig {
    /// The lowest limit the controller will set. Default 5.
    pub min_limit: usize,
    /// The highest limit the controller will set. Default 200.
    pub max_limit: usize,
    /// The limit at start. Default 20.
    pub initial_limit: usize,
    /// Added to the limit on a normal increase. Default 2. An increase with plenty of headroom adds
    /// twice this ([`Controller`](crate::Controller) documents the rules).
    pub increase_step: usize,
    /// The limit is multiplied by this on a decrease for machine stress, and for the first latency
    /// cut (rounded down). Default 0.5. See `latency_decrease_factor`.
    pub decrease_factor: f64,
    /// Decrease when CPU use is over this percentage. Default 80.0.
    pub cpu_threshold: f64,
    /// Decrease when memory use is over this percentage. Default 85.0.
    pub memory_threshold: f64,
    /// Decrease when the queue depth is over this. Default 100.
    pub queue_threshold: u64,
    /// Decrease when the executor lag is over this. Default 50 ms.
    #[cfg_attr(feature = "serde", serde(with = "text::duration"))]
    pub event_loop_lag_threshold: Duration,
    /// An increase is "aggressive" (twice `increase_step`) only when CPU use is under this
    /// percentage (and memory under `memory_increase_threshold`). Default 40.0.
    pub cpu_increase_threshold: f64,
    /// See `cpu_increase_threshold`. Default 50.0.
    pub memory_increase_threshold: f64,
    /// The least time between two adjustments of the limit by the machine cycle (latency epochs
    /// change it once per round trip). Default 5 s. One exception: a cut for stress right after an
    /// increase is not deferred (the increase caused it).
    #[cfg_attr(feature = "serde", serde(with = "text::duration"))]
    pub cooldown: Duration,
    /// How often the control loop reads the machine signals and decides (the machine cycle); also
    /// the longest latency epoch. Default 2 s.
    #[cfg_attr(feature = "serde", serde(with = "text::duration"))]
    pub adjustment_interval: Duration,
    /// Latency epochs: `Some` turns them on, and an epoch whose p90 is over this × the baseline
    /// (the lowest epoch p90 of the last `latency_baseline_window`) is stress, the hard ceiling
    /// beside the epoch rules ([`Controller`](crate::Controller) documents them). Default
    /// `Some(1.5)`; `None` turns the latency signal off (task errors included), which gives the
    /// rules of the Python package ace-concurrency. It acts only with latency samples, which only
    /// a manager that times its tasks into a [`LatencyRecorder`](crate::LatencyRecorder) provides.
    #[cfg_attr(feature = "serde", serde(with = "text::optional_number"))]
    pub latency_tolerance: Option<f64>,
    /// A latency epoch needs `min(latency_min_samples, limit / 2)` tasks (at least one; successes
    /// and failures together), or it is carried over into the next; the p90 baseline takes epochs
    /// of this many successes only. Default 10.
    pub latency_min_samples: u32,
    /// Decrease when more than this share of an epoch's tasks (or attempts) failed or timed out:
    /// back-pressure. Default 0.1.
    /// Part of the latency signal: off when `latency_tolerance` is `None`.
    pub latency_max_error_rate: f64,
    /// How long an epoch's latency may stand as a reference: the baseline is the lowest epoch p90
    /// and the floor the lowest epoch mean seen in this window, so they follow a faster downstream
    /// at once and a slower one after this long. Default 60 s.
    #[cfg_attr(feature = "serde", serde(with = "text::duration"))]
    pub latency_baseline_window: Duration,
    /// Re-measure the baseline this often (± 25 % seeded jitter): drop the limit to `min_limit`
    /// until the cooldown allows a change and one clean cycle is measured, take that cycle's p90 as
    /// the baseline, then restore the limit. Default `None` (off): every multiplicative decrease
    /// already unloads the downstream for a cycle, which refreshes the baseline window without a
    /// scheduled dip in throughput.
    #[cfg_attr(feature = "serde", serde(with = "text::optional_duration"))]
    pub latency_probe_interval: Option<Duration>,
    /// Slow start: from a cold start, and after a run of cuts, grow by doubling, once per round
    /// trip with latency epochs (capped by `max_limit` from a cold start, and after a cut by 0.85 ×
    /// the limit where the stress struck, or the level cut to if higher) until the first climb or
    /// stress, then by `increase_step`.
    /// Default `true`; `false` gives the additive growth of the Python package ace-concurrency only.
    pub slow_start: bool,
    /// Latency and task-error stress cut the limit by this factor (rounded down) once the knee is
    /// known; machine stress (CPU, memory, queue, executor lag) keeps `decrease_factor`. Default
    /// 0.9 (Vector's: at one decision per round trip a small cut is undone in a few epochs). Until
    /// the first cut by `decrease_factor` (typically the end of the
    /// cold-start slow start), latency cuts use `decrease_factor` too: slow start can overshoot by
    /// 2 ×, and that deep cut is what unloads a downstream whose baseline was measured overloaded.
    pub latency_decrease_factor: f64,
    /// The smallest latency rise that reads as a queue: a latency rule (the p90 over its
    /// baseline, the mean over its floor or its average, Little's law, a task in flight too long)
    /// counts a rise only when it is over both its relative threshold and this much in absolute
    /// time. Default 20 µs, about one scheduler hand-off (a thread woken on another core): a cut
    /// turns the downstream's queue into callers waiting for a permit, and each of them costs a
    /// hand-off, so a rise smaller than one is not a queue a cut can shorten. It keeps the
    /// cores' jitter on tasks of nanoseconds (an epoch's mean some tens of nanoseconds over its
    /// floor) from cutting the limit. `Duration::ZERO` counts any rise over the clock's tick.
    #[cfg_attr(feature = "serde", serde(with = "text::duration"))]
    pub latency_min_rise: Duration,
}

impl AimdConfig {
    /// Default for [`min_limit`](Self::min_limit): 5.
    pub const fn default_min_limit() -> usize {
        5
    }
    /// Default for [`max_limit`](Self::max_limit): 200.
    pub const fn default_max_limit() -> usize {
        200
    }
    /// Default for [`initial_limit`](Self::initial_limit): 20.
    pub const fn default_initial_limit() -> usize {
        20
    }
    /// Default for [`increase_step`](Self::increase_step): 2.
    pub const fn default_increase_step() -> usize {
        2
    }
    /// Default for [`decrease_factor`](Self::decrease_factor): 0.5.
    pub const fn default_decrease_factor() -> f64 {
        0.5
    }
    /// Default for [`cpu_threshold`](Self::cpu_threshold): 80 %.
    pub const fn default_cpu_threshold() -> f64 {
        80.0
    }
    /// Default for [`memory_threshold`](Self::memory_threshold): 85 %.
    pub const fn default_memory_threshold() -> f64 {
        85.0
    }
    /// Default for [`queue_threshold`](Self::queue_threshold): 100.
    pub const fn default_queue_threshold() -> u64 {
        100
    }
    /// Default for [`event_loop_lag_threshold`](Self::event_loop_lag_threshold): 50 ms.
    pub const fn default_event_loop_lag_threshold() -> Duration {
        Duration::from_millis(50)
    }
    /// Default for [`cpu_increase_threshold`](Self::cpu_increase_threshold): 40 %.
    pub const fn default_cpu_increase_threshold() -> f64 {
        40.0
    }
    /// Default for [`memory_increase_threshold`](Self::memory_increase_threshold): 50 %.
    pub const fn default_memory_increase_threshold() -> f64 {
        50.0
    }
    /// Default for [`cooldown`](Self::cooldown): 5 s.
    pub const fn default_cooldown() -> Duration {
        Duration::from_secs(5)
    }
    /// Default for [`adjustment_interval`](Self::adjustment_interval): 2 s.
    pub const fn default_adjustment_interval() -> Duration {
        Duration::from_secs(2)
    }

    /// Default for [`latency_tolerance`](Self::latency_tolerance): `Some(1.5)`.
    pub const fn default_latency_tolerance() -> Option<f64> {
        Some(1.5)
    }
    /// Default for [`latency_min_samples`](Self::latency_min_samples): 10.
    pub const fn default_latency_min_samples() -> u32 {
        10
    }
    /// Default for [`latency_max_error_rate`](Self::latency_max_error_rate): 0.1.
    pub const fn default_latency_max_error_rate() -> f64 {
        0.1
    }
    /// Default for [`latency_baseline_window`](Self::latency_baseline_window): 60 s.
    pub const fn default_latency_baseline_window() -> Duration {
        Duration::from_secs(60)
    }
    /// Default for [`latency_probe_interval`](Self::latency_probe_interval): `None`.
    pub const fn default_latency_probe_interval() -> Option<Duration> {
        None
    }
    /// Default for [`latency_decrease_factor`](Self::latency_decrease_factor): 0.9.
    pub const fn default_latency_decrease_factor() -> f64 {
        0.9
    }
    /// Default for [`latency_min_rise`](Self::latency_min_rise): 20 µs.
    pub const fn default_latency_min_rise() -> Duration {
        Duration::from_micros(20)
    }
    /// Default for [`slow_start`](Self::slow_start): `true`.
    pub const fn default_slow_start() -> bool {
        true
    }
    // Tuning: 1.5 on a p90 sits above the noise of a min-of-p90s baseline (a few % to 15 % with 10
    // to 100 samples a cycle) and below the 2× that the issue's goal allows for p99; Envoy's
    // gradient controller uses a 25 % buffer on p50, Netflix's Gradient2 a tolerance of 1.5 on
    // the mean. 60 s is 30 cycles at the default interval: several AIMD sawtooth troughs, each an
    // unloaded measurement.

    /// The longest duration [`validate`](Self::validate) accepts in any field: 365 days.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

    /// The rules of the Python package ace-concurrency: this config with the latency signal and
    /// slow start off.
    pub fn seed_rules(self) -> Self {
        Self {
            latency_tolerance: None,
            slow_start: false,
            ..self
        }
    }

    /// A config with a fixed limit: `min_limit == initial_limit == max_limit == limit`.
    ///
    /// The controller then only ever holds; useful as the "static limit" baseline.
    pub fn fixed(limit: usize) -> Self {
        Self {
            min_limit: limit,
            max_limit: limit,
            initial_limit: limit,
            ..Self::default()
        }
    }

    /// Checks every rule and returns the first one broken.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field and the rule when:
    /// - `min_limit < 1`;
    /// - `initial_limit < min_limit` or `max_limit < initial_limit` (`min == max` is allowed: a
    ///   fixed limit);
    /// - `increase_step < 1`;
    /// - `decrease_factor` or `latency_decrease_factor` is not in the open interval (0, 1) (NaN
    ///   included);
    /// - a percentage threshold (`cpu_threshold`, `memory_threshold`, `cpu_increase_threshold`,
    ///   `memory_increase_threshold`) is not in (0, 100];
    /// - `cpu_increase_threshold >= cpu_threshold` or
    ///   `memory_increase_threshold >= memory_threshold`;
    /// - `queue_threshold < 1`;
    /// - `event_loop_lag_threshold` or `adjustment_interval` is zero;
    /// - `latency_tolerance` is `Some` and not a finite number above 1;
    /// - `latency_min_samples < 1`;
    /// - `latency_max_error_rate` is not in (0, 1];
    /// - `latency_baseline_window < adjustment_interval`;
    /// - `latency_probe_interval` is `Some` and shorter than `latency_baseline_window`;
    /// - `latency_min_rise` is not shorter than `adjustment_interval` (the longest epoch: a
    ///   floor that high would switch the latency rules off unsaid; `latency_tolerance: None`
    ///   is the way to);
    /// - a duration (`event_loop_lag_threshold`, `cooldown`, `adjustment_interval`,
    ///   `latency_baseline_window`, `latency_probe_interval`, `latency_min_rise`) is longer than
    ///   [`MAX_DURATION`](Self::MAX_DURATION) (one year: longer would overflow clock arithmetic
    ///   later, and means "never" anyway).
    ///
    /// ```
    /// use ace_core::{AimdConfig, ConfigRule};
    ///
    /// let err = AimdConfig { decrease_factor: 1.5, ..AimdConfig::default() }
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "decrease_factor");
    /// assert_eq!(err.rule(), ConfigRule::OpenUnitInterval);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid config: `decrease_factor` is 1.5, but it must be in (0, 1)"
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigRule as R;
        let err = |field, rule, value| Err(ConfigError { field, rule, value });

        for (field, value) in [
            (
                "event_loop_lag_threshold",
                Some(self.event_loop_lag_threshold),
            ),
            ("cooldown", Some(self.cooldown)),
            ("adjustment_interval", Some(self.adjustment_interval)),
            (
                "latency_baseline_window",
                Some(self.latency_baseline_window),
            ),
            ("latency_probe_interval", self.latency_probe_interval),
            ("latency_min_rise", Some(self.latency_min_rise)),
        ] {
            if let Some(d) = value.filter(|d| *d > Self::MAX_DURATION) {
                return err(field, R::AtMost(Self::MAX_DURATION), Value::Duration(d));
            }
        }

        if self.min_limit < 1 {
            return err(
                "min_limit",
                R::AtLeastOne,
                Value::Int(self.min_limit as u64),
            );
        }
        if self.initial_limit < self.min_limit {
            return err(
                "initial_limit",
                R::AtLeast("min_limit", self.min_limit as u64),
                Value::Int(self.initial_limit as u64),
            );
        }
        if self.max_limit < self.initial_limit {
            return err(
                "max_limit",
                R::AtLeast("initial_limit", self.initial_limit as u64),
                Value::Int(self.max_limit as u64),
            );
        }
        if self.increase_step < 1 {
            return err(
                "increase_step",
                R::AtLeastOne,
                Value::Int(self.increase_step as u64),
            );
        }
        // `!(x > 0 && x < 1)` rather than `x <= 0 || x >= 1`: NaN must fail too.
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return err(
                "decrease_factor",
                R::OpenUnitInterval,
                Value::Float(self.decrease_factor),
            );
        }
        let f = self.latency_decrease_factor;
        if !(f > 0.0 && f < 1.0) {
            return err(
                "latency_decrease_factor",
                R::OpenUnitInterval,
                Value::Float(f),
            );
        }
        for (field, value) in [
            ("cpu_threshold", self.cpu_threshold),
            ("memory_threshold", self.memory_threshold),
            ("cpu_increase_threshold", self.cpu_increase_threshold),
            ("memory_increase_threshold", self.memory_increase_threshold),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                return err(field, R::Percentage, Value::Float(value));
            }
        }
        if self.cpu_increase_threshold >= self.cpu_threshold {
            return err(
                "cpu_increase_threshold",
                R::Below("cpu_threshold", self.cpu_threshold),
                Value::Float(self.cpu_increase_threshold),
            );
        }
        if self.memory_increase_threshold >= self.memory_threshold {
            return err(
                "memory_increase_threshold",
                R::Below("memory_threshold", self.memory_threshold),
                Value::Float(self.memory_increase_threshold),
            );
        }
        if self.queue_threshold < 1 {
            return err(
                "queue_threshold",
                R::AtLeastOne,
                Value::Int(self.queue_threshold),
            );
        }
        if self.event_loop_lag_threshold.is_zero() {
            return err(
                "event_loop_lag_threshold",
                R::NonZero,
                Value::Duration(Duration::ZERO),
            );
        }
        if self.adjustment_interval.is_zero() {
            return err(
                "adjustment_interval",
                R::NonZero,
                Value::Duration(Duration::ZERO),
            );
        }
        if let Some(t) = self.latency_tolerance {
            if !(t > 1.0 && t.is_finite()) {
                return err("latency_tolerance", R::AboveOne, Value::Float(t));
            }
        }
        if self.latency_min_samples < 1 {
            return err(
                "latency_min_samples",
                R::AtLeastOne,
                Value::Int(u64::from(self.latency_min_samples)),
            );
        }
        let rate = self.latency_max_error_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return err("latency_max_error_rate", R::Fraction, Value::Float(rate));
        }
        if self.latency_baseline_window < self.adjustment_interval {
            return err(
                "latency_baseline_window",
                R::NotShorterThan("adjustment_interval", self.adjustment_interval),
                Value::Duration(self.latency_baseline_window),
            );
        }
        if let Some(every) = self.latency_probe_interval {
            if every < self.latency_baseline_window {
                return err(
                    "latency_probe_interval",
                    R::NotShorterThan("latency_baseline_window", self.latency_baseline_window),
                    Value::Duration(every),
                );
            }
        }
        if self.latency_min_rise >= self.adjustment_interval {
            return err(
                "latency_min_rise",
                R::ShorterThan("adjustment_interval", self.adjustment_interval),
                Value::Duration(self.latency_min_rise),
            );
        }
        Ok(())
    }
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            min_limit: Self::default_min_limit(),
            max_limit: Self::default_max_limit(),
            initial_limit: Self::default_initial_limit(),
            increase_step: Self::default_increase_step(),
            decrease_factor: Self::default_decrease_factor(),
            cpu_threshold: Self::default_cpu_threshold(),
            memory_threshold: Self::default_memory_threshold(),
            queue_threshold: Self::default_queue_threshold(),
            event_loop_lag_threshold: Self::default_event_loop_lag_threshold(),
            cpu_increase_threshold: Self::default_cpu_increase_threshold(),
            memory_increase_threshold: Self::default_memory_increase_threshold(),
            cooldown: Self::default_cooldown(),
            adjustment_interval: Self::default_adjustment_interval(),
            latency_tolerance: Self::default_latency_tolerance(),
            latency_min_samples: Self::default_latency_min_samples(),
            latency_max_error_rate: Self::default_latency_max_error_rate(),
            latency_baseline_window: Self::default_latency_baseline_window(),
            latency_probe_interval: Self::default_latency_probe_interval(),
            slow_start: Self::default_slow_start(),
            latency_decrease_factor: Self::default_latency_decrease_factor(),
            latency_min_rise: Self::default_latency_min_rise(),
        }
    }
}

/// The rule a config field broke; part of a [`ConfigError`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ConfigRule {
    /// The field must be at least 1.
    AtLeastOne,
    /// The field must be at least the named field, whose value is given.
    AtLeast(&'static str, u64),
    /// The field must be strictly below the named field, whose value is given.
    Below(&'static str, f64),
    /// The field must be in the open interval (0, 1).
    OpenUnitInterval,
    /// The field is a percentage and must be in (0, 100].
    Percentage,
    /// The field must not be zero.
    NonZero,
    /// The field must be a finite number above 1.
    AboveOne,
    /// The field is a fraction and must be in (0, 1].
    Fraction,
    /// The field (a duration) must not be shorter than the named field, whose value is given.
    NotShorterThan(&'static str, Duration),
    /// The field (a duration) must be shorter than the named field, whose value is given.
    ShorterThan(&'static str, Duration),
    /// The field (a duration) must not be longer than this.
    AtMost(Duration),
    /// The field (a count) must not be above this.
    NotAbove(u64),
    /// The field (a text) must not contain a NUL byte (an operating system's names cannot).
    NoNulByte,
}

impl fmt::Display for ConfigRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtLeastOne => f.write_str("it must be at least 1"),
            Self::AtLeast(other, v) => write!(f, "it must be at least `{other}` ({v})"),
            Self::Below(other, v) => write!(f, "it must be below `{other}` ({v})"),
            Self::OpenUnitInterval => f.write_str("it must be in (0, 1)"),
            Self::Percentage => f.write_str("it must be a percentage in (0, 100]"),
            Self::NonZero => f.write_str("it must not be zero"),
            Self::AboveOne => f.write_str("it must be a finite number above 1"),
            Self::Fraction => f.write_str("it must be in (0, 1]"),
            Self::NotShorterThan(other, v) => {
                write!(f, "it must not be shorter than `{other}` ({v:?})")
            }
            Self::ShorterThan(other, v) => {
                write!(f, "it must be shorter than `{other}` ({v:?})")
            }
            Self::AtMost(v) => write!(f, "it must not be longer than {v:?}"),
            Self::NotAbove(v) => write!(f, "it must not be above {v}"),
            Self::NoNulByte => f.write_str("it must not contain a NUL byte"),
        }
    }
}

/// A config value as it was given, kept in a [`ConfigError`] for the message.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
    Duration(Duration),
    Text(alloc::string::String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Duration(v) => write!(f, "{v:?}"),
            // Quoted and escaped: the rule may be about a character that does not print.
            Self::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// A config broke a rule: the error names the field, the rule and the value given.
///
/// Returned by [`AimdConfig::validate`] and by every constructor that takes a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    field: &'static str,
    rule: ConfigRule,
    value: Value,
}

impl ConfigError {
    /// The name of the offending field, as spelled in [`AimdConfig`].
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule it broke.
    pub fn rule(&self) -> ConfigRule {
        self.rule
    }

    /// An error for a field outside [`AimdConfig`] (a manager's own option, say), so that every
    /// config problem reaches the user as one type.
    pub fn custom(field: &'static str, rule: ConfigRule, value: f64) -> Self {
        Self {
            field,
            rule,
            value: Value::Float(value),
        }
    }

    /// [`custom`](Self::custom) for a text field: the message quotes `value`, escaped.
    pub fn custom_text(field: &'static str, rule: ConfigRule, value: &str) -> Self {
        Self {
            field,
            rule,
            value: Value::Text(value.into()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config: `{}` is {}, but {}",
            self.field, self.value, self.rule
        )
    }
}

impl core::error::Error for ConfigError {}
