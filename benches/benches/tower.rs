//! Per-call overhead of `ace_std::tower::AdaptiveConcurrency` against tower's static
//! `ConcurrencyLimit`, on an in-memory service that answers at once: one caller on a
//! current-thread runtime (`tower_call`), and 64 concurrent callers, each with its own clone of
//! the service, on a 2-worker multi-thread runtime (`tower_64_callers`, the time per call).
//!
//! `cargo bench -p ace-benches --bench tower` (criterion groups, then interleaved A/B ratios;
//! `ACE_SKIP_RATIOS=1` skips the ratios).
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented functions"
)]

use std::time::{Duration, Instant};

use ace_benches::{calls, interleaved_ratio, manager, runtime, Echo};
use ace_std::tower::AdaptiveConcurrencyLayer;
use criterion::{criterion_group, Criterion};
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service};

/// The concurrent callers of `tower_64_callers`.
const CALLERS: u64 = 64;

fn one_call(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tower_call");
    let mut bare = Echo;
    g.bench_function("no_limit", |b| {
        b.iter_custom(|n| rt.block_on(timed(calls(&mut bare, n))));
    });
    let mut limit = ConcurrencyLimitLayer::new(64).layer(Echo);
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|n| rt.block_on(timed(calls(&mut limit, n))));
    });
    let mut ace = AdaptiveConcurrencyLayer::new(manager(64, true)).layer(Echo);
    g.bench_function("ace_layer", |b| {
        b.iter_custom(|n| rt.block_on(timed(calls(&mut ace, n))));
    });
    let mut untimed = AdaptiveConcurrencyLayer::new(manager(64, false)).layer(Echo);
    g.bench_function("ace_layer_untimed", |b| {
        b.iter_custom(|n| rt.block_on(timed(calls(&mut untimed, n))));
    });
    g.finish();
}

fn many_callers(c: &mut Criterion) {
    let rt = multi_thread();
    let mut g = c.benchmark_group("tower_64_callers");
    let limit = ConcurrencyLimitLayer::new(64).layer(Echo);
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|n| rt.block_on(timed(callers(&limit, n))));
    });
    let ace = AdaptiveConcurrencyLayer::new(manager(64, true)).layer(Echo);
    g.bench_function("ace_layer", |b| {
        b.iter_custom(|n| rt.block_on(timed(callers(&ace, n))));
    });
    let untimed = AdaptiveConcurrencyLayer::new(manager(64, false)).layer(Echo);
    g.bench_function("ace_layer_untimed", |b| {
        b.iter_custom(|n| rt.block_on(timed(callers(&untimed, n))));
    });
    g.finish();
}

/// The runtime of `tower_64_callers`: two workers, as many as the machine the figures were
/// first taken on has cores.
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` calls (rounded up to a multiple of [`CALLERS`]) spread over [`CALLERS`] tasks, each with
/// its own clone of `svc` (as each connection of a server has).
async fn callers<S>(svc: &S, n: u64)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let per = n.div_ceil(CALLERS);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { calls(&mut svc, per).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn timed(f: impl std::future::Future<Output = ()>) -> Duration {
    let t = Instant::now();
    f.await;
    t.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = one_call, many_callers
}

fn ratios() {
    const N: u64 = 200_000;
    let rt = runtime();
    let mut limit = ConcurrencyLimitLayer::new(64).layer(Echo);
    let mut ace = AdaptiveConcurrencyLayer::new(manager(64, true)).layer(Echo);
    // Let the latency sampling settle (one control cycle with traffic).
    rt.block_on(calls(&mut ace, N));
    std::thread::sleep(Duration::from_millis(500));
    let mut limit_run = || rt.block_on(timed(calls(&mut limit, N)));
    let rt2 = runtime();
    let mut ace_run = || rt2.block_on(timed(calls(&mut ace, N)));
    interleaved_ratio(
        "tower_call/ace_layer vs tower_concurrency_limit",
        21,
        &mut limit_run,
        &mut ace_run,
    );
    let multi = multi_thread();
    let limit = ConcurrencyLimitLayer::new(64).layer(Echo);
    let mut limit_run = || multi.block_on(timed(callers(&limit, N)));
    let mut ace_run = || multi.block_on(timed(callers(&ace, N)));
    interleaved_ratio(
        "tower_64_callers/ace_layer vs tower_concurrency_limit",
        21,
        &mut limit_run,
        &mut ace_run,
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
