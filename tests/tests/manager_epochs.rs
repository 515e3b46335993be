//! The async manager feeds the latency epochs: admissions (limit reached) and per-task latency.
//! Tokio's paused clock; a watchdog turns a hang into a failure.

use std::time::Duration;

use ace_std::AimdConfig;

/// A manager with the latency signal only (no machine signals), quiet.
fn latency_only(config: AimdConfig) -> ace_std::tokio::Manager {
    ace_std::tokio::Manager::builder(config)
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .build()
        .unwrap()
}

/// The freeze the 2 s cycle had: latency as the only signal, a short interval, limit 1, a 1 s
/// downstream. Each cycle saw fewer than `latency_min_samples` tasks, read "no signal" and held
/// for ever; each latency epoch now is one round trip, and the limit grows.
#[tokio::test(start_paused = true)]
async fn limit_one_in_front_of_a_one_second_downstream_grows() {
    let config = AimdConfig {
        min_limit: 1,
        initial_limit: 1,
        max_limit: 50,
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    };
    let manager = latency_only(config);
    let tasks: Vec<_> = (0..200)
        // The sleep starts when the task runs (a `sleep` made now would end for all at 1 s).
        .map(|_| manager.spawn(async { tokio::time::sleep(Duration::from_secs(1)).await }))
        .collect();
    let watchdog = tokio::time::timeout(Duration::from_secs(60), async {
        while manager.limit() < 8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::env::var_os("ACE_DEBUG").is_some() {
                eprintln!("{:?}", manager.stats());
            }
        }
    });
    watchdog.await.expect("the limit never grew past 8 in 60 s");
    // Doubling per round trip: 1 → 2 → 4 → 8 takes a few seconds, not minutes.
    assert!(manager.stats().completed < 40, "{:?}", manager.stats());
    drop(tasks);
    manager.shutdown().await;
}

/// An idle manager's limit does not creep up with good latency: the limit is never reached.
#[tokio::test(start_paused = true)]
async fn a_limit_that_is_never_reached_does_not_grow() {
    let config = AimdConfig {
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    };
    let manager = latency_only(config);
    let run = tokio::time::timeout(Duration::from_secs(60), async {
        // Five at a time against a limit of 20, for 20 simulated seconds.
        for _ in 0..200 {
            let batch: Vec<_> = (0..5)
                .map(|_| {
                    manager.submit(async { tokio::time::sleep(Duration::from_millis(100)).await })
                })
                .collect();
            futures::future::join_all(batch).await;
        }
    });
    run.await.expect("the load finished");
    assert_eq!(manager.limit(), 20);
    manager.shutdown().await;
}

/// Counts the tasks each latency epoch timed (samples and failures).
struct EpochTotals(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl ace_std::core::DecisionSink for EpochTotals {
    fn decision(&mut self, _: &ace_std::Decision) {}

    fn epoch(&mut self, summary: &ace_std::core::LatencySummary) {
        self.0.lock().unwrap().push(summary.total());
    }
}

/// A busy manager times a sample of its tasks, not each one, even when its limit never moves
/// (one caller far below it: every epoch holds). The sampling was set from the decisions that
/// carried a latency summary, which with paced epochs were only those that moved the limit: a
/// limit that never moved left every task timed, two clock reads each.
#[tokio::test(start_paused = true)]
async fn a_busy_manager_whose_limit_never_moves_times_a_sample_of_its_tasks() {
    let config = AimdConfig {
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    };
    let totals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let manager = ace_std::tokio::Manager::builder(config)
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .sink(EpochTotals(std::sync::Arc::clone(&totals)))
        .build()
        .unwrap();
    let per_step = 5_000u64;
    let run = tokio::time::timeout(Duration::from_secs(60), async {
        // 5,000 tasks one after another every 10 simulated ms, for 2 simulated seconds: 20
        // cycles of 50,000 tasks.
        for _ in 0..200 {
            for i in 0..per_step {
                std::hint::black_box(manager.submit(async move { i }).await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    run.await.expect("the load finished");
    assert_eq!(manager.stats().adjustments, 0, "{:?}", manager.stats());
    let totals = totals.lock().unwrap().clone();
    // The second simulated second: 500,000 tasks; about 1,024 timed per 100 ms cycle.
    let late: u64 = totals[totals.len() / 2..].iter().sum();
    assert!(
        !totals.is_empty() && late < 100_000,
        "{late} tasks timed in the second half ({} epochs): every task timed",
        totals.len()
    );
    manager.shutdown().await;
}
