//! The pool's control loop is the core's: JSON decision lines by default, the jobs' latency as a
//! signal, and invalid readings counted absent. Real threads and real time, every wait bounded.
#![cfg(feature = "threadpool")]

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::{source_fn, Signals};
use ace_std::log::{DecisionRecord, HoldLogging};
use ace_std::threadpool::ThreadPoolManager;
use ace_std::AimdConfig;

/// A writer the test reads back as JSON lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn records(&self) -> Vec<DecisionRecord> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits (bounded) until `done` holds for the records.
    fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&[DecisionRecord]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.records()) {
                return;
            }
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn fast(config: AimdConfig) -> AimdConfig {
    AimdConfig {
        adjustment_interval: Duration::from_millis(20),
        cooldown: Duration::from_millis(20),
        latency_baseline_window: Duration::from_secs(2),
        ..config
    }
}

/// A pool reading only `signals` and logging every decision (holds too) to the returned lines.
fn logged_pool(config: AimdConfig, signals: Signals) -> (ThreadPoolManager, Lines) {
    let lines = Lines::default();
    let pool = ThreadPoolManager::builder(fast(config))
        .default_signals(false)
        .source("scripted", source_fn(move || Ok(signals)))
        .log_writer(lines.clone())
        .log_holds(HoldLogging::Always)
        .tracing(false)
        .metrics(false)
        .build()
        .unwrap();
    (pool, lines)
}

#[test]
fn writes_json_decision_lines_from_the_default_log() {
    let cpu = Signals {
        cpu_percent: Some(20.0),
        ..Signals::default()
    };
    let (pool, lines) = logged_pool(AimdConfig::default(), cpu);
    lines.wait_for("three decisions", 20, |r| r.len() >= 3);
    pool.shutdown();
    let records = lines.records();
    assert!(records.iter().all(|r| r.event_type.starts_with("limit_")));
    let first = &records[0];
    assert_eq!(first.signals.unwrap().cpu_percent, Some(20.0));
    assert_eq!(first.concurrency.unwrap().current_limit, 20);
    assert!(pool.stats().core.decisions >= 3);
}

#[test]
fn invalid_readings_are_absent_and_logged_never_a_stress_with_no_value() {
    let lines = Lines::default();
    let pool = ThreadPoolManager::builder(fast(AimdConfig::default()))
        .default_signals(false)
        .source(
            "broken",
            source_fn(|| {
                Ok(Signals {
                    cpu_percent: Some(f64::INFINITY),
                    memory_percent: Some(f64::NAN),
                    ..Signals::default()
                })
            }),
        )
        .log_writer(lines.clone())
        .log_holds(HoldLogging::Always)
        .tracing(false)
        .metrics(false)
        .time_tasks(false)
        .build()
        .unwrap();
    lines.wait_for("three decisions", 20, |r| {
        r.iter().filter(|r| r.event_type != "signal_error").count() >= 3
    });
    pool.shutdown();
    let records = lines.records();
    for r in &records {
        if r.event_type == "signal_error" {
            assert!(r.reason.contains("`cpu_percent` is inf"), "{}", r.reason);
            assert!(r.reason.contains("`memory_percent` is NaN"), "{}", r.reason);
        } else {
            // Before: inf CPU read as present, "stressed_cpu" with `cpu_percent: null`.
            assert_eq!(r.reason_code, "no_signals", "{r:?}");
            assert_eq!(r.decision.as_deref(), Some("hold"));
            let s = r.signals.unwrap_or_default();
            assert_eq!((s.cpu_percent, s.memory_percent), (None, None));
        }
    }
    assert_eq!(pool.limit(), 20, "nothing valid was read: the limit holds");
}

#[test]
fn cuts_the_limit_when_its_jobs_slow_down() {
    let lines = Lines::default();
    let config = fast(AimdConfig {
        min_limit: 2,
        initial_limit: 8,
        max_limit: 16,
        latency_tolerance: Some(3.0),
        latency_min_samples: 5,
        slow_start: false,
        ..AimdConfig::default()
    });
    let pool = Arc::new(
        ThreadPoolManager::builder(config)
            .default_signals(false)
            .log_writer(lines.clone())
            .tracing(false)
            .metrics(false)
            .build()
            .unwrap(),
    );
    // The load: keep a backlog of jobs that each take `job_us` (a sleep: the pool's threads
    // wait, as on a slow downstream).
    let job_us = Arc::new(AtomicU64::new(1_000));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (pool, job_us, stop) = (Arc::clone(&pool), Arc::clone(&job_us), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                while pool.stats().core.waiting < 32 {
                    let us = job_us.load(Ordering::Relaxed);
                    pool.execute(move || std::thread::sleep(Duration::from_micros(us)));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Fast jobs: a baseline, and no latency cut.
    lines.wait_for("a latency reading", 20, |r| {
        r.iter()
            .filter(|r| r.signals.and_then(|s| s.latency).is_some())
            .count()
            >= 10
    });
    let before = lines.records().len();
    // The downstream slows 40-fold: the p90 passes 3 × the baseline and the pool cuts.
    job_us.store(40_000, Ordering::Relaxed);
    // Any cut of the latency path (p90 over the tolerance, a rising or queueing latency): the
    // pool reads no machine signal here.
    let latency_cut = |r: &DecisionRecord| {
        r.reason_code.starts_with("stressed_") && r.decision.as_deref() == Some("decrease")
    };
    lines.wait_for("a latency cut", 20, |r| r[before..].iter().any(latency_cut));
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    drop(pool.shutdown_now());
    let cut = lines
        .records()
        .into_iter()
        .skip(before)
        .find(latency_cut)
        .unwrap();
    let c = cut.concurrency.unwrap();
    assert!(c.new_limit < c.current_limit, "{cut:?}");
    // The log now shows the first cut, and it can come from the rising-latency detector or from
    // the slow jobs in flight too long, with the epoch's p90 still near the fast jobs' (1.1 ms seen): the cut is what this test asks.
    assert!(cut.signals.unwrap().latency.is_some(), "{cut:?}");
}

#[test]
fn clamps_an_unbounded_limit_to_the_semaphore_and_keeps_deciding() {
    let unbounded = AimdConfig {
        min_limit: 1,
        initial_limit: usize::MAX,
        max_limit: usize::MAX,
        ..AimdConfig::default()
    };
    let idle = Signals {
        cpu_percent: Some(5.0),
        ..Signals::default()
    };
    let (pool, lines) = logged_pool(unbounded, idle);
    assert_eq!(pool.limit(), ace_core::Semaphore::MAX_PERMITS);
    lines.wait_for("five decisions", 20, |r| r.len() >= 5);
    assert_eq!(pool.submit(|| 1).join(), Ok(1));
    pool.shutdown();
    for r in lines.records() {
        let c = r.concurrency.unwrap();
        assert!(c.new_limit <= ace_core::Semaphore::MAX_PERMITS, "{r:?}");
        // Idle: an unused limit never grows.
        assert_ne!(r.decision.as_deref(), Some("increase"), "{r:?}");
    }
}

#[test]
fn an_idle_timeout_of_duration_max_saturates_instead_of_panicking() {
    let (tx, rx) = std::sync::mpsc::channel();
    // A watchdog: before, every parked worker panicked on `now + Duration::MAX` and the jobs
    // behind it never ran.
    std::thread::spawn(move || {
        let pool = ThreadPoolManager::builder(AimdConfig::fixed(4))
            .default_signals(false)
            .tracing(false)
            .metrics(false)
            .idle_timeout(Duration::MAX)
            .build()
            .unwrap();
        let handles: Vec<_> = (0..20u64).map(|i| pool.submit(move || i)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        pool.shutdown();
        let _ = tx.send(sum);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(190));
}

#[test]
fn limits_set_by_hand_from_several_threads_leave_the_loop_deciding_in_bounds() {
    let config = AimdConfig {
        min_limit: 2,
        initial_limit: 4,
        max_limit: 16,
        ..AimdConfig::default()
    };
    let idle = Signals {
        cpu_percent: Some(5.0),
        ..Signals::default()
    };
    let (pool, lines) = logged_pool(config, idle);
    let pool = Arc::new(pool);
    let setters: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..200 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let set = pool.set_limit((x % 40) as usize);
                    assert!((2..=16).contains(&set), "{set}");
                    assert_eq!(pool.submit(|| 1).join(), Ok(1));
                }
            })
        })
        .collect();
    for s in setters {
        s.join().unwrap();
    }
    let before = lines.records().len();
    lines.wait_for("three decisions after the storm", 20, |r| {
        r.len() >= before + 3
    });
    for r in lines.records() {
        let c = r.concurrency.unwrap();
        assert!((2..=16).contains(&c.new_limit), "{r:?}");
    }
    assert!((2..=16).contains(&pool.limit()));
    pool.shutdown();
}
