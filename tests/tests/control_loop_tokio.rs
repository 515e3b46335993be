//! The core's control loop on tokio with a paused clock: the shim, the loop and shutdown together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{
    source_fn, Action, AimdConfig, ControlLoop, Controller, Decision, LimitTarget, Runtime,
    Shutdown, Signals, Usage,
};
use ace_tokio::TokioRuntime;

#[derive(Default)]
struct Saturated(AtomicUsize);

impl LimitTarget for Saturated {
    fn set_limit(&self, limit: usize) {
        self.0.store(limit, Ordering::SeqCst);
    }
    fn usage(&self) -> Usage {
        let limit = self.0.load(Ordering::SeqCst);
        Usage {
            limit,
            in_flight: limit,
            waiting: 3,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn loop_ticks_on_the_paused_clock_and_stops_promptly() {
    let config = AimdConfig {
        min_limit: 4,
        initial_limit: 10,
        max_limit: 40,
        cooldown: Duration::from_secs(5),
        adjustment_interval: Duration::from_secs(2),
        ..AimdConfig::default()
    };
    let cycle = Arc::new(AtomicUsize::new(0));
    let source = {
        let cycle = cycle.clone();
        source_fn(move || {
            let n = cycle.fetch_add(1, Ordering::SeqCst);
            // Cycles 0-3 hot, then calm with headroom.
            let cpu = if n < 4 { 97.0 } else { 10.0 };
            Ok(Signals {
                cpu_percent: Some(cpu),
                memory_percent: Some(20.0),
                ..Signals::default()
            })
        })
    };
    let target = Arc::new(Saturated::default());
    let log = Arc::new(Mutex::new(Vec::<Decision>::new()));
    let sink = {
        let log = log.clone();
        move |d: &Decision| log.lock().unwrap().push(d.clone())
    };
    let rt = TokioRuntime::current();
    let lp = ControlLoop::new(
        rt.clone(),
        Controller::new(config).unwrap(),
        source,
        target.clone(),
        sink,
    );
    let shutdown = Shutdown::new();
    let task = tokio::spawn(lp.run(shutdown.clone()));
    // 10 cycles of 2 s: paused time auto-advances while every task waits on a timer.
    tokio::time::sleep(Duration::from_secs(20) + Duration::from_millis(500)).await;
    let started = rt.now();
    shutdown.trigger();
    let lp = task.await.unwrap();
    assert_eq!(
        rt.now(),
        started,
        "shutdown must not wait for the next tick"
    );
    let d = log.lock().unwrap().clone();
    assert_eq!(d.len(), 10);
    let summary: Vec<_> = d
        .iter()
        .map(|d| (d.at.as_secs(), d.action, d.new_limit))
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, Action::Decrease, 5),
            (4, Action::Hold, 5), // cooldown
            (6, Action::Hold, 5), // cooldown
            (8, Action::Decrease, 4),
            (10, Action::Hold, 4), // calm now, but cooldown
            (12, Action::Hold, 4),
            // Slow start after a deep cut (10 -> 5 -> 4): doubling, capped at 0.85 × 10, where
            // the first cut struck (fast recovery) ...
            (14, Action::Increase, 8),
            (16, Action::Hold, 8),
            (18, Action::Hold, 8),
            (20, Action::Increase, 12), // ... then additive; headroom: twice the step
        ]
    );
    assert_eq!(lp.controller().limit(), 12);
    assert_eq!(target.0.load(Ordering::SeqCst), 12);
}
