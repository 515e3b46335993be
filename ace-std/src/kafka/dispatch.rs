//! Starting handlers: the first poll on the consumer task, the rest (retries, the dead-letter
//! callback, the stop policy) on a task of its own; and what a handler's end frees.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ace_core::{DetachedPermit, LatencyRecorder, Permit, Semaphore};
use tokio::sync::mpsc;

use super::context::{bump, PartitionState, Shared};
use super::error::{HandlerError, HandlerFailure};
use super::handler::{Attempt, CatchUnwind, First, FirstAttempt, HandlerFn};
use super::retry::{AfterRetries, RetryPolicy};
use super::scheduler::{Lane, Lanes, Scheduler};
use super::KafkaMessage;
use crate::stats::{DecisionCounters, LATENCY_SAMPLES_PER_CYCLE};
use crate::util::{panic_message, stripe};

/// A message received and waiting for its turn; the tracker already holds it as unfinished.
pub(super) struct Pending {
    pub(super) message: KafkaMessage,
    pub(super) part: Arc<PartitionState>,
    pub(super) epoch: u64,
}

/// Where a message stands when its handler starts.
#[derive(Clone, Copy)]
pub(super) enum Origin {
    /// Started as it was received: the tracker has not seen it, and its lane is free (known
    /// already, or computed only if the handler does not finish at once).
    Fresh(Option<Option<Lane>>),
    /// Started from the queue: the tracker holds it (`epoch`), and its lane is busy with it.
    Queued { lane: Option<Lane>, epoch: u64 },
}

/// Counts kept by the consumer task and added to the shared counters once per batch, not once
/// per message.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) received: u64,
    pub(super) handled: u64,
}

impl Tally {
    pub(super) fn flush(&mut self, shared: &Shared) {
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

/// What every handler task shares.
pub(super) struct Job {
    pub(super) shared: Arc<Shared>,
    pub(super) handler: HandlerFn,
    pub(super) retry: RetryPolicy,
    pub(super) after: AfterRetries,
    /// Where a handler that finished on its own task reports its lane (none when unordered).
    pub(super) done: Option<mpsc::UnboundedSender<Lane>>,
    /// The latency signal's recorder, when handlers are timed.
    pub(super) latency: Option<Arc<LatencyRecorder>>,
    /// The limit on handlers in flight, whose permits the handlers' own tasks hold.
    pub(super) gate: Arc<Semaphore>,
}

/// The permit of a handler on its own task: returned when the task ends, however it ends (a
/// borrowed permit detached, so the consumer task's fast path clones no `Arc` per message).
struct Held<'a> {
    gate: &'a Semaphore,
    permit: Option<DetachedPermit>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gate.release_detached(permit);
        }
    }
}

/// The latency signal's view of the handlers, as the async `Manager` gives it: each admission
/// says whether it reached the limit (demand), and each attempt of a timed message is one
/// sample (its run time, not its wait for a slot or a retry's backoff) or, if it failed, one
/// back-pressure event.
pub(super) struct Timing {
    pub(super) recorder: Arc<LatencyRecorder>,
    /// Sets which admissions are timed (all of them, until a cycle sees more than enough).
    pub(super) counters: Arc<DecisionCounters>,
    pub(super) gate: Arc<Semaphore>,
    /// Admissions so far.
    pub(super) seq: u64,
    /// The sampling cycle (`DecisionCounters::cycle`), and the admissions timed in it.
    pub(super) cycle: (u64, u64),
    /// Admissions not timed on top of the counters' mask: one more bit per
    /// [`LATENCY_SAMPLES_PER_CYCLE`] timed in the cycle. The mask is set once a cycle, from the
    /// last one's count: until then (seconds, at the start), a consumer taking a million
    /// messages a second would read the clock twice for each.
    pub(super) extra: u64,
    /// Admissions not yet told to the recorder, and whether one of them took the last free
    /// slot: told once per batch ([`flush`](Self::flush)), one atomic add rather than one per
    /// message.
    admissions: (u32, bool),
}

impl Timing {
    pub(super) fn new(
        recorder: Arc<LatencyRecorder>,
        counters: Arc<DecisionCounters>,
        gate: Arc<Semaphore>,
    ) -> Self {
        Self {
            recorder,
            counters,
            gate,
            seq: 0,
            cycle: (0, 0),
            extra: 0,
            admissions: (0, false),
        }
    }

    /// Tells the recorder the admissions counted since the last flush.
    fn flush(&mut self) {
        let (count, reached) = std::mem::take(&mut self.admissions);
        if count > 0 {
            self.recorder.record_admissions_in(stripe(), count, reached);
        }
    }

    /// One admission (its permit held): returns when its first attempt starts, if it is timed.
    fn admit(&mut self) -> Option<Instant> {
        let (count, reached) = &mut self.admissions;
        *count += 1;
        *reached |= self.gate.in_use() >= self.gate.limit();
        if *count == u32::MAX {
            self.flush();
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let cycle = self.counters.cycle();
        if cycle != self.cycle.0 {
            (self.cycle, self.extra) = ((cycle, 0), 0);
        }
        if !self.counters.sampled_within(seq, self.extra) {
            return None;
        }
        self.cycle.1 += 1;
        if self.cycle.1 % LATENCY_SAMPLES_PER_CYCLE == 0 {
            self.extra = self.extra << 1 | 1;
        }
        Some(Instant::now())
    }
}

/// Records one attempt that began at `started` (if it was timed): a sample if it succeeded,
/// back-pressure if not.
fn record_attempt(recorder: Option<&LatencyRecorder>, started: Option<Instant>, ok: bool) {
    if let (Some(recorder), Some(started)) = (recorder, started) {
        if ok {
            recorder.record_in(stripe(), started.elapsed());
        } else {
            recorder.record_error_in(stripe());
        }
    }
}

/// The part of the consumer task's state that starting a handler touches.
pub(super) struct Dispatch {
    pub(super) first: Box<dyn FirstAttempt>,
    pub(super) job: Arc<Job>,
    pub(super) lanes: Lanes,
    pub(super) queue: Scheduler<Pending>,
    pub(super) tally: Tally,
    /// `None` when handlers are not timed.
    pub(super) timing: Option<Timing>,
}

impl Dispatch {
    /// Adds what was counted on the consumer task since the last flush (messages received and
    /// handled, admissions) to the shared counters: once per batch of messages.
    pub(super) fn flush(&mut self, shared: &Shared) {
        self.tally.flush(shared);
        if let Some(timing) = &mut self.timing {
            timing.flush();
        }
    }

    /// Starts a message's handler. The first poll happens here, on the consumer task: a handler
    /// that completes at once (the common fast case) costs no task spawn, no allocation and no
    /// lock, and leaves its lane free. One that is still pending, or failed and needs the
    /// policy, continues as its own tokio task, its lane busy until it ends.
    ///
    /// The handler takes `message`; `again` makes another of it only for that task (retries,
    /// the dead-letter callback), so the fast case clones nothing.
    ///
    /// Returns `permit` when the handler finished at once: the caller may start the next
    /// message under it rather than release it and take another (two atomic operations per
    /// message saved), as long as the gate is not over its limit.
    #[must_use = "the permit of a handler that finished at once is returned to be reused or dropped"]
    pub(super) fn start<'g>(
        &mut self,
        part: &Arc<PartitionState>,
        message: KafkaMessage,
        again: impl FnOnce() -> KafkaMessage,
        permit: Permit<'g>,
        origin: Origin,
    ) -> Option<Permit<'g>> {
        let offset = message.offset();
        let started = self.timing.as_mut().and_then(Timing::admit);
        let rest = match self.first.start(message) {
            First::Ready(Ok(Ok(()))) => {
                let recorder = self.timing.as_ref().map(|t| &*t.recorder);
                record_attempt(recorder, started, true);
                self.tally.handled += 1;
                match origin {
                    Origin::Fresh(_) => part.tracker.finished_at_once(offset),
                    Origin::Queued { lane, epoch } => {
                        part.tracker.finish(epoch, offset);
                        if let Some(lane) = lane {
                            self.queue.release(lane);
                        }
                    }
                }
                return Some(permit);
            }
            First::Ready(outcome) => Ok(outcome),
            First::Pending(rest) => Err(rest),
        };
        let message = again();
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
        let (job, part, permit) = (Arc::clone(&self.job), Arc::clone(part), permit.detach());
        drop(tokio::spawn(async move {
            let held = Held {
                gate: &job.gate,
                permit: Some(permit),
            };
            let outcome = match rest {
                Ok(outcome) => outcome,
                Err(rest) => rest.await,
            };
            job.complete(outcome, started, message, &part, epoch, held, lane)
                .await;
        }));
        None
    }
}

impl Job {
    /// Applies the policy from the first attempt's outcome; marks the message done if it is,
    /// then frees its slot and its lane. A message that failed under the stop policy keeps its
    /// lane: nothing behind it in its key may run (the manager is stopping anyway).
    #[allow(
        clippy::too_many_arguments,
        reason = "what one handler's task owns, moved in once"
    )]
    async fn complete(
        &self,
        first: Attempt,
        started: Option<Instant>,
        message: KafkaMessage,
        part: &PartitionState,
        epoch: u64,
        permit: Held<'_>,
        lane: Option<Lane>,
    ) {
        let done = self.handle(first, started, &message).await;
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

    /// Runs the retry policy from the first attempt's outcome (the first attempt began at
    /// `started`, if timed); true if the message counts as done.
    async fn handle(
        &self,
        first: Attempt,
        started: Option<Instant>,
        message: &KafkaMessage,
    ) -> bool {
        let timed = started.is_some();
        let mut attempts = 0u32;
        let mut outcome = Some(first);
        loop {
            attempts += 1;
            let (attempt, began) = match outcome.take() {
                Some(o) => (o, started),
                None => {
                    let began = timed.then(Instant::now);
                    (CatchUnwind((self.handler)(message.clone())).await, began)
                }
            };
            let ok = matches!(attempt, Ok(Ok(())));
            record_attempt(self.latency.as_deref(), began, ok);
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
    use crate::kafka::handler::Handler;
    use ace_core::Semaphore;

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
            latency: None,
            gate: Arc::clone(&gate),
        });
        let mut dispatch = Dispatch {
            first,
            job,
            lanes: Lanes::new(super::super::Ordering::Key),
            queue: Scheduler::default(),
            tally: Tally::default(),
            timing: None,
        };
        let part = Arc::new(PartitionState::new("topic", 0));
        let (key, payload) = (b"key-123".to_vec(), vec![b'x'; 100]);
        let mut arena = crate::kafka::message::Arena::default();
        let n = 2_000_000i64;
        let t = std::time::Instant::now();
        for offset in 0..n {
            dispatch.tally.received += 1;
            let message = KafkaMessage::copy_parts(&part.topic, offset, &key, &payload, &mut arena);
            let permit = gate.try_acquire().unwrap();
            drop(dispatch.start(
                &part,
                message,
                || unreachable!(),
                permit,
                Origin::Fresh(None),
            ));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{ns:.1} ns per message, of which:");
        assert_eq!(part.tracker.committable(), Some(n));
        let t = std::time::Instant::now();
        for offset in 0..n {
            let message = KafkaMessage::copy_parts(&part.topic, offset, &key, &payload, &mut arena);
            std::hint::black_box(&message);
        }
        println!(
            "  copy + drop {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let t = std::time::Instant::now();
        for _ in 0..n {
            let permit = gate.try_acquire().unwrap();
            std::hint::black_box(&permit);
        }
        println!(
            "  permit {:.1} ns",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let message = KafkaMessage::copy_parts(&part.topic, 0, &key, &payload, &mut arena);
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
