//! The decision log: one JSON record per decision, a `tracing` event with the same fields, and
//! `metrics` gauges and counters.
//!
//! A record has the shape of the Python package ace-concurrency's, plus `waiting`, `reason_code` and, for errors, `source`:
//!
//! ```json
//! {"timestamp":"2026-01-16T12:34:56.789Z","event_type":"limit_adjustment",
//!  "concurrency":{"current_limit":10,"new_limit":12,"active_tasks":9,"waiting":4},
//!  "signals":{"cpu_percent":45.2,"memory_percent":62.1,"event_loop_lag_ms":0.08},
//!  "decision":"increase","reason":"healthy and busy: 9 of 10 in flight","reason_code":"busy"}
//! ```
//!
//! `event_type` is `limit_adjustment` (the limit moved), `limit_hold` (it stayed) or
//! `signal_error` (a source failed or hung; its signals were absent that cycle). Only present
//! signals appear under `signals`; executor lag is in milliseconds, as a float; `latency` (the
//! cycle's task latencies, when the manager times its tasks) is
//! `{"samples":..,"errors":..,"p50_ms":..,"p90_ms":..,"p99_ms":..}`.
//!
//! # Metrics
//!
//! Through the [`metrics`] facade, every cycle (whatever is logged): gauges
//! `ace_concurrency_limit`, `ace_in_flight`, `ace_waiting`, and one per present signal
//! (`ace_cpu_percent`, `ace_memory_percent`, `ace_queue_depth`, `ace_event_loop_lag_seconds`,
//! `ace_kafka_lag`, `ace_latency_p90_seconds`); counters `ace_decisions_total{decision}` and
//! `ace_signal_errors_total{source}`. In-flight and waiting are sampled once per cycle, so the
//! per-task path stays free of metrics calls.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use ace_core::{Action, Decision, DecisionSink, Reason, SignalError, Stress};
use serde::{Deserialize, Serialize};

/// When a hold is written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HoldLogging {
    /// When its reason differs from the previous decision's (by [`reason_code`]): an idle
    /// program logs one line, not one per cycle. The default.
    #[default]
    OnChange,
    /// Every hold, every cycle.
    Always,
    /// Never: adjustments and errors only.
    Never,
}

/// One line of the decision log. Deserialize it to read a log back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// RFC 3339, UTC, milliseconds: `2026-01-16T12:34:56.789Z`.
    pub timestamp: String,
    /// `limit_adjustment`, `limit_hold` or `signal_error`.
    pub event_type: String,
    /// The limit before and after, and its use. Absent on `signal_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyRecord>,
    /// The signals the decision read; only present ones. Absent on `signal_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<SignalsRecord>,
    /// `increase`, `decrease` or `hold`. Absent on `signal_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The human sentence: the [`Reason`]'s, or the error's.
    pub reason: String,
    /// A stable machine-readable code for the reason (see [`reason_code`]), or `signal_error`.
    pub reason_code: String,
    /// For `signal_error`: the failing source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The `concurrency` object of a [`DecisionRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConcurrencyRecord {
    /// The limit before the decision.
    pub current_limit: usize,
    /// The limit after it.
    pub new_limit: usize,
    /// Tasks holding a slot.
    pub active_tasks: usize,
    /// Tasks waiting for a slot.
    pub waiting: usize,
}

/// The `signals` object of a [`DecisionRecord`]: only the signals that were read.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignalsRecord {
    /// CPU use, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory use, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// Queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Executor lag, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_loop_lag_ms: Option<f64>,
    /// Kafka lag, messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_lag: Option<u64>,
    /// The cycle's task latencies, from the manager's recorder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyRecord>,
}

/// The `signals.latency` object of a [`DecisionRecord`]: the cycle's task latencies.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatencyRecord {
    /// Tasks that succeeded this cycle.
    pub samples: u32,
    /// Tasks that failed this cycle.
    pub errors: u32,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile latency (the controller's figure), milliseconds.
    pub p90_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl DecisionRecord {
    /// The record of `decision`, stamped `at`.
    pub fn from_decision(decision: &Decision, at: SystemTime) -> Self {
        let s = &decision.signals;
        Self {
            timestamp: rfc3339(at),
            event_type: event_type(decision.action).to_owned(),
            concurrency: Some(ConcurrencyRecord {
                current_limit: decision.previous_limit,
                new_limit: decision.new_limit,
                active_tasks: decision.usage.in_flight,
                waiting: decision.usage.waiting,
            }),
            signals: Some(SignalsRecord {
                cpu_percent: s.cpu_percent.map(round2),
                memory_percent: s.memory_percent.map(round2),
                queue_depth: s.queue_depth,
                event_loop_lag_ms: s.event_loop_lag.map(ms),
                kafka_lag: s.kafka_lag,
                latency: s.latency.map(|l| LatencyRecord {
                    samples: l.samples,
                    errors: l.errors,
                    p50_ms: ms(l.p50),
                    p90_ms: ms(l.p90),
                    p99_ms: ms(l.p99),
                }),
            }),
            decision: Some(decision.action.as_str().to_owned()),
            reason: decision.reason.to_string(),
            reason_code: reason_code(&decision.reason).to_owned(),
            source: None,
        }
    }

    /// The record of a failed or hung source, stamped `at`.
    pub fn from_signal_error(error: &SignalError, at: SystemTime) -> Self {
        Self {
            timestamp: rfc3339(at),
            event_type: "signal_error".to_owned(),
            concurrency: None,
            signals: None,
            decision: None,
            reason: error.to_string(),
            reason_code: "signal_error".to_owned(),
            source: Some(error.source_name().to_owned()),
        }
    }
}

// Two decimals for percentages and three for milliseconds (microseconds): enough to replay a
// decision, short enough to read.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(d: std::time::Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

fn event_type(action: Action) -> &'static str {
    match action {
        Action::Increase | Action::Decrease => "limit_adjustment",
        Action::Hold => "limit_hold",
    }
}

/// A stable, machine-readable code for a [`Reason`]: `stressed_cpu`, `stressed_memory`,
/// `stressed_queue`, `stressed_event_loop_lag`, `stressed_latency`, `stressed_errors`,
/// `at_min_limit`, `busy`, `headroom`, `backlog`, `slow_start`, `probe`, `probing`,
/// `probe_done`, `idle`, `at_max_limit`, `cooldown`, `no_signals` (and `unknown` for a reason
/// added to `ace-core` after this crate).
pub fn reason_code(reason: &Reason) -> &'static str {
    match reason {
        Reason::Stressed(s) => match s {
            Stress::Cpu { .. } => "stressed_cpu",
            Stress::Memory { .. } => "stressed_memory",
            Stress::Queue { .. } => "stressed_queue",
            Stress::EventLoopLag { .. } => "stressed_event_loop_lag",
            Stress::Latency { .. } => "stressed_latency",
            Stress::Errors { .. } => "stressed_errors",
            _ => "stressed",
        },
        Reason::AtMinLimit(_) => "at_min_limit",
        Reason::Busy { .. } => "busy",
        Reason::Headroom { .. } => "headroom",
        Reason::Backlog { .. } => "backlog",
        Reason::SlowStart { .. } => "slow_start",
        Reason::Probe { .. } => "probe",
        Reason::Probing { .. } => "probing",
        Reason::ProbeDone { .. } => "probe_done",
        Reason::Idle { .. } => "idle",
        Reason::AtMaxLimit => "at_max_limit",
        Reason::Cooldown { .. } => "cooldown",
        Reason::NoSignals => "no_signals",
        _ => "unknown",
    }
}

/// RFC 3339 in UTC with milliseconds, `2026-01-16T12:34:56.789Z`. Times before 1970 print as
/// the epoch.
fn rfc3339(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The decision log, as an [`ace_core::DecisionSink`]: JSON lines to a writer, `tracing`
/// events, and `metrics`.
///
/// ```
/// use ace_std::log::{DecisionLog, HoldLogging};
///
/// let log = DecisionLog::builder()
///     .writer(std::io::stderr())
///     .holds(HoldLogging::Always)
///     .build();
/// # let _ = log;
/// ```
pub struct DecisionLog {
    writer: Option<Box<dyn Write + Send>>,
    holds: HoldLogging,
    tracing: bool,
    metrics: bool,
    clock: fn() -> SystemTime,
    last_code: Option<&'static str>,
    write_failed: bool,
    buf: Vec<u8>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("writer", &self.writer.is_some())
            .field("holds", &self.holds)
            .field("tracing", &self.tracing)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Default for DecisionLog {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl DecisionLog {
    /// `tracing` events and metrics, no JSON writer, holds on change.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder; see [`DecisionLogBuilder`].
    pub fn builder() -> DecisionLogBuilder {
        DecisionLogBuilder {
            log: Self {
                writer: None,
                holds: HoldLogging::OnChange,
                tracing: true,
                metrics: true,
                clock: SystemTime::now,
                last_code: None,
                write_failed: false,
                buf: Vec::with_capacity(512),
            },
        }
    }

    fn write(&mut self, record: &DecisionRecord) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        self.buf.clear();
        if serde_json::to_writer(&mut self.buf, record).is_err() {
            return;
        }
        self.buf.push(b'\n');
        let result = w.write_all(&self.buf).and_then(|()| w.flush());
        match result {
            Ok(()) => self.write_failed = false,
            // Warn once per run of failures: logging that fails never stops the loop.
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                tracing::warn!(target: "ace", error = %e, "cannot write the decision log");
            }
            Err(_) => {}
        }
    }

    fn trace_decision(record: &DecisionRecord) {
        let c = record.concurrency.unwrap_or(ConcurrencyRecord {
            current_limit: 0,
            new_limit: 0,
            active_tasks: 0,
            waiting: 0,
        });
        let s = record.signals.unwrap_or_default();
        tracing::info!(
            target: "ace::decision",
            event_type = record.event_type.as_str(),
            decision = record.decision.as_deref(),
            current_limit = c.current_limit,
            new_limit = c.new_limit,
            active_tasks = c.active_tasks,
            waiting = c.waiting,
            cpu_percent = s.cpu_percent,
            memory_percent = s.memory_percent,
            queue_depth = s.queue_depth,
            event_loop_lag_ms = s.event_loop_lag_ms,
            kafka_lag = s.kafka_lag,
            latency_p90_ms = s.latency.map(|l| l.p90_ms),
            latency_samples = s.latency.map(|l| l.samples),
            latency_errors = s.latency.map(|l| l.errors),
            reason_code = record.reason_code.as_str(),
            reason = record.reason.as_str(),
            "{}",
            record.reason
        );
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "gauges are f64; limits and counts are far below 2^52"
    )]
    fn record_metrics(decision: &Decision) {
        metrics::gauge!("ace_concurrency_limit").set(decision.new_limit as f64);
        metrics::gauge!("ace_in_flight").set(decision.usage.in_flight as f64);
        metrics::gauge!("ace_waiting").set(decision.usage.waiting as f64);
        metrics::counter!("ace_decisions_total", "decision" => decision.action.as_str())
            .increment(1);
        let s = &decision.signals;
        if let Some(v) = s.cpu_percent {
            metrics::gauge!("ace_cpu_percent").set(v);
        }
        if let Some(v) = s.memory_percent {
            metrics::gauge!("ace_memory_percent").set(v);
        }
        if let Some(v) = s.queue_depth {
            metrics::gauge!("ace_queue_depth").set(v as f64);
        }
        if let Some(v) = s.event_loop_lag {
            metrics::gauge!("ace_event_loop_lag_seconds").set(v.as_secs_f64());
        }
        if let Some(v) = s.kafka_lag {
            metrics::gauge!("ace_kafka_lag").set(v as f64);
        }
        if let Some(l) = s.latency.filter(|l| l.samples > 0) {
            metrics::gauge!("ace_latency_p90_seconds").set(l.p90.as_secs_f64());
        }
    }
}

impl DecisionSink for DecisionLog {
    fn decision(&mut self, decision: &Decision) {
        if self.metrics {
            Self::record_metrics(decision);
        }
        let code = reason_code(&decision.reason);
        let changed = self.last_code != Some(code);
        self.last_code = Some(code);
        let keep = match (decision.action, self.holds) {
            (Action::Hold, HoldLogging::Always) => true,
            (Action::Hold, HoldLogging::OnChange) => changed,
            (Action::Hold, _) => false,
            _ => true,
        };
        if !keep || (self.writer.is_none() && !self.tracing) {
            return;
        }
        let record = DecisionRecord::from_decision(decision, (self.clock)());
        self.write(&record);
        if self.tracing {
            Self::trace_decision(&record);
        }
    }

    fn signal_error(&mut self, error: &SignalError) {
        if self.metrics {
            metrics::counter!("ace_signal_errors_total", "source" => error.source_name())
                .increment(1);
        }
        let record = DecisionRecord::from_signal_error(error, (self.clock)());
        self.write(&record);
        if self.tracing {
            tracing::warn!(
                target: "ace::decision",
                event_type = "signal_error",
                source = error.source_name(),
                reason_code = "signal_error",
                reason = record.reason.as_str(),
                "{}",
                record.reason
            );
        }
    }
}

/// Builds a [`DecisionLog`].
#[derive(Debug)]
pub struct DecisionLogBuilder {
    log: DecisionLog,
}

impl DecisionLogBuilder {
    /// Writes JSON lines to `writer` (flushed after each line). Default: none.
    #[must_use]
    pub fn writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.log.writer = Some(Box::new(writer));
        self
    }

    /// When holds are logged. Default [`HoldLogging::OnChange`].
    #[must_use]
    pub fn holds(mut self, holds: HoldLogging) -> Self {
        self.log.holds = holds;
        self
    }

    /// Emits a `tracing` event (target `ace::decision`) per logged record. Default on.
    #[must_use]
    pub fn tracing(mut self, on: bool) -> Self {
        self.log.tracing = on;
        self
    }

    /// Records `metrics` every cycle. Default on.
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.log.metrics = on;
        self
    }

    /// The wall clock for timestamps. Default [`SystemTime::now`]; tests pin it.
    #[must_use]
    pub fn clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.log.clock = clock;
        self
    }

    /// The log.
    pub fn build(self) -> DecisionLog {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ace_core::{Signals, Usage};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

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
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
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
}
