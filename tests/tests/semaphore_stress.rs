//! Stress: 1,000,000 acquires with random cancellation on a multi-threaded tokio runtime, while
//! the limit moves, leave every permit accounted for.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

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
