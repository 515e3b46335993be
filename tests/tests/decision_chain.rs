//! Every decision reaches every sink: a recording sink's decisions chain (each
//! `previous_limit` is the last `new_limit`) through a slow start, on the async manager and on
//! the thread pool, and `Stats::adjustments` counts every change. The slow start doubles once
//! a round trip, many times per adjustment interval: a filter in front of the sinks would drop
//! all but one of them.
//! Tokio's paused clock for the manager; the pool runs on real threads, bounded in time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_std::threadpool::ThreadPoolManager;
use ace_std::{Action, AimdConfig, Decision};

/// Keeps every decision it is sent.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Decision>>>);

impl ace_std::core::DecisionSink for Recorder {
    fn decision(&mut self, decision: &Decision) {
        self.0.lock().unwrap().push(decision.clone());
    }
}

impl Recorder {
    fn decisions(&self) -> Vec<Decision> {
        self.0.lock().unwrap().clone()
    }
}

fn slow_start_config() -> AimdConfig {
    AimdConfig {
        min_limit: 1,
        initial_limit: 1,
        max_limit: 64,
        ..AimdConfig::default()
    }
}

/// Asserts the decisions chain from `initial`, and that at least `increases` of them came in the
/// first adjustment interval (the epochs' own pace: one a round trip).
fn assert_chain(decisions: &[Decision], initial: usize, increases: usize) {
    let mut last = initial;
    for (i, d) in decisions.iter().enumerate() {
        assert_eq!(
            d.previous_limit, last,
            "decision {i} ({d}) does not follow the one before it: {decisions:#?}"
        );
        last = d.new_limit;
    }
    let interval = AimdConfig::default().adjustment_interval;
    let first = decisions.first().map_or(Duration::ZERO, |d| d.at);
    let fast = decisions
        .iter()
        .filter(|d| d.action == Action::Increase && d.at < first + interval)
        .count();
    assert!(
        fast >= increases,
        "{fast} increases in the first interval reached the sink: {decisions:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_managers_sink_sees_every_change_of_a_slow_start() {
    let recorder = Recorder::default();
    let manager = ace_std::tokio::Manager::builder(slow_start_config())
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .sink(recorder.clone())
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..2_000)
        .map(|_| manager.spawn(async { tokio::time::sleep(Duration::from_millis(50)).await }))
        .collect();
    let watchdog = tokio::time::timeout(Duration::from_secs(60), async {
        while manager.limit() < 32 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    watchdog
        .await
        .expect("the slow start reached 32 within 60 s");
    manager.shutdown().await;
    drop(tasks);
    let decisions = recorder.decisions();
    // 1 → 2 → 4 → 8 → 16 → 32: five doublings, in well under one 2 s interval.
    assert_chain(&decisions, 1, 5);
    let changes = decisions
        .iter()
        .filter(|d| d.action != Action::Hold)
        .count();
    assert_eq!(manager.stats().adjustments, changes as u64);
}

#[test]
fn a_pools_sink_sees_every_change_of_a_slow_start() {
    let recorder = Recorder::default();
    let pool = ThreadPoolManager::builder(slow_start_config())
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .sink(recorder.clone())
        .build()
        .unwrap();
    let handles: Vec<_> = (0..4_000)
        .map(|_| pool.submit(|| std::thread::sleep(Duration::from_millis(10))))
        .collect();
    // Wait for the event itself (three increases reached the sink), not for a limit: since the
    // rule holds a doubling until Little's law shows its effect, a busy machine may hold the
    // slow start at 8 for the rest of the run.
    let started = Instant::now();
    let increases = || {
        recorder
            .decisions()
            .iter()
            .filter(|d| d.action == Action::Increase)
            .count()
    };
    while increases() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "three increases did not reach the sink in 30 s: {}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let cancelled = pool.shutdown_now();
    drop((handles, cancelled));
    let decisions = recorder.decisions();
    // 1 → 8 on real threads: a busy machine may end the slow start early (the limit then climbs
    // by steps), but two changes of one reason in one interval are enough for a filter in front
    // of the sinks to break the chain.
    assert_chain(&decisions, 1, 3);
    let changes = decisions
        .iter()
        .filter(|d| d.action != Action::Hold)
        .count();
    assert_eq!(pool.stats().core.adjustments, changes as u64);
}
