//! The lag probe reports a blocked executor, and stays near its floor when idle.
//!
//! These run on real time (the probe measures real scheduling), on single-threaded executors
//! so a blocking task really holds the probe up.

use std::sync::Arc;
use std::time::Duration;

use ace_core::{Runtime, SignalSource};
use ace_std::signals::LagProbe;

/// Idle lag must stay under this. The measured floor is tens of microseconds
/// (BENCHMARKS-std.md); the bound leaves room for a busy CI machine and is still far under
/// the 50 ms default threshold.
const IDLE_BOUND: Duration = Duration::from_millis(10);

fn block_executor_for(d: Duration) {
    std::thread::sleep(d);
}

async fn check<R: Runtime>(rt: R) {
    let mut probe = LagProbe::new(&rt);
    // Idle: a few cycles of 100 ms, each under the bound.
    for _ in 0..3 {
        rt.sleep(Duration::from_millis(100)).await;
        let lag = probe
            .collect()
            .await
            .unwrap()
            .event_loop_lag
            .expect("woken by now");
        assert!(lag < IDLE_BOUND, "idle lag {lag:?}");
    }
    // A task that blocks the executor for 200 ms shows as ≈ 200 ms of lag.
    rt.spawn(async { block_executor_for(Duration::from_millis(200)) });
    rt.sleep(Duration::from_millis(300)).await;
    let lag = probe.collect().await.unwrap().event_loop_lag.unwrap();
    assert!(lag >= Duration::from_millis(150), "blocked lag {lag:?}");
    assert!(lag < Duration::from_millis(400), "blocked lag {lag:?}");
    // And back to the floor.
    rt.sleep(Duration::from_millis(100)).await;
    let lag = probe.collect().await.unwrap().event_loop_lag.unwrap();
    assert!(lag < IDLE_BOUND, "idle lag after the block {lag:?}");
}

#[test]
fn on_tokio_current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check(ace_tokio::TokioRuntime::from_handle(
        rt.handle().clone(),
    )));
}

#[test]
fn on_a_smol_executor() {
    let ex = Arc::new(async_executor::Executor::new());
    let rt = ace_smol::SmolRuntime::with_executor(ex.clone());
    async_io::block_on(ex.run(check(rt)));
}

#[test]
fn a_stuck_executor_shows_before_it_recovers() {
    // The probe's wake is pending while the executor is stuck: collect reports its age.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = LagProbe::new(&ace_tokio::TokioRuntime::current());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = probe.take();
        block_executor_for(Duration::from_millis(120));
        // Read from inside the stuck stretch, before the probe task could run.
        let lag = probe.take().unwrap();
        assert!(lag >= Duration::from_millis(80), "{lag:?}");
    });
}
