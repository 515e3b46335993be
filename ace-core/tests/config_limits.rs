//! `validate()` refuses the durations that would overflow later, naming the field; and any config
//! it accepts (durations anywhere up to the bound, limits up to what a manager's semaphore holds)
//! runs the controller for many cycles without a panic.

use core::time::Duration;

use ace_core::{AimdConfig, ConfigRule, Controller, LatencySummary, Semaphore, Signals, Usage};
use proptest::prelude::*;

#[test]
fn refuses_each_duration_past_a_year_and_names_it() {
    let max = Some(Duration::MAX);
    let cases: [(&str, AimdConfig); 5] = [
        (
            "adjustment_interval",
            AimdConfig {
                adjustment_interval: Duration::MAX,
                latency_baseline_window: Duration::MAX,
                ..AimdConfig::default()
            },
        ),
        (
            "cooldown",
            AimdConfig {
                cooldown: Duration::MAX,
                ..AimdConfig::default()
            },
        ),
        (
            "event_loop_lag_threshold",
            AimdConfig {
                event_loop_lag_threshold: Duration::MAX,
                ..AimdConfig::default()
            },
        ),
        (
            "latency_baseline_window",
            AimdConfig {
                latency_baseline_window: Duration::MAX,
                ..AimdConfig::default()
            },
        ),
        (
            "latency_probe_interval",
            AimdConfig {
                latency_probe_interval: max,
                ..AimdConfig::default()
            },
        ),
    ];
    for (field, config) in cases {
        let e = config.validate().unwrap_err();
        assert_eq!(e.field(), field);
        assert_eq!(e.rule(), ConfigRule::AtMost(AimdConfig::MAX_DURATION));
        assert!(e.to_string().contains("must not be longer than"), "{e}");
    }
    // The bound itself is accepted.
    let at_bound = AimdConfig {
        adjustment_interval: AimdConfig::MAX_DURATION,
        latency_baseline_window: AimdConfig::MAX_DURATION,
        latency_probe_interval: Some(AimdConfig::MAX_DURATION),
        cooldown: AimdConfig::MAX_DURATION,
        ..AimdConfig::default()
    };
    assert_eq!(at_bound.validate(), Ok(()));
}

/// Any duration, with the edges (zero, the bound, just past it, the maximum) often.
fn duration() -> impl Strategy<Value = Duration> {
    let year = AimdConfig::MAX_DURATION.as_secs();
    prop_oneof![
        1 => Just(Duration::ZERO),
        2 => Just(AimdConfig::MAX_DURATION),
        1 => Just(AimdConfig::MAX_DURATION + Duration::from_nanos(1)),
        1 => Just(Duration::MAX),
        1 => (0..u64::MAX, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        6 => (0..year, 1..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        6 => (1..10_000u64).prop_map(Duration::from_millis),
    ]
}

/// Limits up to what the managers clamp to (the semaphore's `MAX_PERMITS`).
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(Semaphore::MAX_PERMITS),
        1..=Semaphore::MAX_PERMITS,
        1..1_000usize,
    ]
}

fn wild_config() -> impl Strategy<Value = AimdConfig> {
    (
        (limit(), limit(), limit(), limit()),
        (duration(), duration(), duration(), duration()),
        (
            proptest::option::of(duration()),
            proptest::option::of(1.0..10.0f64),
        ),
    )
        .prop_map(
            |((a, b, c, step), (interval, cooldown, window, lag), (probe, tolerance))| {
                let mut l = [a, b, c];
                l.sort_unstable();
                AimdConfig {
                    min_limit: l[0],
                    initial_limit: l[1],
                    max_limit: l[2],
                    increase_step: step,
                    adjustment_interval: interval,
                    cooldown,
                    // Mostly valid orderings, so most cases get past `validate`.
                    latency_baseline_window: window.max(interval),
                    event_loop_lag_threshold: lag,
                    latency_probe_interval: probe.map(|p| p.max(window.max(interval))),
                    latency_tolerance: tolerance,
                    ..AimdConfig::default()
                }
            },
        )
}

fn any_signals() -> impl Strategy<Value = Signals> {
    let pct = prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(250.0),
        0.0..=100.0f64
    ];
    (
        proptest::option::of(pct.clone()),
        proptest::option::of(pct),
        proptest::option::of(any::<u64>()),
        proptest::option::of(duration()),
        proptest::option::of((0..200u32, 0..50u32, duration())),
    )
        .prop_map(|(cpu, memory, queue, lag, latency)| Signals {
            cpu_percent: cpu,
            memory_percent: memory,
            queue_depth: queue,
            event_loop_lag: lag,
            kafka_lag: None,
            latency: latency.map(|(n, e, d)| LatencySummary::uniform(d, n, e)),
        })
}

proptest! {
    #[test]
    fn every_accepted_config_runs_cycles_without_panic(
        config in wild_config(),
        cycles in proptest::collection::vec((any_signals(), 0..=100u8), 1..12),
    ) {
        prop_assume!(config.validate().is_ok());
        let interval = config.adjustment_interval;
        let mut controller = Controller::new(config).unwrap();
        let mut now = Duration::ZERO;
        for (mut signals, busy) in cycles {
            now = now.saturating_add(interval);
            let _ = signals.sanitize();
            let limit = controller.limit();
            let in_flight = limit / 100 * usize::from(busy);
            let d = controller.decide(now, &signals, Usage { limit, in_flight, waiting: 0 });
            let c = controller.config();
            prop_assert!(c.min_limit <= d.new_limit && d.new_limit <= c.max_limit);
        }
    }
}
