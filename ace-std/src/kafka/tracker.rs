//! [`OffsetTracker`]: which offset of one partition is safe to commit, when handlers finish out of
//! order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

use crate::util::lock;

/// `high` before the first message.
const NONE: i64 = i64::MIN;

/// The offsets of one partition handed to handlers, and which of them have finished.
///
/// At-least-once: the committable offset is the lowest offset not yet finished (or one past the
/// highest received, when all have finished), so a commit never passes a message whose handler
/// is running, waiting, failed or was dropped. Offsets arrive in increasing order (Kafka
/// delivers a partition in order); an offset lower than one already seen means the consumer was
/// rewound (a seek, an offset reset), and starts a new epoch: completions from the old epoch are
/// then ignored.
///
/// Only the consumer task receives ([`finished_at_once`](Self::finished_at_once),
/// [`dispatch`](Self::dispatch)); anyone may [`finish`](Self::finish) or read. The common case —
/// a handler that completed on its first poll, with nothing of its partition outstanding — is
/// two loads and a store, no lock: only the consumer task ever adds to the window, so once it
/// sees the window empty it stays empty until the consumer adds to it.
#[derive(Debug)]
pub(crate) struct OffsetTracker {
    /// One past the highest offset received in this epoch; `NONE` before the first. Written by
    /// the consumer task only.
    high: AtomicI64,
    /// The first offset received in this epoch; `NONE` before the first. Written by the
    /// consumer task only.
    low: AtomicI64,
    /// True while the window is not empty (written under its lock).
    busy: AtomicBool,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Received offsets in increasing order, each with "finished". The front is never finished
    /// (finished fronts are popped at once).
    entries: VecDeque<(i64, bool)>,
    epoch: u64,
}

impl Default for OffsetTracker {
    fn default() -> Self {
        Self {
            high: AtomicI64::new(NONE),
            low: AtomicI64::new(NONE),
            busy: AtomicBool::new(false),
            window: Mutex::new(Window::default()),
        }
    }
}

impl OffsetTracker {
    /// Consumer task only: true if `offset` was received already in this epoch (it is finished,
    /// running or waiting), so a second delivery of it (librdkafka refetches after a pause) is
    /// a duplicate, not a rewind.
    pub(crate) fn seen(&self, offset: i64) -> bool {
        self.low.load(Ordering::Relaxed) <= offset && offset < self.high.load(Ordering::Relaxed)
    }

    /// Consumer task only: the message at `offset` was received and its handler has already
    /// finished.
    pub(crate) fn finished_at_once(&self, offset: i64) {
        let high = self.high.load(Ordering::Relaxed);
        if offset >= high && !self.busy.load(Ordering::Acquire) {
            if high == NONE {
                self.low.store(offset, Ordering::Relaxed);
            }
            self.high.store(offset + 1, Ordering::Release);
            return;
        }
        let mut window = lock(&self.window);
        self.rewind_if(&mut window, offset);
        if !window.entries.is_empty() {
            window.entries.push_back((offset, true));
        }
        self.high.store(offset + 1, Ordering::Release);
    }

    /// Consumer task only: the message at `offset` was received and its handler is still
    /// running; returns the epoch to pass to [`finish`](Self::finish).
    pub(crate) fn dispatch(&self, offset: i64) -> u64 {
        let mut window = lock(&self.window);
        self.rewind_if(&mut window, offset);
        window.entries.push_back((offset, false));
        self.busy.store(true, Ordering::Release);
        self.high.store(offset + 1, Ordering::Release);
        window.epoch
    }

    fn rewind_if(&self, window: &mut Window, offset: i64) {
        let high = self.high.load(Ordering::Relaxed);
        if offset < high {
            window.epoch += 1;
            window.entries.clear();
            self.busy.store(false, Ordering::Release);
        }
        if offset < high || high == NONE {
            self.low.store(offset, Ordering::Relaxed);
        }
    }

    /// Records that the handler of `offset` finished (successfully, or dead-lettered).
    pub(crate) fn finish(&self, epoch: u64, offset: i64) {
        let mut window = lock(&self.window);
        if epoch != window.epoch {
            return;
        }
        let entries = &mut window.entries;
        if let Ok(i) = entries.binary_search_by_key(&offset, |&(o, _)| o) {
            entries[i].1 = true;
        }
        while matches!(entries.front(), Some(&(_, true))) {
            entries.pop_front();
        }
        if entries.is_empty() {
            self.busy.store(false, Ordering::Release);
        }
    }

    /// The offset to commit: every message of this epoch below it has finished. `None` before
    /// the first message.
    pub(crate) fn committable(&self) -> Option<i64> {
        let window = lock(&self.window);
        match window.entries.front() {
            Some(&(offset, _)) => Some(offset),
            None => match self.high.load(Ordering::Acquire) {
                NONE => None,
                high => Some(high),
            },
        }
    }

    /// Messages received and not yet finished.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.window)
            .entries
            .iter()
            .filter(|&&(_, done)| !done)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn knows_the_offsets_received_in_this_epoch() {
        let t = OffsetTracker::default();
        assert!(!t.seen(0));
        t.dispatch(10);
        t.finished_at_once(11);
        assert!(t.seen(10) && t.seen(11));
        assert!(!t.seen(9) && !t.seen(12));
        t.dispatch(5);
        assert!(t.seen(5) && !t.seen(10), "a rewind starts again at 5");
    }

    #[test]
    fn commits_nothing_before_the_first_message() {
        assert_eq!(OffsetTracker::default().committable(), None);
    }

    #[test]
    fn does_not_commit_past_an_unfinished_message() {
        let t = OffsetTracker::default();
        let e = t.dispatch(10);
        t.dispatch(11);
        t.dispatch(12);
        t.finish(e, 11);
        t.finish(e, 12);
        assert_eq!(t.committable(), Some(10));
        t.finish(e, 10);
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn skips_gaps_in_offsets() {
        let t = OffsetTracker::default();
        let e = t.dispatch(5);
        t.dispatch(9);
        t.finish(e, 5);
        assert_eq!(t.committable(), Some(9));
        t.finish(e, 9);
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn starts_a_new_epoch_on_rewind() {
        let t = OffsetTracker::default();
        let old = t.dispatch(100);
        let new = t.dispatch(50);
        assert_ne!(old, new);
        t.finish(old, 100);
        assert_eq!(t.committable(), Some(50));
        t.finish(new, 50);
        assert_eq!(t.committable(), Some(51));
    }

    #[test]
    fn commits_past_messages_finished_at_once() {
        let t = OffsetTracker::default();
        t.finished_at_once(3);
        t.finished_at_once(4);
        assert_eq!(t.committable(), Some(5));
        let e = t.dispatch(5);
        t.finished_at_once(6);
        assert_eq!(t.committable(), Some(5));
        t.finish(e, 5);
        assert_eq!(t.committable(), Some(7));
        t.finished_at_once(8);
        assert_eq!(t.committable(), Some(9));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn starts_a_new_epoch_when_a_message_finished_at_once_rewinds() {
        let t = OffsetTracker::default();
        let old = t.dispatch(100);
        t.finished_at_once(50);
        assert_eq!(t.committable(), Some(51));
        t.finish(old, 100);
        assert_eq!(t.committable(), Some(51));
    }

    proptest! {
        /// Mixing messages finished at once with dispatched ones finished later, in any order,
        /// the committable offset is the lowest unfinished offset (or one past the highest).
        #[test]
        fn committable_is_the_lowest_unfinished_with_some_finished_at_once(
            steps in proptest::collection::vec((1i64..4, any::<bool>(), any::<prop::sample::Index>()), 1..200),
        ) {
            let t = OffsetTracker::default();
            let mut running: Vec<(u64, i64)> = Vec::new();
            let mut next = 0i64;
            for (gap, at_once, finish) in steps {
                next += gap;
                if at_once {
                    t.finished_at_once(next);
                } else {
                    running.push((t.dispatch(next), next));
                }
                if !running.is_empty() && finish.index(3) == 0 {
                    let (e, o) = running.remove(finish.index(running.len()));
                    t.finish(e, o);
                }
                let lowest = running.iter().map(|&(_, o)| o).min().unwrap_or(next + 1);
                prop_assert_eq!(t.committable(), Some(lowest));
            }
        }


        /// Whatever the order handlers finish in, the committable offset is the lowest unfinished
        /// offset (or one past the highest), and it never moves backwards within an epoch.
        #[test]
        fn committable_is_the_lowest_unfinished_offset(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
        ) {
            let t = OffsetTracker::default();
            let mut offsets = Vec::new();
            let mut next = 0i64;
            let mut epoch = 0;
            for g in &gaps {
                next += g;
                epoch = t.dispatch(next);
                offsets.push(next);
            }
            let mut unfinished: BTreeSet<i64> = offsets.iter().copied().collect();
            let high = next + 1;
            let mut last = t.committable().unwrap();
            for idx in order {
                let o = offsets[idx.index(offsets.len())];
                t.finish(epoch, o);
                unfinished.remove(&o);
                let c = t.committable().unwrap();
                prop_assert_eq!(c, unfinished.first().copied().unwrap_or(high));
                prop_assert!(c >= last);
                prop_assert!(unfinished.iter().all(|&u| u >= c));
                last = c;
            }
        }
    }
}
