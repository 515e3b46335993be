//! `ThreadPoolManager` against a fixed-size crossbeam-channel pool of the same size, on 100k
//! tiny jobs. See BENCHMARKS-threadpool.md for figures and the command.
//!
//! Both pools have 4 threads (the adaptive one is held there with `AimdConfig::fixed(4)` and no
//! signals, so only the pool's own machinery is measured: gate, counters, thread accounting).
//! Two shapes:
//! - `execute`: fire-and-forget jobs; the last one to finish opens a latch.
//! - `submit_join`: every job returns a value through its handle (for the fixed pool, a
//!   one-slot crossbeam channel per job), and the caller joins them all.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ace_std::threadpool::ThreadPoolManager;
use ace_std::AimdConfig;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossbeam_channel::{unbounded, Sender};

const JOBS: usize = 100_000;
const THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// The baseline: `n` threads receiving boxed closures from one crossbeam channel.
struct FixedPool {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl FixedPool {
    fn new(n: usize) -> Self {
        let (tx, rx) = unbounded::<Job>();
        let workers = (0..n)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
            })
            .collect();
        Self {
            tx: Some(tx),
            workers,
        }
    }

    fn execute(&self, f: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            tx.send(Box::new(f)).expect("workers alive");
        }
    }
}

impl Drop for FixedPool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            w.join().expect("worker");
        }
    }
}

/// Counts finished jobs; the last one wakes the waiter.
#[derive(Default)]
struct Countdown {
    done: AtomicUsize,
    lock: Mutex<bool>,
    cv: Condvar,
}

impl Countdown {
    fn finish_one(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == JOBS {
            *self.lock.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }
    fn wait(&self) {
        let guard = self.lock.lock().unwrap();
        drop(self.cv.wait_while(guard, |done| !*done).unwrap());
    }
}

fn adaptive_pool() -> ThreadPoolManager {
    ThreadPoolManager::builder(AimdConfig::fixed(THREADS))
        .default_signals(false)
        .build()
        .expect("valid config")
}

fn tiny(i: usize) -> usize {
    std::hint::black_box(i).wrapping_mul(3)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("threadpool_100k_tiny_jobs");
    group
        .sample_size(15)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(JOBS as u64));

    let fixed = FixedPool::new(THREADS);
    let adaptive = adaptive_pool();

    group.bench_function("execute/fixed_crossbeam", |b| {
        b.iter_batched(
            || Arc::new(Countdown::default()),
            |countdown| {
                for i in 0..JOBS {
                    let countdown = Arc::clone(&countdown);
                    fixed.execute(move || {
                        tiny(i);
                        countdown.finish_one();
                    });
                }
                countdown.wait();
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("execute/adaptive", |b| {
        b.iter_batched(
            || Arc::new(Countdown::default()),
            |countdown| {
                for i in 0..JOBS {
                    let countdown = Arc::clone(&countdown);
                    adaptive.execute(move || {
                        tiny(i);
                        countdown.finish_one();
                    });
                }
                countdown.wait();
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("submit_join/fixed_crossbeam", |b| {
        b.iter(|| {
            let results: Vec<_> = (0..JOBS)
                .map(|i| {
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    fixed.execute(move || {
                        let _ = tx.send(tiny(i));
                    });
                    rx
                })
                .collect();
            results
                .into_iter()
                .map(|rx| rx.recv().expect("result"))
                .fold(0usize, usize::wrapping_add)
        });
    });
    group.bench_function("submit_join/adaptive", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..JOBS)
                .map(|i| adaptive.submit(move || tiny(i)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("result"))
                .fold(0usize, usize::wrapping_add)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
