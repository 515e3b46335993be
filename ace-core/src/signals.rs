//! [`Signals`], one snapshot of health, and [`Usage`], how much of the limit is used.

use core::fmt;
use core::time::Duration;

use crate::LatencySummary;

/// One snapshot of the health signals the controller reads.
///
/// Every field is an `Option`: `None` means "could not be read this cycle", and an absent signal is
/// never alarming (fail-open). Build one with struct update syntax:
///
/// ```
/// use ace_core::Signals;
///
/// let s = Signals { cpu_percent: Some(93.0), ..Signals::default() };
/// assert!(s.has_health());
/// assert!(!Signals::default().has_health());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// CPU use in percent (0–100) of what this process may use: the machine, or the cgroup's quota.
    pub cpu_percent: Option<f64>,
    /// Memory use in percent (0–100) of what this process may use.
    pub memory_percent: Option<f64>,
    /// Work waiting to be admitted, as fed by the user (a channel's length, say).
    pub queue_depth: Option<u64>,
    /// How late the executor runs a task that asked to run now.
    pub event_loop_lag: Option<Duration>,
    /// Kafka consumer lag in messages, summed over the assigned partitions. Demand, never stress.
    pub kafka_lag: Option<u64>,
    /// This cycle's task latencies and failures, from a [`LatencyRecorder`](crate::LatencyRecorder)
    /// (the control loop fills it when given one). The controller keeps the baseline it is
    /// compared with; a summary with fewer than `latency_min_samples` tasks counts as absent.
    pub latency: Option<LatencySummary>,
}

impl Signals {
    /// True if at least one health signal (CPU, memory, queue depth, executor lag, or a latency
    /// summary with at least one task) is present.
    ///
    /// Kafka lag is demand, not health: a snapshot holding only lag says nothing about stress. The
    /// controller is stricter about latency: it needs `latency_min_samples` tasks.
    pub fn has_health(&self) -> bool {
        self.has_machine_health() || self.latency.is_some_and(|l| l.total() > 0)
    }

    /// True if at least one machine signal (CPU, memory, queue depth, executor lag) is present.
    pub fn has_machine_health(&self) -> bool {
        self.cpu_percent.is_some()
            || self.memory_percent.is_some()
            || self.queue_depth.is_some()
            || self.event_loop_lag.is_some()
    }

    /// Fills every field that is `None` here from `other`.
    ///
    /// Used to combine several sources into one snapshot: the first source to read a signal wins.
    pub fn merge(&mut self, other: &Signals) {
        self.cpu_percent = self.cpu_percent.or(other.cpu_percent);
        self.memory_percent = self.memory_percent.or(other.memory_percent);
        self.queue_depth = self.queue_depth.or(other.queue_depth);
        self.event_loop_lag = self.event_loop_lag.or(other.event_loop_lag);
        self.kafka_lag = self.kafka_lag.or(other.kafka_lag);
        self.latency = self.latency.or(other.latency);
    }
}

/// How much of the limit is in use, as reported by whatever enforces it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The limit the enforcer applies now.
    pub limit: usize,
    /// Permits held (tasks running).
    pub in_flight: usize,
    /// Tasks waiting for a permit.
    pub waiting: usize,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} in flight, {} waiting",
            self.in_flight, self.limit, self.waiting
        )
    }
}
