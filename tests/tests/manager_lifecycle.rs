//! Shutdown, cancellation and panics: work in flight finishes, new work is refused, the loop
//! stops, and nothing hangs.

#[path = "common/log_buf.rs"]
mod log_buf;
#[path = "common/quiet.rs"]
mod quiet;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{source_fn, SignalError, Signals};
use ace_std::log::HoldLogging;
use ace_std::{AimdConfig, SubmitError};
use futures::FutureExt;
use log_buf::LogBuf;
use quiet::quiet;

fn config() -> AimdConfig {
    AimdConfig {
        min_limit: 2,
        max_limit: 50,
        initial_limit: 4,
        ..AimdConfig::default()
    }
    .seed_rules()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_work_finish_and_refuses_the_rest() {
    let m = ace_std::tokio::Manager::new(config()).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // 4 run (the limit), 6 wait.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (gate, done) = (gate.clone(), done.clone());
            m.spawn(async move {
                let _ = gate.acquire().await;
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    while m.stats().in_flight < 4 || m.stats().waiting < 6 {
        tokio::task::yield_now().await;
    }
    let shutdown = tokio::spawn(m.shutdown());
    assert!(m.is_shut_down());
    // New work is refused at once, with a typed error.
    assert_eq!(m.submit(async {}).await, Err(SubmitError::Shutdown));
    assert!(m.spawn(async {}).await.unwrap_err().is_shut_down());
    // Shutdown waits for the running four.
    tokio::task::yield_now().await;
    assert!(!shutdown.is_finished());
    gate.add_permits(100);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown does not hang")
        .unwrap();
    let results = futures::future::join_all(handles).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(ace_std::JoinError::is_shut_down))
        .count();
    assert_eq!((ok, refused), (4, 6));
    assert_eq!(done.load(Ordering::SeqCst), 4);
    let stats = m.stats();
    assert_eq!((stats.in_flight, stats.completed), (0, 4));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_control_loop_promptly() {
    let m = quiet(AimdConfig {
        adjustment_interval: Duration::from_secs(60),
        ..config()
    })
    .build()
    .unwrap();
    let t0 = tokio::time::Instant::now();
    // The loop is asleep for a minute; shutdown wakes it rather than waiting.
    m.shutdown().await;
    assert!(t0.elapsed() < Duration::from_millis(1));
    // Again: harmless.
    m.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_task_is_an_error_and_the_manager_goes_on() {
    let m = quiet(config()).build().unwrap();
    let err = m
        .spawn(async {
            panic!("boom");
        })
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "task panicked: boom");
    assert_eq!(m.stats().in_flight, 0, "the slot came back");
    // Still admitting, up to the whole limit.
    let results = futures::future::join_all((0..8).map(|i| m.spawn(async move { i }))).await;
    assert!(results.iter().all(Result::is_ok));
    m.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_a_submit_gives_back_its_wait_or_its_slot() {
    let m = quiet(AimdConfig {
        initial_limit: 2,
        min_limit: 1,
        ..config()
    })
    .build()
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Two running (one never finishes on its own), one waiting.
    let mut running = Box::pin(m.submit(async {
        let _ = rx.await;
    }));
    let mut forever = Box::pin(m.submit(std::future::pending::<()>()));
    let mut waiting = Box::pin(m.submit(async { 3 }));
    assert!((&mut running).now_or_never().is_none());
    assert!((&mut forever).now_or_never().is_none());
    assert!((&mut waiting).now_or_never().is_none());
    let s = m.stats();
    assert_eq!((s.in_flight, s.waiting), (2, 1));
    drop(waiting);
    assert_eq!(m.stats().waiting, 0);
    drop(forever);
    assert_eq!(m.stats().in_flight, 1);
    tx.send(()).unwrap();
    assert_eq!(running.await, Ok(()));
    assert_eq!(m.stats().in_flight, 0);
    m.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_loop() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let m = quiet(AimdConfig {
        adjustment_interval: Duration::from_millis(10),
        cooldown: Duration::ZERO,
        ..config()
    })
    .source(
        "count",
        source_fn(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(Signals::default())
        }),
    )
    .build()
    .unwrap();
    // Paused clock: each sleep advances virtual time, so the loop ticks deterministically.
    while calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(m);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let after = calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after,
        "no cycle after the last handle"
    );
}

#[tokio::test(start_paused = true)]
async fn the_json_log_holds_decisions_and_source_errors() {
    let buf = LogBuf::default();
    let cycle = Arc::new(AtomicUsize::new(0));
    let c = cycle.clone();
    let m = quiet(AimdConfig {
        cooldown: Duration::ZERO,
        ..config()
    })
    .source(
        "script",
        source_fn(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            Ok(Signals {
                cpu_percent: Some(if n == 2 { 95.0 } else { 30.0 }),
                memory_percent: Some(40.0),
                queue_depth: Some(3),
                event_loop_lag: Some(Duration::from_micros(250)),
                ..Signals::default()
            })
        }),
    )
    .source(
        "broken",
        source_fn(|| Err(SignalError::new("broken", "no /proc"))),
    )
    .log_writer(buf.clone())
    .log_holds(HoldLogging::OnChange)
    .build()
    .unwrap();
    while cycle.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    m.shutdown().await;
    let text = buf.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|v| v["event_type"].as_str().unwrap())
        .collect();
    // Per cycle one error; holds only on change: idle, then the decrease, then idle again.
    assert_eq!(
        kinds.iter().filter(|k| **k == "signal_error").count(),
        kinds.len() - 3,
        "{kinds:?}"
    );
    let decisions: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["event_type"] != "signal_error")
        .collect();
    let codes: Vec<&str> = decisions
        .iter()
        .map(|v| v["reason_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["idle", "stressed_cpu", "idle"]);
    let d = decisions[1];
    assert_eq!(d["event_type"], "limit_adjustment");
    assert_eq!(d["decision"], "decrease");
    assert_eq!(d["concurrency"]["current_limit"], 4);
    assert_eq!(d["concurrency"]["new_limit"], 2);
    assert_eq!(d["concurrency"]["active_tasks"], 0);
    assert_eq!(d["signals"]["cpu_percent"], 95.0);
    assert_eq!(d["signals"]["queue_depth"], 3);
    assert_eq!(d["signals"]["event_loop_lag_ms"], 0.25);
    assert_eq!(d["reason"], "cpu 95.0% is over the 80.0% threshold");
    assert!(d["timestamp"].as_str().unwrap().ends_with('Z'));
    let e = lines
        .iter()
        .find(|v| v["event_type"] == "signal_error")
        .unwrap();
    assert_eq!(e["source"], "broken");
}

#[tokio::test(flavor = "current_thread")]
async fn an_unbounded_max_limit_is_clamped_not_a_panic() {
    let m = quiet(AimdConfig {
        max_limit: usize::MAX,
        ..config()
    })
    .build()
    .unwrap();
    assert_eq!(m.submit(async { 2 }).await, Ok(2));
    m.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn task_permits_count_in_flight_and_feed_attempts_to_the_latency_signal() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let m = quiet(AimdConfig {
        initial_limit: 2,
        min_limit: 1,
        ..config()
    })
    .time_tasks(true)
    .sink(move |d: &ace_std::Decision| s.lock().unwrap().push(d.signals.latency))
    .build()
    .unwrap();
    let a = m.acquire().await.unwrap();
    let b = m.try_acquire().unwrap();
    assert_eq!(m.stats().in_flight, 2);
    assert!(matches!(
        m.try_acquire(),
        Err(ace_core::TryAcquireError::NoPermits)
    ));
    // A cancelled acquire leaks nothing.
    let mut queued = Box::pin(m.acquire());
    assert!((&mut queued).now_or_never().is_none());
    assert_eq!(m.stats().waiting, 1);
    drop(queued);
    assert_eq!(m.stats().waiting, 0);
    // Three attempts of one task: two failures, then a 30 ms success; the other task ends ok
    // after 50 ms of its own (timed admission → success, as nothing was recorded).
    a.record_failure();
    a.record_failure();
    a.record_attempt(Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.success();
    drop(a);
    let s = m.stats();
    assert_eq!((s.in_flight, s.completed), (0, 2));
    // The next cycle reads exactly those records.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = seen
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .find(|l| l.samples + l.errors > 0)
        .expect("a cycle saw the records");
    assert_eq!((summary.samples, summary.errors), (2, 2));
    assert!(summary.p50 >= Duration::from_millis(26) && summary.p99 <= Duration::from_millis(57));
    m.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_waits_for_held_task_permits_and_refuses_new_ones() {
    let m = quiet(config()).build().unwrap();
    let held = m.acquire().await.unwrap();
    let mut shutdown = Box::pin(m.shutdown());
    assert!((&mut shutdown).now_or_never().is_none());
    assert_eq!(m.acquire().await.unwrap_err(), SubmitError::Shutdown);
    assert!(matches!(
        m.try_acquire(),
        Err(ace_core::TryAcquireError::Closed)
    ));
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown returns once the permit is back");
    assert_eq!(m.stats().in_flight, 0);
}
