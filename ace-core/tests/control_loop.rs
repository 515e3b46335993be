//! The control loop on a fake runtime whose clock jumps forward whenever the loop sleeps:
//! deterministic, no real sleeps, no executor.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ace_core::{
    Action, AimdConfig, ControlLoop, Controller, Decision, DecisionSink, LimitTarget, Reason,
    Runtime, Shutdown, SignalError, SignalSource, Signals, Usage,
};

/// A clock that only moves when the loop sleeps: a sleep completes at once and advances it.
#[derive(Clone, Default)]
struct WarpRuntime {
    nanos: Arc<AtomicU64>,
}

struct WarpSleep {
    nanos: Arc<AtomicU64>,
    by: Duration,
}

impl Future for WarpSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.nanos
            .fetch_add(self.by.as_nanos() as u64, Ordering::SeqCst);
        Poll::Ready(())
    }
}

impl Runtime for WarpRuntime {
    type Sleep = WarpSleep;
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
    fn sleep(&self, by: Duration) -> WarpSleep {
        WarpSleep {
            nanos: self.nanos.clone(),
            by,
        }
    }
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        std::thread::spawn(move || futures_lite::future::block_on(f));
    }
}

/// A scripted source: one entry per cycle; `None` hangs forever, `Some(Err)` fails.
struct Script {
    steps: Vec<Option<Result<Signals, SignalError>>>,
    at: usize,
    shutdown: Shutdown,
}

impl SignalSource for Script {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        let step = self.steps.get(self.at).cloned();
        self.at += 1;
        if self.at >= self.steps.len() {
            self.shutdown.trigger();
        }
        async move {
            match step {
                Some(Some(r)) => r,
                Some(None) | None => core::future::pending().await,
            }
        }
    }
}

/// A target that is always saturated at its limit.
#[derive(Default)]
struct Target {
    limit: AtomicUsize,
    applied: Mutex<Vec<usize>>,
}

impl LimitTarget for Target {
    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
        self.applied.lock().unwrap().push(limit);
    }
    fn usage(&self) -> Usage {
        let limit = self.limit.load(Ordering::SeqCst);
        Usage {
            limit,
            in_flight: limit,
            waiting: 1,
        }
    }
}

#[derive(Default)]
struct Sink {
    decisions: Vec<Decision>,
    errors: Vec<SignalError>,
}

impl DecisionSink for Sink {
    fn decision(&mut self, d: &Decision) {
        self.decisions.push(d.clone());
    }
    fn signal_error(&mut self, e: &SignalError) {
        self.errors.push(e.clone());
    }
}

fn hot() -> Option<Result<Signals, SignalError>> {
    Some(Ok(Signals {
        cpu_percent: Some(95.0),
        memory_percent: Some(60.0),
        ..Signals::default()
    }))
}

fn healthy() -> Option<Result<Signals, SignalError>> {
    Some(Ok(Signals {
        cpu_percent: Some(50.0),
        memory_percent: Some(60.0),
        ..Signals::default()
    }))
}

#[test]
fn scripted_signals_drive_the_limit_down_up_and_through_a_failing_source() {
    let config = AimdConfig {
        min_limit: 2,
        initial_limit: 16,
        max_limit: 20,
        cooldown: Duration::ZERO,
        adjustment_interval: Duration::from_secs(2),
        ..AimdConfig::default()
    };
    let shutdown = Shutdown::new();
    let script = Script {
        steps: vec![
            hot(),
            hot(),
            Some(Err(SignalError::new("cpu", "permission denied"))),
            None, // hangs: times out after one interval
            healthy(),
            healthy(),
        ],
        at: 0,
        shutdown: shutdown.clone(),
    };
    let target = Arc::new(Target::default());
    let rt = WarpRuntime::default();
    let lp = ControlLoop::new(
        rt.clone(),
        Controller::new(config).unwrap(),
        script,
        target.clone(),
        Sink::default(),
    );
    let lp = futures_lite::future::block_on(lp.run(shutdown));
    let d = &lp.sink().decisions;
    let actions: Vec<_> = d.iter().map(|d| (d.action, d.new_limit)).collect();
    assert_eq!(
        actions,
        vec![
            (Action::Decrease, 8),
            (Action::Decrease, 4),
            (Action::Hold, 4), // failed source: absent, fail-open
            (Action::Hold, 4), // hung source: absent after one interval
            // Slow start after a deep cut: double back towards 0.85 × 16, where the stress
            // struck (13) ...
            (Action::Increase, 8),
            (Action::Increase, 13),
        ]
    );
    assert!(matches!(d[4].reason, Reason::SlowStart { ceiling: 13, .. }));
    assert_eq!(d[2].reason, Reason::NoSignals);
    assert_eq!(d[3].reason, Reason::NoSignals);
    // The initial limit is applied first, then each change, and nothing else.
    assert_eq!(*target.applied.lock().unwrap(), vec![16, 8, 4, 8, 13]);
    let errors: Vec<_> = lp.sink().errors.iter().map(|e| e.source_name()).collect();
    assert_eq!(errors, vec!["cpu", "collect"]);
    // Ticks land on the interval grid: 2, 4, 6, then the hung read costs one extra interval.
    let at: Vec<_> = d.iter().map(|d| d.at.as_secs()).collect();
    assert_eq!(at, vec![2, 4, 6, 10, 12, 14]);
}

#[test]
fn shutdown_before_start_returns_without_a_cycle() {
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let lp = ControlLoop::new(
        WarpRuntime::default(),
        Controller::new(AimdConfig::default()).unwrap(),
        ace_core::source_fn(|| Ok(Signals::default())),
        Arc::new(Target::default()),
        Sink::default(),
    );
    let lp = futures_lite::future::block_on(lp.run(shutdown));
    assert!(lp.sink().decisions.is_empty());
    assert_eq!(lp.controller().limit(), 20);
}

#[test]
fn a_latency_recorder_feeds_each_cycle_and_starts_the_next_empty() {
    let recorder = Arc::new(ace_core::LatencyRecorder::new());
    let mut lp = ControlLoop::new(
        WarpRuntime::default(),
        Controller::new(AimdConfig::default()).unwrap(),
        ace_core::source_fn(|| Err(SignalError::new("cpu", "unreadable"))),
        Arc::new(Target::default()),
        Sink::default(),
    )
    .with_latency(recorder.clone());
    for _ in 0..20 {
        recorder.record(Duration::from_millis(10));
    }
    let d = futures_lite::future::block_on(lp.step());
    // The machine source failed, yet the latency signal alone is health.
    assert_eq!(d.signals.latency.map(|l| l.samples), Some(20));
    assert_ne!(d.reason, Reason::NoSignals);
    assert!(lp.controller().latency_baseline().is_some());
    let d = futures_lite::future::block_on(lp.step());
    assert_eq!(d.signals.latency.map(|l| l.samples), Some(0));
    // An empty epoch is carried over, never "no signal" (which would hold for ever).
    assert!(
        matches!(d.reason, Reason::Gathering { tasks: 0, .. }),
        "{d}"
    );
}

/// A target whose tasks all take 50 ms and always fill the limit: each look at its usage records
/// one round trip's worth of tasks into the recorder.
struct Saturated {
    limit: AtomicUsize,
    recorder: Arc<ace_core::LatencyRecorder>,
}

impl LimitTarget for Saturated {
    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
    }
    fn usage(&self) -> Usage {
        let limit = self.limit.load(Ordering::SeqCst);
        // One round trip: `limit` tasks admitted (the last one filling the limit) and as many
        // completed.
        for k in 1..=limit {
            self.recorder.record_admission(k, limit);
            self.recorder.record(Duration::from_millis(50));
        }
        Usage {
            limit,
            in_flight: limit,
            waiting: 3,
        }
    }
}

#[test]
fn run_decides_latency_epochs_between_machine_ticks_and_logs_little() {
    let recorder = Arc::new(ace_core::LatencyRecorder::new());
    let shutdown = Shutdown::new();
    let script = Script {
        steps: vec![healthy(), healthy()],
        at: 0,
        shutdown: shutdown.clone(),
    };
    let target = Arc::new(Saturated {
        limit: AtomicUsize::new(0),
        recorder: recorder.clone(),
    });
    let lp = ControlLoop::new(
        WarpRuntime::default(),
        Controller::new(AimdConfig::default()).unwrap(),
        script,
        target.clone(),
        Sink::default(),
    )
    .with_latency(recorder);
    let lp = futures_lite::future::block_on(lp.run(shutdown));
    let d = &lp.sink().decisions;
    // Slow start by epochs, long before the first 2 s machine tick: 20 → … → 200.
    assert!(d[0].at < Duration::from_millis(200), "{:?}", d[0]);
    assert_eq!(d[0].action, Action::Increase);
    assert_eq!(target.limit.load(Ordering::SeqCst), 200);
    // The healthy machine cycles hold: the epochs set the limit.
    assert!(d.iter().any(|d| d.reason == Reason::Paced));
    // Dozens of epochs, a handful of lines.
    assert!(d.len() <= 8, "{} lines: {d:#?}", d.len());
}
