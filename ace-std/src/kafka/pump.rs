//! The consumer task: receive, buffer, dispatch to handlers under the gate, pause and resume,
//! commit; and the graceful stop.

use crate::util::panic_message;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{OwnedPermit as Permit, Semaphore};
use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::context::{bump, lock, Context, PartitionState, Shared};
use super::error::{AfterRetries, HandlerError, HandlerFailure, KafkaError, RetryPolicy};
use super::handler::{Attempt, CatchUnwind, First, FirstAttempt, Handler, HandlerFn};
use super::{KafkaMessage, ShutdownReport};

/// Messages taken in one go on the fast path (free slots, messages ready).
// 256 trivial messages take ~0.1 ms: the stop signal, the commit tick and back-pressure are
// still checked often, and a pass through `select!` is paid once per 256.
const DRAIN: usize = 256;

/// How long the final commit may take at least, whatever is left of the shutdown deadline.
const FINAL_COMMIT: Duration = Duration::from_secs(10);

/// How often a paused consumer re-checks its backlog.
const RECHECK: Duration = Duration::from_millis(10);

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
    pub(crate) retry: RetryPolicy,
    pub(crate) after: AfterRetries,
    pub(crate) buffer: usize,
    pub(crate) pause_after: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// Stops the control loop once the consumer is done.
    pub(crate) control_stop: ace_core::Shutdown,
}

/// A message received and waiting for a slot.
struct Pending {
    message: KafkaMessage,
    part: Arc<PartitionState>,
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
    fn get(&mut self, shared: &Shared, topic: &str, partition: i32) -> &Arc<PartitionState> {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.parts = lock(&shared.partitions).values().cloned().collect();
            self.generation = generation;
        }
        if let Some(i) = self
            .parts
            .iter()
            .position(|p| p.partition == partition && *p.topic == *topic)
        {
            return &self.parts[i];
        }
        // A message from a partition the callbacks have not told us about: track it anyway.
        let state = Arc::clone(
            lock(&shared.partitions)
                .entry((topic.to_owned(), partition))
                .or_insert_with(|| Arc::new(PartitionState::new(topic, partition))),
        );
        self.parts.push(state);
        &self.parts[self.parts.len() - 1]
    }
}

/// The consumer task's per-message state: where partitions are, and a scratch buffer.
struct Receiver {
    lookup: Lookup,
    scratch: Vec<u8>,
}

impl Receiver {
    /// Copies `m` out of librdkafka (see [`KafkaMessage::copy`]) and finds its partition.
    fn receive<'a>(
        &'a mut self,
        shared: &Shared,
        m: &BorrowedMessage<'_>,
    ) -> (KafkaMessage, &'a Arc<PartitionState>) {
        let part = self.lookup.get(shared, m.topic(), m.partition());
        (KafkaMessage::copy(m, &part.topic, &mut self.scratch), part)
    }
}

impl Pump {
    /// Runs until stopped, then stops gracefully: see
    /// [`KafkaConsumerManager::shutdown`](super::KafkaConsumerManager::shutdown).
    pub(crate) async fn run(self) -> Result<ShutdownReport, KafkaError> {
        let Self {
            consumer,
            shared,
            gate,
            handler:
                Handler {
                    mut first,
                    retry: handler,
                },
            retry,
            after,
            buffer: buffer_allowance,
            pause_after,
            commit_interval,
            shutdown_timeout,
            control_stop,
        } = self;
        let job = Arc::new(Job {
            shared: Arc::clone(&shared),
            handler,
            retry,
            after,
        });
        let mut receiver = Receiver {
            lookup: Lookup {
                generation: u64::MAX,
                parts: Vec::new(),
            },
            scratch: Vec::new(),
        };
        let mut tally = Tally::default();
        let mut buffer: VecDeque<Pending> = VecDeque::new();
        let mut commit_tick =
            tokio::time::interval_at(Instant::now() + commit_interval, commit_interval);
        commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = shared.stop.clone();
        let stopped = stop.wait();
        tokio::pin!(stopped);
        let mut committer = Committer::default();
        let consumer = Arc::new(consumer);
        let mut full_since: Option<Instant> = None;

        {
            let mut stream = consumer.stream();
            loop {
                // Back-pressure. At the high-water mark, stop taking messages (they wait in
                // librdkafka's queue, which stops fetching when full); if that lasts
                // `pause_after`, pause the partitions so the consumer can keep polling without
                // receiving. Resume at half the mark (hysteresis: a pause throws away
                // librdkafka's prefetched messages, so it must not flap).
                let backlog = gate.in_use() + buffer.len();
                let high = gate.limit() + buffer_allowance;
                let full = backlog >= high;
                let mut paused = shared.paused.load(Ordering::Relaxed);
                if paused && backlog <= high / 2 && !shared.stopping.load(Ordering::Relaxed) {
                    set_paused(&consumer, &shared, false);
                    paused = false;
                }
                if full && !paused {
                    full_since.get_or_insert_with(Instant::now);
                } else {
                    full_since = None;
                }
                // With nothing buffered, take one message even when full: it waits for a slot
                // in the buffer, and that wait is what wakes this loop when a handler finishes.
                let pull = !full || paused || buffer.is_empty();
                let pause_at = full_since.map(|t| t + pause_after);

                tokio::select! {
                    biased;
                    () = &mut stopped => break,
                    permit = Arc::clone(&gate).acquire_owned(), if !buffer.is_empty() => {
                        let Ok(permit) = permit else { break };
                        if let Some(p) = buffer.pop_front() {
                            shared.buffered.store(buffer.len(), Ordering::Relaxed);
                            start(&mut *first, &job, &p.part, p.message, permit, &mut tally);
                            tally.flush(&shared);
                        }
                    }
                    next = stream.next(), if pull => match next {
                        Some(Ok(m)) => {
                            // Fast path: while slots are free and messages are ready, take them
                            // without a trip through `select!` (bounded, to stay responsive).
                            let mut m = m;
                            let mut drained = 0;
                            loop {
                                tally.received += 1;
                                let (message, part) = receiver.receive(&shared, &m);
                                drop(m);
                                let permit = if buffer.is_empty() {
                                    Arc::clone(&gate).try_acquire_owned().ok()
                                } else {
                                    None
                                };
                                let Some(permit) = permit else {
                                    buffer.push_back(Pending { message, part: Arc::clone(part) });
                                    shared.buffered.store(buffer.len(), Ordering::Relaxed);
                                    break;
                                };
                                start(&mut *first, &job, part, message, permit, &mut tally);
                                drained += 1;
                                if drained >= DRAIN {
                                    break;
                                }
                                match stream.next().now_or_never() {
                                    Some(Some(Ok(next))) => m = next,
                                    Some(Some(Err(e))) => {
                                        bump(&shared.counters.consumer_errors);
                                        shared.record_error("consume failed", &e);
                                        break;
                                    }
                                    _ => break,
                                }
                            }
                            tally.flush(&shared);
                        }
                        Some(Err(e)) => {
                            bump(&shared.counters.consumer_errors);
                            shared.record_error("consume failed", &e);
                        }
                        None => break,
                    },
                    () = sleep_until(pause_at), if pause_at.is_some() => {
                        set_paused(&consumer, &shared, true);
                        full_since = None;
                    }
                    // While paused, re-check the backlog often: handlers finishing wake nobody.
                    () = tokio::time::sleep(RECHECK), if paused => {}
                    _ = commit_tick.tick() => committer.tick(&consumer, &shared),
                }
            }

            // Stop fetching: pause everything; what is buffered stays uncommitted and is seen
            // again by the next owner.
            shared.stopping.store(true, Ordering::Release);
            set_paused(&consumer, &shared, true);
            let dropped = buffer.len();
            buffer.clear();
            shared.buffered.store(0, Ordering::Relaxed);

            // Let handlers in flight finish, up to the deadline, still polling the consumer.
            let deadline = Instant::now() + shutdown_timeout;
            while gate.in_use() > 0 && Instant::now() < deadline {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    next = stream.next() => if let Some(Err(e)) = next {
                        shared.record_error("consume failed", &e);
                    },
                }
            }
            let abandoned = gate.in_use();
            gate.close();
            drop(stream);

            // The final commit, bounded: a coordinator that is away would hold it forever.
            let deadline = deadline.max(Instant::now() + FINAL_COMMIT);
            committer.settle(deadline).await;
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
            let closed = tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            })
            .await;
            control_stop.trigger();
            shared.done.trigger();
            if let Err(e) = closed {
                return Err(KafkaError::Crashed(e.to_string()));
            }
            if let Some(failure) = lock(&shared.failure).take() {
                return Err(KafkaError::HandlerFailed(failure));
            }
            let report = ShutdownReport {
                committed,
                abandoned,
                dropped,
                commit_error,
            };
            Ok(report)
        }
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
}

/// Starts a message's handler. The first poll happens here, on the consumer task: a handler that
/// completes at once (the common fast case) costs no task spawn, no allocation and no lock. One
/// that is still pending, or failed and needs the policy, continues as its own tokio task.
fn start(
    first: &mut dyn FirstAttempt,
    job: &Arc<Job>,
    part: &Arc<PartitionState>,
    message: KafkaMessage,
    permit: Permit,
    tally: &mut Tally,
) {
    let offset = message.offset();
    // The clone is kept for retries and the dead-letter callback: two reference counts, no copy.
    match first.start(message.clone()) {
        First::Ready(Ok(Ok(()))) => {
            tally.handled += 1;
            part.tracker.finished_at_once(offset);
            drop(permit);
        }
        First::Ready(outcome) => {
            let epoch = part.tracker.dispatch(offset);
            let (job, part) = (Arc::clone(job), Arc::clone(part));
            drop(tokio::spawn(async move {
                job.complete(outcome, message, &part, epoch, permit).await;
            }));
        }
        First::Pending(rest) => {
            let epoch = part.tracker.dispatch(offset);
            let (job, part) = (Arc::clone(job), Arc::clone(part));
            drop(tokio::spawn(async move {
                let outcome = rest.await;
                job.complete(outcome, message, &part, epoch, permit).await;
            }));
        }
    }
}

impl Job {
    /// Applies the policy from the first attempt's outcome; marks the message done if it is.
    async fn complete(
        &self,
        first: Attempt,
        message: KafkaMessage,
        part: &PartitionState,
        epoch: u64,
        permit: Permit,
    ) {
        let _permit = permit;
        if self.handle(first, &message).await {
            part.tracker.finish(epoch, message.offset());
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

    /// The consumer task's cost per message, without librdkafka: `cargo test --release -p ace-std
    /// --features kafka --lib per_message_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    #[allow(clippy::cast_precision_loss, reason = "a measurement")]
    async fn per_message_cost() {
        let shared = Arc::new(Shared::new());
        let gate = Arc::new(Semaphore::new(20));
        let count: &'static std::sync::atomic::AtomicU64 = Box::leak(Box::default());
        let Handler { mut first, retry } = Handler::new(move |m: KafkaMessage| async move {
            std::hint::black_box(m.payload());
            count.fetch_add(1, Ordering::Relaxed);
            Ok::<(), std::io::Error>(())
        });
        let job = Arc::new(Job {
            shared: Arc::clone(&shared),
            handler: retry,
            retry: RetryPolicy::default(),
            after: AfterRetries::Stop,
        });
        let part = Arc::new(PartitionState::new("topic", 0));
        let (key, payload) = (b"key-123".to_vec(), vec![b'x'; 100]);
        let mut scratch = Vec::new();
        let mut tally = Tally::default();
        let n = 2_000_000i64;
        let t = std::time::Instant::now();
        for offset in 0..n {
            tally.received += 1;
            let message =
                KafkaMessage::copy_parts(&part.topic, offset, &key, &payload, &mut scratch);
            let permit = Arc::clone(&gate).try_acquire_owned().unwrap();
            start(&mut *first, &job, &part, message, permit, &mut tally);
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
            std::hint::black_box(first.start(message.clone()));
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
