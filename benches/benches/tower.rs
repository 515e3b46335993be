//! Per-call overhead of `ace_std::tower::AdaptiveConcurrency` against tower's static
//! `ConcurrencyLimit`, on an in-memory service that answers at once.
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
use tower::Layer;

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
    targets = one_call
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
}

fn main() {
    benches();
    // Only under `cargo bench` (criterion passes --bench), not `cargo test --benches`.
    if std::env::args().any(|a| a == "--bench") && std::env::var_os("ACE_SKIP_RATIOS").is_none() {
        ratios();
    }
    Criterion::default().configure_from_args().final_summary();
}
