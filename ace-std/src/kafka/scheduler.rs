//! [`Scheduler`]: which received message may start next, so that messages of one lane (a key,
//! or a partition) run one at a time in offset order while different lanes run concurrently.
//!
//! A pure data structure, owned by the consumer task: no clock, no lock, no I/O.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use super::context::PartitionState;
use super::KafkaMessage;

/// Which messages a [`KafkaConsumerManager`](super::KafkaConsumerManager) may handle at the same
/// time; from [`ordering`](super::Builder::ordering).
///
/// In every mode the limit ACE picks is the number of handlers running at once, and offsets are
/// committed per partition only below the lowest message not finished. Messages waiting for
/// their turn count against the [`buffer`](super::Builder::buffer), so a
/// backlog behind busy keys pauses the partitions like any other.
///
/// The default is [`Key`](Self::Key): it keeps the order a plain one-at-a-time consumer gives
/// each key (what code written for Kafka relies on), and still runs as many handlers at once as
/// there are keys with work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ordering {
    /// Messages with the same key in the same partition are handled one at a time, in offset
    /// order; different keys run concurrently, and a key with much traffic gets one handler at a
    /// time, taking its turn behind the other keys, so it cannot starve them. Messages without a
    /// key (a null key) are unordered: each runs as soon as a slot is free, because producers
    /// spread keyless messages over partitions with no order to keep.
    #[default]
    Key,
    /// Messages of a partition are handled one at a time, in offset order (concurrency up to the
    /// number of partitions assigned).
    Partition,
    /// Any message may run as soon as a slot is free.
    Unordered,
}

/// The lane of each message under an [`Ordering`].
#[derive(Debug)]
pub(crate) struct Lanes {
    ordering: Ordering,
    hasher: RandomState,
}

impl Lanes {
    pub(crate) fn new(ordering: Ordering) -> Self {
        Self {
            ordering,
            hasher: RandomState::new(),
        }
    }

    /// True if no message ever has a lane (then nothing needs to be told when a handler ends).
    pub(crate) fn unordered(&self) -> bool {
        self.ordering == Ordering::Unordered
    }

    pub(crate) fn of(&self, part: &PartitionState, message: &KafkaMessage) -> Option<Lane> {
        match self.ordering {
            Ordering::Unordered => None,
            Ordering::Partition => Some((part.id, 0)),
            Ordering::Key => message.key().map(|k| (part.id, self.hasher.hash_one(k))),
        }
    }
}

/// Messages that must run one at a time, in the order received: `(partition id, key hash)`.
///
/// Two keys whose hashes collide share a lane: they are then serialised, which costs
/// concurrency, never order.
pub(crate) type Lane = (u64, u64);

/// Received messages waiting to start.
///
/// A lane is *busy* from the moment one of its messages is handed out (by [`pop`](Self::pop), or
/// started ahead of the queue and then [`occupy`](Self::occupy)-ed) until that message is
/// [`release`](Self::release)d; meanwhile later messages of the lane wait behind it. A released
/// lane's next message goes to the back of the ready queue, so a hot key gets one handler at a
/// time and takes its turn behind every other lane that became ready before it: it cannot
/// starve them. Messages without a lane are ready at once, in arrival order.
#[derive(Debug)]
pub(crate) struct Scheduler<T> {
    /// Busy lanes, each with the messages waiting behind its running (or ready) one.
    lanes: HashMap<Lane, VecDeque<T>>,
    /// Messages that may start now, oldest first, with their lane.
    ready: VecDeque<(Option<Lane>, T)>,
    /// Messages waiting: ready or behind a busy lane.
    queued: usize,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Self {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            queued: 0,
        }
    }
}

impl<T> Scheduler<T> {
    /// Messages waiting (ready, or queued behind a busy lane).
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    /// Messages that may start now.
    pub(crate) fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Nothing waits and no lane is busy: any message may start at once, whatever its lane.
    pub(crate) fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.lanes.is_empty()
    }

    /// A message of `lane` may start at once without overtaking anyone: nothing is ready and
    /// its lane is free.
    pub(crate) fn can_start_now(&self, lane: Option<Lane>) -> bool {
        self.ready.is_empty() && lane.is_none_or(|l| !self.lanes.contains_key(&l))
    }

    /// A message of `lane` started ahead of the queue (after [`can_start_now`](Self::can_start_now))
    /// and is still running: its lane is busy until [`release`](Self::release).
    pub(crate) fn occupy(&mut self, lane: Lane) {
        self.lanes.entry(lane).or_default();
    }

    /// Queues a message: ready at once if its lane is free (the lane is then busy), else behind
    /// the lane's other messages.
    pub(crate) fn push(&mut self, lane: Option<Lane>, item: T) {
        self.queued += 1;
        match lane {
            None => self.ready.push_back((None, item)),
            Some(l) => match self.lanes.entry(l) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push_back(item),
                Entry::Vacant(free) => {
                    free.insert(VecDeque::new());
                    self.ready.push_back((Some(l), item));
                }
            },
        }
    }

    /// The next message to start, oldest ready first. Its lane stays busy until released.
    pub(crate) fn pop(&mut self) -> Option<(Option<Lane>, T)> {
        let next = self.ready.pop_front()?;
        self.queued -= 1;
        Some(next)
    }

    /// The message running in `lane` finished: the lane's next message becomes ready (at the
    /// back), or the lane is free. A lane not busy (purged) is ignored.
    pub(crate) fn release(&mut self, lane: Lane) {
        if let Entry::Occupied(mut waiting) = self.lanes.entry(lane) {
            match waiting.get_mut().pop_front() {
                Some(item) => self.ready.push_back((Some(lane), item)),
                None => drop(waiting.remove()),
            }
        }
    }

    /// Drops every waiting message for which `gone` holds (the whole lane of any: a revoked
    /// partition); returns how many.
    pub(crate) fn purge(&mut self, mut gone: impl FnMut(&T) -> bool) -> usize {
        let before = self.queued;
        let mut freed = Vec::new();
        self.ready.retain(|(lane, item)| {
            let keep = !gone(item);
            if let (false, Some(l)) = (keep, lane) {
                freed.push(*l);
            }
            keep
        });
        let mut left = self.ready.len();
        for waiting in self.lanes.values_mut() {
            waiting.retain(|item| !gone(item));
            left += waiting.len();
        }
        // A lane whose ready message was dropped has no message running to release it.
        for lane in freed {
            self.release(lane);
        }
        self.queued = left;
        before - left
    }

    /// Drops every waiting message; returns how many. Busy lanes stay busy.
    pub(crate) fn clear(&mut self) -> usize {
        self.purge(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    use crate::kafka::tracker::OffsetTracker;

    #[test]
    fn runs_one_message_per_lane_in_order() {
        let mut s = Scheduler::default();
        s.push(Some((0, 1)), 10);
        s.push(Some((0, 1)), 11);
        s.push(Some((0, 2)), 12);
        assert_eq!(s.pop(), Some((Some((0, 1)), 10)));
        assert_eq!(s.pop(), Some((Some((0, 2)), 12)));
        assert_eq!(s.pop(), None, "11 waits behind 10");
        s.release((0, 1));
        assert_eq!(s.pop(), Some((Some((0, 1)), 11)));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn lets_no_message_start_ahead_of_its_busy_lane() {
        let mut s = Scheduler::<u8>::default();
        assert!(s.can_start_now(Some((0, 1))));
        s.occupy((0, 1));
        assert!(!s.can_start_now(Some((0, 1))));
        assert!(s.can_start_now(Some((0, 2))));
        assert!(s.can_start_now(None));
        s.release((0, 1));
        assert!(s.is_idle());
    }

    #[test]
    fn frees_the_lanes_of_purged_messages() {
        let mut s = Scheduler::default();
        s.push(Some((1, 1)), 1);
        s.push(Some((1, 1)), 2);
        s.push(Some((2, 1)), 3);
        assert_eq!(s.purge(|&m| m < 3), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop(), Some((Some((2, 1)), 3)));
        s.release((2, 1));
        assert!(s.is_idle(), "no lane left busy by a dropped message");
    }

    /// One step of a random run: receive a message of a lane, or finish a running one.
    #[derive(Debug, Clone)]
    enum Step {
        Receive { key: u8, partition: u8 },
        Finish(prop::sample::Index),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Key 0 is hot: about a third of the traffic. Key 255 stands for a null key.
            3 => (prop_oneof![Just(0u8), 0u8..8, Just(255u8)], 0u8..3)
                .prop_map(|(key, partition)| Step::Receive { key, partition }),
            2 => any::<prop::sample::Index>().prop_map(Step::Finish),
        ]
    }

    /// A message in the model: where it came from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Msg {
        partition: u8,
        key: u8,
        offset: i64,
        epoch: u64,
        /// `pop`s made before this message was pushed (for the starvation bound).
        pushed_at: usize,
    }

    proptest! {
        /// Under any interleaving of receives and completions, with at most `slots` handlers at
        /// once: messages of one lane start one at a time and in offset order; every message
        /// starts once the others finish (none lost, none twice); a ready message starts before
        /// any message that became ready after it (no starvation: a hot lane waits its turn); and
        /// each partition's committable offset never passes a message not finished.
        #[test]
        fn lanes_keep_order_share_slots_and_never_commit_past_unfinished(
            steps in proptest::collection::vec(step(), 1..300),
            slots in 1usize..5,
        ) {
            let lane = |m: &Msg| (m.key != 255).then_some((u64::from(m.partition), u64::from(m.key)));
            let trackers: Vec<OffsetTracker> = (0..3).map(|_| OffsetTracker::default()).collect();
            let mut next_offset = [0i64; 3];
            let mut s: Scheduler<Msg> = Scheduler::default();
            let mut running: Vec<Msg> = Vec::new();
            let mut started: BTreeMap<(u8, u8), Vec<i64>> = BTreeMap::new();
            let mut unfinished: Vec<Vec<i64>> = vec![Vec::new(); 3];
            let mut pops = 0usize;
            let mut received = 0usize;
            let mut finished = 0usize;

            let fill = |s: &mut Scheduler<Msg>, running: &mut Vec<Msg>, pops: &mut usize,
                            started: &mut BTreeMap<(u8, u8), Vec<i64>>| -> Result<(), TestCaseError> {
                while running.len() < slots {
                    let Some((l, m)) = s.pop() else { break };
                    prop_assert_eq!(l, lane(&m));
                    *pops += 1;
                    if let Some(l) = l {
                        prop_assert!(running.iter().all(|r| lane(r) != Some(l)), "two at once in {:?}", l);
                    }
                    started.entry((m.partition, m.key)).or_default().push(m.offset);
                    running.push(m);
                }
                Ok(())
            };

            for st in steps {
                match st {
                    Step::Receive { key, partition } => {
                        let p = usize::from(partition);
                        let offset = next_offset[p];
                        next_offset[p] += 1;
                        let epoch = trackers[p].dispatch(offset);
                        unfinished[p].push(offset);
                        received += 1;
                        s.push(lane(&Msg { partition, key, offset, epoch, pushed_at: 0 }),
                               Msg { partition, key, offset, epoch, pushed_at: pops });
                    }
                    Step::Finish(i) if !running.is_empty() => {
                        let m = running.swap_remove(i.index(running.len()));
                        let p = usize::from(m.partition);
                        trackers[p].finish(m.epoch, m.offset);
                        unfinished[p].retain(|&o| o != m.offset);
                        finished += 1;
                        if let Some(l) = lane(&m) {
                            s.release(l);
                        }
                    }
                    Step::Finish(_) => {}
                }
                fill(&mut s, &mut running, &mut pops, &mut started)?;
                for p in 0..3 {
                    if let Some(c) = trackers[p].committable() {
                        prop_assert!(unfinished[p].iter().all(|&u| u >= c),
                            "partition {} commits {} past an unfinished message", p, c);
                    }
                }
            }
            // Drain: finish everything; every message starts exactly once.
            while !running.is_empty() {
                let m = running.remove(0);
                finished += 1;
                if let Some(l) = lane(&m) {
                    s.release(l);
                }
                fill(&mut s, &mut running, &mut pops, &mut started)?;
            }
            prop_assert_eq!(s.len(), 0);
            prop_assert!(s.is_idle());
            prop_assert_eq!(finished, received, "none lost, none twice");
            for ((_, key), offsets) in &started {
                if *key != 255 {
                    prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "order within a lane: {:?}", offsets);
                }
            }
        }

        /// A ready message starts before every message that became ready after it: a hot lane
        /// that keeps receiving cannot push others back.
        #[test]
        fn ready_messages_start_in_the_order_they_became_ready(
            keys in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..6], 1..200),
        ) {
            let mut s: Scheduler<(u64, usize)> = Scheduler::default();
            for (i, &k) in keys.iter().enumerate() {
                s.push(Some((0, k)), (k, i));
            }
            // The next message of the same key, for each message.
            let mut next_of = vec![None; keys.len()];
            let mut last: BTreeMap<u64, usize> = BTreeMap::new();
            for (i, &k) in keys.iter().enumerate().rev() {
                next_of[i] = last.insert(k, i);
            }
            // The first message of each key is ready from the start (turn 0).
            let mut ready_at: BTreeMap<usize, usize> = last.values().map(|&i| (i, 0)).collect();
            // One slot: pop, finish, release; record when each started message became ready.
            let mut order = Vec::new();
            let mut became_ready = Vec::new();
            let mut turn = 0usize;
            while let Some((lane, (k, i))) = s.pop() {
                prop_assert_eq!(lane, Some((0, k)));
                order.push(i);
                became_ready.push(ready_at[&i]);
                turn += 1;
                s.release((0, k));
                if let Some(j) = next_of[i] {
                    ready_at.insert(j, turn);
                }
            }
            prop_assert_eq!(order.len(), keys.len());
            prop_assert!(became_ready.windows(2).all(|w| w[0] <= w[1]), "FIFO by readiness: {:?}", became_ready);
        }
    }
}
