//! A control loop that meets a panicking source, a panicking sink or a dropped runtime goes on
//! (or, for the runtime, ends) and `shutdown` returns, on every executor and on the thread pool.
//! Each test runs under a watchdog: a hang fails the test instead of hanging the binary.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::{source_fn, Decision, DecisionSink, Runtime, SignalError, Signals};
use ace_std::threadpool::ThreadPoolManager;
use ace_std::{AimdConfig, Manager};

/// Runs `f` on a thread of its own and fails if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung for more than {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test body panicked"),
    }
}

fn fast() -> AimdConfig {
    AimdConfig {
        adjustment_interval: Duration::from_millis(10),
        cooldown: Duration::from_millis(10),
        latency_baseline_window: Duration::from_millis(100),
        ..AimdConfig::default()
    }
}

/// Keeps the signal errors it is told about.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl DecisionSink for Errors {
    fn decision(&mut self, _: &Decision) {}
    fn signal_error(&mut self, error: &SignalError) {
        self.0.lock().unwrap().push(error.to_string());
    }
}

impl Errors {
    fn any(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e.contains(needle))
    }

    /// True once the loop decided `decisions` times and was told of the source's panic.
    fn saw_loop_survive(&self, decisions: u64) -> bool {
        decisions >= 5 && self.any("collect panicked: source exploded")
    }
}

/// Fails once 20 s have passed since `started`.
fn check_deadline(started: Instant, what: &dyn std::fmt::Debug) {
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the loop stopped: {what:?}"
    );
}

/// A sink that panics on every call.
struct PanickingSink;

impl DecisionSink for PanickingSink {
    fn decision(&mut self, _: &Decision) {
        panic!("sink exploded");
    }
}

/// A source that panics on every call.
fn panicking_source() -> impl ace_core::SignalSource {
    source_fn(|| -> Result<Signals, SignalError> { panic!("source exploded") })
}

/// Builds a manager (any of them: one vocabulary) whose only source and one of whose sinks panic
/// every cycle, the other sink keeping the errors.
macro_rules! with_panicking_parts {
    ($builder:expr, $errors:expr) => {
        $builder
            .default_signals(false)
            .tracing(false)
            .metrics(false)
            .source("boom", panicking_source())
            .sink($errors.clone())
            .sink(PanickingSink)
            .build()
            .unwrap()
    };
}

/// The same checks on any runtime: a source and a sink that panic every cycle cost nothing but
/// their records; the loop keeps deciding, and `shutdown` returns.
async fn survives_panicking_parts<R: Runtime>(runtime: R) {
    let errors = Errors::default();
    let manager = with_panicking_parts!(
        Manager::builder_with_runtime(runtime.clone(), fast()),
        errors
    );
    let started = Instant::now();
    while !errors.saw_loop_survive(manager.stats().decisions) {
        check_deadline(started, &manager.stats());
        runtime.sleep(Duration::from_millis(5)).await;
    }
    assert!(errors.any("signal source `boom` failed"));
    manager.shutdown().await;
}

#[test]
fn tokio_manager_survives_a_panicking_source_and_sink() {
    within(60, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { survives_panicking_parts(ace_tokio::TokioRuntime::current()).await });
    });
}

#[test]
fn smol_manager_survives_a_panicking_source_and_sink() {
    within(60, || {
        smol::block_on(survives_panicking_parts(ace_smol::SmolRuntime::global()));
    });
}

#[test]
fn async_std_manager_survives_a_panicking_source_and_sink() {
    within(60, || {
        async_std::task::block_on(survives_panicking_parts(
            ace_async_std::AsyncStdRuntime::new(),
        ));
    });
}

#[test]
fn shutdown_returns_after_the_runtime_of_the_loop_is_dropped() {
    within(60, || {
        let loop_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let manager = loop_rt.block_on(async {
            ace_std::tokio::Manager::builder(fast())
                .default_signals(false)
                .tracing(false)
                .metrics(false)
                .build()
                .unwrap()
        });
        // The loop task was spawned there and never ran to its end: dropping the runtime drops it.
        drop(loop_rt);
        futures::executor::block_on(manager.shutdown());
        assert!(manager.is_shut_down());
    });
}

#[test]
fn the_pool_survives_a_panicking_source_and_sink() {
    within(60, || {
        let errors = Errors::default();
        let pool = with_panicking_parts!(ThreadPoolManager::builder(fast()), errors);
        let started = Instant::now();
        while !errors.saw_loop_survive(pool.stats().core.decisions) {
            check_deadline(started, &pool.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.submit(|| 7).join(), Ok(7));
        pool.shutdown();
        assert!(pool.is_shut_down());
    });
}

#[test]
fn shutdown_does_not_wait_for_a_source_that_blocks_its_thread() {
    within(60, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (blocking_tx, blocking_rx) = mpsc::channel();
            let blocking_tx = Mutex::new(blocking_tx);
            let manager = ace_std::tokio::Manager::builder(fast())
                .default_signals(false)
                .tracing(false)
                .metrics(false)
                .source_timeout(Duration::from_millis(100))
                .source(
                    "stuck",
                    source_fn(move || {
                        let _ = blocking_tx.lock().unwrap().send(());
                        // Against the contract (sources must not block), as a broken one would.
                        std::thread::sleep(Duration::from_secs(3));
                        Ok(Signals::default())
                    }),
                )
                .build()
                .unwrap();
            // The loop's thread is inside the source now.
            tokio::task::spawn_blocking(move || blocking_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .expect("the loop collected from the source");
            let started = Instant::now();
            manager.shutdown().await;
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(1500),
                "shutdown waited {took:?} for a source blocked for 3 s"
            );
        });
    });
}
