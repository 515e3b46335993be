//! Per-[`Priority`] counters of one manager: admissions, refusals, and how long the admissions
//! that had to queue waited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ace_core::{LatencyRecorder, Priority};

use crate::stats::PriorityStats;

/// The counters of one class.
#[derive(Debug, Default)]
struct Class {
    // Not counted for `Normal` on the plain path: its admissions are the total less the others',
    // so a plain `submit` pays for no extra counter.
    admitted: AtomicU64,
    refused: AtomicU64,
    waited: LatencyRecorder,
}

/// Per-class counters, indexed by [`Priority::rank`].
#[derive(Debug, Default)]
pub(crate) struct Classes {
    classes: [Class; Priority::ALL.len()],
}

impl Classes {
    /// One admission of `priority`, after queueing for `waited` if it had to.
    #[inline]
    pub(crate) fn admitted(&self, priority: Priority, waited: Option<Duration>) {
        let class = &self.classes[priority.rank()];
        if priority != Priority::Normal {
            class.admitted.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(waited) = waited {
            class.waited.record(waited);
        }
    }

    /// One refusal of `priority`: no slot, and no wait allowed.
    pub(crate) fn refused(&self, priority: Priority) {
        self.classes[priority.rank()]
            .refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The per-class part of a snapshot; `admitted` is the manager's total, `waiting` per class
    /// comes from the semaphore.
    pub(crate) fn snapshot(
        &self,
        admitted: u64,
        waiting: impl Fn(Priority) -> usize,
    ) -> Vec<PriorityStats> {
        let others: u64 = Priority::ALL
            .iter()
            .filter(|&&p| p != Priority::Normal)
            .map(|&p| self.classes[p.rank()].admitted.load(Ordering::Relaxed))
            .sum();
        Priority::ALL
            .iter()
            .map(|&priority| {
                let class = &self.classes[priority.rank()];
                let waited = class.waited.summary();
                PriorityStats {
                    priority,
                    admitted: if priority == Priority::Normal {
                        admitted.saturating_sub(others)
                    } else {
                        class.admitted.load(Ordering::Relaxed)
                    },
                    refused: class.refused.load(Ordering::Relaxed),
                    waiting: waiting(priority),
                    queued: u64::from(waited.samples),
                    waited_p50: waited.p50,
                    waited_p99: waited.p99,
                }
            })
            .collect()
    }
}
