//! The waiters of one layer's bounded queue: which to refuse when it is full (the least
//! important class first), when a class's queue stands (CoDel, per class: the shortest wait
//! over an interval above the target), and how long a call takes (for deadlines).
//!
//! CoDel runs per class: the classes served first rarely wait, so their queue never stands and
//! stays first in, first out, while the least important class, which absorbs the overload, turns
//! newest-first and sheds its stale waiters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::Priority;
use futures_util::task::AtomicWaker;

use crate::util::lock;

/// One queued call: refused from outside by setting `shed` and waking it.
#[derive(Debug)]
pub(super) struct Ticket {
    class: Priority,
    since: Duration,
    shed: AtomicBool,
    pub(super) waker: AtomicWaker,
}

impl Ticket {
    /// True once the queue refused this call.
    pub(super) fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// CoDel's state: the shortest wait seen in the current interval, and the verdict of the last.
///
/// Overloaded once an interval's shortest wait was above the target; it stays so while it keeps
/// shedding stale waiters (serving newest first makes the waits of those served short, which
/// must not read as a drained queue), and ends after an interval with neither.
#[derive(Debug, Default)]
struct CoDel {
    // A waiter was shed in the current interval.
    shed: bool,
    // `None` until the first sample opens the first interval.
    window_end: Option<Duration>,
    window_min: Option<Duration>,
    overloaded: bool,
}

impl CoDel {
    /// Notes a wait seen at `now`; closes the interval once it has passed: overloaded if even
    /// the shortest wait in it was above `target`.
    fn sample(&mut self, wait: Duration, now: Duration, target: Duration, interval: Duration) {
        self.window_min = Some(self.window_min.map_or(wait, |min| min.min(wait)));
        match self.window_end {
            None => self.window_end = Some(now + interval),
            Some(end) if now >= end => {
                self.overloaded = self.window_min.is_some_and(|min| min > target)
                    || (self.overloaded && self.shed);
                self.shed = false;
                self.window_min = None;
                self.window_end = Some(now + interval);
            }
            Some(_) => {}
        }
    }
}

#[derive(Debug, Default)]
struct Waiting {
    classes: [VecDeque<Arc<Ticket>>; Priority::ALL.len()],
    codel: [CoDel; Priority::ALL.len()],
}

impl Waiting {
    fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }
}

/// What a layer's services share: its queue and its estimate of a call's duration.
#[derive(Debug, Default)]
pub(super) struct WaitQueue {
    waiting: Mutex<Waiting>,
    // Exponentially weighted mean and mean deviation of admitted calls' durations, in
    // nanoseconds (0: none yet), as TCP keeps its round-trip time.
    service_nanos: AtomicU64,
    service_dev_nanos: AtomicU64,
}

/// How a queue's joining went.
pub(super) enum Join {
    /// Queued; `newest_first` if the queue is overloaded (join the front of the class), and
    /// then refused once it has waited `max_wait` (the target) without a slot.
    Queued {
        ticket: Arc<Ticket>,
        newest_first: bool,
        max_wait: Option<Duration>,
    },
    /// Full, and nobody less important to push out.
    Full,
}

/// The adaptive mode's parameters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Adaptive {
    pub(super) target: Duration,
    pub(super) interval: Duration,
}

impl WaitQueue {
    /// Joins at `now`. A full queue pushes out the newest waiter of the least important class
    /// below `class`, or refuses. In adaptive mode, the oldest waiter of `class` has waited at
    /// least this long: a CoDel sample; once `class` is overloaded, its waiters older than the
    /// target are refused and the call joins the front.
    pub(super) fn join(
        &self,
        class: Priority,
        under_share: [bool; Priority::ALL.len()],
        now: Duration,
        max_waiting: usize,
        adaptive: Option<Adaptive>,
    ) -> (Join, Vec<Priority>) {
        let mut shed = Vec::new();
        let mut waiting = lock(&self.waiting);
        let mut newest_first = false;
        let mut max_wait = None;
        if let Some(a) = adaptive {
            let rank = class.rank();
            if let Some(oldest) = waiting.classes[rank].front().map(|t| t.since) {
                waiting.codel[rank].sample(now.saturating_sub(oldest), now, a.target, a.interval);
            }
            // The most important class stays first in, first out: it is served first, so its
            // wait is the service's own granularity, and newest-first would only stretch its tail.
            newest_first = rank > 0 && waiting.codel[rank].overloaded;
            Self::shed_stale(&mut waiting, now, a.target, under_share, &mut shed);
            // A call below the most important class (and not under its guaranteed share),
            // joining a standing queue (here or above: a class is never refused before a less
            // important one) or behind more important calls, would be served only by a slot that
            // none of those want. The least important class is refused at once behind more
            // important calls or while a more important class's queue stands (it would only wait
            // to be refused; it still takes a slot free at its arrival); the next class below the
            // most important waits the target, each class below it a quarter of the one above
            // (of three classes: Normal 5 ms, Sheddable 1.25 ms of a 5 ms target, when its own
            // queue stands), so a freed slot finds the more important of two lower classes
            // waiting; and a refusal is heard by then, from the caller's own timer, not when the
            // queue next moves. Only the class's own standing queue lets it wait, so its own
            // CoDel verdict keeps being sampled.
            let overloaded = waiting.codel[..=rank].iter().any(|c| c.overloaded);
            let ahead = waiting.classes[..rank].iter().any(|c| !c.is_empty());
            if rank > 0 && !under_share[rank] && (overloaded || ahead) {
                let lower = Priority::ALL.len() - 1;
                let above = waiting.codel[..rank].iter().any(|c| c.overloaded);
                if rank == lower && (ahead || above) {
                    return (Join::Full, shed);
                }
                max_wait = Some(a.target / 4u32.pow(u32::try_from(rank - 1).unwrap_or(0)));
            }
        }
        if waiting.len() >= max_waiting {
            // The least important class below this one; for a class under its share, any class
            // not under its own.
            let rank = class.rank();
            let lower = (rank + 1..Priority::ALL.len())
                .rev()
                .find(|&c| !waiting.classes[c].is_empty())
                .or_else(|| {
                    (0..Priority::ALL.len()).rev().find(|&c| {
                        under_share[rank]
                            && c != rank
                            && !under_share[c]
                            && !waiting.classes[c].is_empty()
                    })
                });
            match lower {
                Some(c) => {
                    let out = waiting.classes[c].pop_back().expect("not empty");
                    shed.push(out.class);
                    out.shed();
                }
                None => return (Join::Full, shed),
            }
        }
        let ticket = Arc::new(Ticket {
            class,
            since: now,
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        waiting.classes[class.rank()].push_back(Arc::clone(&ticket));
        (
            Join::Queued {
                ticket,
                newest_first,
                max_wait,
            },
            shed,
        )
    }

    /// In every overloaded class but the most important, refuses the waiters that have waited more than `target`: at
    /// every arrival and admission, so a refusal comes within `target` and the gap between two
    /// events.
    fn shed_stale(
        waiting: &mut Waiting,
        now: Duration,
        target: Duration,
        under_share: [bool; Priority::ALL.len()],
        shed: &mut Vec<Priority>,
    ) {
        let Waiting { classes, codel } = waiting;
        // The most important class is never shed for a standing queue: it is served first, so
        // its wait is the service's own granularity (a slot coming free), and it waits up to
        // the interval.
        // Nor is a class under its guaranteed share, which is served next.
        for ((class, codel), protected) in classes
            .iter_mut()
            .zip(codel.iter_mut())
            .zip(under_share)
            .skip(1)
            .rev()
        {
            if codel.overloaded && !protected {
                let before = shed.len();
                Self::shed_older_than(class, now, target, shed);
                codel.shed |= shed.len() > before;
            }
        }
    }

    /// Refuses every waiter of `class` that has waited more than `target`.
    fn shed_older_than(
        class: &mut VecDeque<Arc<Ticket>>,
        now: Duration,
        target: Duration,
        shed: &mut Vec<Priority>,
    ) {
        while class
            .front()
            .is_some_and(|t| now.saturating_sub(t.since) > target)
        {
            let out = class.pop_front().expect("checked");
            shed.push(out.class);
            out.shed();
        }
    }

    /// The call of `ticket` leaves the queue at `now`: admitted (a CoDel sample in adaptive mode)
    /// or gone. Returns the calls refused as a result (adaptive mode, overloaded).
    pub(super) fn leave(
        &self,
        ticket: &Arc<Ticket>,
        under_share: [bool; Priority::ALL.len()],
        now: Duration,
        admitted: bool,
        adaptive: Option<Adaptive>,
    ) -> Vec<Priority> {
        let mut shed = Vec::new();
        let mut waiting = lock(&self.waiting);
        let rank = ticket.class.rank();
        let class = &mut waiting.classes[rank];
        if let Some(i) = class.iter().position(|t| Arc::ptr_eq(t, ticket)) {
            class.remove(i);
        }
        match (admitted, adaptive) {
            (true, Some(a)) => {
                let wait = now.saturating_sub(ticket.since);
                waiting.codel[rank].sample(wait, now, a.target, a.interval);
                Self::shed_stale(&mut waiting, now, a.target, under_share, &mut shed);
            }
            // Refused by its own timer after the target in a standing queue: a shed, which keeps
            // the verdict (as `shed_stale`'s do).
            (false, Some(a)) if now.saturating_sub(ticket.since) >= a.target => {
                let codel = &mut waiting.codel[rank];
                codel.shed |= codel.overloaded;
            }
            _ => {}
        }
        shed
    }

    /// An admitted call took `took`: folded into the mean (weight 1/8) and the mean deviation
    /// (weight 1/4).
    pub(super) fn record_service(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let mean = self.service_nanos.load(Ordering::Relaxed);
        let dev = self.service_dev_nanos.load(Ordering::Relaxed);
        let (mean, dev) = if mean == 0 {
            (took, took / 2)
        } else {
            (
                mean - mean / 8 + took / 8,
                dev - dev / 4 + mean.abs_diff(took) / 4,
            )
        };
        // A lost update under a race only skips one sample of an estimate.
        self.service_nanos.store(mean.max(1), Ordering::Relaxed);
        self.service_dev_nanos.store(dev, Ordering::Relaxed);
    }

    /// How long a call may take: the mean plus four mean deviations (TCP's retransmission
    /// timeout), so a deadline is met by nearly every call admitted; zero until one has
    /// finished.
    pub(super) fn service_time(&self) -> Duration {
        let mean = self.service_nanos.load(Ordering::Relaxed);
        let dev = self.service_dev_nanos.load(Ordering::Relaxed);
        Duration::from_nanos(mean.saturating_add(dev.saturating_mul(4)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const NONE: [bool; 3] = [false; 3];

    fn queued(join: (Join, Vec<Priority>)) -> (Arc<Ticket>, bool, Vec<Priority>) {
        match join {
            (
                Join::Queued {
                    ticket,
                    newest_first,
                    ..
                },
                shed,
            ) => (ticket, newest_first, shed),
            (Join::Full, _) => panic!("refused"),
        }
    }

    #[test]
    fn should_push_out_the_newest_of_the_least_important_class_when_full() {
        let q = WaitQueue::default();
        let (a, _, _) = queued(q.join(Priority::Sheddable, NONE, MS, 2, None));
        let (b, _, _) = queued(q.join(Priority::Sheddable, NONE, 2 * MS, 2, None));
        let (_, _, shed) = queued(q.join(Priority::Critical, NONE, 3 * MS, 2, None));
        assert_eq!(shed, [Priority::Sheddable]);
        assert!(b.is_shed() && !a.is_shed());
        // Full of more important calls: a Sheddable one is refused itself.
        let (_, _, _) = queued(q.join(Priority::Normal, NONE, 4 * MS, 3, None));
        assert!(matches!(
            q.join(Priority::Sheddable, NONE, 5 * MS, 3, None).0,
            Join::Full
        ));
    }

    #[test]
    fn should_turn_newest_first_and_shed_stale_waiters_once_the_shortest_wait_is_above_target() {
        let q = WaitQueue::default();
        let a = Some(Adaptive {
            target: 5 * MS,
            interval: 100 * MS,
        });
        let (old, newest_first, _) = queued(q.join(Priority::Normal, NONE, Duration::ZERO, 10, a));
        assert!(!newest_first);
        // The first sample (50 ms) opens an interval; within it, no verdict yet.
        let (_, newest_first, _) = queued(q.join(Priority::Normal, NONE, 50 * MS, 10, a));
        assert!(!newest_first);
        // The interval closes with its shortest wait above the target: overloaded.
        let (fresh, newest_first, shed) = queued(q.join(Priority::Normal, NONE, 160 * MS, 10, a));
        assert!(newest_first, "overloaded after an interval above target");
        assert_eq!(shed.len(), 2, "waiters older than the target are refused");
        assert!(old.is_shed() && !fresh.is_shed());
        assert!(q.leave(&fresh, NONE, 161 * MS, true, a).is_empty());
        // It shed in that interval, so it stays overloaded for the next one ...
        let (t, _, _) = queued(q.join(Priority::Normal, NONE, 222 * MS, 10, a));
        assert!(q.leave(&t, NONE, 270 * MS, true, a).is_empty());
        let (t, newest_first, _) = queued(q.join(Priority::Normal, NONE, 330 * MS, 10, a));
        assert!(newest_first);
        // ... and ends after an interval of short waits with nothing shed.
        assert!(q.leave(&t, NONE, 332 * MS, true, a).is_empty());
        let (t, _, _) = queued(q.join(Priority::Normal, NONE, 374 * MS, 10, a));
        assert!(q.leave(&t, NONE, 376 * MS, true, a).is_empty());
        let (_, newest_first, _) = queued(q.join(Priority::Normal, NONE, 380 * MS, 10, a));
        assert!(!newest_first);
    }

    #[test]
    fn should_bound_a_lower_class_wait_behind_more_important_calls() {
        let q = WaitQueue::default();
        let a = Some(Adaptive {
            target: 4 * MS,
            interval: 100 * MS,
        });
        let max_wait = |join| match join {
            (Join::Queued { max_wait, .. }, _) => Some(max_wait),
            (Join::Full, _) => None,
        };
        // Nothing ahead and nothing standing: up to the timeout (no cap of its own).
        assert_eq!(
            max_wait(q.join(Priority::Sheddable, NONE, MS, 10, a)),
            Some(None)
        );
        assert_eq!(
            max_wait(q.join(Priority::Critical, NONE, MS, 10, a)),
            Some(None)
        );
        // Behind a Critical call: Normal waits the target, Sheddable is refused at once ...
        assert_eq!(
            max_wait(q.join(Priority::Normal, NONE, MS, 10, a)),
            Some(Some(4 * MS))
        );
        assert_eq!(max_wait(q.join(Priority::Sheddable, NONE, MS, 10, a)), None);
        // ... unless under its guaranteed share.
        let under = [false, false, true];
        assert_eq!(
            max_wait(q.join(Priority::Sheddable, under, MS, 10, a)),
            Some(None)
        );
    }

    #[test]
    fn should_refuse_the_least_important_class_while_a_more_important_queue_stands() {
        let q = WaitQueue::default();
        let a = Some(Adaptive {
            target: 5 * MS,
            interval: 100 * MS,
        });
        // Critical's shortest wait over an interval above the target: its queue stands.
        let (first, _, _) = queued(q.join(Priority::Critical, NONE, Duration::ZERO, 10, a));
        let (second, _, _) = queued(q.join(Priority::Critical, NONE, 50 * MS, 10, a));
        let (third, _, _) = queued(q.join(Priority::Critical, NONE, 160 * MS, 10, a));
        for t in [first, second, third] {
            assert!(q.leave(&t, NONE, 161 * MS, true, a).is_empty());
        }
        // Nobody waits now, but Critical's verdict holds: Sheddable is refused at arrival,
        // Normal may wait the target.
        assert!(matches!(
            q.join(Priority::Sheddable, NONE, 162 * MS, 10, a).0,
            Join::Full
        ));
        let (normal, _, _) = queued(q.join(Priority::Normal, NONE, 163 * MS, 10, a));
        assert!(!normal.is_shed());
    }

    #[test]
    fn should_estimate_the_service_time() {
        let q = WaitQueue::default();
        assert_eq!(q.service_time(), Duration::ZERO);
        q.record_service(8 * MS);
        assert_eq!(q.service_time(), 8 * MS + 4 * (4 * MS));
        for _ in 0..100 {
            q.record_service(8 * MS);
        }
        assert!(q.service_time() < 9 * MS, "{:?}", q.service_time());
    }
}
