//! The manager's control loop, deterministic: scripted signals, tokio's paused clock, and the
//! decisions read from a sink as they happen. No sleep is used to synchronise.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{
    source_fn, Action, Decision, DecisionSink, Reason, SignalError, SignalSource, Signals,
};
use ace_std::AimdConfig;
use tokio::sync::mpsc;

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a test channel; boxing would only add noise"
)]
enum Event {
    Decision(Decision),
    Error(SignalError),
}

struct Channel(mpsc::UnboundedSender<Event>);

impl DecisionSink for Channel {
    fn decision(&mut self, d: &Decision) {
        let _ = self.0.send(Event::Decision(d.clone()));
    }
    fn signal_error(&mut self, e: &SignalError) {
        let _ = self.0.send(Event::Error(e.clone()));
    }
}

struct Harness {
    manager: ace_std::tokio::Manager,
    script: Arc<Mutex<Signals>>,
    events: mpsc::UnboundedReceiver<Event>,
    hold: Arc<tokio::sync::Semaphore>,
}

fn config() -> AimdConfig {
    AimdConfig {
        min_limit: 5,
        max_limit: 50,
        initial_limit: 20,
        cooldown: Duration::ZERO,
        adjustment_interval: Duration::from_secs(2),
        ..AimdConfig::default()
    }
    // The seed's rules (additive growth, no latency signal): the steps this file checks.
    .seed_rules()
}

const HEALTHY: Signals = Signals {
    cpu_percent: Some(60.0),
    memory_percent: Some(60.0),
    queue_depth: None,
    event_loop_lag: None,
    kafka_lag: None,
    latency: None,
};

const HEADROOM: Signals = Signals {
    cpu_percent: Some(10.0),
    memory_percent: Some(20.0),
    ..HEALTHY
};

const HOT: Signals = Signals {
    cpu_percent: Some(95.0),
    ..HEALTHY
};

fn start_with(
    config: AimdConfig,
    extra: impl FnOnce(ace_std::tokio::Builder) -> ace_std::tokio::Builder,
) -> Harness {
    let script = Arc::new(Mutex::new(HEALTHY));
    let (tx, events) = mpsc::unbounded_channel();
    let read = script.clone();
    let builder = ace_std::tokio::Manager::builder(config)
        .default_signals(false)
        .source("script", source_fn(move || Ok(*read.lock().unwrap())))
        .sink(Channel(tx))
        .tracing(false)
        .metrics(false);
    Harness {
        manager: extra(builder).build().unwrap(),
        script,
        events,
        hold: Arc::new(tokio::sync::Semaphore::new(0)),
    }
}

fn start(config: AimdConfig) -> Harness {
    start_with(config, |b| b)
}

impl Harness {
    fn set(&self, s: Signals) {
        *self.script.lock().unwrap() = s;
    }

    async fn next(&mut self) -> Decision {
        loop {
            match self.events.recv().await.expect("the loop is running") {
                Event::Decision(d) => return d,
                Event::Error(_) => {}
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        self.events.recv().await.expect("the loop is running")
    }

    /// Starts `n` tasks that hold their slot until `release`; waits until the manager has them.
    async fn occupy(&self, n: usize) {
        let before = self.manager.stats().in_flight + self.manager.stats().waiting;
        for _ in 0..n {
            let hold = self.hold.clone();
            drop(self.manager.spawn(async move {
                let _ = hold.acquire().await;
            }));
        }
        while self.manager.stats().in_flight + self.manager.stats().waiting < before + n {
            tokio::task::yield_now().await;
        }
    }

    async fn finish(self) {
        self.hold.add_permits(10_000);
        self.manager.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn stress_decreases_at_the_next_cycle() {
    let mut h = start(config());
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Hold, 20));
    h.set(HOT);
    let d = h.next().await;
    assert_eq!(
        (d.action, d.previous_limit, d.new_limit),
        (Action::Decrease, 20, 10)
    );
    assert_eq!(d.at, Duration::from_secs(4));
    assert_eq!(h.manager.limit(), 10);
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Decrease, 5));
    // Bounds: at min_limit, stress holds.
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Hold, 5));
    assert!(matches!(d.reason, Reason::AtMinLimit(_)));
    assert_eq!(h.manager.stats().adjustments, 2);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn healthy_and_saturated_increases() {
    let mut h = start(config());
    h.occupy(20).await;
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
    assert!(matches!(
        d.reason,
        Reason::Busy {
            in_flight: 20,
            limit: 20
        }
    ));
    assert_eq!(h.manager.limit(), 22);
    // Plenty of headroom and tasks waiting: the aggressive step.
    h.occupy(5).await;
    assert_eq!(h.manager.stats().waiting, 3);
    h.set(HEADROOM);
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Increase, 26));
    assert!(matches!(d.reason, Reason::Headroom { .. }));
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn idle_never_creeps_up() {
    let mut h = start(config());
    h.set(HEADROOM);
    for _ in 0..20 {
        let d = h.next().await;
        assert_eq!((d.action, d.new_limit), (Action::Hold, 20));
        assert!(matches!(d.reason, Reason::Idle { .. }));
    }
    // A few tasks, well under 80 %: still no creep.
    h.occupy(3).await;
    for _ in 0..5 {
        assert_eq!(h.next().await.action, Action::Hold);
    }
    assert_eq!(h.manager.limit(), 20);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_holds_and_the_loop_goes_on() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let manager = ace_std::tokio::Manager::builder(config())
        .default_signals(false)
        .source(
            "broken",
            source_fn(|| Err(SignalError::new("broken", "cannot read"))),
        )
        .sink(Channel(tx))
        .tracing(false)
        .metrics(false)
        .build()
        .unwrap();
    for _ in 0..5 {
        match events.recv().await.unwrap() {
            Event::Error(e) => assert_eq!(e.source_name(), "broken"),
            Event::Decision(d) => panic!("the error comes first, got {d}"),
        }
        match events.recv().await.unwrap() {
            Event::Decision(d) => {
                assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
            }
            Event::Error(e) => panic!("one error per cycle, got {e}"),
        }
    }
    // Work is never stopped because monitoring failed.
    assert_eq!(manager.submit(async { 1 }).await, Ok(1));
    manager.shutdown().await;
}

struct Hang;

impl SignalSource for Hang {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_source_is_absent_that_cycle_and_the_others_count() {
    let mut h = start_with(config(), |b| b.source("hang", Hang));
    h.set(HOT);
    match h.next_event().await {
        Event::Error(e) => {
            assert_eq!(e.source_name(), "hang");
            assert!(e.message().contains("timed out"), "{e}");
        }
        Event::Decision(d) => panic!("expected the timeout first, got {d}"),
    }
    // The scripted source still counts: stress decreases.
    let d = h.next().await;
    assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
    // The cycle took the source timeout (half the interval), not the whole interval.
    assert_eq!(d.at, Duration::from_secs(3));
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn max_limit_and_cooldown_hold() {
    let mut h = start(AimdConfig {
        max_limit: 23,
        cooldown: Duration::from_secs(5),
        ..config()
    });
    h.occupy(30).await;
    let d = h.next().await;
    assert_eq!(
        (d.action, d.new_limit, d.at),
        (Action::Increase, 22, Duration::from_secs(2))
    );
    // 2 s and 4 s after: cooldown.
    for remaining in [3, 1] {
        let d = h.next().await;
        assert_eq!(d.action, Action::Hold);
        assert_eq!(
            d.reason,
            Reason::Cooldown {
                wanted: Action::Increase,
                remaining: Duration::from_secs(remaining)
            }
        );
    }
    let d = h.next().await;
    assert_eq!(
        (d.action, d.new_limit, d.at),
        (Action::Increase, 23, Duration::from_secs(8))
    );
    // Never past max_limit.
    for _ in 0..5 {
        let d = h.next().await;
        assert_eq!(d.new_limit, 23);
        assert_eq!(d.action, Action::Hold);
    }
    assert_eq!(h.next().await.reason, Reason::AtMaxLimit);
    assert_eq!(h.manager.limit(), 23);
    h.finish().await;
}
