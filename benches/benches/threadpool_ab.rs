//! An interleaved A/B check of the criterion bench `threadpool`: the same 100k tiny
//! fire-and-forget jobs on a fixed 4-thread crossbeam-channel pool and on `ThreadPoolManager`
//! held at 4, alternating (ABBA) round by round, so both see the same background load. Prints
//! each side's median and their ratio. On a shared machine this is the steadier figure; criterion
//! runs each side in its own time window.
//!
//! `cargo bench -p ace-benches --bench threadpool_ab`
#![allow(missing_docs, reason = "a benchmark binary")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use ace_std::threadpool::ThreadPoolManager;
use ace_std::AimdConfig;

const JOBS: usize = 100_000;
const THREADS: usize = 4;
const ROUNDS: usize = 101;

type Job = Box<dyn FnOnce() + Send>;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let fixed: Vec<_> = (0..THREADS)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
        })
        .collect();
    let pool = ThreadPoolManager::builder(AimdConfig::fixed(THREADS))
        .default_signals(false)
        .build()
        .expect("valid config");

    let (mut fixed_ms, mut adaptive_ms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for adaptive in order {
            let countdown = Arc::new(Countdown::default());
            let start = Instant::now();
            for i in 0..JOBS {
                let countdown = Arc::clone(&countdown);
                let job = move || {
                    std::hint::black_box(i);
                    countdown.finish_one();
                };
                if adaptive {
                    pool.execute(job);
                } else {
                    tx.send(Box::new(job)).expect("workers alive");
                }
            }
            countdown.wait();
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                // Round 0 warms both up.
                if adaptive {
                    &mut adaptive_ms
                } else {
                    &mut fixed_ms
                }
                .push(ms);
            }
        }
    }
    let (f, a) = (median(fixed_ms), median(adaptive_ms));
    println!(
        "100k tiny jobs, {THREADS} threads, {} interleaved rounds: fixed crossbeam median {f:.2} ms \
         ({:.0} ns/job), adaptive median {a:.2} ms ({:.0} ns/job), ratio adaptive/fixed {:.2}",
        ROUNDS - 1,
        f * 1e6 / JOBS as f64,
        a * 1e6 / JOBS as f64,
        a / f
    );
    drop(tx);
    for worker in fixed {
        worker.join().expect("worker");
    }
}
