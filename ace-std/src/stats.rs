//! [`Stats`]: the snapshot every manager reports (the pool's and the Kafka consumer's embed it as
//! `core`), and the counters its control loop keeps.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ace_core::{Action, Decision, LatencySummary, Priority, Usage};

use crate::util::lock;

/// A snapshot of a manager: the same fields for [`Manager`](crate::Manager),
/// [`ThreadPoolManager`](crate::threadpool::ThreadPoolManager) (as `PoolStats::core`) and the
/// Kafka consumer (as `KafkaStats::core`).
///
/// Each field is read on its own, so a snapshot taken while work runs may not add up exactly.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The limit in force.
    pub limit: usize,
    /// Tasks (jobs, handlers) holding a slot.
    pub in_flight: usize,
    /// Tasks accepted and waiting for a slot.
    pub waiting: usize,
    /// Admitted tasks that have ended, failed ones included.
    pub completed: u64,
    /// Of those, the tasks that failed: panicked, returned an error, or were dropped while
    /// running.
    pub failed: u64,
    /// Control-loop decisions so far (holds included).
    pub decisions: u64,
    /// Decisions that moved the limit.
    pub adjustments: u64,
    /// The last decision, if any.
    pub last_decision: Option<Decision>,
    /// Per [`Priority`], most important first: a [`Manager`](crate::Manager)'s admissions,
    /// refusals and waits by class (empty for the other managers).
    pub priorities: Vec<PriorityStats>,
}

/// One [`Priority`] class of a manager, since it started.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PriorityStats {
    /// The class.
    pub priority: Priority,
    /// Tasks of the class admitted (given a slot).
    pub admitted: u64,
    /// Tasks of the class refused: no slot free and no wait allowed (a `try_acquire`, a shed
    /// or a full queue), or pushed out of a queue by a more important class.
    pub refused: u64,
    /// Tasks of the class waiting for a slot now.
    pub waiting: usize,
    /// Of the admitted tasks, those that had to queue for their slot.
    pub queued: u64,
    /// The median wait of the tasks that queued (zero if none did).
    pub waited_p50: Duration,
    /// The 99th percentile wait of the tasks that queued (zero if none did).
    pub waited_p99: Duration,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit {}, {} in flight, {} waiting, {} completed ({} failed), {} decisions ({} adjustments)",
            self.limit,
            self.in_flight,
            self.waiting,
            self.completed,
            self.failed,
            self.decisions,
            self.adjustments
        )
    }
}

/// Where a decision log reads a manager's per-class figures ([`Stats::priorities`]): shared
/// before the manager exists (the loop is wired first), filled once it does.
#[derive(Clone, Default)]
pub(crate) struct ClassProbe(Arc<OnceLock<ClassReader>>);

type ClassReader = Box<dyn Fn() -> Vec<PriorityStats> + Send + Sync>;

impl ClassProbe {
    /// Reads the figures with `read` from now on.
    pub(crate) fn set(&self, read: impl Fn() -> Vec<PriorityStats> + Send + Sync + 'static) {
        // Set once, by the manager's `build`.
        let _ = self.0.set(Box::new(read));
    }

    /// The figures, once the manager exists.
    pub(crate) fn read(&self) -> Option<Vec<PriorityStats>> {
        self.0.get().map(|read| read())
    }
}

impl fmt::Debug for ClassProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassProbe")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

/// Tasks timed per cycle when busy: enough for a p90 within the recorder's bucket width.
// Above this many tasks per cycle a manager times one task in 2^k (by admission number, so
// successes and failures are sampled alike and the error rate stays unbiased): at 1M tasks/s
// the two clock reads are paid for one task in ~2,000.
pub(crate) const LATENCY_SAMPLES_PER_CYCLE: u64 = 1024;

/// The next cycle's sampling mask from this cycle's sampled count: time one task in `mask + 1`.
fn next_sample_mask(sampled: u64, mask: u64) -> u64 {
    let tasks = sampled.saturating_mul(mask + 1);
    if tasks <= LATENCY_SAMPLES_PER_CYCLE {
        0
    } else {
        (tasks
            .div_ceil(LATENCY_SAMPLES_PER_CYCLE)
            .next_power_of_two()
            - 1)
        .min((1 << 20) - 1)
    }
}

/// What the control loop's sink counts for `stats()`, and the latency sampling mask it sets.
#[derive(Debug, Default)]
pub(crate) struct DecisionCounters {
    /// Time the tasks whose admission number has none of these bits set.
    sample_mask: AtomicU64,
    /// Set once latency epochs are reported ([`epoch`](Self::epoch)): the loop then paces them
    /// apart from its cycles, whose decisions carry no latency summary of their own.
    paced: AtomicBool,
    /// Tasks timed in the epochs since the last cycle's decision.
    epoch_samples: AtomicU64,
    decisions: AtomicU64,
    adjustments: AtomicU64,
    last: Mutex<Option<Decision>>,
}

impl DecisionCounters {
    /// True if the task with admission number `seq` is to be timed.
    pub(crate) fn sampled(&self, seq: u64) -> bool {
        seq & self.sample_mask.load(Ordering::Relaxed) == 0
    }

    /// As [`sampled`](Self::sampled), timing fewer still: none whose number has a bit of
    /// `extra` set.
    #[cfg(feature = "kafka")]
    pub(crate) fn sampled_within(&self, seq: u64, extra: u64) -> bool {
        seq & (self.sample_mask.load(Ordering::Relaxed) | extra) == 0
    }

    /// Decisions so far: a new one starts a new sampling cycle.
    #[cfg(feature = "kafka")]
    pub(crate) fn cycle(&self) -> u64 {
        self.decisions.load(Ordering::Relaxed)
    }

    /// One latency epoch's summary (every epoch, holds included), when the loop paces them.
    pub(crate) fn epoch(&self, summary: &LatencySummary) {
        self.paced.store(true, Ordering::Relaxed);
        self.epoch_samples
            .fetch_add(summary.total(), Ordering::Relaxed);
    }

    pub(crate) fn record(&self, decision: &Decision) {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        // The tasks timed this cycle set the next cycle's mask. With paced epochs a cycle's
        // decision has no latency summary (the epochs took it), and only the epochs that move
        // the limit reach here: the count is the epochs' since the last cycle, counted by
        // `epoch`. Read from the decisions alone, a limit that never moved (one caller, far
        // below the limit) left the mask at 0 and every task timed, two clock reads each.
        let sampled = if self.paced.load(Ordering::Relaxed) {
            decision
                .signals
                .latency
                .is_none()
                .then(|| self.epoch_samples.swap(0, Ordering::Relaxed))
        } else {
            decision.signals.latency.map(|latency| latency.total())
        };
        if let Some(sampled) = sampled {
            let mask = self.sample_mask.load(Ordering::Relaxed);
            let next = next_sample_mask(sampled, mask);
            self.sample_mask.store(next, Ordering::Relaxed);
        }
        if decision.action != Action::Hold {
            self.adjustments.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.last) = Some(decision.clone());
    }

    /// The snapshot, from the enforcer's usage and the manager's own task counts.
    pub(crate) fn snapshot(&self, usage: Usage, completed: u64, failed: u64) -> Stats {
        Stats {
            limit: usage.limit,
            in_flight: usage.in_flight,
            waiting: usage.waiting,
            completed,
            failed,
            decisions: self.decisions.load(Ordering::Relaxed),
            adjustments: self.adjustments.load(Ordering::Relaxed),
            last_decision: lock(&self.last).clone(),
            priorities: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_sample_mask;

    #[test]
    fn times_every_task_until_busy_then_about_a_thousand_per_cycle() {
        assert_eq!(next_sample_mask(0, 0), 0);
        assert_eq!(next_sample_mask(1024, 0), 0);
        assert_eq!(next_sample_mask(1025, 0), 1);
        assert_eq!(next_sample_mask(100_000, 0), 127);
        // Sampled counts scale back up by the mask: 800 of 1 in 128 is 102,400 tasks.
        assert_eq!(next_sample_mask(800, 127), 127);
        // Quiet again: back to timing everything.
        assert_eq!(next_sample_mask(3, 127), 0);
        assert_eq!(next_sample_mask(u64::MAX, 1 << 30), (1 << 20) - 1);
    }
}
