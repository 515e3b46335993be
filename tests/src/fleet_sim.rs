//! A deterministic simulation of many instances behind one downstream, with and without a
//! fleet budget (`ace_std::fleet`), on simulated time.
//!
//! Each instance runs ACE's real [`Controller`] on its own latency; the downstream is
//! [`sim::Downstream`](crate::sim::Downstream) (latency grows past a knee). With the fleet,
//! every instance renews a lease once per cycle against [`FleetModel`], the lease script's
//! rules written in Rust: its limit is `min(AIMD limit, grant)` and the grant is the
//! controller's [`Ceiling`]. Without it, each instance is alone with its AIMD, and when
//! `instances × min_limit` is over the knee no local rule can unload the downstream.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use ace_core::{AimdConfig, Ceiling, Controller, LatencyRecorder, Signals};

use crate::sim::Downstream;

/// The lease script's rules (`ace-std/src/fleet/renew.lua`), for the simulation: max-min fair
/// share with the level rounded up, never more than C minus the others' held grants, and what
/// is held covers the permits in use.
#[derive(Debug, Clone)]
pub struct FleetModel {
    capacity: usize,
    want: Vec<usize>,
    held: Vec<usize>,
    live: Vec<bool>,
}

impl FleetModel {
    /// A budget of `capacity` for `members` (none joined yet).
    pub fn new(capacity: usize, members: usize) -> Self {
        Self {
            capacity,
            want: vec![0; members],
            held: vec![0; members],
            live: vec![false; members],
        }
    }

    /// Member `i` renews: it wants `want` and has `in_use` permits in use. Returns its grant.
    pub fn renew(&mut self, i: usize, want: usize, in_use: usize) -> usize {
        self.live[i] = true;
        self.want[i] = want.min(self.capacity);
        let mut wants: Vec<usize> = (0..self.want.len())
            .filter(|&m| self.live[m])
            .map(|m| self.want[m])
            .collect();
        wants.sort_unstable();
        let (mut left, mut k) = (self.capacity, wants.len());
        let mut fair = self.want[i];
        for w in wants {
            if w * k <= left {
                left -= w;
                k -= 1;
            } else {
                fair = fair.min(left.div_ceil(k));
                break;
            }
        }
        let others: usize = self.total() - self.held[i];
        let grant = fair.min(self.capacity.saturating_sub(others));
        self.held[i] = grant.max(in_use.min(self.held[i]));
        grant
    }

    /// The sum of the held grants.
    pub fn total(&self) -> usize {
        self.held.iter().sum()
    }

    /// Live members.
    pub fn members(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }
}

/// A fleet scenario: `instances` behind one downstream, each with `workers` closed-loop workers.
#[derive(Debug, Clone)]
pub struct FleetScenario {
    /// How many instances share the downstream.
    pub instances: usize,
    /// The fleet budget C (the downstream's knee, when it is known).
    pub capacity: usize,
    /// Closed-loop workers per instance (a worker sends again as soon as its request returns).
    pub workers: usize,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Goodput and in-flight are measured from here on.
    pub measure_from_s: f64,
    /// The downstream.
    pub downstream: Downstream,
    /// Every instance's controller config.
    pub config: AimdConfig,
    /// The generator's seed (jitter).
    pub seed: u64,
}

impl FleetScenario {
    /// 100 instances, 3 workers each, behind a downstream whose knee is C = 100, with
    /// `min_limit` 2: alone, the instances hold at least 200 in flight.
    pub fn hundred_instances() -> Self {
        Self {
            instances: 100,
            capacity: 100,
            workers: 3,
            duration_s: 60.0,
            measure_from_s: 20.0,
            // From the same TOML as the scenario files, so that new fields keep their defaults.
            downstream: toml::from_str::<Downstream>(
                "base_ms = 20.0\nknee = 100.0\nexponent = 2.0\njitter = 0.1",
            )
            .expect("a valid downstream"),
            config: AimdConfig {
                min_limit: 2,
                max_limit: 50,
                initial_limit: 3,
                ..AimdConfig::default()
            },
            seed: 7,
        }
    }
}

/// How the instances are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetVariant {
    /// AIMD inside a fleet budget of C.
    Fleet,
    /// AIMD alone on each instance.
    Alone,
    /// A fixed limit per instance (the static split: C / instances, at least 1).
    Static(usize),
}

/// What one run measured, from `measure_from_s` on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetOutcome {
    /// Requests completed per second.
    pub goodput: f64,
    /// The most requests in flight at the downstream, over the whole run.
    pub peak_in_flight: usize,
    /// The time-weighted mean in flight at the downstream.
    pub mean_in_flight: f64,
    /// The highest sum of held grants (fleet only).
    pub peak_held: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Complete { instance: usize, took_ns: u64 },
    Tick { instance: usize },
}

struct Instance {
    controller: Controller,
    recorder: LatencyRecorder,
    limit: usize,
    grant: usize,
    in_flight: usize,
    waiting: usize,
}

const NS: f64 = 1e9;

/// Runs one variant; deterministic for a given scenario.
///
/// # Panics
///
/// If the scenario's controller config is invalid.
pub fn run(s: &FleetScenario, variant: FleetVariant) -> FleetOutcome {
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let mut fleet = FleetModel::new(s.capacity, s.instances);
    let mut instances: Vec<Instance> = (0..s.instances)
        .map(|i| {
            let controller = Controller::new(s.config.clone())
                .expect("valid config")
                .with_seed(s.seed ^ i as u64);
            let limit = match variant {
                FleetVariant::Static(l) => l,
                FleetVariant::Fleet => 0,
                FleetVariant::Alone => controller.limit(),
            };
            Instance {
                controller,
                recorder: LatencyRecorder::new(),
                limit,
                grant: 0,
                in_flight: 0,
                waiting: s.workers,
            }
        })
        .collect();
    let interval = s.config.adjustment_interval;
    let interval_ns = interval.as_nanos() as u64;
    let end = (s.duration_s * NS) as u64;
    let from = (s.measure_from_s * NS) as u64;
    let mut heap: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: u64, e: Event| {
        seq += 1;
        heap.push(Reverse((t, seq, e)));
    };
    for i in 0..s.instances {
        // Instances tick (and renew) out of phase, as independent processes do.
        let phase = interval_ns / s.instances as u64 * i as u64;
        push(&mut heap, phase, Event::Tick { instance: i });
    }
    let (mut total, mut peak, mut peak_held) = (0usize, 0usize, 0usize);
    let (mut completed, mut area, mut last_t) = (0u64, 0f64, from);

    while let Some(Reverse((t, _, event))) = heap.pop() {
        if t > end {
            break;
        }
        if t > from {
            area += total as f64 * (t - last_t.max(from)) as f64;
            last_t = t;
        }
        let i = match event {
            Event::Complete { instance, took_ns } => {
                let inst = &mut instances[instance];
                inst.in_flight -= 1;
                inst.waiting += 1;
                total -= 1;
                inst.recorder.record(Duration::from_nanos(took_ns));
                if t >= from {
                    completed += 1;
                }
                instance
            }
            Event::Tick { instance } => {
                let inst = &mut instances[instance];
                let usage = ace_core::Usage {
                    limit: inst.limit,
                    in_flight: inst.in_flight,
                    waiting: inst.waiting,
                };
                let signals = Signals {
                    cpu_percent: Some(50.0),
                    memory_percent: Some(50.0),
                    latency: Some(inst.recorder.take_summary()),
                    ..Signals::default()
                };
                let now = Duration::from_nanos(t);
                match variant {
                    FleetVariant::Static(_) => {}
                    FleetVariant::Alone => {
                        inst.limit = inst.controller.decide(now, &signals, usage).new_limit;
                    }
                    FleetVariant::Fleet => {
                        // The member's want, as `FleetBudget` computes it: demand plus a quarter.
                        let demand = inst.in_flight + inst.waiting;
                        let want = demand + demand / 4 + 1;
                        let in_use = inst.in_flight.max(inst.limit);
                        inst.grant = fleet.renew(instance, want, in_use);
                        peak_held = peak_held.max(fleet.total());
                        inst.controller.set_ceiling(Some(Ceiling {
                            grant: inst.grant,
                            members: fleet.members(),
                        }));
                        let local = inst.controller.decide(now, &signals, usage).new_limit;
                        inst.limit = local.min(inst.grant);
                    }
                }
                push(&mut heap, t + interval_ns, Event::Tick { instance });
                instance
            }
        };
        // Start what the limit allows.
        let inst = &mut instances[i];
        while inst.waiting > 0 && inst.in_flight < inst.limit {
            inst.waiting -= 1;
            inst.in_flight += 1;
            total += 1;
            peak = peak.max(total);
            let z = normal(&mut rng);
            let ms =
                s.downstream.latency_ms(total, t as f64 / NS) * (s.downstream.jitter * z).exp();
            let took_ns = (ms * 1e6).max(1.0) as u64;
            push(
                &mut heap,
                t + took_ns,
                Event::Complete {
                    instance: i,
                    took_ns,
                },
            );
        }
    }
    let window = (end - from) as f64 / NS;
    FleetOutcome {
        goodput: completed as f64 / window,
        peak_in_flight: peak,
        mean_in_flight: area / (end - from) as f64,
        peak_held,
    }
}

/// A standard normal (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::FleetModel;

    #[test]
    fn should_split_evenly_and_never_exceed_capacity() {
        let mut f = FleetModel::new(40, 3);
        let g: Vec<usize> = (0..3).map(|i| f.renew(i, 40, 0)).collect();
        assert_eq!(g, [40, 0, 0]);
        for _ in 0..3 {
            for i in 0..3 {
                let used = f.held[i].min(14);
                f.renew(i, 40, used);
                assert!(f.total() <= 40);
            }
        }
        assert_eq!(f.held, [14, 14, 12]);
    }
}
