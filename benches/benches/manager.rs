//! Per-task overhead of `Manager::submit` against a bare `tokio::sync::Semaphore` acquire around
//! the same work.
//!
//! `cargo bench -p ace-benches --bench manager`
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented functions"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use ace_benches::{interleaved_ratio, manager, runtime};
use criterion::{criterion_group, BenchmarkId, Criterion};

/// The work: one trip through the scheduler, the least an async task does.
async fn work(i: u64) -> u64 {
    tokio::task::yield_now().await;
    black_box(i)
}

/// One task at a time: acquire, work, release.
fn sequential(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("submit_one");
    let bare = tokio::sync::Semaphore::new(64);
    g.bench_function("bare_tokio_semaphore", |b| {
        b.to_async(&rt).iter(|| async {
            let _p = bare.acquire().await.unwrap();
            work(1).await
        });
    });
    let ace = ace_core::Semaphore::new(64);
    g.bench_function("ace_semaphore", |b| {
        b.to_async(&rt).iter(|| async {
            let _p = ace.acquire().await.unwrap();
            work(1).await
        });
    });
    // The floor of any wrapper that counts its tasks: the same plus two atomic adds.
    let counters = [
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ];
    g.bench_function("ace_semaphore_plus_two_counters", |b| {
        b.to_async(&rt).iter(|| async {
            let _p = ace.acquire().await.unwrap();
            counters[0].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let out = work(1).await;
            counters[1].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            out
        });
    });
    let (timed, untimed) = (manager(64, true), manager(64, false));
    g.bench_function("manager_submit", |b| {
        b.to_async(&rt).iter(|| timed.submit(work(1)));
    });
    g.bench_function("manager_submit_untimed", |b| {
        b.to_async(&rt).iter(|| untimed.submit(work(1)));
    });
    g.finish();
}

/// The quick start's shape: 1,000 submits at once through a limit of 50, so most wait.
fn contended(c: &mut Criterion) {
    const TASKS: u64 = 1000;
    let rt = runtime();
    let mut g = c.benchmark_group("submit_1000_limit_50");
    g.throughput(criterion::Throughput::Elements(TASKS));
    let bare = Arc::new(tokio::sync::Semaphore::new(50));
    g.bench_function(BenchmarkId::from_parameter("bare_tokio_semaphore"), |b| {
        b.to_async(&rt).iter(|| {
            futures::future::join_all((0..TASKS).map(|i| {
                let bare = &bare;
                async move {
                    let _p = bare.acquire().await.unwrap();
                    work(i).await
                }
            }))
        });
    });
    let (timed, untimed) = (manager(50, true), manager(50, false));
    g.bench_function(BenchmarkId::from_parameter("manager_submit"), |b| {
        b.to_async(&rt)
            .iter(|| futures::future::join_all((0..TASKS).map(|i| timed.submit(work(i)))));
    });
    g.bench_function(BenchmarkId::from_parameter("manager_submit_untimed"), |b| {
        b.to_async(&rt)
            .iter(|| futures::future::join_all((0..TASKS).map(|i| untimed.submit(work(i)))));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = sequential, contended
}

fn ratios() {
    const N: u64 = 200_000;
    let rt = runtime();
    let bare = tokio::sync::Semaphore::new(64);
    let timed = manager(64, true);
    let untimed = manager(64, false);
    // Let the latency sampling settle (one control cycle with traffic).
    rt.block_on(async {
        for i in 0..N {
            timed.submit(work(i)).await.unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed()
    };
    let bare_one = || {
        time(&|| {
            rt.block_on(async {
                for i in 0..N {
                    let _p = bare.acquire().await.unwrap();
                    work(i).await;
                }
            });
        })
    };
    let manager_one = |m: &ace_std::tokio::Manager| {
        time(&|| {
            rt.block_on(async {
                for i in 0..N {
                    m.submit(work(i)).await.unwrap();
                }
            });
        })
    };
    interleaved_ratio(
        "submit_one/manager_submit vs bare_tokio_semaphore",
        21,
        bare_one,
        || manager_one(&timed),
    );
    interleaved_ratio(
        "submit_one/manager_submit_untimed vs bare_tokio_semaphore",
        21,
        bare_one,
        || manager_one(&untimed),
    );
    const TASKS: u64 = 1000;
    let bare50 = tokio::sync::Semaphore::new(50);
    let timed50 = manager(50, true);
    let batch_bare = || {
        time(&|| {
            rt.block_on(async {
                for _ in 0..100 {
                    futures::future::join_all((0..TASKS).map(|i| {
                        let bare = &bare50;
                        async move {
                            let _p = bare.acquire().await.unwrap();
                            work(i).await
                        }
                    }))
                    .await;
                }
            });
        })
    };
    let batch_ace = || {
        time(&|| {
            rt.block_on(async {
                for _ in 0..100 {
                    futures::future::join_all((0..TASKS).map(|i| timed50.submit(work(i)))).await;
                }
            });
        })
    };
    interleaved_ratio(
        "submit_1000_limit_50/manager_submit vs bare_tokio_semaphore",
        11,
        batch_bare,
        batch_ace,
    );
}

fn main() {
    benches();
    // Only under `cargo bench` (criterion passes --bench), not `cargo test --benches`.
    if std::env::args().any(|a| a == "--bench") && std::env::var_os("ACE_SKIP_RATIOS").is_none() {
        ratios();
    }
    Criterion::default().configure_from_args().final_summary();
}
