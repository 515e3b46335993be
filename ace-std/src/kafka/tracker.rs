//! [`OffsetTracker`]: which offset of one partition is safe to commit, when handlers finish out of
//! order.

use std::collections::VecDeque;

/// The offsets of one partition handed to handlers, and which of them have finished.
///
/// At-least-once: the committable offset is the lowest offset not yet finished (or one past the
/// highest dispatched, when all have finished), so a commit never passes a message whose handler
/// is running, waiting, failed or was dropped. Offsets are dispatched in increasing order (Kafka
/// delivers a partition in order); an offset lower than one already seen means the consumer was
/// rewound (a seek, an offset reset), and starts a new epoch: completions from the old epoch are
/// then ignored.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Dispatched offsets in increasing order, each with "finished". The front is never finished
    /// (finished fronts are popped at once).
    window: VecDeque<(i64, bool)>,
    /// One past the highest offset dispatched in this epoch.
    high: Option<i64>,
    epoch: u64,
}

impl OffsetTracker {
    /// Records that the message at `offset` was received; returns the epoch to pass to
    /// [`finish`](Self::finish).
    pub(crate) fn dispatch(&mut self, offset: i64) -> u64 {
        if self.high.is_some_and(|high| offset < high) {
            self.epoch += 1;
            self.window.clear();
        }
        self.window.push_back((offset, false));
        self.high = Some(offset + 1);
        self.epoch
    }

    /// Records that the handler of `offset` finished (successfully, or dead-lettered).
    pub(crate) fn finish(&mut self, epoch: u64, offset: i64) {
        if epoch != self.epoch {
            return;
        }
        if let Ok(i) = self.window.binary_search_by_key(&offset, |&(o, _)| o) {
            self.window[i].1 = true;
        }
        while matches!(self.window.front(), Some(&(_, true))) {
            self.window.pop_front();
        }
    }

    /// The offset to commit: every message of this epoch below it has finished. `None` before
    /// the first message.
    pub(crate) fn committable(&self) -> Option<i64> {
        match self.window.front() {
            Some(&(offset, _)) => Some(offset),
            None => self.high,
        }
    }

    /// Messages received and not yet finished.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.window.iter().filter(|&&(_, done)| !done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn should_commit_nothing_before_the_first_message() {
        assert_eq!(OffsetTracker::default().committable(), None);
    }

    #[test]
    fn should_not_commit_past_an_unfinished_message() {
        let mut t = OffsetTracker::default();
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
    fn should_skip_gaps_in_offsets() {
        let mut t = OffsetTracker::default();
        let e = t.dispatch(5);
        t.dispatch(9);
        t.finish(e, 5);
        assert_eq!(t.committable(), Some(9));
        t.finish(e, 9);
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn should_start_a_new_epoch_on_rewind() {
        let mut t = OffsetTracker::default();
        let old = t.dispatch(100);
        let new = t.dispatch(50);
        assert_ne!(old, new);
        t.finish(old, 100);
        assert_eq!(t.committable(), Some(50));
        t.finish(new, 50);
        assert_eq!(t.committable(), Some(51));
    }

    proptest! {
        /// Whatever the order handlers finish in, the committable offset is the lowest unfinished
        /// offset (or one past the highest), and it never moves backwards within an epoch.
        #[test]
        fn committable_is_the_lowest_unfinished_offset(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
        ) {
            let mut t = OffsetTracker::default();
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
