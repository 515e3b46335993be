//! The decision log's tests: its JSON shape, its hold and epoch pacing, tracing and metrics.
use super::record::rfc3339;
use super::*;
use ace_core::{Signals, Usage};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::UNIX_EPOCH;

/// A writer tests can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Shared {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_768_566_896_789)
}

fn decision(action: Action, reason: Reason) -> Decision {
    let (previous_limit, new_limit) = match action {
        Action::Increase => (10, 12),
        Action::Decrease => (10, 5),
        Action::Hold => (10, 10),
    };
    Decision {
        at: Duration::from_secs(4),
        action,
        previous_limit,
        new_limit,
        reason,
        signals: Signals {
            cpu_percent: Some(45.2),
            memory_percent: Some(62.123),
            event_loop_lag: Some(Duration::from_micros(80)),
            ..Signals::default()
        },
        usage: Usage {
            limit: 10,
            in_flight: 9,
            waiting: 4,
        },
    }
}

fn busy() -> Reason {
    Reason::Busy {
        in_flight: 9,
        limit: 10,
    }
}

fn idle() -> Reason {
    Reason::Idle {
        in_flight: 1,
        limit: 10,
    }
}

/// A latency epoch's slow-start doubling from `limit`, at `at_ms`.
fn epoch_doubling(limit: usize, at_ms: u64) -> Decision {
    Decision {
        at: Duration::from_millis(at_ms),
        action: Action::Increase,
        previous_limit: limit,
        new_limit: limit * 2,
        reason: Reason::SlowStart {
            in_flight: limit,
            limit,
            ceiling: 64,
        },
        signals: Signals {
            latency: Some(ace_core::LatencySummary::default()),
            ..Signals::default()
        },
        usage: Usage {
            limit,
            in_flight: limit,
            waiting: 10,
        },
    }
}

fn epoch_log(out: &Shared, epochs: EpochLogging) -> DecisionLog {
    DecisionLog::builder()
        .writer(out.clone())
        .epochs(epochs)
        .epoch_interval(Duration::from_secs(2))
        .tracing(false)
        .metrics(false)
        .clock(fixed_clock)
        .build()
}

#[test]
fn writes_one_epoch_line_per_interval_and_reason_by_default() {
    let out = Shared::default();
    let mut log = epoch_log(&out, EpochLogging::PerInterval);
    // Five doublings in half a second: one line.
    for (i, at) in [0, 100, 200, 300, 400].into_iter().enumerate() {
        log.decision(&epoch_doubling(1 << i, at));
    }
    // A cut: a new reason, a line of its own.
    let mut cut = epoch_doubling(32, 500);
    cut.action = Action::Decrease;
    cut.new_limit = 16;
    cut.reason = Reason::Stressed(ace_core::Stress::Errors {
        rate: 0.5,
        threshold: 0.1,
    });
    log.decision(&cut);
    // The next interval's first doubling: a line.
    log.decision(&epoch_doubling(16, 2_600));
    // A machine decision is always written.
    log.decision(&decision(Action::Increase, busy()));
    let codes: Vec<_> = out
        .lines()
        .iter()
        .map(|l| l["reason_code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        codes,
        ["slow_start", "stressed_errors", "slow_start", "busy"]
    );
}

#[test]
fn writes_every_epoch_line_when_asked() {
    let out = Shared::default();
    let mut log = epoch_log(&out, EpochLogging::All);
    for (i, at) in [0, 100, 200, 300, 400].into_iter().enumerate() {
        log.decision(&epoch_doubling(1 << i, at));
    }
    let limits: Vec<_> = out
        .lines()
        .iter()
        .map(|l| l["concurrency"]["new_limit"].as_u64().unwrap())
        .collect();
    assert_eq!(limits, [2, 4, 8, 16, 32]);
}

#[test]
fn formats_rfc3339_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(fixed_clock()), "2026-01-16T12:34:56.789Z");
    // A leap day and the end of a leap year.
    let t = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(t(951_782_400), "2000-02-29T00:00:00.000Z");
    assert_eq!(t(1_735_689_599), "2024-12-31T23:59:59.000Z");
    assert_eq!(t(4_107_542_400), "2100-03-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn writes_the_seed_shape_as_json_lines() {
    let out = Shared::default();
    let mut log = DecisionLog::builder()
        .writer(out.clone())
        .clock(fixed_clock)
        .tracing(false)
        .build();
    log.decision(&decision(Action::Increase, busy()));
    let lines = out.lines();
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(v["timestamp"], "2026-01-16T12:34:56.789Z");
    assert_eq!(v["event_type"], "limit_adjustment");
    assert_eq!(v["concurrency"]["current_limit"], 10);
    assert_eq!(v["concurrency"]["new_limit"], 12);
    assert_eq!(v["concurrency"]["active_tasks"], 9);
    assert_eq!(v["concurrency"]["waiting"], 4);
    assert_eq!(v["signals"]["cpu_percent"], 45.2);
    assert_eq!(v["signals"]["memory_percent"], 62.12);
    assert_eq!(v["signals"]["event_loop_lag_ms"], 0.08);
    assert!(
        v["signals"].get("queue_depth").is_none(),
        "absent signals are left out"
    );
    assert_eq!(v["decision"], "increase");
    assert_eq!(v["reason"], "healthy and busy: 9 of 10 in flight");
    assert_eq!(v["reason_code"], "busy");
    // And it reads back as a record.
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let r: DecisionRecord = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(r.decision.as_deref(), Some("increase"));
}

#[test]
fn logs_holds_only_when_their_reason_changes() {
    let out = Shared::default();
    let mut log = DecisionLog::builder()
        .writer(out.clone())
        .tracing(false)
        .build();
    for _ in 0..100 {
        log.decision(&decision(Action::Hold, idle()));
    }
    log.decision(&decision(Action::Increase, busy()));
    log.decision(&decision(
        Action::Hold,
        Reason::Cooldown {
            wanted: Action::Increase,
            remaining: Duration::from_secs(3),
        },
    ));
    log.decision(&decision(
        Action::Hold,
        Reason::Cooldown {
            wanted: Action::Increase,
            remaining: Duration::from_secs(1),
        },
    ));
    log.decision(&decision(Action::Hold, idle()));
    let codes: Vec<_> = out
        .lines()
        .iter()
        .map(|v| v["reason_code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["idle", "busy", "cooldown", "idle"]);
}

#[test]
fn logs_every_hold_or_none_when_asked() {
    for (holds, n) in [(HoldLogging::Always, 5), (HoldLogging::Never, 0)] {
        let out = Shared::default();
        let mut log = DecisionLog::builder()
            .writer(out.clone())
            .holds(holds)
            .tracing(false)
            .build();
        for _ in 0..5 {
            log.decision(&decision(Action::Hold, idle()));
        }
        assert_eq!(out.lines().len(), n);
    }
}

#[test]
fn logs_signal_errors() {
    let out = Shared::default();
    let mut log = DecisionLog::builder()
        .writer(out.clone())
        .tracing(false)
        .build();
    log.signal_error(&SignalError::new("system", "cannot read /proc/stat"));
    let v = &out.lines()[0];
    assert_eq!(v["event_type"], "signal_error");
    assert_eq!(v["source"], "system");
    assert_eq!(v["reason_code"], "signal_error");
    assert!(v["reason"].as_str().unwrap().contains("/proc/stat"));
    assert!(v.get("concurrency").is_none());
}

#[test]
fn a_failing_writer_never_stops_the_log() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut log = DecisionLog::builder().writer(Broken).build();
    log.decision(&decision(Action::Decrease, busy()));
    log.decision(&decision(Action::Increase, busy()));
}

/// Collects the fields of every event of target `ace::decision`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").replace('"', ""),
        );
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "ace::decision" {
            let mut map = BTreeMap::new();
            event.record(&mut Fields(&mut map));
            map.insert("level".into(), event.metadata().level().to_string());
            self.0.lock().unwrap().push(map);
        }
    }
}

#[test]
fn emits_a_tracing_event_with_the_same_fields() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        let mut log = DecisionLog::new();
        log.decision(&decision(Action::Decrease, busy()));
        log.signal_error(&SignalError::new("lag", "timed out"));
    });
    let events = capture.0.lock().unwrap();
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e["event_type"], "limit_adjustment");
    assert_eq!(e["decision"], "decrease");
    assert_eq!(e["current_limit"], "10");
    assert_eq!(e["new_limit"], "5");
    assert_eq!(e["active_tasks"], "9");
    assert_eq!(e["cpu_percent"], "45.2");
    assert_eq!(e["reason_code"], "busy");
    assert!(
        !e.contains_key("queue_depth"),
        "absent signals record nothing"
    );
    assert_eq!(events[1]["event_type"], "signal_error");
    assert_eq!(events[1]["source"], "lag");
    assert_eq!(events[1]["level"], "WARN");
}

#[test]
fn records_metrics_every_cycle() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut log = DecisionLog::builder().tracing(false).build();
        for _ in 0..3 {
            log.decision(&decision(Action::Hold, idle()));
        }
        log.decision(&decision(Action::Increase, busy()));
    });
    let snap: BTreeMap<String, (Vec<String>, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect::<Vec<_>>();
            (
                format!("{}{}", key.key().name(), labels.join(",")),
                (labels, value),
            )
        })
        .collect();
    assert_eq!(
        snap["ace_decisions_totaldecision=hold"].1,
        DebugValue::Counter(3)
    );
    assert_eq!(
        snap["ace_decisions_totaldecision=increase"].1,
        DebugValue::Counter(1)
    );
    assert_eq!(
        snap["ace_concurrency_limit"].1,
        DebugValue::Gauge(12.0.into())
    );
    assert_eq!(snap["ace_in_flight"].1, DebugValue::Gauge(9.0.into()));
    assert_eq!(snap["ace_waiting"].1, DebugValue::Gauge(4.0.into()));
}

#[test]
fn named_logs_keep_gauges_of_their_own() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut api = DecisionLog::builder().tracing(false).name("api").build();
        let mut batch = DecisionLog::builder().tracing(false).name("batch").build();
        api.decision(&decision(Action::Increase, busy()));
        batch.decision(&decision(Action::Hold, idle()));
        batch.signal_error(&SignalError::new("lag", "timed out"));
    });
    let snap: BTreeMap<String, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect::<Vec<_>>();
            labels.sort();
            (
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect();
    assert_eq!(
        snap["ace_concurrency_limit{name=api}"],
        DebugValue::Gauge(12.0.into())
    );
    assert!(
        snap.contains_key("ace_concurrency_limit{name=batch}"),
        "{:?}",
        snap.keys()
    );
    assert_eq!(
        snap["ace_decisions_total{decision=increase,name=api}"],
        DebugValue::Counter(1)
    );
    assert_eq!(
        snap["ace_signal_errors_total{name=batch,source=lag}"],
        DebugValue::Counter(1)
    );
}
