//! State shared by the consumer's task, its rebalance callbacks, the handlers and the control
//! loop; and the rdkafka [`ConsumerContext`] that keeps it right across rebalances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::Shutdown;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::error::HandlerFailure;
use super::tracker::OffsetTracker;

use crate::util::lock;

/// One assigned partition and its offset tracker.
#[derive(Debug)]
pub(crate) struct PartitionState {
    /// Unique to this assignment of the partition: the lanes of the scheduler are keyed by it,
    /// so a partition revoked and assigned again starts with lanes of its own.
    pub(crate) id: u64,
    /// Shared by every message of the partition.
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) tracker: OffsetTracker,
    /// Handlers of this partition running on their own task (those that did not finish on the
    /// first poll); the revoke waits for them, bounded.
    pub(crate) running: AtomicUsize,
    /// Set when the partition is revoked: its queued messages are dropped, not started.
    pub(crate) revoked: AtomicBool,
    /// Its messages waiting in the consumer task's queue (written by that task only).
    pub(crate) queued: AtomicUsize,
    /// Paused on its own: its waiting messages passed its share of the buffer (see
    /// [`fairness`](super::fairness)).
    pub(crate) held: AtomicBool,
}

impl PartitionState {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            topic: Arc::from(topic),
            partition,
            tracker: OffsetTracker::default(),
            running: AtomicUsize::new(0),
            revoked: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            held: AtomicBool::new(false),
        }
    }
}

/// Counters; read through [`KafkaStats`](super::KafkaStats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_errors: AtomicU64,
    pub(crate) consumer_errors: AtomicU64,
    pub(crate) rebalances: AtomicU64,
    pub(crate) revoked_dropped: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) holds: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Sentinel for "no lag reading yet".
const NO_LAG: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Shared {
    /// Assigned partitions, keyed by (topic, partition).
    pub(crate) partitions: Mutex<HashMap<(String, i32), Arc<PartitionState>>>,
    /// Bumped on every change of `partitions`, so the consumer task can cache lookups.
    pub(crate) generation: AtomicU64,
    /// The pause state the consumer task wants; re-applied to partitions assigned later.
    pub(crate) paused: AtomicBool,
    /// Set once the manager is stopping: rebalance callbacks then only commit.
    pub(crate) stopping: AtomicBool,
    /// Messages received and waiting for a slot.
    pub(crate) buffered: AtomicUsize,
    /// Summed consumer lag, from librdkafka statistics; `NO_LAG` before the first reading.
    pub(crate) lag: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Held while a commit is made (see [`commit`](Self::commit)).
    committing: Mutex<()>,
    /// The first handler failure under the stop policy.
    pub(crate) failure: Mutex<Option<HandlerFailure>>,
    /// Triggered to stop the consumer task (by `shutdown()` or a handler failure).
    pub(crate) stop: Shutdown,
    /// Triggered once the consumer task has finished.
    pub(crate) done: Shutdown,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            partitions: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            lag: AtomicU64::new(NO_LAG),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            committing: Mutex::new(()),
            failure: Mutex::new(None),
            stop: Shutdown::new(),
            done: Shutdown::new(),
        }
    }

    pub(crate) fn lag(&self) -> Option<u64> {
        match self.lag.load(Ordering::Relaxed) {
            NO_LAG => None,
            lag => Some(lag),
        }
    }

    pub(crate) fn record_error(&self, what: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(target: "ace::kafka", %error, "{what}");
        *lock(&self.last_error) = Some(format!("{what}: {error}"));
    }

    /// The one place an error of the consumer or the client is counted and recorded.
    pub(crate) fn consumer_error(&self, what: &str, error: &dyn std::fmt::Display) {
        bump(&self.counters.consumer_errors);
        self.record_error(what, error);
    }

    /// Records a handler failure under the stop policy and asks the consumer to stop.
    pub(crate) fn fail(&self, failure: HandlerFailure) {
        tracing::error!(
            target: "ace::kafka",
            %failure,
            error = %failure.error,
            cause = ?std::error::Error::source(&failure.error).map(ToString::to_string),
            "handler failed; stopping the consumer"
        );
        let mut slot = lock(&self.failure);
        if slot.is_none() {
            *slot = Some(failure);
        }
        drop(slot);
        self.stop.trigger();
    }

    /// The offsets to commit: for every assigned partition that has seen a message, the offset
    /// below which every handler has finished.
    pub(crate) fn committable(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let parts = lock(&self.partitions);
        for state in parts.values() {
            if let Some(only) = only {
                if only.find_partition(&state.topic, state.partition).is_none() {
                    continue;
                }
            }
            if let Some(offset) = state.tracker.committable() {
                let _ =
                    tpl.add_partition_offset(&state.topic, state.partition, Offset::Offset(offset));
            }
        }
        tpl
    }

    /// Commits the partitions of `tpl` still assigned (if any), counting the outcome.
    ///
    /// Commits are made one at a time, and a revoke commits and forgets its partitions under the
    /// same lock: a periodic commit computed before a revoke, and landing after it, would
    /// otherwise move the group's offset back, and the next owner would handle again what was
    /// handled here.
    pub(crate) fn commit<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        tpl: &TopicPartitionList,
        mode: CommitMode,
    ) -> Result<(), RdKafkaError> {
        let _one_at_a_time = lock(&self.committing);
        let parts = lock(&self.partitions);
        let mut assigned = TopicPartitionList::new();
        for e in tpl.elements() {
            if parts.contains_key(&(e.topic().to_owned(), e.partition())) {
                let _ = assigned.add_partition_offset(e.topic(), e.partition(), e.offset());
            }
        }
        drop(parts);
        self.commit_locked(consumer, &assigned, mode)
    }

    /// Commits `tpl` (if not empty), counting the outcome; the caller holds `committing`.
    fn commit_locked<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        tpl: &TopicPartitionList,
        mode: CommitMode,
    ) -> Result<(), RdKafkaError> {
        if tpl.count() == 0 {
            return Ok(());
        }
        match consumer.commit(tpl, mode) {
            Ok(()) => {
                bump(&self.counters.commits);
                Ok(())
            }
            Err(e) => {
                bump(&self.counters.commit_errors);
                self.record_error("commit failed", &e);
                Err(e)
            }
        }
    }

    /// Lag from one statistics report: for each assigned partition, the end of the log minus the
    /// committed offset, clamped at 0, summed.
    ///
    /// The end is the highest of the reported high watermark and the next fetch offset: some
    /// brokers (Tansu) report a high watermark below the messages already fetched, which would
    /// make the lag negative. The committed offset is the broker's, or, before any commit, the
    /// offset the tracker would commit; a partition with neither is left out.
    fn lag_from(&self, stats: &Statistics) -> u64 {
        let parts = lock(&self.partitions);
        let mut sum = 0u64;
        for (name, topic) in &stats.topics {
            for p in topic.partitions.values() {
                if p.partition < 0 {
                    continue;
                }
                let key = (name.clone(), p.partition);
                let Some(state) = parts.get(&key) else {
                    continue;
                };
                let end = p.hi_offset.max(p.next_offset).max(p.app_offset);
                let committed = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    match state.tracker.committable() {
                        Some(c) => c,
                        None => continue,
                    }
                };
                sum = sum.saturating_add(u64::try_from(end - committed).unwrap_or(0));
            }
        }
        sum
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let mut parts = lock(&self.partitions);
        for e in tpl.elements() {
            parts
                .entry((e.topic().to_owned(), e.partition()))
                .or_insert_with(|| Arc::new(PartitionState::new(e.topic(), e.partition())));
        }
        drop(parts);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The states of the partitions in `tpl` that are assigned.
    fn states_of(&self, tpl: &TopicPartitionList) -> Vec<Arc<PartitionState>> {
        let parts = lock(&self.partitions);
        tpl.elements()
            .iter()
            .filter_map(|e| parts.get(&(e.topic().to_owned(), e.partition())).cloned())
            .collect()
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut parts = lock(&self.partitions);
        for e in tpl.elements() {
            parts.remove(&(e.topic().to_owned(), e.partition()));
        }
        drop(parts);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Waits until no handler of `states` runs, or until `timeout` has passed; returns how many
/// still run.
///
/// A rebalance callback is synchronous, so this blocks its thread, a worker of the runtime: in
/// `block_in_place`, which hands the worker's queued tasks (a handler woken there among them) to
/// another thread. On a current-thread runtime no handler can run meanwhile: it does not wait.
fn wait_for_handlers(states: &[Arc<PartitionState>], timeout: Duration) -> usize {
    let running = || -> usize {
        states
            .iter()
            .map(|s| s.running.load(Ordering::Acquire))
            .sum()
    };
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if !multi_thread || running() == 0 {
        return running();
    }
    let deadline = Instant::now() + timeout;
    tokio::task::block_in_place(|| loop {
        let now = running();
        if now == 0 || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    })
}

/// The rdkafka context: rebalance callbacks, statistics (lag) and client errors.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    /// How long a revoke waits for the revoked partitions' handlers before it commits.
    pub(crate) revoke_timeout: Duration,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let lag = self.shared.lag_from(&statistics);
        self.shared
            .lag
            .store(lag.min(NO_LAG - 1), Ordering::Relaxed);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        self.shared
            .consumer_error("kafka client error", &format_args!("{error}: {reason}"));
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            bump(&self.shared.counters.rebalances);
            // No queued message of these partitions starts from now on (the consumer task drops
            // them: the next owner handles them). Handlers already running get a bounded time to
            // finish, so the commit below covers them; one still running after that will be
            // handled again by the next owner (at-least-once).
            let states = self.shared.states_of(tpl);
            for state in &states {
                state.revoked.store(true, Ordering::Release);
            }
            let lost = consumer.assignment_lost();
            if !lost {
                let running = wait_for_handlers(&states, self.revoke_timeout);
                if running > 0 {
                    tracing::warn!(
                        target: "ace::kafka",
                        running,
                        "handlers still running at the revoke-time commit: the next owner handles \
                         their messages again"
                    );
                }
            }
            let one_at_a_time = lock(&self.shared.committing);
            let offsets = self.shared.committable(Some(tpl));
            if !lost {
                let _ = self
                    .shared
                    .commit_locked(consumer, &offsets, CommitMode::Sync);
            }
            self.shared.revoke(tpl);
            drop(one_at_a_time);
            tracing::debug!(target: "ace::kafka", revoked = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                bump(&self.shared.counters.rebalances);
                self.shared.assign(tpl);
                // A new partition starts fetching at once: keep it paused if we are.
                if self.shared.paused.load(Ordering::Acquire)
                    || self.shared.stopping.load(Ordering::Acquire)
                {
                    if let Err(e) = consumer.pause(tpl) {
                        self.shared
                            .record_error("pause of assigned partitions failed", &e);
                    }
                }
                tracing::debug!(target: "ace::kafka", assigned = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => self.shared.consumer_error("rebalance failed", e),
        }
    }
}
