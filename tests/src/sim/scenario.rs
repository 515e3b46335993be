//! The scenario files: the downstream, the load, the machine signals, the config, and the
//! ranges the outcome must fall in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ace_core::AimdConfig;
use serde::Deserialize;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in tables.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Seed of the run's random generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated length, in seconds.
    pub duration_s: f64,
    /// Outcome statistics skip the cycles before this time (settling is measured from 0).
    #[serde(default = "default_measure_from")]
    pub measure_from_s: f64,
    /// The downstream every sharer calls.
    pub downstream: Downstream,
    /// The load each sharer offers.
    pub load: Load,
    /// Machine signals over time.
    #[serde(default)]
    pub machine: Machine,
    /// Retries inside each task (none by default: a failure ends the task).
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Goals not asserted: `[min, max]` per variant and metric, as `expect`; the scenario test
    /// prints which hold, beside the goals every scenario has (see [`goals`](super::goals)).
    #[serde(default)]
    pub goals: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
    /// Changes to [`AimdConfig::default`] for the ACE and seed-rule runs.
    #[serde(default)]
    pub config: ConfigOverrides,
    /// Independent controllers sharing the downstream, each with its own load.
    #[serde(default = "one")]
    pub sharers: usize,
    /// Initial limit of each sharer (cycled), overriding `config.initial_limit`.
    #[serde(default)]
    pub initial_limits: Vec<usize>,
    /// Static limits to compare with (too small, right, too large), per sharer.
    pub static_limits: Vec<usize>,
    /// `[low, high]` of the total limit counted as settled.
    #[serde(default)]
    pub settle_band: Option<[f64; 2]>,
    /// Why a peer rule still beats ACE here, where it does: printed beside the figures in
    /// docs/scenarios.md's "Where a peer still wins".
    #[serde(default)]
    pub why_a_peer_wins: Option<String>,
    /// Expected `[min, max]` per variant (`ace`, `seed`, a peer's label, `static_N`) and metric
    /// (see [`Outcome`](super::Outcome)).
    #[serde(default)]
    pub expect: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
}

fn default_seed() -> u64 {
    42
}
fn default_measure_from() -> f64 {
    20.0
}
fn one() -> usize {
    1
}

/// The simulated downstream: latency grows past a concurrency knee.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downstream {
    /// Median latency at or below the knee, in ms.
    pub base_ms: f64,
    /// Concurrency (over all sharers) past which latency grows; none: flat latency.
    #[serde(default)]
    pub knee: Option<f64>,
    /// Past the knee, latency is `base × (n / knee)^exponent`. 2 collapses throughput as `K²/n`.
    #[serde(default = "default_exponent")]
    pub exponent: f64,
    /// Log-normal jitter: latency × `exp(jitter × z)`, z standard normal.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Above this concurrency, requests fail with probability `error_rate`, after `error_ms`.
    #[serde(default)]
    pub errors_above: Option<f64>,
    /// See `errors_above`.
    #[serde(default = "default_error_rate")]
    pub error_rate: f64,
    /// How long a failing request takes, in ms (fast failures look fast).
    #[serde(default = "default_error_ms")]
    pub error_ms: f64,
    /// A request slower than this times out: a failure at this time.
    #[serde(default)]
    pub timeout_ms: Option<f64>,
    /// Base latency changes: `[[time_s, base_ms], ...]`.
    #[serde(default)]
    pub base_changes: Vec<[f64; 2]>,
    /// Base latency as a piecewise-linear schedule `[[time_s, base_ms], ...]` (brpc's latency
    /// stages); overrides `base_ms` and `base_changes`.
    #[serde(default)]
    pub base_ramp: Vec<[f64; 2]>,
    /// Erlang-distributed latency (the congestion-limiter simulator's): the median of the knee
    /// model becomes the mean of an Erlang of this shape (1: exponential), instead of the
    /// log-normal `jitter`.
    #[serde(default)]
    pub erlang_k: Option<u32>,
    /// A queue in front of the downstream: requests wait for one of a few workers, FIFO, then
    /// take the latency above too.
    #[serde(default)]
    pub queue: Option<Queue>,
    /// Vector's link model: latency `base × (1 + scale × (n − 1) + knee_exp^(n − knee_start) − 1
    /// + exp_jitter × E)`, E exponential with mean 1. Setting any of `scale`, `knee_start` or
    /// `exp_jitter` picks this model (and `knee`, `exponent`, `jitter` are not used).
    #[serde(default)]
    pub scale: f64,
    /// See `scale`: the concurrency above which latency grows by `knee_exp` per request.
    #[serde(default)]
    pub knee_start: Option<f64>,
    /// See `knee_start`.
    #[serde(default = "default_knee_exp")]
    pub knee_exp: f64,
    /// See `scale`.
    #[serde(default)]
    pub exp_jitter: f64,
    /// Above a concurrency or a rate, the downstream defers (an error after one unloaded
    /// latency) or drops (no answer: the attempt times out) the request.
    #[serde(default)]
    pub overload: Option<Overload>,
}

fn default_knee_exp() -> f64 {
    1.0
}

/// A FIFO queue served by `servers` workers (brpc's example server: 4 threads that each sleep
/// 2.5 ms per request; the congestion-limiter simulator's database: 2 workers at 20 ms on
/// average).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Workers.
    pub servers: usize,
    /// Mean service time per request, in ms.
    pub service_ms: f64,
    /// Service times are Erlang of this shape (1: exponential); constant when absent.
    #[serde(default)]
    pub erlang_k: Option<u32>,
}

/// What the downstream does past its capacity (Vector's `limit` and `action`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Requests in flight at the downstream (`concurrency`) or started in the last second (`rate`)
    /// above which it refuses.
    pub above: f64,
    /// `concurrency` or `rate`.
    pub per: Per,
    /// `defer` or `drop`.
    pub action: OverloadAction,
}

/// See [`Overload::per`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Requests in flight at the downstream.
    Concurrency,
    /// Requests started in the last second.
    Rate,
}

/// See [`Overload::action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverloadAction {
    /// An error after one unloaded latency.
    Defer,
    /// No answer at all: the attempt times out.
    Drop,
}

/// Retries inside a task, as a client library does: each failed attempt is retried after a
/// Fibonacci backoff while the task keeps its slot, and each attempt is timed on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// An attempt slower than this fails at this time, in ms.
    pub timeout_ms: f64,
    /// The first backoff, in ms; then 1, 2, 3, 5, … × this.
    #[serde(default = "default_backoff_ms")]
    pub initial_backoff_ms: f64,
    /// The longest backoff, in ms.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: f64,
    /// The retry loop is inside the task ACE runs (a client with retry middleware under a plain
    /// `submit`): ACE and the seed's rules see each task's whole latency and no failure. The peers
    /// keep one sample per attempt, as their limiters sit below the retries; Vector's by design.
    #[serde(default)]
    pub inside_task: bool,
}

fn default_backoff_ms() -> f64 {
    1000.0
}
fn default_max_backoff_ms() -> f64 {
    30_000.0
}

fn default_exponent() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.1
}
fn default_error_rate() -> f64 {
    0.5
}
fn default_error_ms() -> f64 {
    1.0
}

impl Downstream {
    fn base_at(&self, t: f64) -> f64 {
        if !self.base_ramp.is_empty() {
            return schedule(&self.base_ramp, t, self.base_ms);
        }
        self.base_changes
            .iter()
            .rfind(|c| c[0] <= t)
            .map_or(self.base_ms, |c| c[1])
    }

    fn vector_model(&self) -> bool {
        self.scale != 0.0 || self.knee_start.is_some() || self.exp_jitter != 0.0
    }

    /// Median latency with `n` in flight (this request included) at time `t`, in ms (Vector's
    /// model: the latency without jitter).
    pub fn latency_ms(&self, n: usize, t: f64) -> f64 {
        let base = self.base_at(t);
        if self.vector_model() {
            let n = n.max(1) as f64;
            let knee = self
                .knee_start
                .map_or(0.0, |k| self.knee_exp.powf((n - k).max(0.0)) - 1.0);
            return base * (1.0 + self.scale * (n - 1.0) + knee);
        }
        match self.knee {
            Some(k) if (n as f64) > k => base * (n as f64 / k).powf(self.exponent),
            _ => base,
        }
    }

    /// The p99 of one request alone, at time `t`, in ms.
    pub fn unloaded_p99_ms(&self, t: f64) -> f64 {
        if self.vector_model() {
            // The exponential's p99 is ln 100 ≈ 4.6 × its mean.
            return self.base_at(t) * (1.0 + self.exp_jitter * 100f64.ln());
        }
        let queue = self.queue.as_ref().map_or(0.0, |q| q.service_ms);
        if let Some(k) = self.erlang_k {
            // The Erlang's p99 over its mean: 4.61 (k 1), 3.32 (k 2), 2.80 (k 3), about
            // 1 + 2.33 / sqrt(k) beyond.
            let factor = match k {
                0 | 1 => 4.61,
                2 => 3.32,
                3 => 2.80,
                k => 1.0 + 2.33 / f64::from(k).sqrt(),
            };
            return self.base_at(t) * factor + queue;
        }
        self.base_at(t) * (self.jitter * 2.326).exp() + queue
    }

    /// One attempt's latency with `n` in flight at `t`, jitter drawn from `rng`, in ms.
    pub(super) fn draw_ms(&self, n: usize, t: f64, rng: &mut fastrand::Rng) -> f64 {
        let median = self.latency_ms(n, t);
        if self.vector_model() {
            let e = -(1.0 - rng.f64()).ln();
            self.base_at(t).mul_add(self.exp_jitter * e, median)
        } else if let Some(k) = self.erlang_k {
            median * erlang(k, rng)
        } else {
            median * (self.jitter * normal(rng)).exp()
        }
    }
}

/// An Erlang draw of shape `k` and mean 1: the mean of `k` exponentials.
pub(super) fn erlang(k: u32, rng: &mut fastrand::Rng) -> f64 {
    let k = k.max(1);
    (0..k).map(|_| -(1.0 - rng.f64()).ln()).sum::<f64>() / f64::from(k)
}

/// The load each sharer offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Load {
    /// `workers` loops: submit, wait, think, repeat.
    Closed {
        /// Concurrent callers.
        workers: usize,
        /// Pause between a completion and the next submit, in ms.
        #[serde(default)]
        think_ms: f64,
    },
    /// Poisson arrivals at `rate` per second, queued without bound.
    Open {
        /// Arrivals per second.
        rate: f64,
        /// The rate over time, a piecewise-linear schedule `[[time_s, rate], ...]` (a step is
        /// two points at the same time); overrides `rate`.
        #[serde(default)]
        rates: Vec<[f64; 2]>,
    },
    /// A fixed batch of `requests`, arriving one every `interval_ms` (0: all at once), as
    /// Vector's scenarios send them; the run ends when the last one has succeeded, and
    /// `finish_s` is that time.
    Batch {
        /// Requests in the batch.
        requests: usize,
        /// Time between arrivals, in ms.
        #[serde(default)]
        interval_ms: f64,
    },
}

/// Machine signals over time: each a piecewise-linear schedule `[[time_s, value], ...]`, plus a
/// CPU cost per task in flight.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// CPU percent (default 10).
    #[serde(default)]
    pub cpu: Vec<[f64; 2]>,
    /// CPU percent added per task in flight (all sharers).
    #[serde(default)]
    pub cpu_per_task: f64,
    /// Memory percent (default 30).
    #[serde(default)]
    pub memory: Vec<[f64; 2]>,
    /// Executor lag in ms (default 1).
    #[serde(default)]
    pub lag_ms: Vec<[f64; 2]>,
}

pub(super) fn schedule(points: &[[f64; 2]], t: f64, default: f64) -> f64 {
    let Some(first) = points.first() else {
        return default;
    };
    if t <= first[0] {
        return first[1];
    }
    for w in points.windows(2) {
        let ([t0, v0], [t1, v1]) = (w[0], w[1]);
        if t <= t1 {
            return if t1 > t0 {
                v0 + (v1 - v0) * (t - t0) / (t1 - t0)
            } else {
                v1
            };
        }
    }
    points[points.len() - 1][1]
}

/// Overrides of [`AimdConfig`] fields; durations in seconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the AimdConfig field of the same name"
)]
pub struct ConfigOverrides {
    pub min_limit: Option<usize>,
    pub max_limit: Option<usize>,
    pub initial_limit: Option<usize>,
    pub increase_step: Option<usize>,
    pub decrease_factor: Option<f64>,
    pub latency_decrease_factor: Option<f64>,
    pub cooldown_s: Option<f64>,
    pub adjustment_interval_s: Option<f64>,
    /// A number, or `false` for off.
    pub latency_tolerance: Option<toml::Value>,
    pub latency_min_samples: Option<u32>,
    pub latency_max_error_rate: Option<f64>,
    pub latency_baseline_window_s: Option<f64>,
    pub latency_probe_interval_s: Option<f64>,
    pub slow_start: Option<bool>,
}

impl ConfigOverrides {
    /// [`AimdConfig::default`] with these overrides.
    ///
    /// # Panics
    ///
    /// If `latency_tolerance` is neither a number nor `false`.
    pub fn apply(&self) -> AimdConfig {
        let d = AimdConfig::default();
        let secs = Duration::from_secs_f64;
        AimdConfig {
            min_limit: self.min_limit.unwrap_or(d.min_limit),
            max_limit: self.max_limit.unwrap_or(d.max_limit),
            initial_limit: self.initial_limit.unwrap_or(d.initial_limit),
            increase_step: self.increase_step.unwrap_or(d.increase_step),
            decrease_factor: self.decrease_factor.unwrap_or(d.decrease_factor),
            cooldown: self.cooldown_s.map_or(d.cooldown, secs),
            adjustment_interval: self
                .adjustment_interval_s
                .map_or(d.adjustment_interval, secs),
            latency_tolerance: match &self.latency_tolerance {
                None => d.latency_tolerance,
                Some(toml::Value::Boolean(false)) => None,
                Some(toml::Value::Float(v)) => Some(*v),
                Some(toml::Value::Integer(v)) => Some(*v as f64),
                Some(other) => panic!("latency_tolerance must be a number or false, not {other}"),
            },
            latency_min_samples: self.latency_min_samples.unwrap_or(d.latency_min_samples),
            latency_max_error_rate: self
                .latency_max_error_rate
                .unwrap_or(d.latency_max_error_rate),
            latency_baseline_window: self
                .latency_baseline_window_s
                .map_or(d.latency_baseline_window, secs),
            latency_probe_interval: self.latency_probe_interval_s.map(secs),
            slow_start: self.slow_start.unwrap_or(d.slow_start),
            latency_decrease_factor: self
                .latency_decrease_factor
                .unwrap_or(d.latency_decrease_factor),
            ..d
        }
    }
}

/// Reads a scenario file.
///
/// # Errors
///
/// The file cannot be read or is not a valid scenario.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box–Muller; 1 - u keeps the logarithm finite.
    let (u, v) = (1.0 - rng.f64(), rng.f64());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
