//! The consumer task's loop: receive, queue by lane, hand to [`dispatch`](super::dispatch) under
//! the gate, pause and resume as [`pressure`](super::pressure) says, commit through
//! [`commit`](super::commit); and the graceful stop.
//!
//! [`Pump::run`] is one `select!` over the task's events; each event is a small method of
//! [`Task`], the task's state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{Permit, Semaphore};
use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, MessageStream, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::commit::Committer;
use super::context::{bump, Context, PartitionState, Shared};
use super::dispatch::{Dispatch, Job, Origin, Pending, Tally, Timing};
use super::error::StopError;
use super::fairness;
use super::handler::Handler;
use super::message::Arena;
use super::pressure::{Backlog, Pressure, Verdict};
use super::scheduler::{Lane, Lanes, Scheduler};
use super::{KafkaMessage, Options, ShutdownReport};
use crate::control::LoopHandle;
use crate::util::lock;

/// Messages taken in one go on the fast path (free slots, messages ready).
// 256 trivial messages take ~0.1 ms: the stop signal, the commit tick and back-pressure are
// still checked often, and a pass through `select!` is paid once per 256.
const DRAIN: usize = 256;

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the consumer task needs, moved into it at start.
pub(crate) struct Pump {
    pub(crate) consumer: StreamConsumer<Context>,
    /// Subscribed to one topic by name: every message comes from it.
    pub(crate) one_topic: bool,
    pub(crate) shared: Arc<Shared>,
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) handler: Handler,
    pub(crate) options: Options,
    /// The handlers' side of the latency signal, when they are timed.
    pub(crate) timing: Option<Timing>,
    /// The control loop, stopped once the consumer is done.
    pub(crate) control: LoopHandle,
}

/// The consumer task's cache of assigned partitions, refreshed when a rebalance changes them.
struct Lookup {
    generation: u64,
    parts: Vec<Arc<PartitionState>>,
}

impl Lookup {
    /// The state of `m`'s partition; `None` for a partition not assigned (a message fetched
    /// before its partition was revoked, which its next owner handles). With `one_topic` the
    /// topic name is not compared (reading it from librdkafka costs a `strlen` and a UTF-8
    /// check per message).
    fn get(
        &mut self,
        shared: &Shared,
        m: &BorrowedMessage<'_>,
        one_topic: bool,
    ) -> Option<&Arc<PartitionState>> {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.parts = lock(&shared.partitions).values().cloned().collect();
            self.generation = generation;
        }
        let partition = m.partition();
        if one_topic {
            return self.parts.iter().find(|p| p.partition == partition);
        }
        let topic = m.topic();
        self.parts
            .iter()
            .find(|p| p.partition == partition && *p.topic == *topic)
    }
}

/// The consumer task's per-message state: where partitions are, and where messages are copied
/// out of librdkafka (see [`KafkaMessage::copy`]).
struct Receiver {
    lookup: Lookup,
    arena: Arena,
    one_topic: bool,
    headers: bool,
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
            one_topic,
            shared,
            gate,
            handler: Handler { first, retry },
            options,
            timing,
            control,
        } = self;
        let (done, finished) = mpsc::unbounded_channel();
        let lanes = Lanes::new(options.ordering);
        let job = Arc::new(Job {
            shared: Arc::clone(&shared),
            handler: retry,
            retry: options.retry,
            after: options.after,
            done: (!lanes.unordered()).then_some(done),
            latency: timing.as_ref().map(|t| Arc::clone(&t.recorder)),
            gate: Arc::clone(&gate),
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
                timing,
            },
            finished,
            receiver: Receiver {
                lookup: Lookup {
                    generation: u64::MAX,
                    parts: Vec::new(),
                },
                arena: Arena::default(),
                one_topic,
                headers: options.headers,
            },
            pressure: Pressure::default(),
            committer: Committer::default(),
            buffer: options.buffer,
            pause_after: options.pause_after,
            shutdown_timeout: options.shutdown_timeout,
            deadline: None,
        };

        let mut stream = consumer.stream();
        // Its own handle, so a permit waited for borrows it, not the task.
        let gate = Arc::clone(&task.gate);
        loop {
            task.purge_revoked();
            let verdict = task.back_pressure();
            tokio::select! {
                biased;
                () = &mut stopped => break,
                Some(lane) = task.finished.recv() => task.lane_finished(&gate, lane),
                permit = gate.acquire(), if task.dispatch.queue.ready() > 0 => {
                    let Ok(permit) = permit else { break };
                    task.start_ready(&gate, Some(permit));
                }
                next = stream.next(), if verdict.pull => match next {
                    Some(Ok(m)) => task.take_batch(m, &mut stream, &gate),
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
        task.finish(consumer, control, dropped, abandoned).await
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
        let mut verdict = self.pressure.decide(
            Instant::now(),
            backlog,
            self.buffer,
            self.pause_after,
            paused,
        );
        if !paused && self.starved(0) {
            // Past the mark, but slots are free and every waiting message is behind a busy
            // key: taking more (from the partitions not held) is the only way to fill them.
            verdict.pull = true;
            verdict.pause_at = None;
        }
        if verdict.resume {
            set_paused(&self.consumer, &self.shared, false);
        }
        verdict
    }

    /// The high-water mark: handlers in flight plus waiting messages that stop the taking.
    fn high(&self) -> usize {
        self.gate.limit().saturating_add(self.buffer)
    }

    /// True when keys starve the slots: slots are free, no waiting message can start, and the
    /// queue is below its bound under [`fairness`]. `spare`: permits held by the consumer task
    /// for its next message, not by a handler.
    fn starved(&self, spare: usize) -> bool {
        let assigned = self.receiver.lookup.parts.len();
        !self.dispatch.lanes.unordered()
            && self.dispatch.queue.ready() == 0
            && self.gate.in_use().saturating_sub(spare) < self.gate.limit()
            && fairness::may_exceed_the_mark(self.dispatch.queue.len(), self.high(), assigned)
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
    ///
    /// A handler that finishes at once leaves its permit for the next message (`spare`), so a
    /// batch of them takes one permit from `gate` (this task's handle on the semaphore) and
    /// gives it back once, not once per message.
    fn take_batch<'a>(
        &mut self,
        m: BorrowedMessage<'a>,
        stream: &mut MessageStream<'a, Context>,
        gate: &Semaphore,
    ) {
        self.pressure.received(Instant::now());
        let mut m = m;
        let mut spare = None;
        for taken in 1.. {
            self.take(&m, gate, &mut spare);
            drop(m);
            let held = usize::from(spare.is_some());
            let in_use = self.gate.in_use().saturating_sub(held);
            let full = in_use + self.dispatch.queue.len() >= self.high();
            if taken >= DRAIN || (full && !self.starved(held)) {
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
        drop(spare);
        self.dispatch.flush(&self.shared);
    }

    /// One message from librdkafka: started at once if nothing is ahead of it and a slot is
    /// free (the `spare` permit, or one from `gate`), else queued.
    fn take<'g>(
        &mut self,
        m: &BorrowedMessage<'_>,
        gate: &'g Semaphore,
        spare: &mut Option<Permit<'g>>,
    ) {
        self.dispatch.tally.received += 1;
        let receiver = &mut self.receiver;
        let Some(part) = receiver.lookup.get(&self.shared, m, receiver.one_topic) else {
            bump(&self.shared.counters.revoked_dropped);
            return;
        };
        if part.tracker.seen(m.offset()) {
            // Delivered again (librdkafka refetches after a pause): this one is finished,
            // running or waiting already.
            bump(&self.shared.counters.redelivered);
            return;
        }
        let message = KafkaMessage::copy(m, &part.topic, &mut receiver.arena, receiver.headers);
        // Idle queue: the lane cannot be busy, so it is computed only if the handler goes on.
        let mut lane = None;
        let free = self.dispatch.queue.is_idle()
            || self
                .dispatch
                .queue
                .can_start_now(*lane.insert(self.dispatch.lanes.of(part, &message)));
        if free {
            if let Some(permit) = reuse_or_acquire(gate, spare.take()) {
                // Copied again only for a handler that goes on (or failed): still at hand.
                let again =
                    || KafkaMessage::copy(m, &part.topic, &mut receiver.arena, receiver.headers);
                *spare = self
                    .dispatch
                    .start(part, message, again, permit, Origin::Fresh(lane));
                return;
            }
        }
        let lane = lane.unwrap_or_else(|| self.dispatch.lanes.of(part, &message));
        let epoch = part.tracker.dispatch(message.offset());
        let part = Arc::clone(part);
        if !self.dispatch.lanes.unordered() {
            let (high, assigned) = (self.high(), self.receiver.lookup.parts.len());
            fairness::queued(&self.consumer, &self.shared, &part, high, assigned);
        }
        self.dispatch.queue.push(
            lane,
            Pending {
                message,
                part,
                epoch,
            },
        );
    }

    /// Starts ready messages: with `permit` first, then while slots of `gate` (this task's
    /// handle on the semaphore) are free (bounded); a handler that finishes at once leaves its
    /// permit to the next.
    fn start_ready<'g>(&mut self, gate: &'g Semaphore, mut permit: Option<Permit<'g>>) {
        for _ in 0..DRAIN {
            let Some(p) = reuse_or_acquire(gate, permit.take()) else {
                break;
            };
            let Some((lane, pending)) = self.dispatch.queue.pop() else {
                break;
            };
            if !self.dispatch.lanes.unordered() {
                fairness::dequeued(&self.consumer, &self.shared, &pending.part, self.high());
            }
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
            // Kept for the handler's task if it goes on: two reference counts, no copy.
            let again = pending.message.clone();
            permit = self
                .dispatch
                .start(&pending.part, pending.message, || again, p, origin);
        }
        drop(permit);
        self.dispatch.flush(&self.shared);
    }

    /// A handler on its own task finished with `lane` (and maybe others since): their next
    /// messages become ready, and start if slots of `gate` are free.
    fn lane_finished(&mut self, gate: &Semaphore, lane: Lane) {
        self.dispatch.queue.release(lane);
        while let Ok(lane) = self.finished.try_recv() {
            self.dispatch.queue.release(lane);
        }
        self.start_ready(gate, None);
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
        control: LoopHandle,
        dropped: usize,
        abandoned: usize,
    ) -> Result<ShutdownReport, StopError> {
        let shared = Arc::clone(&self.shared);
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        let (committed, commit_error) = self.committer.finish(&consumer, &shared, deadline).await;

        // Leaving the group blocks (a synchronous close): do it off the executor.
        drop(self);
        let closed = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        control.stop();
        // Handlers are done: the fleet's share goes back before `shutdown` returns.
        control.leave_fleet().await;
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

/// A permit for the next handler: `spare` (left by a handler that finished at once) while the
/// gate is within its limit, else a fresh one if a slot is free. A spare held while the limit
/// was lowered below the permits in use goes back first: it pays that debt, as a release
/// would have.
#[inline]
fn reuse_or_acquire<'g>(gate: &'g Semaphore, spare: Option<Permit<'g>>) -> Option<Permit<'g>> {
    if let Some(permit) = spare {
        if gate.in_use() <= gate.limit() {
            return Some(permit);
        }
    }
    gate.try_acquire().ok()
}

fn set_paused(consumer: &StreamConsumer<Context>, shared: &Shared, paused: bool) {
    // Set the flag first: a partition assigned from now on gets the same state.
    shared.paused.store(paused, Ordering::Release);
    let result = if paused {
        match consumer.assignment() {
            Ok(assignment) => consumer.pause(&assignment),
            Err(e) => {
                shared.record_error("reading the assignment failed", &e);
                return;
            }
        }
    } else {
        // A partition held for its share of the buffer stays paused until it drains.
        consumer.resume(&fairness::unheld(shared))
    };
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
