//! [`KafkaConsumerManager`]: an adaptive Kafka consumer on rdkafka — handlers run concurrently
//! up to the limit ACE picks, partitions pause when handlers fall behind, and offsets are
//! committed at-least-once.
//!
//! - [`KafkaConsumerManager`] and its [`Builder`] (from [`builder(config)`](builder)): brokers,
//!   topics, group id, extra rdkafka settings, an async handler; [`start`] and [`shutdown`].
//! - [`KafkaMessage`]: what a handler receives (`payload`, `key`, `topic`, `offset`, … as on
//!   [`rdkafka::Message`]; cheap to clone).
//! - [`Ordering`]: which messages may run at the same time (by default, one at a time per key).
//! - [`RetryPolicy`], [`HandlerFailure`], [`HandlerError`]: what happens when a handler fails.
//! - [`KafkaStats`], [`ShutdownReport`]; [`BuildError`], [`StartError`], [`StopError`].
//!
//! # How it works
//!
//! **Concurrency.** Each message runs its handler holding one permit of an
//! [`ace_core::Semaphore`], whose limit ACE's [`ControlLoop`] moves on the same signals as the
//! async [`Manager`](crate::Manager)'s:
//! - **the handlers' latency** (on by default, as long as the config's `latency_tolerance` is
//!   set; [`time_tasks`](Builder::time_tasks) turns it off): each attempt's run time is a sample
//!   of the latency epochs (not the wait for a slot, nor a retry's backoff), and each failed
//!   attempt is back-pressure, so the limit finds the knee of a downstream that slows down
//!   past some number of concurrent handlers, and stops there;
//! - **the default signals** (on by default; [`default_signals`](Builder::default_signals)):
//!   CPU and memory (cgroup aware) and the tokio executor's lag;
//! - the [`source`](Builder::source)s you add;
//! - the consumer's own **lag**, which is demand: a growing lag with a healthy downstream
//!   argues for more handlers, never fewer.
//!
//! A shrink takes effect as permits come back (nothing is cancelled).
//! [`fleet`](Builder::fleet) (feature `redis`) shares one limit among consumers: a consumer
//! never holds more handlers than its grant. The control loop's task is panic-guarded.
//!
//! **Ordering.** By default ([`Ordering::Key`]) messages with the same key in the same partition
//! run one at a time, in offset order, while different keys run concurrently;
//! [`ordering`](Builder::ordering) picks one at a time per partition, or no
//! order at all. A message whose key is busy waits in the buffer behind it.
//!
//! **Back-pressure.** Messages received while every slot is taken (or their key is busy) wait in a
//! buffer. When handlers in flight plus waiting messages reach the high-water mark — the limit
//! plus the buffer allowance ([`buffer`](Builder::buffer), default 256) — the
//! manager stops taking messages (they wait in librdkafka's queue, which stops fetching when
//! full). If the backlog stays high for
//! [`pause_after`](Builder::pause_after) (default 1 s) — handlers finishing
//! one at a time do not reset that clock; only a backlog that drains does — every assigned
//! partition is paused. They resume while a reserve is still waiting (the limit's worth, at most
//! half the buffer), so the slots keep working while librdkafka fetches again. The delay keeps a
//! busy consumer from flapping (each pause throws away librdkafka's prefetched messages): a burst
//! that fast handlers absorb in milliseconds never pauses. The consumer keeps polling while
//! paused, so the group does not evict it after `max.poll.interval.ms`, and a partition assigned
//! during a pause starts paused.
//!
//! **Fairness between partitions.** Under key or partition order, librdkafka's batches of one
//! partition could fill the buffer with messages waiting behind that partition's busy keys
//! while the other partitions' keys sit idle. While slots are free and every waiting message is
//! behind a busy key, the manager keeps taking past the high-water mark, and a partition whose
//! waiting messages reach the mark is paused on its own (counted in
//! [`KafkaStats::partition_holds`]) until half of them have drained, so every partition is
//! served from the start and as many handlers run as there are keys with work.
//!
//! **Fetching.** The manager sets `statistics.interval.ms=1000` (for the lag),
//! `fetch.queue.backoff.ms=50` and `fetch.wait.max.ms=50`. When librdkafka's queue passes its
//! thresholds (which back-pressure makes routine), librdkafka's default stops fetching for a
//! whole second, and a consumer that drains the queue meanwhile sits idle. A partition resumed
//! after a pause is fetched again only once the fetch request in flight returns, which a broker
//! holds up to `fetch.wait.max.ms` (default 500) while the other partitions have nothing new: at
//! 50 ms a resume costs at most 50 ms of idle, and an idle consumer sends 20 fetch requests a
//! second per broker instead of 2. Override any of them with [`set`](Builder::set).
//!
//! **Handlers.** A handler's first poll runs on the consumer's task, so a handler that completes
//! at once costs no task spawn and no allocation (its future is polled in a box kept from one
//! message to the next); one that is still pending continues as its own tokio task (and
//! runs on any worker). Put heavy CPU work in `tokio::task::spawn_blocking`, or at least after an
//! `.await`, so it does not hold up receiving.
//!
//! **Offsets: at-least-once.** Handlers finish out of order; for each partition the manager
//! commits only the offset below which every handler has finished (a message whose handler is
//! running, failed, or was never started is never committed past). It commits every
//! [`commit_interval`](Builder::commit_interval) (default 1 s) if anything
//! moved since the last successful commit, when partitions are revoked (after waiting up to
//! [`revoke_timeout`](Builder::revoke_timeout) for their handlers, default
//! 5 s; their waiting messages are dropped for the next owner), and at shutdown (waiting
//! at most the rest of the shutdown timeout, and at least 10 s). Commits are synchronous, so a
//! refused one is counted in [`KafkaStats::commit_errors`] and made again at the next tick
//! (librdkafka does not report asynchronous manual commits to rdkafka, rust-rdkafka #856); the
//! periodic and final ones run on tokio's blocking pool, one at a time, so a coordinator that is
//! away never holds up the executor. After a rebalance or a restart, messages past the last
//! commit are delivered again: handlers must tolerate duplicates.
//!
//! **Failures.** A handler that returns an error or panics is retried under the
//! [`RetryPolicy`] (default: 3 retries, backoff 100 ms doubling up to 5 s). If it still fails:
//! - by default the manager **stops**: it stops fetching, lets the other handlers finish, commits
//!   up to (not including) the failed message, leaves the group, and
//!   [`shutdown`]/[`stopped`](KafkaConsumerManager::stopped) report
//!   [`StopError::HandlerFailed`]. Restarting redelivers the message.
//! - with [`dead_letter`](Builder::dead_letter), the message and its
//!   [`HandlerFailure`] go to your callback (to produce it to a dead-letter topic, say); once the
//!   callback returns `Ok` the message counts as done and is committed past. A dead-letter
//!   callback that fails or panics stops the manager as above.
//!
//! **Lag.** With `statistics.interval.ms` (the manager sets 1000 unless you do), librdkafka reports
//! per-partition offsets. For each assigned partition the lag is the end of the log minus the
//! committed offset, clamped at 0, and the sum feeds [`Signals::kafka_lag`]. The end is the
//! higher of the high watermark and the next fetch offset, so a broker that reports a stale high
//! watermark (Tansu does) cannot make it negative.
//!
//! # Example
//!
//! ```no_run
//! use ace_std::kafka::{KafkaConsumerManager, KafkaMessage};
//! use ace_std::AimdConfig;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = AimdConfig { min_limit: 4, max_limit: 64, initial_limit: 8, ..AimdConfig::default() };
//! let manager = KafkaConsumerManager::builder(config)
//!     .brokers("127.0.0.1:9092")
//!     .topic("orders")
//!     .group_id("order-workers")
//!     .set("auto.offset.reset", "earliest")
//!     .handler(|msg: KafkaMessage| async move {
//!         let _payload = msg.payload().unwrap_or_default();
//!         Ok::<(), std::io::Error>(())
//!     })
//!     .build()?;
//! manager.start()?;
//! // ... later:
//! let report = manager.shutdown().await?;
//! println!("committed {:?}", report.committed);
//! # Ok(())
//! # }
//! # fn main() { drop(run()); }
//! ```
//!
//! [`start`]: KafkaConsumerManager::start
//! [`shutdown`]: KafkaConsumerManager::shutdown
//! [`ControlLoop`]: ace_core::ControlLoop
//! [`AimdConfig`]: ace_core::AimdConfig
//! [`Signals::kafka_lag`]: ace_core::Signals::kafka_lag
mod builder;
mod commit;
mod context;
mod control;
mod dispatch;
mod error;
mod fairness;
mod handler;
mod message;
mod options;
mod pressure;
mod pump;
mod report;
mod retry;
mod scheduler;
mod tracker;

use std::fmt;
use std::sync::atomic::Ordering as Atomic;
use std::sync::{Arc, Mutex};

use std::panic::AssertUnwindSafe;

use ace_core::{AimdConfig, Semaphore, Usage};
use ace_tokio::TokioRuntime;
use futures_lite::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::task::JoinHandle;

use self::context::{Context, Shared};
use self::dispatch::Timing;
use self::handler::Handler;
use self::options::Options;
use self::pump::Pump;
use crate::control::{LoopHandle, Wiring};
use crate::stats::DecisionCounters;
use crate::util::{lock, panic_message};

pub use self::builder::Builder;
pub use self::error::{BoxError, BuildError, HandlerError, HandlerFailure, StartError, StopError};
pub use self::message::KafkaMessage;
pub use self::report::{KafkaStats, ShutdownReport};
pub use self::retry::RetryPolicy;
pub use self::scheduler::Ordering;

/// The old name of [`Builder`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `kafka::Builder`, from `builder(config)`"
)]
pub type KafkaConsumerManagerBuilder = Builder;

/// A builder of a [`KafkaConsumerManager`] on `config` (the AIMD config of the limit on
/// handlers in flight); the same as [`KafkaConsumerManager::builder`].
pub fn builder(config: AimdConfig) -> Builder {
    Builder::new(config)
}

struct Parts {
    client: ClientConfig,
    topics: Vec<String>,
    wiring: Wiring,
    handler: Handler,
    options: Options,
    /// A limit set by hand before the start.
    limit: Option<usize>,
}

enum State {
    Built(Box<Parts>),
    Running {
        task: JoinHandle<Result<ShutdownReport, StopError>>,
        control: LoopHandle,
    },
    Finished,
}

/// Stops the control loop and marks the consumer done when the consumer task ends, however it
/// ends (a panic included), so `stopped` and `shutdown` return.
struct TaskDone {
    control: LoopHandle,
    shared: Arc<Shared>,
}

impl Drop for TaskDone {
    fn drop(&mut self) {
        self.control.stop();
        self.shared.done.trigger();
    }
}

/// An adaptive Kafka consumer: see the [module docs](self) for how it works.
///
/// Build one with [`builder`](Self::builder), [`start`](Self::start) it inside a tokio runtime,
/// and [`shutdown`](Self::shutdown) it to commit and leave the group. Dropping it without
/// `shutdown` stops it too, in the background.
pub struct KafkaConsumerManager {
    shared: Arc<Shared>,
    /// The limit on handlers in flight: one permit per running handler.
    gate: Arc<Semaphore>,
    counters: Arc<DecisionCounters>,
    /// `(min_limit, max_limit)`, for [`set_limit`](Self::set_limit).
    bounds: (usize, usize),
    state: Mutex<State>,
}

impl fmt::Debug for KafkaConsumerManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*lock(&self.state) {
            State::Built(_) => "built",
            State::Running { .. } => "running",
            State::Finished => "finished",
        };
        f.debug_struct("KafkaConsumerManager")
            .field("state", &state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl KafkaConsumerManager {
    /// A builder on `config`, the AIMD config of the limit on handlers in flight
    /// ([`AimdConfig::default`] for the defaults).
    pub fn builder(config: AimdConfig) -> Builder {
        Builder::new(config)
    }

    /// Connects, subscribes, and starts consuming and the control loop, on the current tokio
    /// runtime. Returns at once: the group join happens in the background.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime, [`StartError::AlreadyStarted`] on a
    /// second call, [`StartError::Client`] if librdkafka cannot create the consumer or subscribe.
    pub fn start(&self) -> Result<(), StartError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut state = lock(&self.state);
        let parts = match std::mem::replace(&mut *state, State::Finished) {
            State::Built(parts) => parts,
            other => {
                *state = other;
                return Err(StartError::AlreadyStarted);
            }
        };
        let Parts {
            client,
            topics,
            wiring,
            handler,
            options,
            limit,
        } = *parts;
        let _enter = handle.enter();
        let consumer: StreamConsumer<Context> = StreamConsumer::from_config_and_context(
            &client,
            Context {
                shared: Arc::clone(&self.shared),
                revoke_timeout: options.revoke_timeout.unwrap_or_default(),
            },
        )?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        // librdkafka reads a name starting with `^` as a pattern, which may match many topics.
        let one_topic = matches!(topics[..], [topic] if !topic.starts_with('^'));

        let timing = wiring.latency().map(|recorder| {
            Timing::new(
                Arc::clone(recorder),
                Arc::clone(&self.counters),
                Arc::clone(&self.gate),
            )
        });
        let runtime = TokioRuntime::from_handle(handle.clone());
        let control = control::spawn(wiring, runtime, &self.shared, &self.gate);
        if let Some(limit) = limit {
            control.set_limit(limit);
        }
        let pump = Pump {
            consumer,
            one_topic,
            shared: Arc::clone(&self.shared),
            gate: Arc::clone(&self.gate),
            handler,
            options,
            timing,
            control: control.clone(),
        };
        let done = TaskDone {
            control: control.clone(),
            shared: Arc::clone(&self.shared),
        };
        let task = handle.spawn(async move {
            let done = done;
            let result = AssertUnwindSafe(pump.run()).catch_unwind().await;
            drop(done);
            result.unwrap_or_else(|panic| {
                let message = panic_message(&*panic);
                tracing::error!(target: "ace::kafka", "the consumer task panicked: {message}");
                Err(StopError::Crashed(message))
            })
        });
        *state = State::Running { task, control };
        Ok(())
    }

    /// Stops gracefully: stops fetching (pauses every partition), lets handlers in flight finish
    /// (up to the [`shutdown_timeout`](Builder::shutdown_timeout)), commits
    /// what is done, and leaves the group.
    ///
    /// # Errors
    ///
    /// [`StopError::HandlerFailed`] if the manager had stopped (or now stops) on a handler failure
    /// under the stop policy; [`StopError::NotRunning`] if it was never started (it cannot be
    /// started after this call); [`StopError::Shutdown`] if it was shut down already;
    /// [`StopError::Crashed`] if its task panicked.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves the stop running in the background, and a
    /// second call returns [`StopError::Shutdown`].
    pub async fn shutdown(&self) -> Result<ShutdownReport, StopError> {
        let task = match std::mem::replace(&mut *lock(&self.state), State::Finished) {
            State::Running { task, .. } => task,
            State::Built(_) => return Err(StopError::NotRunning),
            State::Finished => return Err(StopError::Shutdown),
        };
        self.shared.stop.trigger();
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StopError::Crashed(e.to_string())),
        }
    }

    /// Completes once the manager has stopped by itself (a handler failure under the stop
    /// policy) or through [`shutdown`](Self::shutdown); call `shutdown` then for the outcome.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn stopped(&self) {
        self.shared.done.wait().await;
    }

    /// The limit on handlers in flight now.
    pub fn limit(&self) -> usize {
        self.gate.limit()
    }

    /// Sets the limit on handlers in flight by hand, clamped to `[min_limit, max_limit]`;
    /// returns the limit set. The control loop continues from it with what it learned (the
    /// latency baseline, floor and averages: see `Controller::override_limit`). A lower limit
    /// takes effect as handlers finish (none is cancelled). With a fleet budget the limit in
    /// force is at most the grant.
    pub fn set_limit(&self, limit: usize) -> usize {
        let (min, max) = self.bounds;
        let limit = limit.clamp(min, max);
        match &mut *lock(&self.state) {
            State::Built(parts) => {
                self.gate.set_limit(limit);
                parts.limit = Some(limit);
            }
            // Through the loop's target: a fleet budget's grant still bounds it.
            State::Running { control, .. } => control.set_limit(limit),
            State::Finished => self.gate.set_limit(limit),
        }
        limit
    }

    /// True once [`shutdown`](Self::shutdown) has been called (or the manager began to stop
    /// by itself, on a handler failure under the stop policy).
    pub fn is_shut_down(&self) -> bool {
        self.shared.stop.is_triggered() || self.shared.done.is_triggered()
    }

    /// True while the assigned partitions are paused.
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Atomic::Relaxed)
    }

    /// A snapshot of the state and counters.
    pub fn stats(&self) -> KafkaStats {
        let c = &self.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Atomic::Relaxed);
        let usage = Usage {
            limit: self.gate.limit(),
            in_flight: self.gate.in_use(),
            waiting: self.shared.buffered.load(Atomic::Relaxed),
        };
        let (handled, failed) = (get(&c.handled), get(&c.failed));
        KafkaStats {
            core: self
                .counters
                .snapshot(usage, handled.saturating_add(failed), failed),
            paused: self.is_paused(),
            lag: self.shared.lag(),
            assigned: lock(&self.shared.partitions).len(),
            received: get(&c.received),
            handled,
            retried: get(&c.retried),
            dead_lettered: get(&c.dead_lettered),
            pauses: get(&c.pauses),
            resumes: get(&c.resumes),
            commits: get(&c.commits),
            commit_errors: get(&c.commit_errors),
            consumer_errors: get(&c.consumer_errors),
            rebalances: get(&c.rebalances),
            revoked_dropped: get(&c.revoked_dropped),
            redelivered: get(&c.redelivered),
            partition_holds: get(&c.holds),
            last_error: lock(&self.shared.last_error).clone(),
        }
    }
}

impl Drop for KafkaConsumerManager {
    fn drop(&mut self) {
        // A running consumer stops itself gracefully in the background.
        self.shared.stop.trigger();
    }
}
