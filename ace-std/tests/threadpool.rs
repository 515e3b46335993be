//! Behaviour of `ace_std::threadpool::ThreadPoolManager`: results, resizing up and down under
//! load, panics, back-pressure, both shutdowns, thread retirement.
//!
//! Synchronisation is by latches and channels with timeouts (a timeout fails the test); no test
//! sleeps to let something happen.
#![cfg(feature = "threadpool")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ace_std::core::source_fn;
use ace_std::threadpool::{JoinError, JoinHandle, ThreadPoolManager, TrySubmitError};
use ace_std::{Action, AimdConfig, Decision, Priority, Signals};
use proptest::prelude::*;

/// Long enough for a loaded 2-core machine; reaching it means the pool hung.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `body` on its own thread and fails the test if it takes longer than [`TIMEOUT`].
fn watchdog<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(value) => value,
        // The sender was dropped unsent: the body panicked; pass its panic on.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test body hung for {TIMEOUT:?}"),
    }
}

/// Counts closures inside a section and remembers the most at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    /// Enters; returns how many are inside, this one included.
    fn enter(&self) -> usize {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        now
    }
    fn exit(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

/// A count that threads can wait on.
#[derive(Default)]
struct Latch {
    count: Mutex<usize>,
    cv: Condvar,
}

impl Latch {
    fn arrive(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }
    /// Waits until at least `n` arrived; false on timeout.
    fn wait_for(&self, n: usize) -> bool {
        let guard = self.count.lock().unwrap();
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, TIMEOUT, |c| *c < n)
            .unwrap();
        *guard >= n
    }
}

/// Waits for `cond`, polling: only for states nothing announces (a flag set inside a call
/// that blocks, threads that exited).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

fn healthy() -> Signals {
    Signals {
        cpu_percent: Some(10.0),
        memory_percent: Some(10.0),
        ..Signals::default()
    }
}

/// A pool whose limit moves only by hand (its source reads nothing: the controller holds).
fn manual_pool(min: usize, max: usize, initial: usize) -> ThreadPoolManager {
    ThreadPoolManager::builder(AimdConfig {
        min_limit: min,
        max_limit: max,
        initial_limit: initial,
        ..AimdConfig::default()
    })
    .default_signals(false)
    .build()
    .unwrap()
}

#[test]
fn returns_every_result_of_1000_jobs() {
    watchdog(|| {
        let pool = manual_pool(5, 50, 20);
        let handles: Vec<_> = (0..1000u64).map(|i| pool.submit(move || i * 3)).collect();
        let mut results: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        results.sort_unstable();
        assert_eq!(results, (0..1000).map(|i| i * 3).collect::<Vec<_>>());
        pool.shutdown();
        let stats = pool.stats();
        assert_eq!(
            (
                stats.core.completed,
                stats.core.failed,
                stats.core.in_flight,
                stats.core.waiting
            ),
            (1000, 0, 0, 0)
        );
        assert_eq!(stats.threads, 0);
    });
}

#[test]
fn awaits_handles_from_async_code() {
    watchdog(|| {
        let pool = manual_pool(1, 8, 4);
        let handles: Vec<_> = (0..200u32).map(|i| pool.submit(move || i + 1)).collect();
        let sum = futures_lite::future::block_on(async {
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap();
            }
            sum
        });
        assert_eq!(sum, (1..=200).sum::<u32>());
    });
}

/// The seed's pool stays at its first size and deadlocks on a cut while saturated; this one
/// grows to 50 running, then, cut to 5 while all 50 run, finishes them and runs at most 5.
#[test]
fn follows_scripted_signals_up_to_50_and_down_to_5_while_saturated() {
    watchdog(|| {
        let hot = Arc::new(AtomicBool::new(false));
        let (decisions_tx, decisions) = mpsc::channel::<Decision>();
        let config = AimdConfig {
            min_limit: 5,
            max_limit: 50,
            initial_limit: 5,
            increase_step: 5,
            decrease_factor: 0.5,
            cooldown: Duration::ZERO,
            adjustment_interval: Duration::from_millis(10),
            ..AimdConfig::default()
        };
        let script = Arc::clone(&hot);
        let pool = ThreadPoolManager::builder(config)
            .default_signals(false)
            .source(
                "signals",
                source_fn(move || {
                    Ok(if script.load(SeqCst) {
                        Signals {
                            cpu_percent: Some(95.0),
                            ..healthy()
                        }
                    } else {
                        healthy()
                    })
                }),
            )
            .sink(move |d: &Decision| {
                let _ = decisions_tx.send(d.clone());
            })
            .build()
            .unwrap();

        // Phase 1: 50 jobs that each wait until all 50 run at once.
        let all = Arc::new(Gauge::default());
        let arrived = Arc::new(Latch::default());
        let release = Arc::new(Latch::default());
        let first: Vec<_> = (0..50)
            .map(|_| {
                let (all, arrived, release) = (all.clone(), arrived.clone(), release.clone());
                pool.submit(move || {
                    all.enter();
                    arrived.arrive();
                    let together = arrived.wait_for(50);
                    let released = release.wait_for(1);
                    all.exit();
                    together && released
                })
            })
            .collect();
        assert!(arrived.wait_for(50), "50 never ran at once");
        assert_eq!(all.peak(), 50);
        assert_eq!(pool.limit(), 50);

        // Phase 2: CPU goes hot while all 50 run; wait for the controller to reach 5.
        hot.store(true, SeqCst);
        let mut cuts = Vec::new();
        loop {
            let d = decisions.recv_timeout(TIMEOUT).expect("a decision");
            if d.action == Action::Decrease {
                cuts.push(d.new_limit);
            }
            if d.new_limit == 5 {
                break;
            }
        }
        assert_eq!(cuts, [25, 12, 6, 5]);
        assert_eq!(pool.stats().core.in_flight, 50, "a cut interrupts nothing");

        // Phase 3: jobs queued after the cut. None may start while 5 or more run; the first
        // five wait for each other, so 5 at once must be reached.
        let later = Arc::new(Gauge::default());
        let five = Arc::new(Latch::default());
        let ticket = Arc::new(AtomicUsize::new(0));
        let second: Vec<_> = (0..100)
            .map(|_| {
                let (all, later, five, ticket) =
                    (all.clone(), later.clone(), five.clone(), ticket.clone());
                pool.submit(move || {
                    let at_entry = all.enter();
                    later.enter();
                    let mut ok = true;
                    if ticket.fetch_add(1, SeqCst) < 5 {
                        five.arrive();
                        ok = five.wait_for(5);
                    }
                    later.exit();
                    all.exit();
                    (at_entry, ok)
                })
            })
            .collect();
        release.arrive();
        for h in first {
            assert_eq!(h.join(), Ok(true));
        }
        let mut most = 0;
        for h in second {
            let (at_entry, ok) = h.join().unwrap();
            assert!(ok, "the first five never ran together");
            most = most.max(at_entry);
        }
        assert!(most <= 5, "a job started with {most} running under limit 5");
        assert_eq!(later.peak(), 5);
        assert_eq!(pool.limit(), 5);
    });
}

#[test]
fn lets_50_run_when_the_limit_is_raised_by_hand() {
    watchdog(|| {
        let pool = manual_pool(5, 50, 5);
        let gauge = Arc::new(Gauge::default());
        let arrived = Arc::new(Latch::default());
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (gauge, arrived) = (gauge.clone(), arrived.clone());
                pool.submit(move || {
                    gauge.enter();
                    arrived.arrive();
                    let ok = arrived.wait_for(50);
                    gauge.exit();
                    ok
                })
            })
            .collect();
        assert!(arrived.wait_for(5));
        assert_eq!(gauge.peak(), 5, "limit 5 lets 5 run");
        assert_eq!(pool.set_limit(50), 50);
        for h in handles {
            assert_eq!(h.join(), Ok(true));
        }
        assert_eq!(gauge.peak(), 50);
        assert!(pool.stats().threads <= 50);
    });
}

#[test]
fn reports_panics_and_keeps_serving() {
    watchdog(|| {
        let pool = manual_pool(2, 2, 2);
        let handles: Vec<_> = (0..20)
            .map(|i| {
                pool.submit(move || {
                    assert!(i % 2 == 0, "odd job {i}");
                    i
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(h.join(), Ok(i));
            } else {
                assert_eq!(h.join(), Err(JoinError::Panicked(format!("odd job {i}"))));
            }
        }
        let odd = pool.submit(|| std::panic::panic_any(42_u8)).join();
        assert_eq!(odd, Err(JoinError::Panicked("Box<dyn Any>".into())));
        pool.execute(|| panic!("fire and forget"));
        // Still serving, on the same two threads at most.
        let after: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
        assert_eq!(
            after.into_iter().map(|h| h.join().unwrap()).sum::<i32>(),
            45
        );
        pool.shutdown();
        let stats = pool.stats();
        assert_eq!((stats.core.completed, stats.core.failed), (32, 12));
    });
}

/// `n` jobs that block until `release`, then queue `m` more; returns the handles once the
/// blocked jobs run.
fn saturate(
    pool: &ThreadPoolManager,
    n: usize,
    m: usize,
    release: &Arc<Latch>,
) -> (Vec<JoinHandle<usize>>, Vec<JoinHandle<usize>>) {
    let started = Arc::new(Latch::default());
    let running: Vec<_> = (0..n)
        .map(|i| {
            let (started, release) = (started.clone(), release.clone());
            pool.submit(move || {
                started.arrive();
                assert!(release.wait_for(1));
                i
            })
        })
        .collect();
    assert!(started.wait_for(n));
    let queued = (0..m).map(|i| pool.submit(move || 100 + i)).collect();
    (running, queued)
}

#[test]
fn drains_queued_and_running_jobs_on_shutdown() {
    watchdog(|| {
        let pool = manual_pool(2, 2, 2);
        let release = Arc::new(Latch::default());
        let (running, queued) = saturate(&pool, 2, 20, &release);
        assert_eq!(pool.stats().core.waiting, 20);
        thread::scope(|s| {
            let stopper = s.spawn(|| pool.shutdown());
            eventually("shutdown to begin", || pool.is_shut_down());
            assert_eq!(pool.submit(|| 0).join(), Err(JoinError::Shutdown));
            assert!(matches!(
                pool.try_submit(|| 0),
                Err(TrySubmitError::Shutdown(_))
            ));
            release.arrive();
            stopper.join().unwrap();
        });
        for (i, h) in running.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i));
        }
        for (i, h) in queued.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(100 + i));
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.core.completed, stats.threads, stats.core.waiting),
            (22, 0, 0)
        );
    });
}

#[test]
fn hands_back_queued_jobs_on_shutdown_now() {
    watchdog(|| {
        let pool = manual_pool(3, 3, 3);
        let release = Arc::new(Latch::default());
        let (running, queued) = saturate(&pool, 3, 20, &release);
        let unstarted = thread::scope(|s| {
            let stopper = s.spawn(|| pool.shutdown_now());
            eventually("shutdown to begin", || pool.is_shut_down());
            release.arrive();
            stopper.join().unwrap()
        });
        assert_eq!(unstarted.len(), 20, "every queued job comes back");
        // Run five here, drop the rest: their handles say so.
        let mut unstarted = unstarted.into_iter();
        for job in unstarted.by_ref().take(5) {
            job.run();
        }
        drop(unstarted);
        for (i, h) in running.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i), "running jobs finish");
        }
        let results: Vec<_> = queued.into_iter().map(JoinHandle::join).collect();
        let ran: Vec<_> = results.iter().filter_map(|r| r.clone().ok()).collect();
        assert_eq!(ran, (100..105).collect::<Vec<_>>(), "queue order kept");
        assert_eq!(
            results
                .iter()
                .filter(|r| **r == Err(JoinError::Cancelled))
                .count(),
            15
        );
        assert_eq!(pool.stats().threads, 0);
        assert!(
            pool.shutdown_now().is_empty(),
            "a second call finds nothing"
        );
    });
}

#[test]
fn drains_on_drop() {
    watchdog(|| {
        let pool = manual_pool(1, 1, 1);
        let handles: Vec<_> = (0..50).map(|i| pool.submit(move || i)).collect();
        drop(pool);
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i));
        }
    });
}

#[test]
fn hands_the_closure_back_when_the_queue_is_full() {
    watchdog(|| {
        let pool = ThreadPoolManager::builder(AimdConfig::fixed(1))
            .default_signals(false)
            .queue_capacity(2)
            .build()
            .unwrap();
        let release = Arc::new(Latch::default());
        let (running, queued) = saturate(&pool, 1, 2, &release);
        let full = pool.try_submit(|| 7);
        match full {
            Err(TrySubmitError::Full(f)) => assert_eq!(f(), 7),
            other => panic!("expected Full, got {other:?}"),
        }
        // A blocking submit waits for room, then runs.
        thread::scope(|s| {
            let blocked = s.spawn(|| pool.submit(|| 8).join());
            release.arrive();
            assert_eq!(blocked.join().unwrap(), Ok(8));
        });
        for h in running.into_iter().chain(queued) {
            assert!(h.join().is_ok());
        }
    });
}

#[test]
fn retires_idle_threads() {
    watchdog(|| {
        let pool = ThreadPoolManager::builder(AimdConfig::fixed(8))
            .default_signals(false)
            .idle_timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let arrived = Arc::new(Latch::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let arrived = arrived.clone();
                pool.submit(move || {
                    arrived.arrive();
                    arrived.wait_for(8)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join(), Ok(true));
        }
        assert_eq!(pool.stats().threads, 8);
        eventually("idle threads to exit", || pool.stats().threads == 0);
        // And it comes back to life on demand.
        assert_eq!(pool.submit(|| 1).join(), Ok(1));
    });
}

#[test]
fn stops_within_a_job_not_a_control_interval() {
    watchdog(|| {
        let pool = ThreadPoolManager::builder(AimdConfig {
            adjustment_interval: Duration::from_secs(60),
            ..AimdConfig::default()
        })
        .build()
        .unwrap();
        assert_eq!(pool.submit(|| 1).join(), Ok(1));
        let start = Instant::now();
        pool.shutdown();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    });
}

/// CPU-bound jobs keep both cores busy; the (scripted) CPU reading says so, and the limit goes
/// down to `min_limit` and stays there while the load lasts. `examples/threadpool.rs` shows the
/// same with the real CPU reading.
#[test]
fn cuts_the_limit_under_cpu_load() {
    watchdog(|| {
        let busy = Arc::new(AtomicUsize::new(0));
        let reading = Arc::clone(&busy);
        let cores = thread::available_parallelism().map_or(2, usize::from);
        let (decisions_tx, decisions) = mpsc::channel::<Decision>();
        let pool = ThreadPoolManager::builder(AimdConfig {
            min_limit: 2,
            max_limit: 32,
            initial_limit: 16,
            cooldown: Duration::ZERO,
            adjustment_interval: Duration::from_millis(10),
            ..AimdConfig::default()
        })
        .default_signals(false)
        .source(
            "signals",
            source_fn(move || {
                // Percent of the cores that CPU-bound jobs occupy now.
                let share = reading.load(SeqCst).min(cores) * 100 / cores;
                #[allow(clippy::cast_precision_loss, reason = "0..=100")]
                Ok(Signals {
                    cpu_percent: Some(share as f64),
                    ..healthy()
                })
            }),
        )
        .sink(move |d: &Decision| {
            let _ = decisions_tx.send(d.clone());
        })
        .build()
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let jobs: Vec<_> = (0..32)
            .map(|_| {
                let (busy, stop) = (busy.clone(), stop.clone());
                pool.submit(move || {
                    busy.fetch_add(1, SeqCst);
                    let mut x = 0u64;
                    while !stop.load(SeqCst) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                    busy.fetch_sub(1, SeqCst);
                    x
                })
            })
            .collect();
        loop {
            let d = decisions.recv_timeout(TIMEOUT).expect("a decision");
            if d.new_limit == 2 {
                assert!(d.signals.cpu_percent > Some(80.0));
                break;
            }
        }
        assert_eq!(pool.limit(), 2);
        stop.store(true, SeqCst);
        for h in jobs {
            assert!(h.join().is_ok());
        }
    });
}

/// After a cut, threads that sit idle (waiting for work) must not start new jobs while the
/// running ones are still over the limit: they take the job, find no slot, and leave it for the
/// first thread that gets one.
#[test]
fn does_not_start_jobs_on_idle_threads_while_over_a_cut_limit() {
    watchdog(|| {
        let pool = manual_pool(1, 8, 8);
        // Eight threads, all alive and idle afterwards.
        let warm = Arc::new(Latch::default());
        let warmers: Vec<_> = (0..8)
            .map(|_| {
                let warm = warm.clone();
                pool.submit(move || {
                    warm.arrive();
                    warm.wait_for(8)
                })
            })
            .collect();
        for h in warmers {
            assert_eq!(h.join(), Ok(true));
        }
        assert_eq!(pool.stats().threads, 8);
        let release = Arc::new(Latch::default());
        let (blocked, _) = saturate(&pool, 4, 0, &release);
        pool.set_limit(2);
        let all = Arc::new(AtomicUsize::new(4));
        let later: Vec<_> = (0..20)
            .map(|_| {
                let all = all.clone();
                pool.submit(move || {
                    let at_entry = all.fetch_add(1, SeqCst) + 1;
                    all.fetch_sub(1, SeqCst);
                    at_entry
                })
            })
            .collect();
        assert_eq!(
            pool.stats().core.completed,
            8,
            "none of the 20 started over the limit"
        );
        all.fetch_sub(4, SeqCst);
        release.arrive();
        for h in blocked {
            assert!(h.join().is_ok());
        }
        for h in later {
            let at_entry = h.join().unwrap();
            assert!(
                at_entry <= 2,
                "started with {at_entry} running under limit 2"
            );
        }
    });
}

/// Submits racing with `shutdown` (with threads retiring as fast as they can): every handle
/// resolves, to its value if the job was accepted, to `Shutdown` if not.
#[test]
fn resolves_every_handle_when_submits_race_shutdown() {
    watchdog(|| {
        for round in 0..100 {
            let pool = ThreadPoolManager::builder(AimdConfig::fixed(2))
                .default_signals(false)
                .idle_timeout(Duration::from_micros(50))
                .build()
                .unwrap();
            let handles = thread::scope(|s| {
                let submitter =
                    s.spawn(|| (0..50).map(|i| pool.submit(move || i)).collect::<Vec<_>>());
                if round % 2 == 0 {
                    pool.shutdown();
                } else {
                    for job in pool.shutdown_now() {
                        job.run();
                    }
                }
                submitter.join().unwrap()
            });
            let mut accepted = 0;
            for (i, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(v) => {
                        assert_eq!(v, i);
                        accepted += 1;
                    }
                    Err(e) => assert_eq!(e, JoinError::Shutdown),
                }
            }
            assert!(pool.stats().core.completed <= accepted);
        }
    });
}

/// A submit blocked on a full queue when the pool shuts down: its job is run (drain) or handed
/// back or cancelled (now), and its handle always resolves.
#[test]
fn settles_a_submit_blocked_on_a_full_queue_across_shutdown() {
    watchdog(|| {
        for now in [false, true] {
            let pool = ThreadPoolManager::builder(AimdConfig::fixed(1))
                .default_signals(false)
                .queue_capacity(1)
                .build()
                .unwrap();
            let release = Arc::new(Latch::default());
            let (running, queued) = saturate(&pool, 1, 1, &release);
            let entering = Latch::default();
            let (blocked, unstarted) = thread::scope(|s| {
                let blocked = s.spawn(|| {
                    entering.arrive();
                    pool.submit(|| 7).join()
                });
                assert!(entering.wait_for(1));
                // Give the submitter time to block in its send (if it has not, it is rejected:
                // also a valid outcome, checked below).
                thread::sleep(Duration::from_millis(20));
                let stopper = s.spawn(|| {
                    if now {
                        pool.shutdown_now()
                    } else {
                        pool.shutdown();
                        Vec::new()
                    }
                });
                eventually("shutdown to begin", || pool.is_shut_down());
                release.arrive();
                let unstarted = stopper.join().unwrap();
                // `shutdown_now` may have handed the blocked job back: run it.
                let n = unstarted.len();
                for job in unstarted {
                    job.run();
                }
                (blocked.join().unwrap(), n)
            });
            assert_eq!(running.into_iter().next().unwrap().join(), Ok(0));
            let first_queued = queued.into_iter().next().unwrap().join();
            if now {
                assert!(unstarted >= 1, "the queued job comes back");
                assert_eq!(first_queued, Ok(100), "run from the handed-back list");
                assert!(
                    matches!(
                        blocked,
                        Ok(7) | Err(JoinError::Cancelled | JoinError::Shutdown)
                    ),
                    "{blocked:?}"
                );
            } else {
                assert_eq!(first_queued, Ok(100));
                assert!(
                    matches!(blocked, Ok(7) | Err(JoinError::Shutdown)),
                    "{blocked:?}"
                );
            }
        }
    });
}

fn run_shrink_case(a: usize, b: usize, n: usize) {
    let pool = manual_pool(1, 8, a);
    let all = Arc::new(Gauge::default());
    let release = Arc::new(Latch::default());
    let arrived = Arc::new(Latch::default());
    let first: Vec<_> = (0..a)
        .map(|_| {
            let (all, arrived, release) = (all.clone(), arrived.clone(), release.clone());
            pool.submit(move || {
                all.enter();
                arrived.arrive();
                let ok = release.wait_for(1);
                all.exit();
                ok
            })
        })
        .collect();
    assert!(arrived.wait_for(a));
    pool.set_limit(b);
    let together = b.min(n);
    let later = Arc::new(Gauge::default());
    let meet = Arc::new(Latch::default());
    let ticket = Arc::new(AtomicUsize::new(0));
    let second: Vec<_> = (0..n)
        .map(|_| {
            let (all, later, meet, ticket) =
                (all.clone(), later.clone(), meet.clone(), ticket.clone());
            pool.submit(move || {
                let at_entry = all.enter();
                later.enter();
                let mut ok = true;
                if ticket.fetch_add(1, SeqCst) < together {
                    meet.arrive();
                    ok = meet.wait_for(together);
                }
                later.exit();
                all.exit();
                (at_entry, ok)
            })
        })
        .collect();
    release.arrive();
    for h in first {
        assert_eq!(h.join(), Ok(true));
    }
    for h in second {
        let (at_entry, ok) = h.join().unwrap();
        assert!(ok);
        assert!(at_entry <= b, "started with {at_entry} running, limit {b}");
    }
    assert_eq!(later.peak(), together);
    pool.shutdown();
    let stats = pool.stats();
    assert_eq!(
        (
            stats.core.completed,
            stats.core.in_flight,
            stats.core.waiting,
            stats.threads
        ),
        ((a + n) as u64, 0, 0, 0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// From `a` running, set the limit to `b` and queue `n`: no later job starts unless fewer
    /// than `b` run, `min(b, n)` of them do run together, and the books balance.
    #[test]
    fn limit_binds_after_any_change_while_saturated(a in 1usize..=8, b in 1usize..=8, n in 0usize..=12) {
        watchdog(move || run_shrink_case(a, b, n));
    }

    /// Jobs and limit changes from several threads at once: every job returns, none is lost.
    #[test]
    fn nothing_lost_under_concurrent_limit_changes(
        limits in proptest::collection::vec(1usize..=6, 1..20),
        jobs in 1usize..200,
    ) {
        watchdog(move || {
            let pool = Arc::new(manual_pool(1, 6, 3));
            let changer = {
                let pool = Arc::clone(&pool);
                thread::spawn(move || {
                    for limit in limits {
                        pool.set_limit(limit);
                        thread::yield_now();
                    }
                })
            };
            let handles: Vec<_> = (0..jobs).map(|i| pool.submit(move || i)).collect();
            changer.join().unwrap();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.join(), Ok(i));
            }
            pool.shutdown();
            assert_eq!(pool.stats().core.completed, jobs as u64);
        });
    }
}

#[test]
fn runs_the_most_important_class_first() {
    watchdog(|| {
        let pool = manual_pool(1, 1, 1);
        let started = Arc::new(Latch::default());
        let (release, blocked) = mpsc::channel::<()>();
        let blocker = pool.submit({
            let started = Arc::clone(&started);
            move || {
                started.arrive();
                blocked.recv_timeout(TIMEOUT).expect("released");
            }
        });
        assert!(started.wait_for(1), "the blocker runs");
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = [
            (Priority::Sheddable, "s1"),
            (Priority::Normal, "n"),
            (Priority::Sheddable, "s2"),
            (Priority::Critical, "c"),
        ]
        .into_iter()
        .map(|(priority, name)| {
            let order = Arc::clone(&order);
            pool.submit_with(priority, move || order.lock().unwrap().push(name))
        })
        .collect();
        assert_eq!(pool.stats().core.waiting, 4, "queued behind the blocker");
        release.send(()).unwrap();
        blocker.join().unwrap();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["c", "n", "s1", "s2"]);
        pool.shutdown();
    });
}
