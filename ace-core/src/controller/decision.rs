//! What the controller decides: [`Decision`], its [`Action`] and its typed [`Reason`], with the
//! sentences their `Display` gives.

use core::fmt;
use core::time::Duration;

use crate::{Signals, Usage};

#[cfg(doc)]
use crate::Controller;

/// What a [`Decision`] does to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The limit grows.
    Increase,
    /// The limit shrinks.
    Decrease,
    /// The limit stays.
    Hold,
}

impl Action {
    /// The lowercase name used in logs: `"increase"`, `"decrease"` or `"hold"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Increase => "increase",
            Self::Decrease => "decrease",
            Self::Hold => "hold",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health signal over its decrease threshold: which one, its value, and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Stress {
    /// CPU use over `cpu_threshold`.
    Cpu {
        /// The reading, in percent.
        percent: f64,
        /// The threshold, in percent.
        threshold: f64,
    },
    /// Memory use over `memory_threshold`.
    Memory {
        /// The reading, in percent.
        percent: f64,
        /// The threshold, in percent.
        threshold: f64,
    },
    /// Queue depth over `queue_threshold`.
    Queue {
        /// The reading.
        depth: u64,
        /// The threshold.
        threshold: u64,
    },
    /// Executor lag over `event_loop_lag_threshold`.
    EventLoopLag {
        /// The reading.
        lag: Duration,
        /// The threshold.
        threshold: Duration,
    },
    /// The cycle's p90 task latency over `tolerance` × the baseline.
    Latency {
        /// The cycle's p90.
        latency: Duration,
        /// The baseline: the lowest cycle p90 in the baseline window.
        baseline: Duration,
        /// `latency_tolerance`.
        tolerance: f64,
    },
    /// A latency epoch's mean latency jumped: at least its threshold, the average of past epochs
    /// (an EWMA) plus 2.5 standard deviations.
    Rising {
        /// The epoch's mean latency.
        latency: Duration,
        /// The average of past epochs.
        average: Duration,
        /// The threshold it reached.
        threshold: Duration,
    },
    /// A latency epoch's mean is over the floor (the lowest epoch mean of the baseline window)
    /// by more than 10 % plus the epoch's noise: a queue is forming (a knee).
    Queued {
        /// The epoch's mean latency.
        latency: Duration,
        /// The floor.
        floor: Duration,
        /// The threshold it passed.
        threshold: Duration,
    },
    /// Tasks are taking longer than the ones that completed show: by Little's law (tasks in
    /// flight at the epoch's start × its length ÷ the tasks that ended in it) they take over
    /// twice the average latency. A queue is building, or requests hang until a timeout.
    Queueing {
        /// The latency Little's law implies.
        implied: Duration,
        /// The average of past epochs.
        average: Duration,
    },
    /// Tasks still running past a multiple of the reference latency, before they complete: a
    /// retry loop inside the task, or requests that hang until a timeout.
    Overdue {
        /// Tasks in flight for longer than `age` (a lower bound).
        tasks: usize,
        /// How long counts as too long: 4 × the reference latency.
        age: Duration,
    },
    /// The share of the cycle's tasks that failed or timed out over `latency_max_error_rate`.
    Errors {
        /// The share of failures, in [0, 1].
        rate: f64,
        /// The threshold.
        threshold: f64,
    },
}

impl Stress {
    /// A stable machine-readable code, `stressed_` and the rule: `"stressed_cpu"`,
    /// `"stressed_memory"`, `"stressed_queue"`, `"stressed_event_loop_lag"`, `"stressed_latency"`,
    /// `"stressed_rising"`, `"stressed_queued"`, `"stressed_queueing"`, `"stressed_overdue"`,
    /// `"stressed_errors"`.
    ///
    /// ```
    /// use ace_core::Stress;
    ///
    /// let s = Stress::Cpu { percent: 95.0, threshold: 80.0 };
    /// assert_eq!(s.code(), "stressed_cpu");
    /// ```
    pub const fn code(&self) -> &'static str {
        // Exhaustive on purpose: a new stress without a code does not compile.
        match self {
            Self::Cpu { .. } => "stressed_cpu",
            Self::Memory { .. } => "stressed_memory",
            Self::Queue { .. } => "stressed_queue",
            Self::EventLoopLag { .. } => "stressed_event_loop_lag",
            Self::Latency { .. } => "stressed_latency",
            Self::Rising { .. } => "stressed_rising",
            Self::Queued { .. } => "stressed_queued",
            Self::Queueing { .. } => "stressed_queueing",
            Self::Overdue { .. } => "stressed_overdue",
            Self::Errors { .. } => "stressed_errors",
        }
    }

    /// The signal's name as in [`Signals`]: `"cpu_percent"`, `"memory_percent"`, ...
    pub const fn signal(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu_percent",
            Self::Memory { .. } => "memory_percent",
            Self::Queue { .. } => "queue_depth",
            Self::EventLoopLag { .. } => "event_loop_lag",
            Self::Latency { .. }
            | Self::Rising { .. }
            | Self::Queued { .. }
            | Self::Queueing { .. }
            | Self::Overdue { .. }
            | Self::Errors { .. } => "latency",
        }
    }
}

impl fmt::Display for Stress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu { percent, threshold } => {
                write!(f, "cpu {percent:.1}% is over the {threshold:.1}% threshold")
            }
            Self::Memory { percent, threshold } => {
                write!(
                    f,
                    "memory {percent:.1}% is over the {threshold:.1}% threshold"
                )
            }
            Self::Queue { depth, threshold } => {
                write!(
                    f,
                    "queue depth {depth} is over the threshold of {threshold}"
                )
            }
            Self::EventLoopLag { lag, threshold } => {
                write!(
                    f,
                    "executor lag {lag:?} is over the {threshold:?} threshold"
                )
            }
            Self::Latency {
                latency,
                baseline,
                tolerance,
            } => write!(
                f,
                "p90 latency {latency:.1?} is over {tolerance} × the {baseline:.1?} baseline"
            ),
            Self::Rising {
                latency,
                average,
                threshold,
            } => write!(
                f,
                "mean latency {latency:.1?} is over the {threshold:.1?} threshold (average \
                 {average:.1?} + 2.5 σ)"
            ),
            Self::Queued {
                latency,
                floor,
                threshold,
            } => write!(
                f,
                "mean latency {latency:.1?} is over the {threshold:.1?} threshold (floor \
                 {floor:.1?} + 10 % + noise)"
            ),
            Self::Queueing { implied, average } => write!(
                f,
                "tasks in flight imply {implied:.1?} per task, over 2 × the {average:.1?} average: \
                 a queue is building"
            ),
            Self::Overdue { tasks, age } => write!(
                f,
                "{tasks} tasks in flight for over {age:.1?} (4 × the reference latency): requests \
                 hang or retry"
            ),
            Self::Errors { rate, threshold } => write!(
                f,
                "{:.1}% of tasks failed, over the {:.1}% threshold",
                rate * 100.0,
                threshold * 100.0
            ),
        }
    }
}

/// Why a [`Decision`] was taken. [`Display`](fmt::Display) gives the human sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// A health signal is over its threshold: decrease.
    Stressed(Stress),
    /// Stressed, but the limit is already `min_limit`: hold.
    AtMinLimit(Stress),
    /// Healthy and the limit is used: increase by `increase_step`.
    Busy {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
    },
    /// Healthy, used, and CPU and memory are under their increase thresholds: increase by twice
    /// `increase_step`.
    Headroom {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
        /// The CPU reading, under `cpu_increase_threshold`.
        cpu_percent: f64,
        /// The memory reading, under `memory_increase_threshold`.
        memory_percent: f64,
    },
    /// Healthy, half used, and Kafka lag says there is more work: increase by `increase_step`.
    Backlog {
        /// The Kafka lag.
        kafka_lag: u64,
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
    },
    /// Healthy, used, and below the slow-start ceiling: double the limit (capped by the ceiling).
    SlowStart {
        /// Permits held.
        in_flight: usize,
        /// The limit before the decision.
        limit: usize,
        /// The ceiling slow start stops at.
        ceiling: usize,
    },
    /// A scheduled baseline probe (`latency_probe_interval`): drop to `min_limit` to measure the
    /// unloaded latency.
    Probe {
        /// The limit before the probe, restored after it.
        limit: usize,
    },
    /// A baseline probe is measuring at `min_limit`: hold.
    Probing {
        /// The limit the probe will restore.
        restore: usize,
    },
    /// A baseline probe is done: restore the limit from before it.
    ProbeDone {
        /// The limit restored.
        restored: usize,
        /// The new baseline, or `None` if the probe saw too few tasks to measure one.
        baseline: Option<Duration>,
    },
    /// Healthy but the limit is not used enough to need more: hold.
    Idle {
        /// Permits held.
        in_flight: usize,
        /// The limit.
        limit: usize,
    },
    /// Healthy and used, but the limit is already `max_limit`: hold.
    AtMaxLimit,
    /// A change was wanted, but the last one was less than `cooldown` ago: hold.
    Cooldown {
        /// The change the rules wanted.
        wanted: Action,
        /// How long until a change is allowed.
        remaining: Duration,
    },
    /// No health signal could be read: hold (fail-open).
    NoSignals,
    /// The rules wanted more than a ceiling set from outside allows (a fleet grant): the limit
    /// is held at, or cut to, the ceiling.
    FleetCap {
        /// The grant: this instance's share of the fleet's budget.
        grant: usize,
        /// How many instances share the budget.
        members: usize,
    },
    /// A latency epoch's mean is above the average of past epochs: latency is climbing, so the
    /// limit holds (and slow start ends).
    Climbing {
        /// The epoch's mean latency.
        latency: Duration,
        /// The average of past epochs.
        average: Duration,
    },
    /// Machine signals healthy, and the latency epochs are setting the limit: hold on the
    /// machine cycle.
    Paced,
    /// A latency epoch saw too few tasks to judge; it is carried over into the next.
    Gathering {
        /// Tasks (successes and failures) seen so far.
        tasks: u64,
        /// Tasks needed.
        needed: u64,
    },
    /// Healthy, but the tasks in flight imply more latency per task than the average (Little's
    /// law): the last change has not shown its effect yet, so the limit holds.
    Lagging {
        /// The latency per task the tasks in flight imply.
        implied: Duration,
        /// The average of past epochs.
        average: Duration,
    },
    /// The limit was set by hand ([`Controller::override_limit`]), clamped to
    /// `[min_limit, max_limit]`.
    Manual {
        /// The limit asked for, before clamping.
        requested: usize,
    },
}

impl Reason {
    /// A stable machine-readable code for the reason, as the decision log's `reason_code`.
    ///
    /// [`Reason::Stressed`] gives its [`Stress::code`] (`"stressed_cpu"`, `"stressed_latency"`,
    /// ...); the others: `"at_min_limit"`, `"busy"`, `"headroom"`, `"backlog"`, `"slow_start"`,
    /// `"probe"`, `"probing"`, `"probe_done"`, `"idle"`, `"at_max_limit"`, `"cooldown"`,
    /// `"no_signals"`, `"fleet_cap"`, `"climbing"`, `"paced"`, `"gathering"`, `"lagging"`,
    /// `"manual"`.
    ///
    /// ```
    /// use ace_core::{Reason, Stress};
    ///
    /// assert_eq!(Reason::Busy { in_flight: 9, limit: 10 }.code(), "busy");
    /// assert_eq!(Reason::AtMaxLimit.code(), "at_max_limit");
    /// let hot = Stress::Memory { percent: 91.0, threshold: 85.0 };
    /// assert_eq!(Reason::Stressed(hot).code(), "stressed_memory");
    /// assert_eq!(Reason::AtMinLimit(hot).code(), "at_min_limit");
    /// assert_eq!(Reason::Manual { requested: 7 }.code(), "manual");
    /// ```
    pub const fn code(&self) -> &'static str {
        // Exhaustive on purpose (no wildcard): a new reason without a code does not compile.
        match self {
            Self::Stressed(s) => s.code(),
            Self::AtMinLimit(_) => "at_min_limit",
            Self::Busy { .. } => "busy",
            Self::Headroom { .. } => "headroom",
            Self::Backlog { .. } => "backlog",
            Self::SlowStart { .. } => "slow_start",
            Self::Probe { .. } => "probe",
            Self::Probing { .. } => "probing",
            Self::ProbeDone { .. } => "probe_done",
            Self::Idle { .. } => "idle",
            Self::AtMaxLimit => "at_max_limit",
            Self::Cooldown { .. } => "cooldown",
            Self::NoSignals => "no_signals",
            Self::FleetCap { .. } => "fleet_cap",
            Self::Climbing { .. } => "climbing",
            Self::Paced => "paced",
            Self::Gathering { .. } => "gathering",
            Self::Lagging { .. } => "lagging",
            Self::Manual { .. } => "manual",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stressed(s) => write!(f, "{s}"),
            Self::AtMinLimit(s) => write!(f, "{s}, but the limit is already at min_limit"),
            Self::Busy { in_flight, limit } => {
                write!(f, "healthy and busy: {in_flight} of {limit} in flight")
            }
            Self::Headroom {
                in_flight,
                limit,
                cpu_percent,
                memory_percent,
            } => write!(
                f,
                "healthy, busy ({in_flight} of {limit} in flight) and plenty of headroom \
                 (cpu {cpu_percent:.1}%, memory {memory_percent:.1}%)"
            ),
            Self::Backlog {
                kafka_lag,
                in_flight,
                limit,
            } => write!(
                f,
                "healthy with a backlog: kafka lag {kafka_lag}, {in_flight} of {limit} in flight"
            ),
            Self::SlowStart {
                in_flight,
                limit,
                ceiling,
            } => write!(
                f,
                "slow start: healthy and busy ({in_flight} of {limit} in flight), doubling up to \
                 {ceiling}"
            ),
            Self::Probe { limit } => write!(
                f,
                "latency probe: dropping to min_limit to re-measure the baseline (limit {limit} \
                 restored after)"
            ),
            Self::Probing { restore } => {
                write!(
                    f,
                    "latency probe: measuring at min_limit, then back to {restore}"
                )
            }
            Self::ProbeDone {
                restored,
                baseline: Some(b),
            } => write!(
                f,
                "latency probe done: baseline {b:?}, limit back to {restored}"
            ),
            Self::ProbeDone {
                restored,
                baseline: None,
            } => write!(
                f,
                "latency probe done without enough tasks to measure; limit back to {restored}"
            ),
            Self::Idle { in_flight, limit } => {
                write!(f, "healthy but not busy: {in_flight} of {limit} in flight")
            }
            Self::AtMaxLimit => {
                f.write_str("healthy and busy, but the limit is already at max_limit")
            }
            Self::Cooldown { wanted, remaining } => {
                write!(f, "cooldown: {wanted} deferred for {remaining:?}")
            }
            Self::NoSignals => f.write_str("no health signal could be read; holding (fail-open)"),
            Self::FleetCap { grant, members } => write!(
                f,
                "fleet cap: this instance's grant is {grant} of a budget shared by {members}"
            ),
            Self::Climbing { latency, average } => write!(
                f,
                "mean latency {latency:.1?} is above its {average:.1?} average: holding"
            ),
            Self::Paced => f.write_str("machine signals healthy; latency epochs set the limit"),
            Self::Gathering { tasks, needed } => write!(
                f,
                "latency epoch carried over: {tasks} of {needed} tasks seen"
            ),
            Self::Lagging { implied, average } => write!(
                f,
                "tasks in flight imply {implied:.1?} per task against the {average:.1?} average: \
                 waiting for the last change to show"
            ),
            Self::Manual { requested } => write!(f, "limit set by hand (asked for {requested})"),
        }
    }
}

/// One decision of the [`Controller`]: every input and the output, so it can be logged and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The time passed to [`Controller::decide`] or [`Controller::epoch`].
    pub at: Duration,
    /// What happened to the limit.
    pub action: Action,
    /// The limit before.
    pub previous_limit: usize,
    /// The limit after (equal to `previous_limit` on a hold).
    pub new_limit: usize,
    /// Why.
    pub reason: Reason,
    /// The signals the decision read.
    pub signals: Signals,
    /// The usage the decision read.
    pub usage: Usage,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}: {}",
            self.action, self.previous_limit, self.new_limit, self.reason
        )
    }
}
