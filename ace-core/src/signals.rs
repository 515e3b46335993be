//! [`Signals`], one snapshot of health, and [`Usage`], how much of the limit is used.

use alloc::format;
use alloc::string::String;
use core::fmt;
use core::time::Duration;

use crate::{LatencySummary, SignalError};

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
    ///
    /// A share of the whole, never a sum over cores: a process using 3 of 4 cores is at 75, not
    /// 300. A reading that is NaN, infinite, negative or above 100 is invalid and counts as
    /// absent (see [`sanitize`](Self::sanitize)).
    pub cpu_percent: Option<f64>,
    /// Memory use in percent (0–100) of what this process may use. Invalid readings (NaN,
    /// infinite, outside 0–100) count as absent, as for `cpu_percent`.
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

    /// Drops invalid readings: a `cpu_percent` or `memory_percent` that is NaN, infinite, or
    /// outside `0.0..=100.0` becomes `None` (absent, so never alarming and never healthy). Returns
    /// an error naming each field dropped and why, for the decision log; `None` if all were valid.
    ///
    /// The control loop calls this on every snapshot before deciding.
    ///
    /// ```
    /// use ace_core::Signals;
    ///
    /// let mut s = Signals { cpu_percent: Some(f64::NAN), memory_percent: Some(40.0), ..Signals::default() };
    /// let error = s.sanitize().unwrap();
    /// assert_eq!((s.cpu_percent, s.memory_percent), (None, Some(40.0)));
    /// assert_eq!(error.message(), "`cpu_percent` is NaN, not a percentage in 0..=100: counted absent");
    /// ```
    pub fn sanitize(&mut self) -> Option<SignalError> {
        let mut message = String::new();
        for (field, slot) in [
            ("cpu_percent", &mut self.cpu_percent),
            ("memory_percent", &mut self.memory_percent),
        ] {
            if let Some(v) = *slot {
                if !(0.0..=100.0).contains(&v) {
                    if !message.is_empty() {
                        message.push_str("; ");
                    }
                    message.push_str(&format!(
                        "`{field}` is {v}, not a percentage in 0..=100: counted absent"
                    ));
                    *slot = None;
                }
            }
        }
        (!message.is_empty()).then(|| SignalError::new("signals", message))
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

#[cfg(test)]
mod tests {
    use super::Signals;

    fn with(cpu: f64, memory: f64) -> Signals {
        Signals {
            cpu_percent: Some(cpu),
            memory_percent: Some(memory),
            ..Signals::default()
        }
    }

    #[test]
    fn keeps_valid_percentages_including_the_bounds() {
        for (cpu, memory) in [(0.0, 100.0), (100.0, 0.0), (55.5, 12.25)] {
            let mut s = with(cpu, memory);
            assert!(s.sanitize().is_none());
            assert_eq!(s, with(cpu, memory));
        }
    }

    #[test]
    fn drops_nan_infinite_negative_and_above_100_and_names_the_field() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.5,
            100.5,
            300.0,
        ] {
            let mut s = with(bad, 50.0);
            let e = s.sanitize().expect("an error");
            assert_eq!((s.cpu_percent, s.memory_percent), (None, Some(50.0)));
            assert!(e.message().starts_with("`cpu_percent` is "), "{e}");

            let mut s = with(50.0, bad);
            let e = s.sanitize().expect("an error");
            assert_eq!((s.cpu_percent, s.memory_percent), (Some(50.0), None));
            assert!(e.message().starts_with("`memory_percent` is "), "{e}");
        }
        let mut s = with(f64::NAN, -1.0);
        let e = s.sanitize().unwrap();
        assert!(!s.has_health());
        assert!(e.message().contains("`cpu_percent`") && e.message().contains("`memory_percent`"));
    }
}
