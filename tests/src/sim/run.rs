//! The discrete-event run of one variant of a scenario.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

use ace_core::{AimdConfig, Controller, LatencyRecorder, Signals, Usage};

use super::peers::{Peer, Rule};
use super::report::add_goodput_ratios;
use super::scenario::{erlang, schedule, Load, OverloadAction, Per, Queue, Scenario};

/// Which controller a run uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// ACE with the scenario's config.
    Ace,
    /// The seed's rules: the same config with the latency signal and slow start off.
    Seed,
    /// A fixed limit per sharer.
    Static(usize),
    /// A peer project's rule, see [`peers`](super::peers).
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
    // Ties at the same instant go in the order they were scheduled (the heap's `seq`), never by
    // this derived order (which only lets the tuple be ordered). Ranking completions first at a
    // tie was tried: ACE kept its ranges and goals, but the peers' figures in the drops and
    // deferrals scenarios moved by up to 3 × (their retries fall on the instants of
    // completions): a choice for the harness, left open.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A downstream that refuses (in 1 ms) above 20 in flight, at 200 ms per success.
    fn refusing(load: &str) -> Scenario {
        let text = format!(
            r#"
            name = "accounting"
            description = "errors are not goodput"
            duration_s = 40
            measure_from_s = 10
            static_limits = [20, 100]
            [downstream]
            base_ms = 200
            jitter = 0
            errors_above = 20
            error_rate = 1.0
            error_ms = 1
            {load}
            "#
        );
        toml::from_str(&text).expect("valid scenario")
    }

    #[test]
    fn goodput_counts_successes_only() {
        // 200 requests/s offered; 20 in flight at 200 ms serve 100/s. A limit of 100 fails about
        // half the offered requests: if failures counted, its goodput would read near 200/s.
        let s = refusing("[load]\nkind = \"open\"\nrate = 200");
        let o = run(&s, &Variant::Static(100), |_, _| {});
        let (goodput, errors) = (o.metrics["goodput"], o.metrics["error_rate"]);
        assert!(errors > 0.3, "error rate {errors}");
        assert!(goodput <= 101.0, "goodput {goodput}/s counts failures");
        assert!(goodput >= 90.0, "goodput {goodput}/s");
        // Mean and p99 latency are the successes' alone (the failures took 1 ms).
        assert!(o.metrics["p50_ms"] >= 199.0, "{:?}", o.metrics);
    }

    #[test]
    fn a_batch_finishes_only_when_every_task_succeeded() {
        // No retry: a task refused is lost, so a limit over the knee never finishes its batch,
        // while the knee's own limit does.
        let s = refusing("[load]\nkind = \"batch\"\nrequests = 200\ninterval_ms = 0");
        let over = run(&s, &Variant::Static(100), |_, _| {});
        assert!(over.metrics["finish_s"].is_infinite(), "{:?}", over.metrics);
        let at = run(&s, &Variant::Static(20), |_, _| {});
        let finish = at.metrics["finish_s"];
        assert!((1.9..2.2).contains(&finish), "finish {finish} s");
    }
}
