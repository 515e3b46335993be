//! Criterion benchmarks: see `benches/benches/*.rs` and BENCHMARKS.md. This library holds what
//! several of them share.

use std::time::Duration;

/// The managers' control loops run here, not on the runtime being measured: a pending timer on
/// a current-thread runtime makes every park read the clock, which would charge the loop's
/// existence to each task (perf showed `clock_gettime` from tokio's time driver).
pub fn control_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Median of `rounds` interleaved A/B timings: each round times the peer (`bare`), then ACE
/// (`ace`), on the same runtime, so a machine whose load drifts (2 shared cores) skews both
/// alike. Prints the median ratio `ace / bare` and its range.
pub fn interleaved_ratio(
    name: &str,
    rounds: usize,
    mut bare: impl FnMut() -> Duration,
    mut ace: impl FnMut() -> Duration,
) {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let b = bare();
            let a = ace();
            a.as_secs_f64() / b.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio {name}: median {:.3} (min {:.3}, max {:.3}, {rounds} interleaved rounds)",
        ratios[rounds / 2],
        ratios[0],
        ratios[rounds - 1]
    );
}
