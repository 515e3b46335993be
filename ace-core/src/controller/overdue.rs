//! "In flight too long": tasks still running past a multiple of the usual latency, counted
//! before any of them completes (a retry loop inside the task, a request that hangs until a
//! timeout).
//!
//! No clock and no per-task state: the recorder counts admissions per epoch
//! ([`LatencySummary::admitted`]), and the controller keeps the counts of its last epochs. Every
//! task in flight now was admitted at some time; at most `A` of them were admitted after `T`,
//! where `A` counts the admissions of the epochs that ended after `T`, so at least
//! `in_flight − A` have been running since before `T`: a lower bound, whatever the order in which
//! tasks complete.

use core::time::Duration;

use super::detector::secs;
use super::{Controller, Stress};
use crate::Usage;

/// Epoch calls kept: enough to reach back `OVERDUE_FACTOR` latencies at one epoch each.
const SLOTS: usize = 32;

// A task is overdue once it has run for 4 × the reference latency (the larger of the baseline
// p90 and the average): rare for any healthy spread (an exponential latency passes 8 × its mean
// with odds 3e-4), routine for a retry behind a timeout. It takes 2 such tasks, and an eighth
// of those in flight, more than at the last cut for them.
const OVERDUE_FACTOR: u32 = 4;
const OVERDUE_MIN: usize = 2;

/// The admissions between the controller's last epoch calls (each call, carried over or not).
#[derive(Debug, Clone)]
pub(super) struct Admissions {
    // (end, admissions) per closed epoch, in a ring; `len` of them valid, the oldest at `next`
    // once full.
    slots: [(Duration, u32); SLOTS],
    len: usize,
    next: usize,
    // Admissions before this time are no longer counted (0: none lost yet).
    covered_from: Duration,
    // Some admission was ever reported: a manager that reports none is never judged by this.
    tracked: bool,
    // The overdue count at the last cut for it, lowered as those tasks end.
    pub(super) at_cut: usize,
}

impl Admissions {
    pub(super) const fn new() -> Self {
        Self {
            slots: [(Duration::ZERO, 0); SLOTS],
            len: 0,
            next: 0,
            covered_from: Duration::ZERO,
            tracked: false,
            at_cut: 0,
        }
    }

    /// An epoch call at `end` saw `count` admissions since the one before.
    pub(super) fn push(&mut self, end: Duration, count: u32) {
        self.tracked |= count > 0;
        if self.len == SLOTS {
            // The oldest epoch leaves: its admissions (up to its end) are no longer counted.
            self.covered_from = self.slots[self.next].0;
        } else {
            self.len += 1;
        }
        self.slots[self.next] = (end, count);
        self.next = (self.next + 1) % SLOTS;
    }

    /// Admissions in the epochs that ended after `since` (an epoch that straddles it counts
    /// whole: more recent admissions, so fewer overdue tasks, keeps the bound a bound); `None`
    /// once the ring no longer reaches back to `since`.
    fn since(&self, since: Duration) -> Option<u64> {
        if since < self.covered_from {
            return None;
        }
        Some(
            self.slots[..self.len]
                .iter()
                .filter(|(end, _)| *end > since)
                .map(|&(_, n)| u64::from(n))
                .sum(),
        )
    }
}

impl Controller {
    /// The reference latency for time in flight: the larger of the baseline p90 and the average.
    fn reference(&self, now: Duration) -> Option<Duration> {
        let average = self.average.map(|a| secs(a.mean));
        let reference = match (self.baseline.get(now), average) {
            (Some(b), Some(a)) => b.max(a),
            (b, a) => b.or(a)?,
        };
        (!reference.is_zero()).then_some(reference)
    }

    /// True while half or more of the tasks in flight were admitted before the last cut
    /// (for at most `OVERDUE_FACTOR` reference latencies after it): their latency tells of the
    /// limit before the cut, not of this one, so it earns no second cut.
    pub(super) fn draining(&self, now: Duration, usage: Usage) -> bool {
        let (Some(cut), Some(reference)) = (self.last_cut, self.reference(now)) else {
            return false;
        };
        if !self.admissions.tracked || now >= cut.saturating_add(reference * OVERDUE_FACTOR) {
            return false;
        }
        let Some(since) = self.admissions.since(cut) else {
            return false;
        };
        let recent = usize::try_from(since).unwrap_or(usize::MAX);
        let before = usage.in_flight.saturating_sub(recent);
        before > 0 && before * 2 >= usage.in_flight
    }

    /// How many tasks in flight (at least) were admitted more than `OVERDUE_FACTOR` reference
    /// latencies ago, and that age; `None` without admission counts or a reference.
    pub(super) fn overdue_count(&self, now: Duration, usage: Usage) -> Option<(usize, Duration)> {
        if !self.admissions.tracked {
            return None;
        }
        let reference = self.reference(now)?;
        // And at least `latency_min_rise` over it: a task of 50 ns is not overdue at 200 ns.
        let age = reference
            .saturating_mul(OVERDUE_FACTOR)
            .max(reference.saturating_add(self.grain()));
        let since = now.checked_sub(age)?;
        let recent = self.admissions.since(since)?;
        let recent = usize::try_from(recent).unwrap_or(usize::MAX);
        Some((usage.in_flight.saturating_sub(recent), age))
    }

    /// [`Stress::Overdue`] if more tasks are overdue than at the last cut for it, by at least
    /// [`OVERDUE_MIN`] and an eighth of those in flight.
    pub(super) fn overdue(&self, now: Duration, usage: Usage) -> Option<Stress> {
        let (tasks, age) = self.overdue_count(now, usage)?;
        let new = tasks.saturating_sub(self.admissions.at_cut.min(tasks));
        (new >= OVERDUE_MIN.max(usage.in_flight / 8)).then_some(Stress::Overdue { tasks, age })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn counts_admissions_since_and_knows_what_it_lost() {
        let mut a = Admissions::new();
        for k in 1..=40u32 {
            a.push(MS * (10 * k), 1);
        }
        // 32 epochs kept: those ending at 90..=400 ms; the one ending at 90 ms is gone.
        assert_eq!(a.since(MS * 100), Some(30));
        assert_eq!(a.since(MS * 395), Some(1));
        assert_eq!(a.since(MS * 50), None);
    }
}
