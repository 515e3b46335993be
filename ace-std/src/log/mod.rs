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
//! `{"samples":..,"errors":..,"p50_ms":..,"p90_ms":..,"p99_ms":..}`. A [`Manager`](crate::Manager)'s
//! records also carry `priorities`, one field per class, each the class's
//! [`PriorityStats`] since the start:
//! `{"critical":{"admitted":..,"refused":..,"waiting":..,"queued":..,"waited_p50_ms":..,"waited_p99_ms":..},"normal":{..},"sheddable":{..}}`.
//!
//! The control loop sends every decision to every sink; the log decides what it writes: holds
//! as [`HoldLogging`] says (by default when their reason changes), and the latency epochs' changes
//! as [`EpochLogging`] says (by default a change of reason, and otherwise at most one line per
//! adjustment interval: a slow start doubles once a round trip).
//!
//! # Metrics
//!
//! Through the [`metrics`] facade, every cycle (whatever is logged): gauges
//! `ace_concurrency_limit`, `ace_in_flight`, `ace_waiting`, and one per present signal
//! (`ace_cpu_percent`, `ace_memory_percent`, `ace_queue_depth`, `ace_event_loop_lag_seconds`,
//! `ace_kafka_lag`, `ace_latency_p90_seconds`); counters `ace_decisions_total{decision}` and
//! `ace_signal_errors_total{source}`. A [`Manager`](crate::Manager)'s log adds, per class
//! (label `priority`: `critical`, `normal`, `sheddable`): counters `ace_admitted_total` and
//! `ace_refused_total`, gauges `ace_class_waiting`, `ace_wait_p50_seconds` and
//! `ace_wait_p99_seconds`. Every metric carries the manager's `name` label when it has one.
//! In-flight and waiting are sampled once per cycle, so the per-task path stays free of
//! metrics calls.

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime};

use ace_core::{Action, AimdConfig, Decision, DecisionSink, Reason, SignalError};

use crate::stats::{ClassProbe, PriorityStats};

mod record;

pub use record::{ConcurrencyRecord, DecisionRecord, LatencyRecord, PriorityRecord, SignalsRecord};

/// When a hold is written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HoldLogging {
    /// When its reason differs from the previous decision's (by [`Reason::code`]): an idle
    /// program logs one line, not one per cycle. The default.
    #[default]
    OnChange,
    /// Every hold, every cycle.
    Always,
    /// Never: adjustments and errors only.
    Never,
}

/// Which latency-epoch changes are written to the log. Sinks (and `stats()`) see every one
/// either way; an epoch that holds the limit reaches no sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EpochLogging {
    /// A change whose reason differs from the last epoch line's, and otherwise at most one
    /// line per [`epoch_interval`](DecisionLogBuilder::epoch_interval): epochs come about once a
    /// round trip, and a slow start's doublings would fill the log. The default.
    #[default]
    PerInterval,
    /// Every epoch's change.
    All,
}

/// The stable, machine-readable code of a reason: [`Reason::code`], where it now lives.
#[deprecated(since = "0.2.0", note = "use `Reason::code()`")]
pub fn reason_code(reason: &Reason) -> &'static str {
    reason.code()
}

/// True for a latency epoch's decision: it read a latency summary and no machine signal.
fn is_epoch(decision: &Decision) -> bool {
    let s = &decision.signals;
    s.latency.is_some()
        && s.cpu_percent.is_none()
        && s.memory_percent.is_none()
        && s.queue_depth.is_none()
        && s.event_loop_lag.is_none()
        && s.kafka_lag.is_none()
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
    epochs: EpochLogging,
    epoch_interval: Duration,
    tracing: bool,
    metrics: bool,
    // `name="…"` on every metric, when the manager is named.
    labels: Vec<metrics::Label>,
    // A manager's per-class figures: a `priorities` object in each record, and metrics with a
    // `priority` label.
    classes: Option<ClassProbe>,
    clock: fn() -> SystemTime,
    last_code: Option<&'static str>,
    /// The code and time of the last epoch line written.
    last_epoch_line: Option<(&'static str, Duration)>,
    write_failed: bool,
    buf: Vec<u8>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("writer", &self.writer.is_some())
            .field("holds", &self.holds)
            .field("epochs", &self.epochs)
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
                epochs: EpochLogging::PerInterval,
                epoch_interval: AimdConfig::default_adjustment_interval(),
                tracing: true,
                metrics: true,
                labels: Vec::new(),
                classes: None,
                clock: SystemTime::now,
                last_code: None,
                last_epoch_line: None,
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

    /// Whether an epoch's change with `code` at `at` is written: a new reason, or an interval
    /// since the last epoch line.
    fn epoch_line_due(&mut self, code: &'static str, at: Duration) -> bool {
        let due = match self.last_epoch_line {
            None => true,
            Some((last, when)) => last != code || at.saturating_sub(when) >= self.epoch_interval,
        };
        if due {
            self.last_epoch_line = Some((code, at));
        }
        due
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
    fn record_metrics(&self, decision: &Decision) {
        let labels = || self.labels.clone();
        metrics::gauge!("ace_concurrency_limit", labels()).set(decision.new_limit as f64);
        metrics::gauge!("ace_in_flight", labels()).set(decision.usage.in_flight as f64);
        metrics::gauge!("ace_waiting", labels()).set(decision.usage.waiting as f64);
        let mut by_decision = labels();
        by_decision.push(metrics::Label::new("decision", decision.action.as_str()));
        metrics::counter!("ace_decisions_total", by_decision).increment(1);
        let s = &decision.signals;
        if let Some(v) = s.cpu_percent {
            metrics::gauge!("ace_cpu_percent", labels()).set(v);
        }
        if let Some(v) = s.memory_percent {
            metrics::gauge!("ace_memory_percent", labels()).set(v);
        }
        if let Some(v) = s.queue_depth {
            metrics::gauge!("ace_queue_depth", labels()).set(v as f64);
        }
        if let Some(v) = s.event_loop_lag {
            metrics::gauge!("ace_event_loop_lag_seconds", labels()).set(v.as_secs_f64());
        }
        if let Some(v) = s.kafka_lag {
            metrics::gauge!("ace_kafka_lag", labels()).set(v as f64);
        }
        if let Some(l) = s.latency.filter(|l| l.samples > 0) {
            metrics::gauge!("ace_latency_p90_seconds", labels()).set(l.p90.as_secs_f64());
        }
    }

    /// Per class, labelled `priority` beside the manager's `name`: admissions and refusals
    /// since the start (counters), the tasks waiting now, and the wait of those that queued.
    #[allow(
        clippy::cast_precision_loss,
        reason = "gauges are f64; counts are far below 2^52"
    )]
    fn record_class_metrics(&self, classes: &[PriorityStats]) {
        for c in classes {
            let mut labels = self.labels.clone();
            labels.push(metrics::Label::new("priority", c.priority.as_str()));
            metrics::counter!("ace_admitted_total", labels.clone()).absolute(c.admitted);
            metrics::counter!("ace_refused_total", labels.clone()).absolute(c.refused);
            metrics::gauge!("ace_class_waiting", labels.clone()).set(c.waiting as f64);
            metrics::gauge!("ace_wait_p50_seconds", labels.clone()).set(c.waited_p50.as_secs_f64());
            metrics::gauge!("ace_wait_p99_seconds", labels).set(c.waited_p99.as_secs_f64());
        }
    }
}

impl DecisionSink for DecisionLog {
    fn decision(&mut self, decision: &Decision) {
        let classes = self.classes.as_ref().and_then(ClassProbe::read);
        if self.metrics {
            self.record_metrics(decision);
            if let Some(classes) = &classes {
                self.record_class_metrics(classes);
            }
        }
        let code = decision.reason.code();
        let changed = self.last_code != Some(code);
        self.last_code = Some(code);
        let keep = match (decision.action, self.holds) {
            (Action::Hold, HoldLogging::Always) => true,
            (Action::Hold, HoldLogging::OnChange) => changed,
            (Action::Hold, _) => false,
            _ if self.epochs == EpochLogging::All || !is_epoch(decision) => true,
            _ => self.epoch_line_due(code, decision.at),
        };
        if !keep || (self.writer.is_none() && !self.tracing) {
            return;
        }
        let mut record = DecisionRecord::from_decision(decision, (self.clock)());
        if let Some(classes) = &classes {
            record = record.with_priorities(classes);
        }
        self.write(&record);
        if self.tracing {
            Self::trace_decision(&record);
        }
    }

    fn signal_error(&mut self, error: &SignalError) {
        if self.metrics {
            let mut labels = self.labels.clone();
            labels.push(metrics::Label::new("source", error.source_name()));
            metrics::counter!("ace_signal_errors_total", labels).increment(1);
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

    /// Which latency-epoch changes are written. Default [`EpochLogging::PerInterval`].
    #[must_use]
    pub fn epochs(mut self, epochs: EpochLogging) -> Self {
        self.log.epochs = epochs;
        self
    }

    /// The interval of [`EpochLogging::PerInterval`]. Default the default
    /// `adjustment_interval` (2 s); a manager sets its config's.
    #[must_use]
    pub fn epoch_interval(mut self, interval: Duration) -> Self {
        self.log.epoch_interval = interval;
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

    /// Labels every metric with `name="…"`, so two managers in one process keep gauges of
    /// their own. Default: no label.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.log.labels = vec![metrics::Label::new("name", name.into())];
        self
    }

    /// Adds a manager's per-class figures to each record and to the metrics.
    #[must_use]
    pub(crate) fn classes(mut self, probe: ClassProbe) -> Self {
        self.log.classes = Some(probe);
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
mod tests;
