//! The lag probe's idle floor on each runtime, next to the timer overshoot a sleep-based probe
//! would add. The figures in BENCHMARKS-std.md come from this.
//!
//! `cargo run --release -p ace-examples --example lag_floor`

use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_core::Runtime;
use ace_std::signals::LagProbe;

const CYCLES: usize = 10;
const CYCLE: Duration = Duration::from_secs(1);

/// Per-cycle lag readings of an idle probe: the largest wake-to-poll delay of each second.
async fn floor<R: Runtime>(rt: R) -> Vec<Duration> {
    let probe = LagProbe::new(&rt);
    rt.sleep(CYCLE).await;
    let _ = probe.take();
    let mut out = Vec::new();
    for _ in 0..CYCLES {
        rt.sleep(CYCLE).await;
        out.push(probe.take().unwrap_or_default());
    }
    out
}

/// How late a 10 ms sleep on this runtime's timer wakes, over 50 sleeps.
async fn overshoot<R: Runtime>(rt: R) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        rt.sleep(Duration::from_millis(10)).await;
        out.push(t.elapsed().saturating_sub(Duration::from_millis(10)));
    }
    out
}

fn report(name: &str, mut lag: Vec<Duration>, mut over: Vec<Duration>) {
    lag.sort();
    over.sort();
    println!(
        "{name:<26} probe per-{}s max: median {:>9.1?}, worst {:>9.1?} | 10 ms sleep overshoot: median {:>9.1?}",
        CYCLE.as_secs(),
        lag[lag.len() / 2],
        lag[lag.len() - 1],
        over[over.len() / 2],
    );
}

async fn both<R: Runtime>(rt: R) -> (Vec<Duration>, Vec<Duration>) {
    (floor(rt.clone()).await, overshoot(rt).await)
}

fn main() {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", load.trim());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (l, o) = rt.block_on(both(ace_tokio::TokioRuntime::from_handle(
        rt.handle().clone(),
    )));
    report("tokio current_thread", l, o);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (l, o) = rt.block_on(both(ace_tokio::TokioRuntime::from_handle(
        rt.handle().clone(),
    )));
    report("tokio multi_thread (2)", l, o);

    let ex = Arc::new(async_executor::Executor::new());
    let (l, o) = async_io::block_on(ex.run(both(ace_smol::SmolRuntime::with_executor(ex.clone()))));
    report("smol (async-executor)", l, o);

    let (l, o) = async_std::task::block_on(both(ace_async_std::AsyncStdRuntime::new()));
    report("async-std (legacy)", l, o);
}
