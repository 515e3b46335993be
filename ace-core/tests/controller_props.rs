//! Property tests of the controller: bounds always hold, and the machine cycle's cooldown (but for
//! a cut that undoes the increase that caused it); idle limits never grow; a steady latency never
//! cuts; `validate` never panics.

use core::time::Duration;

use ace_core::{Action, AimdConfig, Controller, LatencySummary, Reason, Signals, Stress, Usage};
use proptest::prelude::*;

fn opt<T: core::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)]
}

fn signals() -> impl Strategy<Value = Signals> {
    (
        opt(0.0..=100.0f64),
        opt(0.0..=100.0f64),
        opt(0..300u64),
        opt((0..200u64).prop_map(Duration::from_millis)),
        opt(0..10_000u64),
        opt(latency()),
    )
        .prop_map(|(cpu, mem, queue, lag, kafka, latency)| Signals {
            cpu_percent: cpu,
            memory_percent: mem,
            queue_depth: queue,
            event_loop_lag: lag,
            kafka_lag: kafka,
            latency,
        })
}

fn latency() -> impl Strategy<Value = LatencySummary> {
    (0..100u32, 0..20u32, 1..2_000u64).prop_map(|(samples, errors, ms)| {
        LatencySummary::uniform(Duration::from_millis(ms), samples, errors)
    })
}

/// Valid configs: built so every rule holds.
fn valid_config() -> impl Strategy<Value = AimdConfig> {
    (
        1..50usize,
        0..50usize,
        0..200usize,
        1..20usize,
        0.01..0.99f64,
        (1.0..100.0f64, 0.01..1.0f64),
        (1.0..100.0f64, 0.01..1.0f64),
        1..500u64,
        (0..20_000u64, 1..10_000u64),
        latency_config(),
    )
        .prop_map(
            |(
                min,
                up,
                over,
                step,
                factor,
                (cpu, cpu_r),
                (mem, mem_r),
                queue,
                (cool, every),
                (tolerance, min_samples, error_rate, window_x, probe_x, slow_start),
            )| {
                let interval = Duration::from_millis(every);
                let window = interval * window_x;
                AimdConfig {
                    min_limit: min,
                    initial_limit: min + up,
                    max_limit: min + up + over,
                    increase_step: step,
                    decrease_factor: factor,
                    latency_decrease_factor: factor.max(0.5),
                    cpu_threshold: cpu,
                    // Strictly below: a ratio in (0, 1) of the decrease threshold.
                    cpu_increase_threshold: cpu * cpu_r,
                    memory_threshold: mem,
                    memory_increase_threshold: mem * mem_r,
                    queue_threshold: queue,
                    cooldown: Duration::from_millis(cool),
                    adjustment_interval: interval,
                    latency_tolerance: tolerance,
                    latency_min_samples: min_samples,
                    latency_max_error_rate: error_rate,
                    latency_baseline_window: window,
                    latency_probe_interval: probe_x.map(|x| window * x),
                    slow_start,
                    ..AimdConfig::default()
                }
            },
        )
        .prop_filter("increase thresholds must be positive and below", |c| {
            c.validate().is_ok()
        })
}

type LatencyConfig = (Option<f64>, u32, f64, u32, Option<u32>, bool);

fn latency_config() -> impl Strategy<Value = LatencyConfig> {
    (
        opt(1.01..5.0f64),
        1..30u32,
        0.01..=1.0f64,
        1..40u32,
        opt(1..4u32),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn limit_stays_in_bounds_and_changes_respect_cooldown(
        config in valid_config(),
        steps in prop::collection::vec((signals(), 0..300usize, 0..50usize, 0..5_000u64), 1..200),
    ) {
        let mut c = Controller::new(config.clone()).unwrap();
        let mut now = Duration::ZERO;
        let mut last_change: Option<(Duration, bool)> = None;
        for (signals, in_flight, waiting, dt) in steps {
            now += Duration::from_millis(dt);
            let usage = Usage { limit: c.limit(), in_flight, waiting };
            let d = c.decide(now, &signals, usage);
            prop_assert!(config.min_limit <= d.new_limit && d.new_limit <= config.max_limit);
            prop_assert_eq!(d.new_limit, c.limit());
            match d.action {
                Action::Hold => prop_assert_eq!(d.new_limit, d.previous_limit),
                Action::Increase => prop_assert!(d.new_limit > d.previous_limit),
                Action::Decrease => prop_assert!(d.new_limit < d.previous_limit),
            }
            // The machine cycle's changes keep the cooldown; latency epochs (a snapshot with a
            // latency summary, latency on) change once per round trip. Machine stress is always
            // the machine cycle's.
            let machine_stress = matches!(
                d.reason,
                Reason::Stressed(
                    Stress::Cpu { .. }
                        | Stress::Memory { .. }
                        | Stress::Queue { .. }
                        | Stress::EventLoopLag { .. }
                )
            );
            let epoch = signals.latency.is_some() && config.latency_tolerance.is_some();
            if d.new_limit != d.previous_limit && (machine_stress || !epoch) {
                // No two changes closer than the cooldown, with one exception: a cut for stress
                // may undo, at once, the increase just before it (the increase caused it).
                if let Some((t, was_increase)) = last_change {
                    let undo = was_increase
                        && d.action == Action::Decrease
                        && matches!(d.reason, Reason::Stressed(_));
                    prop_assert!(undo || now - t >= config.cooldown, "changes {:?} apart", now - t);
                }
                last_change = Some((now, d.action == Action::Increase));
            }
            // Never grow an unused limit: growth needs 80 % in flight, waiters or a Kafka backlog.
            // (A probe's restore returns to where the limit was, it is not growth.)
            if d.action == Action::Increase && !matches!(d.reason, Reason::ProbeDone { .. }) {
                let reached = signals.latency.is_some_and(|l| l.limit_reached);
                let busy = in_flight * 5 >= d.previous_limit * 4 || waiting > 0 || reached;
                let backlog = signals.kafka_lag.is_some_and(|l| l > 0) && in_flight * 2 >= d.previous_limit;
                prop_assert!(busy || backlog);
            }
            // Fail-open: no health signal never shrinks.
            if !signals.has_health() {
                prop_assert_ne!(d.action, Action::Decrease);
            }
        }
    }

    #[test]
    fn a_steady_latency_never_decreases(
        config in valid_config(),
        base_ms in 1..500u64,
        steps in prop::collection::vec((0.0..1.0f64, 0..300usize, 0..50usize, 1..5_000u64), 1..200),
    ) {
        // Only the latency signal, no failures, the same latency every epoch, and no more tasks
        // in flight than the completions account for (Little's law): nothing reads as stress.
        let config = AimdConfig { latency_probe_interval: None, ..config };
        let tolerance = config.latency_tolerance.unwrap_or(1.5);
        let mut c = Controller::new(config.clone()).unwrap();
        let mut now = Duration::ZERO;
        let dts: Vec<u64> = steps.iter().map(|s| s.3).collect();
        for (k, (x, in_flight, waiting, dt)) in steps.into_iter().enumerate() {
            now += Duration::from_millis(dt);
            let _ = (x, tolerance);
            // The in-flight count read now starts the next epoch: Little's law over its length.
            let next_dt = dts.get(k + 1).copied().unwrap_or(dt).max(dt);
            let in_flight = in_flight.min((100 * base_ms / next_dt) as usize);
            let signals = Signals {
                latency: Some(LatencySummary::uniform(Duration::from_millis(base_ms), 100, 0)),
                ..Signals::default()
            };
            let d = c.decide(now, &signals, Usage { limit: c.limit(), in_flight, waiting });
            prop_assert_ne!(d.action, Action::Decrease, "{}", d);
        }
    }

    #[test]
    fn a_healthy_steady_epoch_sequence_never_cuts_at_any_latency(
        config in valid_config(),
        nanos in prop_oneof![Just(0u64), 0..1_000u64, 0..10_000_000_000u64],
        spread in prop_oneof![Just(0u64), 0..1_000_000u64],
        samples in 1..200u32,
        epochs in 1..300usize,
        counted in any::<bool>(),
    ) {
        // Latency epochs only (zero and equal latencies included: a coarse clock, a cache hit),
        // no failures, the same epoch every time at its due time, the limit reached at
        // admission. Either nothing is left in flight, or (with admission counts) as many tasks
        // as each epoch admits and completes: Little's law sees no queue, no task is in flight
        // too long, nothing is stress.
        let config = AimdConfig { latency_probe_interval: None, ..config };
        let mut c = Controller::new(config).unwrap();
        let latency = Duration::from_nanos(nanos);
        let summary = LatencySummary {
            p90: latency + Duration::from_nanos(spread),
            p99: latency + Duration::from_nanos(2 * spread),
            admitted: if counted { samples } else { 0 },
            ..LatencySummary::uniform(latency, samples, 0).reached()
        };
        let mut now = Duration::ZERO;
        for _ in 0..epochs {
            now = c.next_epoch().max(now + Duration::from_millis(5));
            let in_flight = if counted { (samples as usize).min(c.limit()) } else { 0 };
            let d = c.epoch(now, &summary, Usage { limit: c.limit(), in_flight, waiting: 0 });
            prop_assert_ne!(d.action, Action::Decrease, "{}", d);
        }
    }

    #[test]
    fn validate_never_panics_and_agrees_with_new(
        min in 0..100usize, init in 0..100usize, max in 0..100usize, step in 0..5usize,
        factor in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -2.0..2.0f64],
        cpu in prop_oneof![Just(f64::NAN), -10.0..120.0f64],
        cpu_up in -10.0..120.0f64,
        mem in -10.0..120.0f64,
        mem_up in -10.0..120.0f64,
        queue in 0..3u64, lag in 0..3u64, every in 0..3u64,
    ) {
        let config = AimdConfig {
            min_limit: min, initial_limit: init, max_limit: max, increase_step: step,
            decrease_factor: factor, cpu_threshold: cpu, cpu_increase_threshold: cpu_up,
            memory_threshold: mem, memory_increase_threshold: mem_up, queue_threshold: queue,
            event_loop_lag_threshold: Duration::from_millis(lag),
            adjustment_interval: Duration::from_millis(every),
            ..AimdConfig::default()
        };
        let checked = config.validate();
        prop_assert_eq!(checked.is_ok(), Controller::new(config.clone()).is_ok());
        let well_formed = min >= 1 && min <= init && init <= max && step >= 1
            && factor > 0.0 && factor < 1.0
            && [cpu, cpu_up, mem, mem_up].iter().all(|p| *p > 0.0 && *p <= 100.0)
            && cpu_up < cpu && mem_up < mem && queue >= 1 && lag > 0 && every > 0;
        prop_assert_eq!(checked.is_ok(), well_formed);
        if let Err(e) = checked {
            // The message names the field.
            let text = e.to_string();
            prop_assert!(text.contains(e.field()), "{}", text);
        }
    }
}
