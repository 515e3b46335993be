//! Stress: 1,000,000 acquires with random cancellation on a multi-threaded tokio runtime, while
//! the limit moves, leave every permit accounted for; and two threads setting the limit at once
//! never admit more than the largest limit either of them set.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use ace_core::{Semaphore, TryAcquireError};

const TASKS: usize = 64;
const ACQUIRES: usize = 1_000_000;
const LIMIT: usize = 8;
const MAX_LIMIT: usize = 16;

/// xorshift64*: a fast, seedable generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `future` once, returning its output if it was ready; either way it is then dropped.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

#[test]
fn million_acquires_with_random_cancellation_leave_nothing_in_use() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let sem = Arc::new(Semaphore::new(LIMIT));
    let holders = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (acquired, cancelled) = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(TASKS);
        for seed in 0..TASKS as u64 {
            let (sem, holders, peak) = (Arc::clone(&sem), Arc::clone(&holders), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xA24B_AED4));
                let (mut acquired, mut cancelled) = (0_usize, 0_usize);
                for _ in 0..ACQUIRES / TASKS {
                    let permit = match rng.below(10) {
                        // Cancel: queue, let the permit perhaps be handed over meanwhile, drop.
                        0..=1 => {
                            let mut acquire = pin!(sem.acquire());
                            match poll_once(acquire.as_mut()).await {
                                Some(permit) => Some(permit.unwrap()),
                                None => {
                                    tokio::task::yield_now().await;
                                    cancelled += 1;
                                    None
                                }
                            }
                        }
                        2 => match sem.try_acquire() {
                            Ok(permit) => Some(permit),
                            Err(TryAcquireError::NoPermits) => None,
                            Err(e) => panic!("unexpected {e}"),
                        },
                        _ => Some(sem.acquire().await.unwrap()),
                    };
                    if let Some(permit) = permit {
                        acquired += 1;
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        if rng.below(4) == 0 {
                            tokio::task::yield_now().await;
                        }
                        holders.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                    // One task in eight also moves the limit now and then.
                    if seed % 8 == 0 && rng.below(64) == 0 {
                        sem.set_limit(1 + rng.below(MAX_LIMIT as u64) as usize);
                    }
                }
                (acquired, cancelled)
            }));
        }
        let (mut acquired, mut cancelled) = (0, 0);
        for task in tasks {
            let (a, c) = task.await.unwrap();
            acquired += a;
            cancelled += c;
        }
        (acquired, cancelled)
    });
    sem.set_limit(LIMIT);
    assert!(acquired > ACQUIRES / 2, "only {acquired} acquired");
    assert!(cancelled > 0, "no cancellation happened");
    assert!(peak.load(Ordering::SeqCst) <= MAX_LIMIT);
    assert_eq!(sem.in_use(), 0, "{sem:?}");
    assert_eq!(sem.debt(), 0, "{sem:?}");
    assert_eq!(sem.available(), LIMIT, "{sem:?}");
    assert_eq!(sem.waiting(), 0, "{sem:?}");
}

/// Runs `f` on its own thread and fails, instead of hanging, if it has not finished in time.
fn within_watchdog<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}: a hang")
        }
        // It panicked: pass its panic on.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("it sends before it returns"),
        },
    }
}

#[test]
fn concurrent_setters_never_admit_more_than_the_largest_limit() {
    const SETTERS: usize = 2;
    const SETS_PER_SETTER: usize = 1_000_000;
    const ACQUIRERS: usize = 32;
    const HIGH: usize = 8;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (peak, acquired, sem) =
        within_watchdog(Duration::from_secs(120), "the stress run", move || {
            let sem = Arc::new(Semaphore::new(HIGH));
            let holders = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            // Two threads flip the limit between 0 and HIGH as fast as they can: the limit is only
            // ever one of those, so more than HIGH holders at once is over-admission.
            let setters: Vec<_> = (0..SETTERS)
                .map(|i| {
                    let (sem, stop) = (Arc::clone(&sem), Arc::clone(&stop));
                    thread::spawn(move || {
                        for n in 0..SETS_PER_SETTER {
                            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                                break;
                            }
                            sem.set_limit(if (n + i) % 2 == 0 { 0 } else { HIGH });
                        }
                    })
                })
                .collect();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            let acquired = runtime.block_on(async {
                let tasks: Vec<_> = (0..ACQUIRERS)
                    .map(|_| {
                        let (sem, holders, peak, stop) = (
                            Arc::clone(&sem),
                            Arc::clone(&holders),
                            Arc::clone(&peak),
                            Arc::clone(&stop),
                        );
                        tokio::spawn(async move {
                            let mut acquired = 0_usize;
                            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                                // A bounded wait: the limit may sit at 0 when the setters stop.
                                let Ok(Ok(permit)) =
                                    tokio::time::timeout(Duration::from_millis(50), sem.acquire())
                                        .await
                                else {
                                    continue;
                                };
                                let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                holders.fetch_sub(1, Ordering::SeqCst);
                                drop(permit);
                                acquired += 1;
                            }
                            acquired
                        })
                    })
                    .collect();
                // The setters bound the run; the acquirers stop when they are done.
                let setters_done = tokio::task::spawn_blocking(move || {
                    for t in setters {
                        t.join().unwrap();
                    }
                });
                setters_done.await.unwrap();
                stop.store(true, Ordering::Relaxed);
                let mut acquired = 0;
                for task in tasks {
                    acquired += task.await.unwrap();
                }
                acquired
            });
            (peak.load(Ordering::SeqCst), acquired, sem)
        });
    assert!(acquired > 1_000, "only {acquired} acquired");
    assert!(
        peak <= HIGH,
        "{peak} permits held at once, the limit never exceeded {HIGH}"
    );
    sem.set_limit(HIGH);
    assert_eq!(sem.in_use(), 0, "{sem:?}");
    assert_eq!(sem.debt(), 0, "{sem:?}");
    assert_eq!(sem.available(), HIGH, "{sem:?}");
    assert_eq!(sem.waiting(), 0, "{sem:?}");
}
