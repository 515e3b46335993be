//! The consumer task: receive, queue by lane, dispatch to handlers under the gate, pause and
//! resume, commit; and the graceful stop.
//!
//! [`Pump::run`] is one `select!` over the task's events; each event is a small method of
//! [`Task`], the task's state, and back-pressure is the pure [`Pressure`].

use crate::util::panic_message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{OwnedPermit as Permit, Semaphore};
use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::context::{bump, lock, Context, PartitionState, Shared};
use super::error::{HandlerError, HandlerFailure, StopError};
use super::handler::{Attempt, CatchUnwind, First, FirstAttempt, Handler, HandlerFn};
use super::retry::{AfterRetries, RetryPolicy};
use super::scheduler::{Lane, Lanes, Scheduler};
use super::{KafkaMessage, Options, ShutdownReport};

/// Messages taken in one go on the fast path (free slots, messages ready).
// 256 trivial messages take ~0.1 ms: the stop signal, the commit tick and back-pressure are
// still checked often, and a pass through `select!` is paid once per 256.
const DRAIN: usize = 256;

/// How long the final commit may take at least, whatever is left of the shutdown deadline.
const FINAL_COMMIT: Duration = Duration::from_secs(10);

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the consumer task needs, moved into it at start.
pub(crate) struct Pump {
    pub(crate) consumer: StreamConsumer<Context>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) handler: Handler,
    pub(crate) options: Options,
    /// Stops the control loop once the consumer is done.
    pub(crate) control_stop: ace_core::Shutdown,
}

/// A message received and waiting for its turn; the tracker already holds it as unfinished.
struct Pending {
    message: KafkaMessage,
    part: Arc<PartitionState>,
    epoch: u64,
}

/// Where a message stands when its handler starts.
#[derive(Clone, Copy)]
enum Origin {
    /// Started as it was received: the tracker has not seen it, and its lane is free (known
    /// already, or computed only if the handler does not finish at once).
    Fresh(Option<Option<Lane>>),
    /// Started from the queue: the tracker holds it (`epoch`), and its lane is busy with it.
    Queued { lane: Option<Lane>, epoch: u64 },
}

/// The backlog as back-pressure sees it.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    /// The limit on handlers in flight.
    limit: usize,
    /// Handlers in flight.
    in_flight: usize,
    /// Messages waiting (for a slot, or behind a busy key).
    queued: usize,
    /// Handlers finished so far (a count that only grows).
    finished: u64,
}

/// What back-pressure wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    /// Take messages from librdkafka.
    pull: bool,
    /// Pause at this instant unless the backlog drains first.
    pause_at: Option<Instant>,
    /// Resume the paused partitions now.
    resume: bool,
}

/// Back-pressure: the high-water mark stops taking messages; a backlog that stays high for
/// `pause_after` pauses, if the pause is worth its price; a paused consumer resumes while a
/// reserve still waits.
///
/// The high-water mark is the limit plus the buffer allowance. "Stays high" means it has not
/// drained to the reserve since it reached the mark: handlers that keep finishing one at a
/// time, each followed by a new message, hold the backlog just under the mark and must not
/// restart the clock. The reserve is the limit's worth of waiting messages, at most half the
/// buffer: resuming then leaves the slots work while librdkafka fetches again.
///
/// The price: a pause throws away librdkafka's prefetched messages, and after the resume the
/// first message comes a refetch later (measured at each resume: ~300 ms against Tansu). While
/// handlers keep finishing, a pause is taken only if the waiting messages cover that refetch at
/// the rate handlers finish (before the first measurement, it is taken, which measures it);
/// otherwise the consumer keeps taking one message per completion, which polls it as often as
/// a pause would. Handlers that stop finishing for `pause_after` pause whatever the price (the
/// group would evict a consumer that stops polling).
#[derive(Debug, Default)]
struct Pressure {
    /// When the backlog reached the mark, and the completions then.
    full_since: Option<(Instant, u64)>,
    /// The last completion seen, and the count then.
    last_finish: Option<(Instant, u64)>,
    /// The last resume not yet followed by a message.
    resumed_at: Option<Instant>,
    /// How long the first message took after a resume (a running mean).
    refetch: Option<Duration>,
}

impl Pressure {
    fn decide(
        &mut self,
        now: Instant,
        b: Backlog,
        buffer: usize,
        pause_after: Duration,
        paused: bool,
    ) -> Verdict {
        let high = b.limit.saturating_add(buffer);
        let full = b.in_flight + b.queued >= high;
        let reserve = b.limit.min(buffer / 2);
        let drained = !full && b.queued <= reserve;
        if self.last_finish.is_none_or(|(_, n)| n != b.finished) {
            self.last_finish = Some((now, b.finished));
        }
        if paused || drained {
            self.full_since = None;
        } else if full && self.full_since.is_none() {
            self.full_since = Some((now, b.finished));
        }
        let pause_at = self.full_since.map(|(since, finished_then)| {
            let finished = b.finished - finished_then;
            let covered = match self.refetch {
                None => true,
                // The waiting messages last `queued × (time per completion)`.
                Some(refetch) => {
                    finished > 0
                        && now
                            .duration_since(since)
                            .mul_f64(b.queued as f64 / finished as f64)
                            >= refetch
                }
            };
            let last = self.last_finish.map_or(since, |(at, _)| at.max(since));
            if covered {
                since + pause_after
            } else {
                last + pause_after
            }
        });
        let resume = paused && drained;
        if resume {
            self.resumed_at = Some(now);
        }
        Verdict {
            // With nothing queued, take one message even when full: it waits for a slot, and
            // that wait is what wakes the task when a handler finishes.
            pull: !full || paused || b.queued == 0,
            pause_at,
            resume,
        }
    }

    /// A message arrived: the first after a resume measures the refetch.
    fn received(&mut self, now: Instant) {
        if let Some(at) = self.resumed_at.take() {
            let took = now.duration_since(at);
            self.refetch = Some(self.refetch.map_or(took, |mean| (mean + took) / 2));
        }
    }
}

/// Counts kept by the consumer task and added to the shared counters once per batch, not once
/// per message.
#[derive(Default)]
struct Tally {
    received: u64,
    handled: u64,
}

impl Tally {
    fn flush(&mut self, shared: &Shared) {
        let c = &shared.counters;
        if self.received > 0 {
            c.received.fetch_add(self.received, Ordering::Relaxed);
        }
        if self.handled > 0 {
            c.handled.fetch_add(self.handled, Ordering::Relaxed);
        }
        *self = Self::default();
    }
}

/// The consumer task's cache of assigned partitions, refreshed when a rebalance changes them.
struct Lookup {
    generation: u64,
    parts: Vec<Arc<PartitionState>>,
}

impl Lookup {
    /// The partition's state; `None` for a partition not assigned (a message fetched before its
    /// partition was revoked, which its next owner handles).
    fn get(
        &mut self,
        shared: &Shared,
        topic: &str,
        partition: i32,
    ) -> Option<&Arc<PartitionState>> {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.parts = lock(&shared.partitions).values().cloned().collect();
            self.generation = generation;
        }
        self.parts
            .iter()
            .find(|p| p.partition == partition && *p.topic == *topic)
    }
}

/// The consumer task's per-message state: where partitions are, and a scratch buffer to copy
/// messages out of librdkafka (see [`KafkaMessage::copy`]).
struct Receiver {
    lookup: Lookup,
    scratch: Vec<u8>,
}

/// The consumer task's state; each event of [`Pump::run`]'s loop is one method.
struct Task {
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    dispatch: Dispatch,
    /// Lanes whose handler finished on its own task.
    finished: mpsc::UnboundedReceiver<Lane>,
    receiver: Receiver,
    pressure: Pressure,
    committer: Committer,
    /// `Shared::generation` when revoked partitions were last purged from the queue.
    generation: u64,
    buffer: usize,
    pause_after: Duration,
    shutdown_timeout: Duration,
    /// The end of the wait for handlers at shutdown, once stopping.
    deadline: Option<Instant>,
}

impl Pump {
    /// Runs until stopped, then stops gracefully: see
    /// [`KafkaConsumerManager::shutdown`](super::KafkaConsumerManager::shutdown).
    pub(crate) async fn run(self) -> Result<ShutdownReport, StopError> {
        let Self {
            consumer,
            shared,
            gate,
            handler: Handler { first, retry },
            options,
            control_stop,
        } = self;
        let (done, finished) = mpsc::unbounded_channel();
        let lanes = Lanes::new(options.ordering);
        let job = Arc::new(Job {
            shared: Arc::clone(&shared),
            handler: retry,
            retry: options.retry,
            after: options.after,
            done: (!lanes.unordered()).then_some(done),
        });
        let mut commit_tick = tokio::time::interval_at(
            Instant::now() + options.commit_interval,
            options.commit_interval,
        );
        commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = shared.stop.clone();
        let stopped = stop.wait();
        tokio::pin!(stopped);
        let consumer = Arc::new(consumer);
        let mut task = Task {
            consumer: Arc::clone(&consumer),
            generation: shared.generation.load(Ordering::Acquire),
            shared,
            gate,
            dispatch: Dispatch {
                first,
                job,
                lanes,
                queue: Scheduler::default(),
                tally: Tally::default(),
            },
            finished,
            receiver: Receiver {
                lookup: Lookup {
                    generation: u64::MAX,
                    parts: Vec::new(),
                },
                scratch: Vec::new(),
            },
            pressure: Pressure::default(),
            committer: Committer::default(),
            buffer: options.buffer,
            pause_after: options.pause_after,
            shutdown_timeout: options.shutdown_timeout,
            deadline: None,
        };

        let mut stream = consumer.stream();
        loop {
            task.purge_revoked();
            let verdict = task.back_pressure();
            tokio::select! {
                biased;
                () = &mut stopped => break,
                Some(lane) = task.finished.recv() => task.lane_finished(lane),
                permit = Arc::clone(&task.gate).acquire_owned(), if task.dispatch.queue.ready() > 0 => {
                    let Ok(permit) = permit else { break };
                    task.start_ready(Some(permit));
                }
                next = stream.next(), if verdict.pull => match next {
                    Some(Ok(m)) => task.take_batch(m, &mut stream),
                    Some(Err(e)) => task.shared.consumer_error("consume failed", &e),
                    None => break,
                },
                () = sleep_until(verdict.pause_at), if verdict.pause_at.is_some() => {
                    set_paused(&task.consumer, &task.shared, true);
                }
                _ = commit_tick.tick() => task.committer.tick(&task.consumer, &task.shared),
            }
        }
        let (dropped, abandoned) = task.wind_down(stream).await;
        task.finish(consumer, control_stop, dropped, abandoned)
            .await
    }
}

impl Task {
    /// Applies back-pressure: resumes if the backlog drained; says whether to take messages
    /// and when to pause.
    fn back_pressure(&mut self) -> Verdict {
        let queued = self.dispatch.queue.len();
        self.shared.buffered.store(queued, Ordering::Relaxed);
        let backlog = Backlog {
            limit: self.gate.limit(),
            in_flight: self.gate.in_use(),
            queued,
            finished: self.shared.counters.handled.load(Ordering::Relaxed),
        };
        let paused = self.shared.paused.load(Ordering::Relaxed);
        let verdict = self.pressure.decide(
            Instant::now(),
            backlog,
            self.buffer,
            self.pause_after,
            paused,
        );
        if verdict.resume {
            set_paused(&self.consumer, &self.shared, false);
        }
        verdict
    }

    /// After a rebalance, drops the waiting messages of revoked partitions: their next owner
    /// handles them (and the revoke-time commit stayed below them).
    fn purge_revoked(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let dropped = self
            .dispatch
            .queue
            .purge(|p| p.part.revoked.load(Ordering::Acquire));
        if dropped > 0 {
            let dropped = u64::try_from(dropped).unwrap_or(u64::MAX);
            self.shared
                .counters
                .revoked_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Takes `m` and, while the backlog is below the high-water mark, whatever else librdkafka
    /// has ready, without a trip through `select!` (bounded, to stay responsive).
    fn take_batch<'a>(&mut self, m: BorrowedMessage<'a>, stream: &mut MessageStream<'a, Context>) {
        self.pressure.received(Instant::now());
        let mut m = m;
        for taken in 1.. {
            self.take(&m);
            drop(m);
            let high = self.gate.limit() + self.buffer;
            if taken >= DRAIN || self.gate.in_use() + self.dispatch.queue.len() >= high {
                break;
            }
            match stream.next().now_or_never() {
                Some(Some(Ok(next))) => m = next,
                Some(Some(Err(e))) => {
                    self.shared.consumer_error("consume failed", &e);
                    break;
                }
                _ => break,
            }
        }
        self.dispatch.tally.flush(&self.shared);
    }

    /// One message from librdkafka: started at once if nothing is ahead of it and a slot is
    /// free, else queued.
    fn take(&mut self, m: &BorrowedMessage<'_>) {
        self.dispatch.tally.received += 1;
        let Some(part) = self
            .receiver
            .lookup
            .get(&self.shared, m.topic(), m.partition())
        else {
            bump(&self.shared.counters.revoked_dropped);
            return;
        };
        if part.tracker.seen(m.offset()) {
            // Delivered again (librdkafka refetches after a pause): this one is finished,
            // running or waiting already.
            bump(&self.shared.counters.redelivered);
            return;
        }
        let message = KafkaMessage::copy(m, &part.topic, &mut self.receiver.scratch);
        // Idle queue: the lane cannot be busy, so it is computed only if the handler goes on.
        let mut lane = None;
        let free = self.dispatch.queue.is_idle()
            || self
                .dispatch
                .queue
                .can_start_now(*lane.insert(self.dispatch.lanes.of(part, &message)));
        if free {
            if let Ok(permit) = Arc::clone(&self.gate).try_acquire_owned() {
                self.dispatch
                    .start(part, message, permit, Origin::Fresh(lane));
                return;
            }
        }
        let lane = lane.unwrap_or_else(|| self.dispatch.lanes.of(part, &message));
        let epoch = part.tracker.dispatch(message.offset());
        let part = Arc::clone(part);
        self.dispatch.queue.push(
            lane,
            Pending {
                message,
                part,
                epoch,
            },
        );
    }

    /// Starts ready messages: with `permit` first, then while slots are free (bounded).
    fn start_ready(&mut self, mut permit: Option<Permit>) {
        for _ in 0..DRAIN {
            let Some(p) = permit
                .take()
                .or_else(|| Arc::clone(&self.gate).try_acquire_owned().ok())
            else {
                break;
            };
            let Some((lane, pending)) = self.dispatch.queue.pop() else {
                break;
            };
            if pending.part.revoked.load(Ordering::Acquire) {
                // Revoked since the last purge: dropped like the others, and its lane freed.
                bump(&self.shared.counters.revoked_dropped);
                if let Some(lane) = lane {
                    self.dispatch.queue.release(lane);
                }
                permit = Some(p);
                continue;
            }
            let origin = Origin::Queued {
                lane,
                epoch: pending.epoch,
            };
            self.dispatch
                .start(&pending.part, pending.message, p, origin);
        }
        self.dispatch.tally.flush(&self.shared);
    }

    /// A handler on its own task finished with `lane` (and maybe others since): their next
    /// messages become ready, and start if slots are free.
    fn lane_finished(&mut self, lane: Lane) {
        self.dispatch.queue.release(lane);
        while let Ok(lane) = self.finished.try_recv() {
            self.dispatch.queue.release(lane);
        }
        self.start_ready(None);
    }

    /// The graceful stop, first half: pause everything, drop what waits (the next owner gets
    /// it), let handlers in flight finish up to the deadline; returns `(dropped, abandoned)`.
    async fn wind_down(&mut self, mut stream: MessageStream<'_, Context>) -> (usize, usize) {
        let shared = Arc::clone(&self.shared);
        shared.stopping.store(true, Ordering::Release);
        set_paused(&self.consumer, &shared, true);
        let dropped = self.dispatch.queue.clear();
        shared.buffered.store(0, Ordering::Relaxed);

        // Still polling the consumer (group liveness), counting its errors like the loop does.
        let deadline = Instant::now() + self.shutdown_timeout;
        self.deadline = Some(deadline);
        while self.gate.in_use() > 0 && Instant::now() < deadline {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
                next = stream.next() => if let Some(Err(e)) = next {
                    shared.consumer_error("consume failed", &e);
                },
            }
        }
        let abandoned = self.gate.in_use();
        self.gate.close();
        (dropped, abandoned)
    }

    /// The graceful stop, second half: commit what is done, leave the group. `consumer` is the
    /// last handle on it but this task's own, which goes first: the close blocks, so it runs on
    /// the blocking pool.
    async fn finish(
        mut self,
        consumer: Arc<StreamConsumer<Context>>,
        control_stop: ace_core::Shutdown,
        dropped: usize,
        abandoned: usize,
    ) -> Result<ShutdownReport, StopError> {
        let shared = Arc::clone(&self.shared);
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        // The final commit, bounded: a coordinator that is away would hold it forever.
        let deadline = deadline.max(Instant::now() + FINAL_COMMIT);
        self.committer.settle(deadline).await;
        let tpl = shared.committable(None);
        let committed = offsets_of(&tpl);
        let commit = tokio::task::spawn_blocking({
            let (consumer, shared) = (Arc::clone(&consumer), Arc::clone(&shared));
            move || shared.commit(&*consumer, &tpl, CommitMode::Sync)
        });
        let commit_error = match tokio::time::timeout_at(deadline, commit).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                bump(&shared.counters.commit_errors);
                shared.record_error("final commit", &"timed out");
                Some("the final commit timed out".to_owned())
            }
        };

        // Leaving the group blocks (a synchronous close): do it off the executor.
        drop(self);
        let closed = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        control_stop.trigger();
        shared.done.trigger();
        if let Err(e) = closed {
            return Err(StopError::Crashed(e.to_string()));
        }
        if let Some(failure) = lock(&shared.failure).take() {
            return Err(StopError::HandlerFailed(failure));
        }
        Ok(ShutdownReport {
            committed,
            abandoned,
            dropped,
            commit_error,
        })
    }
}

fn set_paused(consumer: &StreamConsumer<Context>, shared: &Shared, paused: bool) {
    // Set the flag first: a partition assigned from now on gets the same state.
    shared.paused.store(paused, Ordering::Release);
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            shared.record_error("reading the assignment failed", &e);
            return;
        }
    };
    let result = if paused {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    drop(assignment);
    match result {
        Ok(()) => {
            bump(if paused {
                &shared.counters.pauses
            } else {
                &shared.counters.resumes
            });
            tracing::debug!(target: "ace::kafka", paused, "back-pressure");
        }
        Err(e) => shared.record_error("pause/resume failed", &e),
    }
}

/// `(topic, partition, offset)` of each partition in a commit, sorted.
type Offsets = Vec<(String, i32, i64)>;

/// The committed offsets of a list, sorted, to compare one commit with the next.
fn offsets_of(tpl: &TopicPartitionList) -> Offsets {
    let mut offsets: Vec<_> = tpl
        .elements()
        .iter()
        .filter_map(|e| Some((e.topic().to_owned(), e.partition(), e.offset().to_raw()?)))
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Periodic commits: synchronous, on a blocking thread, one at a time. Synchronous, because
/// librdkafka does not report the outcome of an asynchronous manual commit to rdkafka
/// (rust-rdkafka #856), so a refused one would go unnoticed and never be made again; on a
/// blocking thread, because a synchronous commit waits for the coordinator, for as long as it
/// takes (a broker that is down).
#[derive(Default)]
struct Committer {
    /// What the last successful commit committed.
    last: Option<Offsets>,
    /// The commit in flight: what it commits, and whether it succeeded.
    inflight: Option<(Offsets, JoinHandle<bool>)>,
}

impl Committer {
    /// Commits if any partition's committable offset differs from the last successful commit
    /// (a refused commit is therefore made again at the next tick), unless one is in flight.
    fn tick(&mut self, consumer: &Arc<StreamConsumer<Context>>, shared: &Arc<Shared>) {
        if let Some((offsets, handle)) = self.inflight.take() {
            if !handle.is_finished() {
                self.inflight = Some((offsets, handle));
                return;
            }
            if let Some(Ok(true)) = handle.now_or_never() {
                self.last = Some(offsets);
            }
        }
        let tpl = shared.committable(None);
        let now = offsets_of(&tpl);
        if now.is_empty() || self.last.as_ref() == Some(&now) {
            return;
        }
        let (consumer, shared) = (Arc::clone(consumer), Arc::clone(shared));
        let handle = tokio::task::spawn_blocking(move || {
            // Every partition, not only those that moved: one refused earlier is made good.
            shared.commit(&*consumer, &tpl, CommitMode::Sync).is_ok()
        });
        self.inflight = Some((now, handle));
    }

    /// Waits for the commit in flight, if any, until `deadline`.
    async fn settle(&mut self, deadline: Instant) {
        if let Some((_, handle)) = self.inflight.take() {
            drop(tokio::time::timeout_at(deadline, handle).await);
        }
    }
}

/// What every handler task shares.
struct Job {
    shared: Arc<Shared>,
    handler: HandlerFn,
    retry: RetryPolicy,
    after: AfterRetries,
    /// Where a handler that finished on its own task reports its lane (none when unordered).
    done: Option<mpsc::UnboundedSender<Lane>>,
}

/// The part of the consumer task's state that starting a handler touches.
struct Dispatch {
    first: Box<dyn FirstAttempt>,
    job: Arc<Job>,
    lanes: Lanes,
    queue: Scheduler<Pending>,
    tally: Tally,
}

impl Dispatch {
    /// Starts a message's handler. The first poll happens here, on the consumer task: a handler
    /// that completes at once (the common fast case) costs no task spawn, no allocation and no
    /// lock, and leaves its lane free. One that is still pending, or failed and needs the
    /// policy, continues as its own tokio task, its lane busy until it ends.
    fn start(
        &mut self,
        part: &Arc<PartitionState>,
        message: KafkaMessage,
        permit: Permit,
        origin: Origin,
    ) {
        let offset = message.offset();
        // The clone is kept for retries and the dead-letter callback: two reference counts, no
        // copy.
        let rest = match self.first.start(message.clone()) {
            First::Ready(Ok(Ok(()))) => {
                self.tally.handled += 1;
                drop(permit);
                match origin {
                    Origin::Fresh(_) => part.tracker.finished_at_once(offset),
                    Origin::Queued { lane, epoch } => {
                        part.tracker.finish(epoch, offset);
                        if let Some(lane) = lane {
                            self.queue.release(lane);
                        }
                    }
                }
                return;
            }
            First::Ready(outcome) => Ok(outcome),
            First::Pending(rest) => Err(rest),
        };
        let (lane, epoch) = match origin {
            Origin::Fresh(lane) => {
                let lane = lane.unwrap_or_else(|| self.lanes.of(part, &message));
                if let Some(lane) = lane {
                    self.queue.occupy(lane);
                }
                (lane, part.tracker.dispatch(offset))
            }
            Origin::Queued { lane, epoch } => (lane, epoch),
        };
        part.running.fetch_add(1, Ordering::AcqRel);
        let (job, part) = (Arc::clone(&self.job), Arc::clone(part));
        drop(tokio::spawn(async move {
            let outcome = match rest {
                Ok(outcome) => outcome,
                Err(rest) => rest.await,
            };
            job.complete(outcome, message, &part, epoch, permit, lane)
                .await;
        }));
    }
}

impl Job {
    /// Applies the policy from the first attempt's outcome; marks the message done if it is,
    /// then frees its slot and its lane. A message that failed under the stop policy keeps its
    /// lane: nothing behind it in its key may run (the manager is stopping anyway).
    async fn complete(
        &self,
        first: Attempt,
        message: KafkaMessage,
        part: &PartitionState,
        epoch: u64,
        permit: Permit,
        lane: Option<Lane>,
    ) {
        let done = self.handle(first, &message).await;
        if done {
            part.tracker.finish(epoch, message.offset());
        }
        // After the tracker: a revoke that sees no handler running commits past this one.
        part.running.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
        if let (true, Some(lane), Some(tx)) = (done, lane, &self.done) {
            // The consumer task is gone only when stopping: then nobody needs the lane.
            tx.send(lane).ok();
        }
    }

    /// Runs the retry policy from the first attempt's outcome; true if the message counts as
    /// done.
    async fn handle(&self, first: Attempt, message: &KafkaMessage) -> bool {
        let mut attempts = 0u32;
        let mut outcome = Some(first);
        loop {
            attempts += 1;
            let attempt = match outcome.take() {
                Some(o) => o,
                None => CatchUnwind((self.handler)(message.clone())).await,
            };
            let error = match attempt {
                Ok(Ok(())) => {
                    bump(&self.shared.counters.handled);
                    return true;
                }
                Ok(Err(e)) => HandlerError::Failed(e),
                Err(panic) => HandlerError::Panicked(panic_message(&*panic)),
            };
            if attempts <= self.retry.max_retries {
                bump(&self.shared.counters.retried);
                tracing::debug!(target: "ace::kafka", %error, attempts, "handler failed; retrying");
                tokio::time::sleep(self.retry.backoff(attempts)).await;
                continue;
            }
            bump(&self.shared.counters.failed);
            let failure = HandlerFailure {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                attempts,
                error,
            };
            return match &self.after {
                AfterRetries::Stop => {
                    self.shared.fail(failure);
                    false
                }
                AfterRetries::DeadLetter(dead_letter) => {
                    let text = failure.to_string();
                    match CatchUnwind(dead_letter(message.clone(), failure)).await {
                        Ok(Ok(())) => {
                            bump(&self.shared.counters.dead_lettered);
                            true
                        }
                        Ok(Err(e)) => {
                            self.shared.fail(dead_letter_failure(
                                message,
                                attempts,
                                text,
                                HandlerError::Failed(e),
                            ));
                            false
                        }
                        Err(panic) => {
                            let e = HandlerError::Panicked(panic_message(&*panic));
                            self.shared
                                .fail(dead_letter_failure(message, attempts, text, e));
                            false
                        }
                    }
                }
            };
        }
    }
}

fn dead_letter_failure(
    message: &KafkaMessage,
    attempts: u32,
    handler_failure: String,
    error: HandlerError,
) -> HandlerFailure {
    let error = match error {
        HandlerError::Failed(e) => HandlerError::Failed(
            format!("dead-letter callback failed ({e}) for {handler_failure}").into(),
        ),
        HandlerError::Panicked(msg) => HandlerError::Panicked(format!(
            "dead-letter callback panicked ({msg}) for {handler_failure}"
        )),
    };
    HandlerFailure {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        attempts,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Limit 4, buffer 8: the high-water mark is 12, the reserve 4. `finished` grows by one per
    /// call where the backlog dips (a handler finished).
    fn decide(
        p: &mut Pressure,
        at: Instant,
        in_flight: usize,
        queued: usize,
        paused: bool,
    ) -> Verdict {
        let finished = p.last_finish.map_or(0, |(_, n)| n) + u64::from(in_flight + queued < 12);
        let b = Backlog {
            limit: 4,
            in_flight,
            queued,
            finished,
        };
        p.decide(at, b, 8, 200 * MS, paused)
    }

    #[test]
    fn holds_off_pausing_finishing_handlers_when_the_buffer_cannot_cover_a_refetch() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        p.refetch = Some(300 * MS);
        decide(&mut p, t0, 4, 8, false);
        // A handler finishes every 12.5 ms: 8 waiting last 100 ms, less than the refetch.
        for i in 1..40u32 {
            let at = t0 + i * 25 * MS / 2;
            let v = decide(&mut p, at, 3, 8, false);
            assert_eq!(
                v.pause_at,
                Some(at + 200 * MS),
                "held off while handlers finish"
            );
            decide(&mut p, at, 4, 8, false);
        }
    }

    #[test]
    fn pauses_when_handlers_stop_finishing_whatever_the_price() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        p.refetch = Some(300 * MS);
        decide(&mut p, t0, 4, 8, false);
        let v = decide(&mut p, t0 + 150 * MS, 4, 8, false);
        assert_eq!(v.pause_at, Some(t0 + 200 * MS));
    }

    #[test]
    fn measures_the_refetch_after_a_resume() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert!(decide(&mut p, t0, 4, 4, true).resume);
        p.received(t0 + 300 * MS);
        p.received(t0 + 400 * MS);
        assert_eq!(
            p.refetch,
            Some(300 * MS),
            "only the first message after a resume"
        );
    }

    #[test]
    fn pauses_when_handlers_finish_one_at_a_time_at_the_mark() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert_eq!(
            decide(&mut p, t0, 4, 8, false).pause_at,
            Some(t0 + 200 * MS)
        );
        // Every 50 ms a handler finishes (the backlog dips below the mark) and a message comes.
        // Nothing measured the refetch yet: the pause is taken (and measures it).
        for i in 1..4 {
            let dip = decide(&mut p, t0 + i * 50 * MS, 3, 8, false);
            assert!(dip.pull);
            assert_eq!(
                dip.pause_at,
                Some(t0 + 200 * MS),
                "a dip does not restart the clock"
            );
            assert!(
                !decide(&mut p, t0 + i * 50 * MS, 4, 8, false).pull,
                "full: not taking"
            );
        }
    }

    #[test]
    fn does_not_pause_a_burst_that_drains() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert!(decide(&mut p, t0, 4, 8, false).pause_at.is_some());
        assert_eq!(decide(&mut p, t0 + MS, 4, 4, false).pause_at, None);
        assert_eq!(
            decide(&mut p, t0 + 2 * MS, 4, 7, false).pause_at,
            None,
            "not full again"
        );
    }

    #[test]
    fn resumes_while_the_reserve_keeps_every_slot_busy() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        let v = decide(&mut p, t0, 4, 5, true);
        assert!(
            !v.resume && v.pull && v.pause_at.is_none(),
            "paused: polls, does not resume"
        );
        assert!(
            decide(&mut p, t0, 4, 4, true).resume,
            "4 waiting cover the 4 slots"
        );
    }

    #[test]
    fn takes_one_message_when_full_with_nothing_queued() {
        let mut p = Pressure::default();
        assert!(decide(&mut p, Instant::now(), 12, 0, false).pull);
    }

    /// The consumer task's cost per message, without librdkafka: `cargo test --release -p ace-std
    /// --features kafka --lib per_message_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    #[allow(clippy::cast_precision_loss, reason = "a measurement")]
    async fn per_message_cost() {
        let shared = Arc::new(Shared::new());
        let gate = Arc::new(Semaphore::new(20));
        let count: &'static std::sync::atomic::AtomicU64 = Box::leak(Box::default());
        let Handler { first, retry } = Handler::new(move |m: KafkaMessage| async move {
            std::hint::black_box(m.payload());
            count.fetch_add(1, Ordering::Relaxed);
            Ok::<(), std::io::Error>(())
        });
        let job = Arc::new(Job {
            shared: Arc::clone(&shared),
            handler: retry,
            retry: RetryPolicy::default(),
            after: AfterRetries::Stop,
            done: None,
        });
        let mut dispatch = Dispatch {
            first,
            job,
            lanes: Lanes::new(super::super::Ordering::Key),
            queue: Scheduler::default(),
            tally: Tally::default(),
        };
        let part = Arc::new(PartitionState::new("topic", 0));
        let (key, payload) = (b"key-123".to_vec(), vec![b'x'; 100]);
        let mut scratch = Vec::new();
        let n = 2_000_000i64;
        let t = std::time::Instant::now();
        for offset in 0..n {
            dispatch.tally.received += 1;
            let message =
                KafkaMessage::copy_parts(&part.topic, offset, &key, &payload, &mut scratch);
            let permit = Arc::clone(&gate).try_acquire_owned().unwrap();
            dispatch.start(&part, message, permit, Origin::Fresh(None));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{ns:.1} ns per message, of which:");
        assert_eq!(part.tracker.committable(), Some(n));
        let t = std::time::Instant::now();
        for offset in 0..n {
            let message =
                KafkaMessage::copy_parts(&part.topic, offset, &key, &payload, &mut scratch);
            std::hint::black_box(&message);
        }
        println!(
            "  copy + drop {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let t = std::time::Instant::now();
        for _ in 0..n {
            let permit = Arc::clone(&gate).try_acquire_owned().unwrap();
            std::hint::black_box(&permit);
        }
        println!(
            "  permit {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let message = KafkaMessage::copy_parts(&part.topic, 0, &key, &payload, &mut scratch);
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(dispatch.first.start(message.clone()));
        }
        println!(
            "  first attempt (message clone, handler, poll) {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(message.clone());
        }
        println!(
            "    of which the clone {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let t = std::time::Instant::now();
        for offset in n..2 * n {
            part.tracker.finished_at_once(offset);
        }
        println!(
            "  tracker {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
}
