//! The AIMD [`Controller`] and the [`Decision`] it returns.

use core::fmt;
use core::time::Duration;

use crate::{AimdConfig, ConfigError, Signals, Usage};

/// The AIMD controller: pure decision logic, no clock, no I/O.
///
/// Each call to [`decide`](Self::decide) takes the time, one snapshot of signals and the usage of
/// the limit, and returns a [`Decision`]. The rules, in order:
///
/// 1. **Stress → decrease.** If any present health signal is over its threshold (`cpu_percent >
///    cpu_threshold`, `memory_percent > memory_threshold`, `queue_depth > queue_threshold`,
///    `event_loop_lag > event_loop_lag_threshold`), the limit becomes
///    `max(min_limit, floor(limit × decrease_factor))`.
/// 2. **No health signal → hold** (fail-open: monitoring that fails never stops or shrinks work).
/// 3. **Healthy but unused → hold.** The limit grows only when it is really used: at least 80 % of
///    it in flight, or tasks waiting, or (Kafka lag is demand) a positive `kafka_lag` with at least
///    50 % in flight. An idle program's limit never creeps up.
/// 4. **Healthy and used → increase** by `increase_step`; by **twice `increase_step`** when there
///    is plenty of headroom (both `cpu_percent < cpu_increase_threshold` and
///    `memory_percent < memory_increase_threshold` are present and true).
/// 5. **Bounds** always hold (`min_limit ≤ limit ≤ max_limit`), and two changes of the limit are
///    never closer than `cooldown`; a change wanted during the cooldown becomes a hold that says so.
///
/// ```
/// use ace_core::{Action, AimdConfig, Controller, Signals, Usage};
/// use core::time::Duration;
///
/// let mut c = Controller::new(AimdConfig::default())?;
/// let hot = Signals { cpu_percent: Some(95.0), ..Signals::default() };
/// let d = c.decide(Duration::ZERO, &hot, Usage { limit: 20, in_flight: 20, waiting: 3 });
/// assert_eq!(d.action, Action::Decrease);
/// assert_eq!((d.previous_limit, d.new_limit), (20, 10));
/// assert_eq!(d.reason.to_string(), "cpu 95.0% is over the 80.0% threshold");
/// # Ok::<(), ace_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Controller {
    config: AimdConfig,
    limit: usize,
    last_change: Option<Duration>,
}

impl Controller {
    /// A controller starting at `config.initial_limit`.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`] if the config breaks a rule.
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            limit: config.initial_limit,
            config,
            last_change: None,
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The config this controller was built with.
    pub fn config(&self) -> &AimdConfig {
        &self.config
    }

    /// The time of the last change of the limit, if there was one.
    pub fn last_change(&self) -> Option<Duration> {
        self.last_change
    }

    /// Decides the next limit from one snapshot; see the type's docs for the rules.
    ///
    /// `now` is any monotonic time (only differences matter). `usage.in_flight` and
    /// `usage.waiting` measure demand; `usage.limit` is recorded, but the controller's own limit
    /// is the one it moves.
    pub fn decide(&mut self, now: Duration, signals: &Signals, usage: Usage) -> Decision {
        let previous = self.limit;
        let (wanted, reason) = self.rule(signals, usage);
        let (action, new_limit, reason) = match wanted {
            None => (Action::Hold, previous, reason),
            Some((action, target)) => {
                let since = self.last_change.map(|t| now.saturating_sub(t));
                match since {
                    Some(since) if since < self.config.cooldown => (
                        Action::Hold,
                        previous,
                        Reason::Cooldown {
                            wanted: action,
                            remaining: self.config.cooldown - since,
                        },
                    ),
                    _ => (action, target, reason),
                }
            }
        };
        if new_limit != previous {
            self.limit = new_limit;
            self.last_change = Some(now);
        }
        Decision {
            at: now,
            action,
            previous_limit: previous,
            new_limit,
            reason,
            signals: *signals,
            usage,
        }
    }

    /// The rule that applies: the change it wants (if any) and why.
    fn rule(&self, s: &Signals, usage: Usage) -> (Option<(Action, usize)>, Reason) {
        let c = &self.config;
        let limit = self.limit;
        if let Some(stress) = self.stress(s) {
            // floor, not round: with factor 0.9, round(2 × 0.9) = 2 would never decrease.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "limit ≤ max_limit and factor in (0, 1): the product fits and is ≥ 0"
            )]
            let cut = ((limit as f64) * c.decrease_factor) as usize;
            let target = cut.max(c.min_limit).min(limit);
            return if target < limit {
                (Some((Action::Decrease, target)), Reason::Stressed(stress))
            } else {
                (None, Reason::AtMinLimit(stress))
            };
        }
        if !s.has_health() {
            return (None, Reason::NoSignals);
        }
        let in_flight = usage.in_flight;
        // Integer forms of "≥ 80 %" and "≥ 50 %": no float rounding at the edges.
        let busy = in_flight * 5 >= limit * 4 || usage.waiting > 0;
        let backlog = s.kafka_lag.filter(|&lag| lag > 0 && in_flight * 2 >= limit);
        if !busy && backlog.is_none() {
            return (None, Reason::Idle { in_flight, limit });
        }
        let headroom = match (s.cpu_percent, s.memory_percent) {
            (Some(cpu), Some(mem))
                if cpu < c.cpu_increase_threshold && mem < c.memory_increase_threshold =>
            {
                Some((cpu, mem))
            }
            _ => None,
        };
        let step = if headroom.is_some() {
            c.increase_step.saturating_mul(2)
        } else {
            c.increase_step
        };
        let target = limit.saturating_add(step).min(c.max_limit);
        if target <= limit {
            return (None, Reason::AtMaxLimit);
        }
        let reason = match (headroom, backlog) {
            (Some((cpu_percent, memory_percent)), _) => Reason::Headroom {
                in_flight,
                limit,
                cpu_percent,
                memory_percent,
            },
            (None, Some(kafka_lag)) if !busy => Reason::Backlog {
                kafka_lag,
                in_flight,
                limit,
            },
            _ => Reason::Busy { in_flight, limit },
        };
        (Some((Action::Increase, target)), reason)
    }

    /// The first present health signal over its threshold, in the order CPU, memory, queue, lag.
    fn stress(&self, s: &Signals) -> Option<Stress> {
        let c = &self.config;
        if let Some(percent) = s.cpu_percent.filter(|&v| v > c.cpu_threshold) {
            return Some(Stress::Cpu {
                percent,
                threshold: c.cpu_threshold,
            });
        }
        if let Some(percent) = s.memory_percent.filter(|&v| v > c.memory_threshold) {
            return Some(Stress::Memory {
                percent,
                threshold: c.memory_threshold,
            });
        }
        if let Some(depth) = s.queue_depth.filter(|&v| v > c.queue_threshold) {
            return Some(Stress::Queue {
                depth,
                threshold: c.queue_threshold,
            });
        }
        if let Some(lag) = s.event_loop_lag.filter(|&v| v > c.event_loop_lag_threshold) {
            return Some(Stress::EventLoopLag {
                lag,
                threshold: c.event_loop_lag_threshold,
            });
        }
        None
    }
}

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
}

impl Stress {
    /// The signal's name as in [`Signals`]: `"cpu_percent"`, `"memory_percent"`, ...
    pub const fn signal(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu_percent",
            Self::Memory { .. } => "memory_percent",
            Self::Queue { .. } => "queue_depth",
            Self::EventLoopLag { .. } => "event_loop_lag",
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
        }
    }
}

/// One decision of the [`Controller`]: every input and the output, so it can be logged and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The time passed to [`Controller::decide`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> AimdConfig {
        AimdConfig {
            min_limit: 5,
            max_limit: 50,
            initial_limit: 20,
            cooldown: Duration::ZERO,
            ..AimdConfig::default()
        }
    }

    fn ctl(config: AimdConfig) -> Controller {
        Controller::new(config).unwrap()
    }

    fn usage(in_flight: usize, limit: usize) -> Usage {
        Usage {
            limit,
            in_flight,
            waiting: 0,
        }
    }

    fn healthy() -> Signals {
        // Healthy, but not enough headroom for the aggressive step.
        Signals {
            cpu_percent: Some(60.0),
            memory_percent: Some(60.0),
            ..Signals::default()
        }
    }

    #[test]
    fn decreases_when_cpu_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(80.1),
            ..healthy()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!(d.action, Action::Decrease);
        assert_eq!(d.new_limit, 10);
        assert!(matches!(d.reason, Reason::Stressed(Stress::Cpu { .. })));
        assert_eq!(c.limit(), 10);
    }

    #[test]
    fn holds_when_cpu_exactly_at_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(80.0),
            ..healthy()
        };
        assert_eq!(c.decide(SEC, &s, usage(20, 20)).action, Action::Increase);
    }

    #[test]
    fn decreases_when_memory_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            memory_percent: Some(90.0),
            ..healthy()
        };
        let d = c.decide(SEC, &s, usage(0, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert!(matches!(d.reason, Reason::Stressed(Stress::Memory { .. })));
    }

    #[test]
    fn decreases_when_queue_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            queue_depth: Some(101),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert_eq!(
            d.reason.to_string(),
            "queue depth 101 is over the threshold of 100"
        );
    }

    #[test]
    fn decreases_when_event_loop_lag_over_threshold() {
        let mut c = ctl(config());
        let s = Signals {
            event_loop_lag: Some(Duration::from_millis(51)),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 10));
        assert!(matches!(
            d.reason,
            Reason::Stressed(Stress::EventLoopLag { .. })
        ));
    }

    #[test]
    fn decrease_rounds_down_and_stops_at_min_limit() {
        let mut c = ctl(AimdConfig {
            initial_limit: 7,
            decrease_factor: 0.9,
            ..config()
        });
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..Signals::default()
        };
        // floor(7 × 0.9) = 6
        assert_eq!(c.decide(SEC, &hot, usage(7, 7)).new_limit, 6);
        // floor(6 × 0.9) = 5 = min
        assert_eq!(c.decide(2 * SEC, &hot, usage(6, 6)).new_limit, 5);
        let d = c.decide(3 * SEC, &hot, usage(5, 5));
        assert_eq!((d.action, d.new_limit), (Action::Hold, 5));
        assert!(matches!(d.reason, Reason::AtMinLimit(_)));
    }

    #[test]
    fn increases_by_step_when_healthy_and_busy() {
        let mut c = ctl(config());
        // 16 of 20 is exactly 80 %.
        let d = c.decide(SEC, &healthy(), usage(16, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
        assert!(matches!(d.reason, Reason::Busy { .. }));
    }

    #[test]
    fn increases_when_tasks_wait_even_if_few_in_flight() {
        // After a shrink, in-flight can read low while work queues at the semaphore.
        let mut c = ctl(config());
        let u = Usage {
            limit: 20,
            in_flight: 2,
            waiting: 5,
        };
        assert_eq!(c.decide(SEC, &healthy(), u).action, Action::Increase);
    }

    #[test]
    fn increases_twice_the_step_with_headroom() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(10.0),
            memory_percent: Some(20.0),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 24));
        assert!(matches!(d.reason, Reason::Headroom { .. }));
    }

    #[test]
    fn headroom_needs_both_cpu_and_memory() {
        let mut c = ctl(config());
        let s = Signals {
            cpu_percent: Some(10.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(SEC, &s, usage(20, 20)).new_limit, 22);
    }

    #[test]
    fn holds_when_idle() {
        let mut c = ctl(config());
        let idle = Signals {
            cpu_percent: Some(1.0),
            memory_percent: Some(1.0),
            ..Signals::default()
        };
        for t in 1..100 {
            let d = c.decide(t * SEC, &idle, usage(15, 20));
            assert_eq!(d.action, Action::Hold);
            assert!(matches!(d.reason, Reason::Idle { .. }));
        }
        assert_eq!(c.limit(), 20);
    }

    #[test]
    fn holds_when_no_signal_can_be_read() {
        let mut c = ctl(config());
        let d = c.decide(SEC, &Signals::default(), usage(20, 20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
    }

    #[test]
    fn kafka_lag_alone_is_not_health() {
        let mut c = ctl(config());
        let s = Signals {
            kafka_lag: Some(1_000_000),
            ..Signals::default()
        };
        let d = c.decide(SEC, &s, usage(20, 20));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::NoSignals));
    }

    #[test]
    fn kafka_lag_is_demand_never_stress() {
        let mut c = ctl(config());
        let s = Signals {
            kafka_lag: Some(u64::MAX),
            ..healthy()
        };
        // Half used with a backlog: grow.
        let d = c.decide(SEC, &s, usage(10, 20));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 22));
        assert!(matches!(d.reason, Reason::Backlog { .. }));
        // Huge lag never shrinks the limit, whatever the usage.
        for t in 2..50 {
            assert_ne!(c.decide(t * SEC, &s, usage(0, 20)).action, Action::Decrease);
        }
    }

    #[test]
    fn never_exceeds_max_limit() {
        let mut c = ctl(AimdConfig {
            initial_limit: 49,
            ..config()
        });
        assert_eq!(c.decide(SEC, &healthy(), usage(49, 49)).new_limit, 50);
        let d = c.decide(2 * SEC, &healthy(), usage(50, 50));
        assert_eq!((d.action, d.reason), (Action::Hold, Reason::AtMaxLimit));
    }

    #[test]
    fn fixed_limit_always_holds() {
        let mut c = ctl(AimdConfig::fixed(8));
        let hot = Signals {
            cpu_percent: Some(100.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(SEC, &hot, usage(8, 8)).action, Action::Hold);
        assert_eq!(
            c.decide(SEC * 10, &healthy(), usage(8, 8)).action,
            Action::Hold
        );
    }

    #[test]
    fn cooldown_defers_a_change() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        assert_eq!(
            c.decide(SEC, &healthy(), usage(20, 20)).action,
            Action::Increase
        );
        let d = c.decide(3 * SEC, &healthy(), usage(22, 22));
        assert_eq!(d.action, Action::Hold);
        assert_eq!(
            d.reason,
            Reason::Cooldown {
                wanted: Action::Increase,
                remaining: 3 * SEC
            }
        );
        // Stress waits for the cooldown too: no two changes closer than `cooldown`.
        let hot = Signals {
            cpu_percent: Some(99.0),
            ..Signals::default()
        };
        assert_eq!(c.decide(5 * SEC, &hot, usage(22, 22)).action, Action::Hold);
        assert_eq!(
            c.decide(6 * SEC, &hot, usage(22, 22)).action,
            Action::Decrease
        );
    }

    #[test]
    fn a_hold_does_not_restart_the_cooldown() {
        let mut c = ctl(AimdConfig {
            cooldown: Duration::from_secs(5),
            ..config()
        });
        assert_eq!(c.decide(SEC, &healthy(), usage(0, 20)).action, Action::Hold);
        assert_eq!(
            c.decide(2 * SEC, &healthy(), usage(20, 20)).action,
            Action::Increase
        );
    }

    #[test]
    fn rejects_invalid_config() {
        let bad = AimdConfig {
            min_limit: 0,
            ..AimdConfig::default()
        };
        assert_eq!(Controller::new(bad).unwrap_err().field(), "min_limit");
    }
}
