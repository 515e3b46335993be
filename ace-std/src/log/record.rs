//! [`DecisionRecord`]: one line of the decision log, in the Python package's shape, and its
//! timestamp.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ace_core::{Action, Decision, SignalError};
use serde::{Deserialize, Serialize};

use crate::stats::PriorityStats;

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
    /// The human sentence: the [`Reason`](ace_core::Reason)'s, or the error's.
    pub reason: String,
    /// A stable machine-readable code for the reason (see [`Reason::code`](ace_core::Reason::code)), or `signal_error`.
    pub reason_code: String,
    /// For `signal_error`: the failing source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A [`Manager`](crate::Manager)'s figures per class, one field per
    /// [`Priority::as_str`](ace_core::Priority::as_str) (`critical`, `normal`, `sheddable`), since
    /// it started. Absent for the other managers and on `signal_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<BTreeMap<String, PriorityRecord>>,
}

/// One class in the `priorities` object of a [`DecisionRecord`]: its
/// [`PriorityStats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriorityRecord {
    /// Tasks of the class admitted.
    pub admitted: u64,
    /// Tasks of the class refused.
    pub refused: u64,
    /// Tasks of the class waiting now.
    pub waiting: usize,
    /// Of the admitted tasks, those that had to queue.
    pub queued: u64,
    /// The median wait of those, milliseconds.
    pub waited_p50_ms: f64,
    /// Their 99th percentile wait, milliseconds.
    pub waited_p99_ms: f64,
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
            reason_code: decision.reason.code().to_owned(),
            source: None,
            priorities: None,
        }
    }

    /// The record with a manager's per-class figures (as [`Stats::priorities`](crate::Stats::priorities) gives them).
    #[must_use]
    pub fn with_priorities(mut self, classes: &[PriorityStats]) -> Self {
        self.priorities = Some(
            classes
                .iter()
                .map(|c| {
                    let record = PriorityRecord {
                        admitted: c.admitted,
                        refused: c.refused,
                        waiting: c.waiting,
                        queued: c.queued,
                        waited_p50_ms: ms(c.waited_p50),
                        waited_p99_ms: ms(c.waited_p99),
                    };
                    (c.priority.as_str().to_owned(), record)
                })
                .collect(),
        );
        self
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
            priorities: None,
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

pub(super) fn rfc3339(at: SystemTime) -> String {
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
