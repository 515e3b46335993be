//! ACE's semaphore against tokio, async-lock and futures-intrusive, all in the same run.
//!
//! ```text
//! cargo bench -p ace-benches --bench semaphore
//! ```
//!
//! Figures (BENCHMARKS.md has the table; `benches/semaphore_ratios.py` runs this several times
//! and prints the median ratios):
//! - `uncontended/*`: one acquire + release, the future polled once with a no-op waker.
//! - `contended_current_thread/*`, `contended_multi_thread/*`: 64 tasks share 8 permits, each
//!   looping acquire → yield → release; one iteration is 64 × 256 such operations.
//! - `set_limit/*`: one limit change (alternating +1 / −1, nobody waiting).
//! - `blocking/*`: 8 threads share 2 permits, each looping blocking acquire → ~100 ns of work →
//!   release (16 000 operations).
//! - `blocking_busy_cores/*`: the same while two busy-loop threads, started by the bench and
//!   stopped after the group (two minutes at most), compete for the cores.
//! - `blocking_64_threads/*`: 64 threads share 2 permits, the same 16 000 operations in all.
//!
//! Before each figure it prints the 1-minute load average (`load average X before group/name`),
//! so each figure can be read against the load it was measured under.
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ace_benches::{blocking_round, work, CondvarSemaphore};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

const TASKS: usize = 64;
const PERMITS: usize = 8;
const OPS_PER_TASK: usize = 256;
const THREADS: usize = 8;
const THREAD_PERMITS: usize = 2;
const OPS_PER_THREAD: usize = 2_000;

/// Polls a future once with a no-op waker; the benches only poll futures that are ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an uncontended acquire must be ready at once"),
    }
}

fn configure<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));

    let ace = ace_core::Semaphore::new(PERMITS);
    note_load("uncontended", "ace");
    group.bench_function("ace", |b| {
        b.iter(|| drop(black_box(ready(black_box(&ace).acquire()).unwrap())));
    });
    let tokio = tokio::sync::Semaphore::new(PERMITS);
    note_load("uncontended", "tokio");
    group.bench_function("tokio", |b| {
        b.iter(|| drop(black_box(ready(black_box(&tokio).acquire()).unwrap())));
    });
    let async_lock = async_lock::Semaphore::new(PERMITS);
    note_load("uncontended", "async-lock");
    group.bench_function("async-lock", |b| {
        b.iter(|| drop(black_box(ready(black_box(&async_lock).acquire()))));
    });
    let intrusive = futures_intrusive::sync::Semaphore::new(true, PERMITS);
    note_load("uncontended", "futures-intrusive");
    group.bench_function("futures-intrusive", |b| {
        b.iter(|| drop(black_box(ready(black_box(&intrusive).acquire(1)))));
    });
    // The synchronous fast path, for reference.
    note_load("uncontended", "ace_try_acquire");
    group.bench_function("ace_try_acquire", |b| {
        b.iter(|| drop(black_box(black_box(&ace).try_acquire().unwrap())));
    });
    note_load("uncontended", "tokio_try_acquire");
    group.bench_function("tokio_try_acquire", |b| {
        b.iter(|| drop(black_box(black_box(&tokio).try_acquire().unwrap())));
    });
    group.finish();
}

/// One contended round: 64 tasks, 8 permits, each task `OPS_PER_TASK` × (acquire → yield →
/// release).
macro_rules! contended_round {
    ($rt:expr, $make:expr, |$sem:ident| $acquire:expr) => {{
        let $sem = Arc::new($make);
        $rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let $sem = Arc::clone(&$sem);
                    tokio::spawn(async move {
                        for _ in 0..OPS_PER_TASK {
                            let permit = $acquire;
                            tokio::task::yield_now().await;
                            drop(permit);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
    }};
}

fn contended_on(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    group.throughput(Throughput::Elements((TASKS * OPS_PER_TASK) as u64));
    note_load(name, "ace");
    group.bench_function("ace", |b| {
        b.iter(|| {
            contended_round!(rt, ace_core::Semaphore::new(PERMITS), |sem| sem
                .acquire()
                .await
                .unwrap())
        });
    });
    note_load(name, "tokio");
    group.bench_function("tokio", |b| {
        b.iter(|| {
            contended_round!(rt, tokio::sync::Semaphore::new(PERMITS), |sem| sem
                .acquire()
                .await
                .unwrap())
        });
    });
    note_load(name, "async-lock");
    group.bench_function("async-lock", |b| {
        b.iter(|| {
            contended_round!(rt, async_lock::Semaphore::new(PERMITS), |sem| sem
                .acquire()
                .await)
        });
    });
    note_load(name, "futures-intrusive");
    group.bench_function("futures-intrusive", |b| {
        b.iter(|| {
            contended_round!(
                rt,
                futures_intrusive::sync::Semaphore::new(true, PERMITS),
                |sem| sem.acquire(1).await
            )
        });
    });
    // Scheduling floors, no semaphore: a FIFO hand-off costs each operation two polls (the
    // releaser re-queues, the waiter is woken), as two yields do; a barging semaphore can get
    // away with about one.
    for (floor, yields) in [("floor_two_yields", 2), ("floor_one_yield", 1)] {
        note_load(name, floor);
        group.bench_function(floor, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            tokio::spawn(async move {
                                for _ in 0..OPS_PER_TASK * yields {
                                    tokio::task::yield_now().await;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
            });
        });
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    contended_on(c, "contended_current_thread", &current);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    contended_on(c, "contended_multi_thread", &multi);
}

fn set_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_limit");
    configure(&mut group);
    group.throughput(Throughput::Elements(2));
    let ace = ace_core::Semaphore::new(PERMITS);
    note_load("set_limit", "ace");
    group.bench_function("ace", |b| {
        b.iter(|| {
            black_box(&ace).set_limit(PERMITS + 1);
            black_box(&ace).set_limit(PERMITS);
        });
    });
    // tokio's nearest: grow by one, then take one away.
    let tokio = tokio::sync::Semaphore::new(PERMITS);
    note_load("set_limit", "tokio");
    group.bench_function("tokio", |b| {
        b.iter(|| {
            black_box(&tokio).add_permits(1);
            black_box(black_box(&tokio).forget_permits(1));
        });
    });
    group.finish();
}

/// The 1-minute load average, from `/proc/loadavg` ("?" where there is none).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Prints the load average beside the figure about to be measured, so every figure comes with
/// the load it was measured under.
fn note_load(group: &str, name: &str) {
    eprintln!("load average {} before {group}/{name}", load_average());
}

/// Two threads that burn CPU until dropped (or for at most two minutes), to measure while
/// something else competes for the cores.
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let end = Instant::now() + Duration::from_secs(120);
                    let mut x = 0_u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        for i in 0..10_000_u64 {
                            x = black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// One blocking figure: `threads` threads share `THREAD_PERMITS` permits, ACE against the two
/// Mutex+Condvar peers.
fn blocking_group(c: &mut Criterion, group_name: &str, threads: usize, busy: usize) {
    let ops = THREADS * OPS_PER_THREAD / threads;
    let _busy = BusyCores::start(busy);
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    group.throughput(Throughput::Elements((threads * ops) as u64));
    let ace = ace_core::Semaphore::new(THREAD_PERMITS);
    note_load(group_name, "ace");
    group.bench_function("ace", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    blocking_round(threads, ops, &|| {
                        let permit = ace.blocking_acquire().unwrap();
                        work();
                        drop(permit);
                    })
                })
                .sum()
        });
    });
    for (name, tuned) in [("mutex_condvar", false), ("mutex_condvar_tuned", true)] {
        if !tuned && threads != THREADS {
            continue;
        }
        let condvar = CondvarSemaphore::new(THREAD_PERMITS, tuned);
        note_load(group_name, name);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        blocking_round(threads, ops, &|| {
                            condvar.acquire();
                            work();
                            condvar.release();
                        })
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

fn blocking(c: &mut Criterion) {
    blocking_group(c, "blocking", THREADS, 0);
    blocking_group(c, "blocking_busy_cores", THREADS, 2);
    blocking_group(c, "blocking_64_threads", 64, 0);
}

criterion_group!(benches, uncontended, contended, set_limit, blocking);
criterion_main!(benches);
