//! A discrete-event simulation of ACE in front of a downstream with a concurrency knee, on a
//! simulated clock, driving the real [`ace_core::Controller`] and [`ace_core::LatencyRecorder`].
//!
//! A [`Scenario`] (read from TOML) describes the downstream, the load, the machine signals over
//! time, the config, and the ranges the outcome must fall in. [`run_scenario`] runs it once per
//! variant (ACE, the seed's rules, each peer's rule from [`peers`], each static limit) and returns
//! the [`Outcome`] of each, with the per-cycle trace that the demo charts. Deterministic: every
//! random draw comes from one seeded generator per run.

pub mod peers;

pub use peers::{Peer, Rule};

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ace_core::{AimdConfig, Controller, LatencyRecorder, Signals, Usage};
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
    /// prints which hold, beside the goals every scenario has (see [`goals`]).
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
    /// Expected `[min, max]` per variant (`ace`, `seed`, a peer's label, `static_N`) and metric
    /// (see [`Outcome`]).
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
    fn draw_ms(&self, n: usize, t: f64, rng: &mut fastrand::Rng) -> f64 {
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
fn erlang(k: u32, rng: &mut fastrand::Rng) -> f64 {
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

fn schedule(points: &[[f64; 2]], t: f64, default: f64) -> f64 {
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

/// Which controller a run uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// ACE with the scenario's config.
    Ace,
    /// The seed's rules: the same config with the latency signal and slow start off.
    Seed,
    /// A fixed limit per sharer.
    Static(usize),
    /// A peer project's rule, see [`peers`].
    Peer(Peer),
}

impl Variant {
    /// The name used in tables and `expect`: `ace`, `seed`, `static_N`, or the peer's label
    /// (`vector`, `gradient2`, `vegas`, `envoy`, `brpc`).
    pub fn label(&self) -> String {
        match self {
            Self::Ace => "ace".into(),
            Self::Seed => "seed".into(),
            Self::Static(n) => format!("static_{n}"),
            Self::Peer(p) => p.label().into(),
        }
    }
}

/// Vector's rule: the reference that `time_ratio` and `mean_ratio` compare with.
pub const REFERENCE: Variant = Variant::Peer(Peer::Vector);

/// One control cycle of one sharer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// Simulated time, in seconds.
    pub t: f64,
    /// The limit after the decision.
    pub limit: usize,
    /// Permits held at the decision.
    pub in_flight: usize,
    /// The cycle's p90 latency, in ms (0 with no sample).
    pub p90_ms: f64,
    /// The controller's latency baseline, in ms (0 when none).
    pub baseline_ms: f64,
    /// Successes per second in the cycle.
    pub goodput: f64,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The variant run.
    pub variant: Variant,
    /// Per sharer, one entry per cycle.
    pub cycles: Vec<Vec<Cycle>>,
    /// The metrics, by name: `final_limit`, `mean_limit`, `min_limit`, `max_limit` (total over
    /// sharers, after `measure_from_s`), `goodput` (successes/s), `p50_ms`, `p99_ms`,
    /// `error_rate`, `settle_cycles` (first cycle from which the [`SETTLE_WINDOW`]-cycle moving average
    /// of the total limit stays in the settle band; `cycles + 1` if never), `in_band` (share of measured
    /// cycles whose limit is in the band), `fairness` (Jain's index of the sharers' goodput),
    /// `p99_ratio` (p99 / the unloaded p99), `goodput_ratio` (goodput / the best static's).
    pub metrics: BTreeMap<&'static str, f64>,
    /// Decision lines (ACE and seed runs, first sharer), for progress output.
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Order matters only to break ties at the same instant: completions first.
    Complete {
        sharer: usize,
        task: usize,
        ok: bool,
        took: u64,
        at_downstream: bool,
    },
    Retry {
        sharer: usize,
        task: usize,
    },
    Submit {
        sharer: usize,
    },
    Epoch {
        sharer: usize,
    },
    Tick {
        sharer: usize,
    },
}

struct Task {
    admitted: u64,
    attempts: u32,
    /// Tasks holding a slot when this one was admitted, itself included.
    in_flight: usize,
}

struct Sharer {
    controller: Controller,
    peer: Option<Box<dyn Rule>>,
    recorder: LatencyRecorder,
    limit: usize,
    in_flight: usize,
    queue: VecDeque<u64>,
    cycles: Vec<Cycle>,
    cycle_ok: u64,
    measured_ok: u64,
    done: usize,
    last_p90_ms: f64,
    // Latency epochs that changed the limit since the last cycle, and the last of them.
    epoch_changes: u32,
    last_epoch: String,
}

const NS: f64 = 1e9;

/// Cycles in the moving average that `settle_cycles` reads: about one AIMD sawtooth period at the
/// default cooldown, so that the sawtooth itself does not read as unsettled.
pub const SETTLE_WINDOW: usize = 10;

fn to_ns(ms: f64) -> u64 {
    (ms * 1e6).max(1.0) as u64
}

/// The config a variant runs with, for sharer `i`.
///
/// # Panics
///
/// If the scenario's config is invalid.
pub fn config_for(s: &Scenario, variant: &Variant, i: usize) -> AimdConfig {
    let mut base = s.config.apply();
    if !s.initial_limits.is_empty() {
        base.initial_limit = s.initial_limits[i % s.initial_limits.len()];
    }
    match variant {
        Variant::Ace | Variant::Peer(_) => base,
        Variant::Seed => base.seed_rules(),
        Variant::Static(n) => AimdConfig {
            adjustment_interval: base.adjustment_interval,
            ..AimdConfig::fixed(*n)
        },
    }
}

/// Runs one variant of a scenario. `on_cycle` sees each decision of sharer 0 as it is made.
///
/// # Panics
///
/// If the scenario's config is invalid.
pub fn run(s: &Scenario, variant: &Variant, on_cycle: impl FnMut(&Cycle, &str)) -> Outcome {
    run_with(s, variant, on_cycle, None)
}

/// Machine signals from outside the scenario (the demo's `--real`): called once per cycle with
/// the simulated time; its CPU, memory and lag replace the scenario's schedules.
pub type MachineSource<'a> = &'a mut dyn FnMut(f64) -> Signals;

/// [`run`], with the machine signals from `machine` when given.
///
/// # Panics
///
/// If the scenario's config is invalid.
pub fn run_with(
    s: &Scenario,
    variant: &Variant,
    mut on_cycle: impl FnMut(&Cycle, &str),
    mut machine: Option<MachineSource<'_>>,
) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let mut sharers: Vec<Sharer> = (0..s.sharers)
        .map(|i| {
            let config = config_for(s, variant, i);
            let max = config.max_limit;
            let controller = Controller::new(config)
                .expect("valid scenario config")
                .with_seed(s.seed ^ i as u64);
            let peer = match variant {
                // The peer's own initial limit (part of its design: Vector's 1, Envoy's 3 and
                // its probe, Netflix's 20, brpc's 40), unless the scenario is about where each
                // sharer starts (`initial_limits`).
                Variant::Peer(p) => Some(p.rule(
                    (!s.initial_limits.is_empty()).then_some(controller.limit()),
                    max,
                    s.seed ^ i as u64,
                )),
                _ => None,
            };
            Sharer {
                limit: peer.as_ref().map_or(controller.limit(), |p| p.limit()),
                controller,
                peer,
                recorder: LatencyRecorder::new(),
                in_flight: 0,
                queue: VecDeque::new(),
                cycles: Vec::new(),
                cycle_ok: 0,
                measured_ok: 0,
                done: 0,
                last_p90_ms: 0.0,
                epoch_changes: 0,
                last_epoch: String::new(),
            }
        })
        .collect();
    let interval = config_for(s, variant, 0).adjustment_interval;
    let interval_ns = interval.as_nanos() as u64;
    let end = (s.duration_s * NS) as u64;
    let measure_from = (s.measure_from_s * NS) as u64;
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: u64, e: Event| {
        seq += 1;
        heap.push(std::cmp::Reverse((t, seq, e)));
    };
    let batch = match s.load {
        Load::Batch { requests, .. } => Some(requests),
        _ => None,
    };
    for i in 0..s.sharers {
        // Sharers tick out of phase, as independent processes would.
        let phase = interval_ns / s.sharers as u64 * i as u64;
        push(&mut heap, interval_ns + phase, Event::Tick { sharer: i });
        if *variant == Variant::Ace && PACED {
            push(&mut heap, 0, Event::Epoch { sharer: i });
        }
        match s.load {
            Load::Closed { workers, .. } => {
                for _ in 0..workers {
                    push(
                        &mut heap,
                        rng.u64(0..to_ns(5.0)),
                        Event::Submit { sharer: i },
                    );
                }
            }
            Load::Open { .. } => push(&mut heap, 0, Event::Submit { sharer: i }),
            Load::Batch {
                requests,
                interval_ms,
            } => {
                for k in 0..requests {
                    let at = (k as f64 * interval_ms * 1e6) as u64;
                    push(&mut heap, at, Event::Submit { sharer: i });
                }
            }
        }
    }
    let timeout_ms = s
        .retry
        .as_ref()
        .map(|r| r.timeout_ms)
        .or(s.downstream.timeout_ms);
    let mut tasks: Vec<Task> = Vec::new();
    let mut starts: VecDeque<u64> = VecDeque::new();
    let mut downstream_in_flight = 0usize;
    // When each worker of the downstream's queue is next free (ns).
    let workers = s.downstream.queue.as_ref().map_or(0, |q| q.servers.max(1));
    let mut workers_free_at: BinaryHeap<std::cmp::Reverse<u64>> =
        std::iter::repeat_n(std::cmp::Reverse(0), workers).collect();
    let mut measured_latencies: Vec<f64> = Vec::new();
    let mut measured_errors = 0u64;
    let mut log = Vec::new();
    let mut finish: Option<u64> = None;
    let mut last_t = 0u64;

    while let Some(std::cmp::Reverse((t, _, event))) = heap.pop() {
        if t > end {
            break;
        }
        last_t = t;
        let ts = t as f64 / NS;
        // Attempts to start now: (sharer, task).
        let mut attempts: Vec<(usize, usize)> = Vec::new();
        let sharer = match event {
            Event::Complete {
                sharer,
                task,
                ok,
                took,
                at_downstream,
            } => {
                let sh = &mut sharers[sharer];
                if at_downstream {
                    downstream_in_flight -= 1;
                }
                if let Some(p) = &mut sh.peer {
                    p.attempt(t, took as f64 / NS, ok, tasks[task].in_flight);
                    sh.limit = p.limit();
                }
                let retry = s.retry.as_ref().filter(|_| !ok);
                let inside = s.retry.as_ref().is_some_and(|r| r.inside_task);
                if PACED && !inside {
                    // Each attempt is timed on its own; a refused one is back-pressure.
                    if ok {
                        sh.recorder.record(Duration::from_nanos(took));
                    } else {
                        sh.recorder.record_error();
                    }
                }
                if let Some(retry) = retry {
                    // The task keeps its slot and tries again after a backoff.
                    let k = tasks[task].attempts;
                    tasks[task].attempts += 1;
                    let backoff =
                        (fibonacci(k) * retry.initial_backoff_ms).min(retry.max_backoff_ms);
                    push(&mut heap, t + to_ns(backoff), Event::Retry { sharer, task });
                } else {
                    // The task ends.
                    sh.in_flight -= 1;
                    let latency = t - tasks[task].admitted;
                    if !PACED || inside {
                        // Timed from admission to its end, as a plain `submit` is; behind
                        // retries the task fails only when the retries give up.
                        if ok {
                            sh.recorder.record(Duration::from_nanos(latency));
                        } else {
                            sh.recorder.record_error();
                        }
                    }
                    if ok {
                        sh.cycle_ok += 1;
                        sh.done += 1;
                    }
                    if let Some(p) = &mut sh.peer {
                        p.task_done(t);
                        sh.limit = p.limit();
                    }
                    if t >= measure_from {
                        if ok {
                            sh.measured_ok += 1;
                            measured_latencies.push(latency as f64 / 1e6);
                        } else {
                            measured_errors += 1;
                        }
                    }
                    if let Load::Closed { think_ms, .. } = s.load {
                        push(&mut heap, t + to_ns(think_ms), Event::Submit { sharer });
                    }
                    if batch.is_some_and(|n| sharers.iter().all(|sh| sh.done >= n)) {
                        finish = Some(t);
                        break;
                    }
                }
                sharer
            }
            Event::Retry { sharer, task } => {
                attempts.push((sharer, task));
                sharer
            }
            Event::Submit { sharer } => {
                sharers[sharer].queue.push_back(t);
                if let Load::Open { rate, rates } = &s.load {
                    let rate = schedule(rates, ts, *rate).max(1e-3);
                    let gap = -(1.0 - rng.f64()).ln() / rate;
                    push(
                        &mut heap,
                        t + (gap * NS) as u64 + 1,
                        Event::Submit { sharer },
                    );
                }
                sharer
            }
            Event::Epoch { sharer } => {
                let sh = &mut sharers[sharer];
                let next = epoch(sh, t, ts, &mut log, sharer == 0);
                push(&mut heap, next.max(t + 1), Event::Epoch { sharer });
                sharer
            }
            Event::Tick { sharer } => {
                let sh = &mut sharers[sharer];
                let m = &s.machine;
                let cpu = schedule(&m.cpu, ts, 10.0) + m.cpu_per_task * downstream_in_flight as f64;
                let paced = PACED && *variant == Variant::Ace;
                let summary = if paced {
                    None
                } else {
                    Some(sh.recorder.take_summary())
                };
                let signals = match machine.as_mut() {
                    Some(read) => Signals {
                        latency: summary,
                        ..read(ts)
                    },
                    None => Signals {
                        cpu_percent: Some(cpu.clamp(0.0, 100.0)),
                        memory_percent: Some(schedule(&m.memory, ts, 30.0)),
                        event_loop_lag: Some(Duration::from_secs_f64(
                            schedule(&m.lag_ms, ts, 1.0).max(0.0) / 1e3,
                        )),
                        latency: summary,
                        ..Signals::default()
                    },
                };
                let usage = Usage {
                    limit: sh.limit,
                    in_flight: sh.in_flight,
                    waiting: sh.queue.len(),
                };
                let line = if sh.peer.is_some() {
                    format!("limit {}", sh.limit)
                } else {
                    let d = sh
                        .controller
                        .decide(Duration::from_nanos(t), &signals, usage);
                    sh.limit = d.new_limit;
                    let epochs = std::mem::take(&mut sh.epoch_changes);
                    if d.reason == ace_core::Reason::Paced && epochs > 0 {
                        // The machine cycle held; say what the latency epochs did meanwhile.
                        let plural = if epochs == 1 { "" } else { "s" };
                        format!("{epochs} epoch change{plural}, last: {}", sh.last_epoch)
                    } else {
                        d.to_string()
                    }
                };
                let cycle = Cycle {
                    t: ts,
                    limit: sh.limit,
                    in_flight: usage.in_flight,
                    p90_ms: summary.map_or(sh.last_p90_ms, |l| l.p90.as_secs_f64() * 1e3),
                    baseline_ms: sh
                        .controller
                        .latency_baseline()
                        .map_or(0.0, |b| b.as_secs_f64() * 1e3),
                    goodput: sh.cycle_ok as f64 / interval.as_secs_f64(),
                };
                sh.cycle_ok = 0;
                sh.cycles.push(cycle);
                if sharer == 0 {
                    on_cycle(&cycle, &line);
                    if matches!(variant, Variant::Ace | Variant::Seed)
                        && (!paced || d_changed(&line))
                    {
                        log.push(format!("{ts:7.1}s  {line}"));
                    }
                }
                push(&mut heap, t + interval_ns, Event::Tick { sharer });
                sharer
            }
        };
        // Admit what the limit allows.
        let sh = &mut sharers[sharer];
        if let Some(p) = &mut sh.peer {
            // A peer's timers (Envoy's sample windows) fire by now.
            p.advance(t);
            sh.limit = p.limit();
        }
        while sh.in_flight < sh.limit {
            if sh.queue.pop_front().is_none() {
                break;
            }
            sh.in_flight += 1;
            tasks.push(Task {
                admitted: t,
                attempts: 0,
                in_flight: sh.in_flight,
            });
            if let Some(p) = &mut sh.peer {
                p.admitted(t, sh.in_flight);
                sh.limit = p.limit();
            }
            admitted(&sh.recorder, sh.in_flight, sh.limit);
            attempts.push((sharer, tasks.len() - 1));
        }
        for (sharer, task) in attempts {
            let d = &s.downstream;
            // Vector's rate: requests started in the last second, this one included.
            while starts.front().is_some_and(|&st| st + NS as u64 <= t) {
                starts.pop_front();
            }
            starts.push_back(t);
            let level = downstream_in_flight + 1;
            let action = d.overload.as_ref().and_then(|o| {
                let over = match o.per {
                    Per::Concurrency => level as f64 > o.above,
                    Per::Rate => starts.len() as f64 > o.above,
                };
                over.then_some(o.action)
            });
            let (ok, ms, at_downstream) = match action {
                Some(OverloadAction::Drop) => (false, timeout_ms.unwrap_or(f64::INFINITY), false),
                Some(OverloadAction::Defer) => (false, d.draw_ms(1, ts, &mut rng), true),
                None => {
                    let mut ms = d.draw_ms(level, ts, &mut rng);
                    let mut ok = true;
                    if d.errors_above.is_some_and(|above| level as f64 > above)
                        && rng.f64() < d.error_rate
                    {
                        ok = false;
                        ms = d.error_ms;
                    } else if let Some(q) = &d.queue {
                        ms += queue_ms(q, &mut workers_free_at, t, timeout_ms, &mut rng);
                    }
                    (ok, ms, true)
                }
            };
            let (ok, ms) = match timeout_ms.filter(|&to| ms > to) {
                Some(timeout) => (false, timeout),
                None => (ok, ms),
            };
            if at_downstream {
                downstream_in_flight += 1;
            }
            if ms.is_finite() {
                let took = to_ns(ms);
                push(
                    &mut heap,
                    t + took,
                    Event::Complete {
                        sharer,
                        task,
                        ok,
                        took,
                        at_downstream,
                    },
                );
            }
        }
    }

    let finish_s = finish.map_or(last_t.max(end) as f64 / NS, |f| f as f64 / NS);
    let measured_s = if batch.is_some() {
        (finish_s - s.measure_from_s).max(1e-9)
    } else {
        (s.duration_s - s.measure_from_s).max(1e-9)
    };
    let mut metrics = BTreeMap::new();
    if batch.is_some() {
        metrics.insert(
            "finish_s",
            if finish.is_some() {
                finish_s
            } else {
                f64::INFINITY
            },
        );
    }
    let mean_latency =
        measured_latencies.iter().sum::<f64>() / measured_latencies.len().max(1) as f64;
    metrics.insert("mean_ms", mean_latency);
    let totals: Vec<(f64, usize)> = (0..sharers[0].cycles.len())
        .map(|c| {
            let t = sharers[0].cycles[c].t;
            let total = sharers
                .iter()
                .filter_map(|sh| sh.cycles.get(c))
                .map(|cy| cy.limit)
                .sum();
            (t, total)
        })
        .collect();
    let measured: Vec<f64> = totals
        .iter()
        .filter(|(t, _)| *t >= s.measure_from_s)
        .map(|&(_, l)| l as f64)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    metrics.insert("final_limit", totals.last().map_or(0.0, |x| x.1 as f64));
    metrics.insert("mean_limit", mean(&measured));
    metrics.insert(
        "min_limit",
        measured.iter().copied().fold(f64::INFINITY, f64::min),
    );
    metrics.insert("max_limit", measured.iter().copied().fold(0.0, f64::max));
    let ok_total: u64 = sharers.iter().map(|sh| sh.measured_ok).sum();
    metrics.insert("goodput", ok_total as f64 / measured_s);
    measured_latencies.sort_by(f64::total_cmp);
    metrics.insert("p50_ms", percentile(&measured_latencies, 0.50));
    metrics.insert("p99_ms", percentile(&measured_latencies, 0.99));
    metrics.insert(
        "p99_ratio",
        percentile(&measured_latencies, 0.99) / s.downstream.unloaded_p99_ms(s.measure_from_s),
    );
    metrics.insert(
        "error_rate",
        measured_errors as f64 / (ok_total + measured_errors).max(1) as f64,
    );
    if let Some([lo, hi]) = s.settle_band {
        let limits: Vec<f64> = totals.iter().map(|&(_, l)| l as f64).collect();
        let smooth: Vec<f64> = (0..limits.len())
            .map(|i| mean(&limits[i.saturating_sub(SETTLE_WINDOW - 1)..=i]))
            .collect();
        let inside = |v: f64| (lo..=hi).contains(&v);
        let settle = (0..=smooth.len())
            .find(|&i| smooth[i..].iter().all(|&v| inside(v)))
            .unwrap_or(smooth.len());
        // Cycles are counted from 1: settled "at cycle 3" means after the third decision.
        metrics.insert("settle_cycles", (settle + 1) as f64);
        let in_band = measured.iter().filter(|&&v| inside(v)).count();
        metrics.insert("in_band", in_band as f64 / measured.len().max(1) as f64);
    }
    let goodputs: Vec<f64> = sharers
        .iter()
        .map(|sh| sh.measured_ok as f64 / measured_s)
        .collect();
    let sum: f64 = goodputs.iter().sum();
    let sq: f64 = goodputs.iter().map(|g| g * g).sum();
    metrics.insert(
        "fairness",
        if sq > 0.0 {
            sum * sum / (goodputs.len() as f64 * sq)
        } else {
            1.0
        },
    );
    Outcome {
        variant: variant.clone(),
        cycles: sharers.into_iter().map(|sh| sh.cycles).collect(),
        metrics,
        log,
    }
}

/// ACE's latency path runs on its own epochs, each attempt timed by itself (`true`), or once per
/// control cycle with each task timed from admission to its end (`false`, as before).
const PACED: bool = true;

/// Tells the recorder that a task was admitted with `in_flight` of `limit` slots taken.
fn admitted(recorder: &LatencyRecorder, in_flight: usize, limit: usize) {
    recorder.record_admission(in_flight, limit);
}

/// Closes ACE's latency epoch if it is due, as the control loop does; returns when to look
/// again (ns).
fn epoch(sh: &mut Sharer, t: u64, ts: f64, log: &mut Vec<String>, first: bool) -> u64 {
    let now = Duration::from_nanos(t);
    let due = sh.controller.next_epoch();
    if now < due {
        return due.as_nanos() as u64;
    }
    let summary = sh.recorder.take_summary();
    let usage = Usage {
        limit: sh.limit,
        in_flight: sh.in_flight,
        waiting: sh.queue.len(),
    };
    let d = sh.controller.epoch(now, &summary, usage);
    if summary.samples > 0 && !matches!(d.reason, ace_core::Reason::Gathering { .. }) {
        sh.last_p90_ms = summary.p90.as_secs_f64() * 1e3;
    }
    sh.limit = d.new_limit;
    if d.action != ace_core::Action::Hold {
        sh.epoch_changes += 1;
        sh.last_epoch = d.to_string();
        if first {
            log.push(format!("{ts:7.3}s  {d}"));
        }
    }
    sh.controller.next_epoch().as_nanos() as u64
}

/// The time a request arriving at `t` spends in the downstream's queue, waiting and served, in
/// ms; infinite when the wait alone outlasts the timeout (it leaves the queue unserved).
fn queue_ms(
    q: &Queue,
    free_at: &mut BinaryHeap<std::cmp::Reverse<u64>>,
    t: u64,
    timeout_ms: Option<f64>,
    rng: &mut fastrand::Rng,
) -> f64 {
    let std::cmp::Reverse(free) = free_at.pop().unwrap_or(std::cmp::Reverse(0));
    let start = free.max(t);
    let wait_ms = (start - t) as f64 / 1e6;
    if timeout_ms.is_some_and(|to| wait_ms >= to) {
        free_at.push(std::cmp::Reverse(free));
        return f64::INFINITY;
    }
    let service_ms = q.service_ms * q.erlang_k.map_or(1.0, |k| erlang(k, rng));
    free_at.push(std::cmp::Reverse(start + to_ns(service_ms)));
    wait_ms + service_ms
}

fn d_changed(line: &str) -> bool {
    // Epoch changes are logged as they happen; the machine cycle's own changes here.
    !line.starts_with("hold") && !line.contains(" epoch change")
}

fn fibonacci(k: u32) -> f64 {
    let (mut a, mut b) = (1.0, 1.0);
    for _ in 0..k {
        (a, b) = (b, a + b);
    }
    a
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box–Muller; 1 - u keeps the logarithm finite.
    let (u, v) = (1.0 - rng.f64(), rng.f64());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Every variant of a scenario: ACE, the seed's rules, each peer's rule, then each static limit;
/// with the ratios of [`add_goodput_ratios`] filled in.
pub fn run_scenario(s: &Scenario) -> Vec<Outcome> {
    let mut variants = vec![Variant::Ace, Variant::Seed];
    variants.extend(Peer::ALL.map(Variant::Peer));
    variants.extend(s.static_limits.iter().map(|&n| Variant::Static(n)));
    let mut outcomes: Vec<Outcome> = variants.iter().map(|v| run(s, v, |_, _| {})).collect();
    add_goodput_ratios(&mut outcomes);
    outcomes
}

/// The best of the peers' outcomes: the first to finish a batch (then the lower mean latency);
/// else the highest goodput, goodputs within 1 % of it counting as equal, then the lower mean
/// latency.
pub fn best_peer(outcomes: &[Outcome]) -> Option<&Outcome> {
    let peers = || {
        outcomes
            .iter()
            .filter(|o| matches!(o.variant, Variant::Peer(_)) && o.metrics["goodput"] > 0.0)
    };
    let by_mean =
        |a: &&Outcome, b: &&Outcome| a.metrics["mean_ms"].total_cmp(&b.metrics["mean_ms"]);
    if peers().any(|o| o.metrics.contains_key("finish_s")) {
        return peers().min_by(|a, b| {
            a.metrics["finish_s"]
                .total_cmp(&b.metrics["finish_s"])
                .then_with(|| by_mean(a, b))
        });
    }
    let top = peers().map(|o| o.metrics["goodput"]).fold(0.0, f64::max);
    peers()
        .filter(|o| o.metrics["goodput"] >= 0.99 * top)
        .min_by(by_mean)
}

/// Adds to every outcome: `goodput_ratio` (its goodput over the best static limit's),
/// `finish_vs_static` (its finish time over the best static limit's), `time_ratio` and
/// `mean_ratio` (over Vector's, [`REFERENCE`]), and `time_vs_best_peer`, `goodput_vs_best_peer`,
/// `mean_vs_best_peer` (over [`best_peer`]'s).
pub fn add_goodput_ratios(outcomes: &mut [Outcome]) {
    let best_peer = best_peer(outcomes).map(|o| o.metrics.clone());
    for o in outcomes.iter_mut() {
        let Some(b) = &best_peer else { break };
        if let (Some(f), Some(bf)) = (o.metrics.get("finish_s"), b.get("finish_s")) {
            let ratio = f / bf;
            o.metrics.insert("time_vs_best_peer", ratio);
        }
        let goodput = o.metrics["goodput"] / b["goodput"].max(1e-9);
        o.metrics.insert("goodput_vs_best_peer", goodput);
        let mean = o.metrics["mean_ms"] / b["mean_ms"].max(1e-9);
        o.metrics.insert("mean_vs_best_peer", mean);
    }
    let best = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .map(|o| o.metrics["goodput"])
        .fold(0.0, f64::max);
    let reference = outcomes
        .iter()
        .find(|o| o.variant == REFERENCE)
        .map(|o| o.metrics.clone());
    let best_finish = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .filter_map(|o| o.metrics.get("finish_s").copied())
        .fold(f64::INFINITY, f64::min);
    for o in outcomes {
        let g = o.metrics["goodput"];
        o.metrics
            .insert("goodput_ratio", if best > 0.0 { g / best } else { 0.0 });
        if let Some(r) = &reference {
            if let (Some(f), Some(rf)) = (o.metrics.get("finish_s"), r.get("finish_s")) {
                let ratio = f / rf;
                o.metrics.insert("time_ratio", ratio);
            }
            let mean_ratio = o.metrics["mean_ms"] / r["mean_ms"].max(1e-9);
            o.metrics.insert("mean_ratio", mean_ratio);
        }
        if let Some(&f) = o.metrics.get("finish_s") {
            o.metrics.insert("finish_vs_static", f / best_finish);
        }
    }
}

/// The expected ranges that an outcome misses, as readable lines; unknown variant or metric
/// names are misses too (a typo must not pass silently).
pub fn check(s: &Scenario, outcomes: &[Outcome]) -> Vec<String> {
    let mut misses = Vec::new();
    for (variant, ranges) in &s.expect {
        let Some(o) = outcomes.iter().find(|o| &o.variant.label() == variant) else {
            misses.push(format!("{}: no variant `{variant}`", s.name));
            continue;
        };
        for (metric, [lo, hi]) in ranges {
            match o.metrics.get(metric.as_str()) {
                None => misses.push(format!("{}: {variant}: no metric `{metric}`", s.name)),
                Some(&v) if !(v >= *lo && v <= *hi) => misses.push(format!(
                    "{}: {variant}.{metric} = {v:.3}, expected [{lo}, {hi}]",
                    s.name
                )),
                Some(_) => {}
            }
        }
    }
    misses
}

/// A comparison table of the outcomes, one row per variant.
pub fn table(s: &Scenario, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}: {}", s.name, s.description);
    let _ = writeln!(
        out,
        "{:<13} {:>7} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "variant",
        "mean L",
        "min–max L",
        "final L",
        "goodput/s",
        "vs best",
        "p50 ms",
        "p99 ms",
        "p99 ×",
        "err %",
        "settle",
        "fair",
        "finish s",
        "mean ms",
        "time ×V",
        "mean ×V",
        "time ×P",
        "mean ×P"
    );
    for o in outcomes {
        let m = &o.metrics;
        let settle = m
            .get("settle_cycles")
            .map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "{:<13} {:>7.1} {:>9} {:>7.0} {:>9.1} {:>8.2} {:>8.1} {:>8.1} {:>6.2} {:>6.1} {:>7} {:>6.3} {:>8} {:>8.1} {:>7} {:>7} {:>7} {:>7}",
            o.variant.label(),
            m["mean_limit"],
            format!("{:.0}–{:.0}", m["min_limit"], m["max_limit"]),
            m["final_limit"],
            m["goodput"],
            m["goodput_ratio"],
            m["p50_ms"],
            m["p99_ms"],
            m["p99_ratio"],
            m["error_rate"] * 100.0,
            settle,
            m["fairness"],
            m.get("finish_s").map_or("-".into(), |v| format!("{v:.2}")),
            m["mean_ms"],
            m.get("time_ratio").map_or("-".into(), |v| format!("{v:.2}")),
            m.get("mean_ratio").map_or("-".into(), |v| format!("{v:.2}")),
            m.get("time_vs_best_peer")
                .map_or("-".into(), |v| format!("{v:.2}")),
            m.get("mean_vs_best_peer")
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    if let Some(b) = best_peer(outcomes) {
        let _ = writeln!(
            out,
            "(×P: against the best peer rule here, {})",
            b.variant.label()
        );
    }
    out
}

/// One goal: a `[min, max]` range for a variant's metric, and whether the run meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// The scenario's name.
    pub scenario: String,
    /// The variant's label.
    pub variant: String,
    /// The metric.
    pub metric: String,
    /// Its value in the run (NaN when the run has no such metric).
    pub value: f64,
    /// The range the goal asks for.
    pub range: [f64; 2],
}

impl Goal {
    /// Whether the value is in the range.
    pub fn met(&self) -> bool {
        self.value >= self.range[0] && self.value <= self.range[1]
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}.{} = {:.3}, goal [{}, {}]",
            self.scenario, self.variant, self.metric, self.value, self.range[0], self.range[1]
        )
    }
}

/// ACE against the best peer (issue 19): within 1.05 × its time on a batch (else at least
/// 0.95 × its goodput), with mean latency at most 1.10 × its.
pub const PEER_GOALS: [(&str, [f64; 2]); 3] = [
    ("time_vs_best_peer", [0.0, 1.05]),
    ("goodput_vs_best_peer", [0.95, f64::INFINITY]),
    ("mean_vs_best_peer", [0.0, 1.10]),
];

/// Every goal of a scenario: [`PEER_GOALS`] for ACE (those whose metric the run has), then the
/// file's own `goals`.
pub fn goals(s: &Scenario, outcomes: &[Outcome]) -> Vec<Goal> {
    let mut out = Vec::new();
    let ace = outcomes.iter().find(|o| o.variant == Variant::Ace);
    let batch = ace.is_some_and(|o| o.metrics.contains_key("finish_s"));
    for (metric, range) in PEER_GOALS {
        // A batch is judged on its time, anything else on its goodput.
        if (metric == "goodput_vs_best_peer" && batch) || (metric == "time_vs_best_peer" && !batch)
        {
            continue;
        }
        if let Some(&value) = ace.and_then(|o| o.metrics.get(metric)) {
            out.push(Goal {
                scenario: s.name.clone(),
                variant: "ace".into(),
                metric: metric.into(),
                value,
                range,
            });
        }
    }
    for (variant, ranges) in &s.goals {
        let o = outcomes.iter().find(|o| &o.variant.label() == variant);
        for (metric, &range) in ranges {
            out.push(Goal {
                scenario: s.name.clone(),
                variant: variant.clone(),
                metric: metric.clone(),
                value: o
                    .and_then(|o| o.metrics.get(metric.as_str()).copied())
                    .unwrap_or(f64::NAN),
                range,
            });
        }
    }
    out
}

/// Where the best peer rule beats ACE by more than [`PEER_GOALS`] allow, as readable lines: its
/// time (or goodput) and its mean latency against ACE's.
pub fn peer_wins(s: &Scenario, outcomes: &[Outcome]) -> Vec<String> {
    let (Some(ace), Some(best)) = (
        outcomes.iter().find(|o| o.variant == Variant::Ace),
        best_peer(outcomes),
    ) else {
        return Vec::new();
    };
    let (a, b) = (&ace.metrics, &best.metrics);
    let name = best.variant.label();
    let mut wins = Vec::new();
    for g in goals(s, outcomes)
        .into_iter()
        .filter(|g| g.variant == "ace" && !g.met())
    {
        let line = match g.metric.as_str() {
            "time_vs_best_peer" => format!(
                "{}: {name} finishes in {:.2} s, ACE in {:.2} s ({:.2} ×)",
                s.name, b["finish_s"], a["finish_s"], g.value
            ),
            "goodput_vs_best_peer" => format!(
                "{}: {name} gets {:.1}/s, ACE {:.1}/s ({:.2} ×)",
                s.name, b["goodput"], a["goodput"], g.value
            ),
            "mean_vs_best_peer" => format!(
                "{}: {name}'s mean latency {:.1} ms, ACE's {:.1} ms ({:.2} ×)",
                s.name, b["mean_ms"], a["mean_ms"], g.value
            ),
            _ => continue,
        };
        wins.push(line);
    }
    wins
}

/// The columns of [`summary_row`]: ACE, each peer, then the best static limit.
pub fn summary_header() -> String {
    let mut head = String::from("| scenario | ACE |");
    let mut rule = String::from("|---|---|");
    for p in Peer::ALL {
        let _ = write!(head, " {} |", p.name());
        rule.push_str("---|");
    }
    head.push_str(" best static |");
    rule.push_str("---|");
    format!("{head}\n{rule}\n")
}

/// One markdown row: per rule, a batch's time, or else goodput per second, then mean and p99
/// latency in ms; the best time (goodput) of the adaptive rules in bold.
pub fn summary_row(s: &Scenario, outcomes: &[Outcome]) -> String {
    row(s, outcomes, true)
}

/// [`summary_row`] without the p99.
pub fn summary_row_short(s: &Scenario, outcomes: &[Outcome]) -> String {
    row(s, outcomes, false)
}

fn row(s: &Scenario, outcomes: &[Outcome], p99: bool) -> String {
    let batch = outcomes.iter().any(|o| o.metrics.contains_key("finish_s"));
    let key = |o: &Outcome| {
        if batch {
            -o.metrics["finish_s"]
        } else {
            o.metrics["goodput"]
        }
    };
    let cell = |o: &Outcome, best: bool| {
        let m = &o.metrics;
        let head = if batch {
            format!("{:.2} s", m["finish_s"])
        } else {
            format!("{:.0}/s", m["goodput"])
        };
        let head = if best { format!("**{head}**") } else { head };
        match (m["goodput"] > 0.0, p99) {
            (false, _) => format!("{head} · -"),
            (true, true) => format!("{head} · {:.0} · {:.0}", m["mean_ms"], m["p99_ms"]),
            (true, false) => format!("{head} · {:.0}", m["mean_ms"]),
        }
    };
    let adaptive: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Ace | Variant::Peer(_)))
        .collect();
    let top = adaptive
        .iter()
        .map(|o| key(o))
        .fold(f64::NEG_INFINITY, f64::max);
    // Within 1 % of the best counts as the best.
    let is_best = |o: &Outcome| {
        let k = key(o);
        if batch {
            k >= top * 1.01
        } else {
            k >= top * 0.99
        }
    };
    let mut row = format!("| {} |", s.name);
    for o in &adaptive {
        let _ = write!(row, " {} |", cell(o, is_best(o)));
    }
    let best_static = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .max_by(|a, b| key(a).total_cmp(&key(b)));
    match best_static {
        Some(o) => {
            let _ = write!(row, " {} ({}) |", cell(o, false), o.variant.label());
        }
        None => row.push_str(" - |"),
    }
    row
}
