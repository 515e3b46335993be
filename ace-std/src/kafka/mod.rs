//! [`KafkaConsumerManager`]: an adaptive Kafka consumer on rdkafka — handlers run concurrently
//! up to the limit ACE picks, partitions pause when handlers fall behind, and offsets are
//! committed at-least-once.
//!
//! - [`KafkaConsumerManager`] and its [`KafkaConsumerManagerBuilder`]: brokers, topics, group id,
//!   extra rdkafka settings, an async handler, an [`AimdConfig`]; [`start`] and [`shutdown`].
//! - [`KafkaMessage`]: what a handler receives (`payload`, `key`, `topic`, `offset`, … as on
//!   [`rdkafka::Message`]; cheap to clone).
//! - [`Ordering`]: which messages may run at the same time (by default, one at a time per key).
//! - [`RetryPolicy`], [`HandlerFailure`], [`HandlerError`]: what happens when a handler fails.
//! - [`KafkaStats`], [`ShutdownReport`]; [`BuildError`], [`StartError`], [`StopError`].
//!
//! # How it works
//!
//! **Concurrency.** Each message runs its handler holding one permit of an
//! [`ace_core::Semaphore`], whose limit ACE's [`ControlLoop`] moves every `adjustment_interval`
//! from the [`source`](KafkaConsumerManagerBuilder::source)s you add (CPU, memory, …) plus
//! the consumer's own lag, which is demand: a growing lag with a healthy system argues for more
//! handlers, never fewer. A shrink takes effect as permits come back (nothing is cancelled).
//!
//! **Ordering.** By default ([`Ordering::Key`]) messages with the same key in the same partition
//! run one at a time, in offset order, while different keys run concurrently;
//! [`ordering`](KafkaConsumerManagerBuilder::ordering) picks one at a time per partition, or no
//! order at all. A message whose key is busy waits in the buffer behind it.
//!
//! **Back-pressure.** Messages received while every slot is taken (or their key is busy) wait in a
//! buffer. When handlers in flight plus waiting messages reach the high-water mark — the limit
//! plus the buffer allowance ([`buffer`](KafkaConsumerManagerBuilder::buffer), default 256) — the
//! manager stops taking messages (they wait in librdkafka's queue, which stops fetching when
//! full). If the backlog stays high for
//! [`pause_after`](KafkaConsumerManagerBuilder::pause_after) (default 1 s) — handlers finishing
//! one at a time do not reset that clock; only a backlog that drains does — every assigned
//! partition is paused. They resume while a reserve is still waiting (the limit's worth, at most
//! half the buffer), so the slots keep working while librdkafka fetches again. The delay keeps a
//! busy consumer from flapping (each pause throws away librdkafka's prefetched messages): a burst
//! that fast handlers absorb in milliseconds never pauses. The consumer keeps polling while
//! paused, so the group does not evict it after `max.poll.interval.ms`, and a partition assigned
//! during a pause starts paused.
//!
//! **Fetching.** The manager sets `statistics.interval.ms=1000` (for the lag) and
//! `fetch.queue.backoff.ms=50`: when librdkafka's queue passes its thresholds (which back-pressure
//! makes routine), librdkafka's default stops fetching for a whole second, and a consumer that
//! drains the queue meanwhile sits idle. Override either with
//! [`set`](KafkaConsumerManagerBuilder::set).
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
//! [`commit_interval`](KafkaConsumerManagerBuilder::commit_interval) (default 1 s) if anything
//! moved since the last successful commit, when partitions are revoked (after waiting up to
//! [`revoke_timeout`](KafkaConsumerManagerBuilder::revoke_timeout) for their handlers, default
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
//! - with [`dead_letter`](KafkaConsumerManagerBuilder::dead_letter), the message and its
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
//! let manager = KafkaConsumerManager::builder()
//!     .brokers("127.0.0.1:9092")
//!     .topic("orders")
//!     .group_id("order-workers")
//!     .set("auto.offset.reset", "earliest")
//!     .config(AimdConfig { min_limit: 4, max_limit: 64, initial_limit: 8, ..AimdConfig::default() })
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

mod context;
mod error;
mod handler;
mod message;
mod pump;
mod retry;
mod scheduler;
mod tracker;

use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering as Atomic;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{
    AimdConfig, ConfigError, ConfigRule, ControlLoop, Controller, LimitTarget, Semaphore,
    SignalError, SignalSource, Signals, Usage,
};
use ace_tokio::TokioRuntime;
use rdkafka::config::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::task::JoinHandle;

use self::context::{lock, Context, Shared};
use self::pump::Pump;
use crate::control::{loop_options_methods, LoopOptions, Sinks};
use crate::signals::Merge;
use crate::stats::{DecisionCounters, Stats};
use crate::util::clamp_to_permits;

pub use self::error::{BoxError, BuildError, HandlerError, HandlerFailure, StartError, StopError};
use self::handler::Handler;
pub use self::message::KafkaMessage;
pub use self::retry::RetryPolicy;
use self::retry::{AfterRetries, DeadLetterFn};
pub use self::scheduler::Ordering;

/// The control loop's source: the user's sources, plus the consumer lag.
///
/// A failing user source must not cost the lag reading: [`Merge`] reports it (through the sink,
/// just before that cycle's decision) and reads it as absent.
struct KafkaSignals {
    user: Merge<TokioRuntime>,
    shared: Arc<Shared>,
}

impl SignalSource for KafkaSignals {
    async fn collect(&mut self) -> Result<Signals, SignalError> {
        let mut signals = self.user.collect().await?;
        signals.merge(&Signals {
            kafka_lag: self.shared.lag(),
            ..Signals::default()
        });
        Ok(signals)
    }
}

/// The control loop's target: the gate, with buffered messages reported as waiting (demand).
struct KafkaTarget {
    gate: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl LimitTarget for KafkaTarget {
    fn set_limit(&self, limit: usize) {
        LimitTarget::set_limit(&*self.gate, limit);
    }

    fn usage(&self) -> Usage {
        Usage {
            limit: self.gate.limit(),
            in_flight: self.gate.in_use(),
            waiting: self.shared.buffered.load(Atomic::Relaxed),
        }
    }
}

/// Builds a [`KafkaConsumerManager`]; from [`KafkaConsumerManager::builder`].
///
/// Required: [`brokers`](Self::brokers), at least one [`topic`](Self::topic), a
/// [`group_id`](Self::group_id) and a [`handler`](Self::handler). Everything else has a default.
#[must_use]
#[derive(Default)]
pub struct KafkaConsumerManagerBuilder {
    brokers: Option<String>,
    topics: Vec<String>,
    group_id: Option<String>,
    rdkafka: Vec<(String, String)>,
    config: AimdConfig,
    loop_options: LoopOptions,
    handler: Option<Handler>,
    options: Options,
}

/// The builder's own options, written once: set by the builder, moved into the consumer task.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) ordering: Ordering,
    pub(crate) retry: RetryPolicy,
    pub(crate) after: AfterRetries,
    pub(crate) buffer: usize,
    pub(crate) pause_after: Duration,
    pub(crate) commit_interval: Duration,
    /// `None` until `build` picks the default, which depends on `max.poll.interval.ms`.
    pub(crate) revoke_timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        type B = KafkaConsumerManagerBuilder;
        Self {
            ordering: Ordering::default(),
            retry: RetryPolicy::default(),
            after: AfterRetries::Stop,
            buffer: B::default_buffer(),
            pause_after: B::default_pause_after(),
            commit_interval: B::default_commit_interval(),
            revoke_timeout: None,
            shutdown_timeout: B::default_shutdown_timeout(),
        }
    }
}

impl fmt::Debug for KafkaConsumerManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumerManagerBuilder")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("rdkafka", &self.rdkafka)
            .field("config", &self.config)
            .field("loop_options", &self.loop_options)
            .field("handler", &self.handler.is_some())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumerManagerBuilder {
    /// Default for [`buffer`](Self::buffer): 256 messages.
    pub const fn default_buffer() -> usize {
        // Enough that a fast handler never trips a pause between two fetches, small next to
        // what librdkafka prefetches anyway.
        256
    }
    /// Default for [`pause_after`](Self::pause_after): 1 s.
    pub const fn default_pause_after() -> Duration {
        // Long enough that a burst a fast handler absorbs in milliseconds never pauses; far
        // below the default max.poll.interval.ms (5 min).
        Duration::from_secs(1)
    }
    /// Default for [`commit_interval`](Self::commit_interval): 1 s.
    pub const fn default_commit_interval() -> Duration {
        Duration::from_secs(1)
    }
    /// Default for [`revoke_timeout`](Self::revoke_timeout): 5 s (or a quarter of
    /// `max.poll.interval.ms`, if less).
    pub const fn default_revoke_timeout() -> Duration {
        // Long enough for ordinary handlers to finish, so a rebalance hands over no message
        // twice; short next to the group's rebalance timeout (max.poll.interval.ms, 5 min),
        // since every member waits for the slowest revoke.
        Duration::from_secs(5)
    }
    /// Default for [`shutdown_timeout`](Self::shutdown_timeout): 30 s.
    pub const fn default_shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// The bootstrap brokers, `host:port[,host:port…]` (`bootstrap.servers`).
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// Adds a topic to subscribe to.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Adds topics to subscribe to.
    pub fn topics<I, T>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// The consumer group (`group.id`).
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Sets any other rdkafka property (`session.timeout.ms`, `auto.offset.reset`, …); applied
    /// after the manager's own, so it wins, except that `enable.auto.commit=true` is refused.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.rdkafka.push((key.into(), value.into()));
        self
    }

    /// The AIMD config of the limit on handlers in flight. Default [`AimdConfig::default`].
    pub fn config(mut self, config: AimdConfig) -> Self {
        self.config = config;
        self
    }

    // The one vocabulary: `.source(name, s)`, `.sink(s)`, `.log_writer(w)`, `.log_holds(h)`,
    // `.tracing(bool)`, `.metrics(bool)`. Without a source only the lag is read, and the
    // controller holds the limit (fail-open: lag is demand, not health); a failing source is
    // absent for that cycle while the lag still counts. Every decision goes to the same
    // `DecisionLog` as the other managers' (with the `ace_kafka_lag` gauge).
    loop_options_methods!();

    /// The async handler, run once per message (more on retries and redelivery).
    ///
    /// An `Err` or a panic is a failure, handled by the [`retry`](Self::retry) policy and then
    /// stop or [`dead_letter`](Self::dead_letter).
    pub fn handler<F, Fut, E>(mut self, handler: F) -> Self
    where
        F: Fn(KafkaMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.handler = Some(Handler::new(handler));
        self
    }

    /// How a failing handler is retried. Default [`RetryPolicy::default`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.options.retry = retry;
        self
    }

    /// After the retries, hand a failed message to `callback` instead of stopping; once it
    /// returns `Ok`, the message counts as done (committed past).
    pub fn dead_letter<F, Fut, E>(mut self, callback: F) -> Self
    where
        F: Fn(KafkaMessage, HandlerFailure) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let f: DeadLetterFn = Arc::new(move |msg, failure| {
            let fut = callback(msg, failure);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.options.after = AfterRetries::DeadLetter(f);
        self
    }

    /// After the retries, stop the manager (the default).
    pub fn stop_on_failure(mut self) -> Self {
        self.options.after = AfterRetries::Stop;
        self
    }

    /// Messages that may wait for a slot beyond the limit before partitions pause. Default 256;
    /// 0 pauses as soon as every slot is taken.
    pub fn buffer(mut self, messages: usize) -> Self {
        self.options.buffer = messages;
        self
    }

    /// How long the backlog may stay at the high-water mark before the partitions are paused.
    /// Default 1 s; must be below half of `max.poll.interval.ms`.
    ///
    /// Until then messages simply wait in librdkafka's queue; a pause lets the consumer keep
    /// polling (group liveness) without receiving, at the price of the prefetched messages.
    pub fn pause_after(mut self, after: Duration) -> Self {
        self.options.pause_after = after;
        self
    }

    /// How often finished offsets are committed. Default 1 s; must not be zero.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.options.commit_interval = interval;
        self
    }

    /// Which messages may run at the same time. Default [`Ordering::Key`]: one at a time per key.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.options.ordering = ordering;
        self
    }

    /// How long a revoke (a rebalance) waits for the revoked partitions' handlers to finish
    /// before it commits. Default 5 s, or a quarter of `max.poll.interval.ms` if that is less;
    /// must be below half of `max.poll.interval.ms`.
    ///
    /// A handler still running then has its message handled again by the next owner. Rebalance
    /// callbacks are synchronous: the wait runs in `tokio::task::block_in_place`, so on a
    /// current-thread runtime (where no handler could run meanwhile) there is no wait.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.options.revoke_timeout = Some(timeout);
        self
    }

    /// How long [`shutdown`](KafkaConsumerManager::shutdown) waits for handlers in flight.
    /// Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// Checks everything and builds the manager; nothing connects until
    /// [`start`](KafkaConsumerManager::start).
    ///
    /// # Errors
    ///
    /// - [`BuildError::Missing`] if `brokers`, `topics`, `group_id` or `handler` is not set (or
    ///   empty);
    /// - [`BuildError::Config`] if the [`AimdConfig`] or the [`RetryPolicy`] breaks a rule,
    ///   `commit_interval` is zero, or `pause_after` or `revoke_timeout` is not below half of
    ///   `max.poll.interval.ms`;
    /// - [`BuildError::Forbidden`] for `enable.auto.commit=true`;
    /// - [`BuildError::Client`] if librdkafka refuses a property or value.
    pub fn build(self) -> Result<KafkaConsumerManager, BuildError> {
        let brokers = self
            .brokers
            .filter(|b| !b.trim().is_empty())
            .ok_or(BuildError::Missing("brokers"))?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return Err(BuildError::Missing("topics"));
        }
        let group_id = self
            .group_id
            .filter(|g| !g.is_empty())
            .ok_or(BuildError::Missing("group_id"))?;
        let handler = self.handler.ok_or(BuildError::Missing("handler"))?;
        let config = clamp_to_permits(self.config);
        let initial_limit = config.initial_limit;
        let controller = Controller::new(config)?;
        let mut options = self.options;
        options.retry.validate()?;
        if options.commit_interval.is_zero() {
            return Err(ConfigError::custom("commit_interval", ConfigRule::NonZero, 0.0).into());
        }

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "1000")
            // Back-pressure leaves messages in librdkafka's queue until it passes its thresholds;
            // librdkafka then stops fetching for `fetch.queue.backoff.ms` (default 1000), so a
            // consumer that catches up sits idle for up to a second each time (measured: 1 s
            // gaps, a third of the throughput). 50 ms re-checks 20 times a second instead.
            .set("fetch.queue.backoff.ms", "50");
        for (key, value) in &self.rdkafka {
            if key == "enable.auto.commit" && value.trim() != "false" {
                return Err(BuildError::Forbidden {
                    key: key.clone(),
                    reason: "the manager commits only handled messages; auto-commit would commit \
                             messages not yet handled",
                });
            }
            client.set(key, value);
        }
        // Validate every property now, without connecting.
        let native = client.create_native_config()?;
        let max_poll_ms: u64 = native
            .get("max.poll.interval.ms")?
            .trim_end_matches(char::from(0))
            .parse()
            .unwrap_or(300_000);
        drop(native);
        // Both hold up polling: past max.poll.interval.ms the group evicts the consumer.
        let revoke_timeout = options.revoke_timeout.unwrap_or_else(|| {
            Self::default_revoke_timeout().min(Duration::from_millis(max_poll_ms / 4))
        });
        options.revoke_timeout = Some(revoke_timeout);
        for (field, value) in [
            ("pause_after", options.pause_after),
            ("revoke_timeout", revoke_timeout),
        ] {
            if value.saturating_mul(2) >= Duration::from_millis(max_poll_ms) {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "a duration in ms, for the message"
                )]
                let half = (max_poll_ms / 2) as f64;
                return Err(ConfigError::custom(
                    field,
                    ConfigRule::Below("max.poll.interval.ms / 2", half),
                    value.as_secs_f64() * 1000.0,
                )
                .into());
            }
        }

        Ok(KafkaConsumerManager {
            shared: Arc::new(Shared::new()),
            gate: Arc::new(Semaphore::new(initial_limit)),
            counters: Arc::new(DecisionCounters::default()),
            state: Mutex::new(State::Built(Box::new(Parts {
                client,
                topics: self.topics,
                controller,
                loop_options: self.loop_options,
                handler,
                options,
            }))),
        })
    }
}

struct Parts {
    client: ClientConfig,
    topics: Vec<String>,
    controller: Controller,
    loop_options: LoopOptions,
    handler: Handler,
    options: Options,
}

enum State {
    Built(Box<Parts>),
    Running(JoinHandle<Result<ShutdownReport, StopError>>),
    Finished,
}

/// The manager's control loop: the user's sources plus the lag, driving the gate, recording to
/// the decision log and the user's sinks.
fn control_loop(
    runtime: TokioRuntime,
    controller: Controller,
    options: LoopOptions,
    counters: Arc<DecisionCounters>,
    shared: &Arc<Shared>,
    gate: &Arc<Semaphore>,
) -> ControlLoop<TokioRuntime, KafkaSignals, KafkaTarget, Sinks> {
    let interval = controller.config().adjustment_interval;
    let (user, sink) = options.into_parts(runtime.clone(), interval, counters);
    ControlLoop::new(
        runtime,
        controller,
        KafkaSignals {
            user,
            shared: Arc::clone(shared),
        },
        KafkaTarget {
            gate: Arc::clone(gate),
            shared: Arc::clone(shared),
        },
        sink,
    )
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
    state: Mutex<State>,
}

impl fmt::Debug for KafkaConsumerManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*lock(&self.state) {
            State::Built(_) => "built",
            State::Running(_) => "running",
            State::Finished => "finished",
        };
        f.debug_struct("KafkaConsumerManager")
            .field("state", &state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A snapshot of a [`KafkaConsumerManager`]'s state and counters.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct KafkaStats {
    /// What every manager reports: the limit on handlers in flight, handlers running
    /// (`in_flight`), messages received and waiting for a slot (`waiting`), messages whose
    /// handling ended (`completed`: handled or failed) and failed (`failed`: every attempt
    /// failed), and the control loop's decisions.
    pub core: Stats,
    /// True while the assigned partitions are paused (back-pressure or stopping).
    pub paused: bool,
    /// The summed consumer lag at the last statistics report, if any arrived.
    pub lag: Option<u64>,
    /// Partitions assigned now.
    pub assigned: usize,
    /// Messages received from the broker (redeliveries included).
    pub received: u64,
    /// Messages whose handler succeeded.
    pub handled: u64,
    /// Retries made.
    pub retried: u64,
    /// Failed messages the dead-letter callback accepted.
    pub dead_lettered: u64,
    /// Times the partitions were paused.
    pub pauses: u64,
    /// Times they were resumed.
    pub resumes: u64,
    /// Commits made.
    pub commits: u64,
    /// Commits refused.
    pub commit_errors: u64,
    /// Errors from the consumer or the client (broker down, rebalance failed, …).
    pub consumer_errors: u64,
    /// Partition assignments and revocations seen.
    pub rebalances: u64,
    /// Waiting messages dropped because their partition was revoked (the next owner handles
    /// them).
    pub revoked_dropped: u64,
    /// Messages librdkafka delivered a second time (it refetches after a pause) while the first
    /// copy was still tracked; dropped, the first copy counts.
    pub redelivered: u64,
    /// The last error reported, as text.
    pub last_error: Option<String>,
}

/// What a graceful stop did: from [`KafkaConsumerManager::shutdown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The offsets committed last, as `(topic, partition, next offset to read)`.
    pub committed: Vec<(String, i32, i64)>,
    /// Handlers still running at the deadline (their messages were not committed).
    pub abandoned: usize,
    /// Messages received but never started (not committed: the next owner gets them).
    pub dropped: usize,
    /// The final commit's error, if it failed.
    pub commit_error: Option<String>,
}

impl KafkaConsumerManager {
    /// A builder with every default.
    pub fn builder() -> KafkaConsumerManagerBuilder {
        KafkaConsumerManagerBuilder::default()
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
            controller,
            loop_options,
            handler,
            options,
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

        let control_stop = ace_core::Shutdown::new();
        let control = control_loop(
            TokioRuntime::from_handle(handle.clone()),
            controller,
            loop_options,
            Arc::clone(&self.counters),
            &self.shared,
            &self.gate,
        );
        drop(handle.spawn({
            let stop = control_stop.clone();
            async move {
                drop(control.run(stop).await);
            }
        }));
        let pump = Pump {
            consumer,
            shared: Arc::clone(&self.shared),
            gate: Arc::clone(&self.gate),
            handler,
            options,
            control_stop,
        };
        *state = State::Running(handle.spawn(pump.run()));
        Ok(())
    }

    /// Stops gracefully: stops fetching (pauses every partition), lets handlers in flight finish
    /// (up to the [`shutdown_timeout`](KafkaConsumerManagerBuilder::shutdown_timeout)), commits
    /// what is done, and leaves the group.
    ///
    /// # Errors
    ///
    /// [`StopError::HandlerFailed`] if the manager had stopped (or now stops) on a handler failure
    /// under the stop policy; [`StopError::NotRunning`] if it was never started or was already
    /// shut down; [`StopError::Crashed`] if its task panicked.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves the stop running in the background, and a
    /// second call returns [`StopError::NotRunning`].
    pub async fn shutdown(&self) -> Result<ShutdownReport, StopError> {
        let task = match std::mem::replace(&mut *lock(&self.state), State::Finished) {
            State::Running(task) => task,
            State::Built(_) | State::Finished => return Err(StopError::NotRunning),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ace_core::{source_fn, Decision, DecisionSink};

    #[derive(Default)]
    struct Recorded {
        errors: Vec<String>,
        lags: Vec<Option<u64>>,
    }

    struct Recorder(Arc<Mutex<Recorded>>);

    impl DecisionSink for Recorder {
        fn decision(&mut self, d: &Decision) {
            lock(&self.0).lags.push(d.signals.kafka_lag);
        }
        fn signal_error(&mut self, e: &SignalError) {
            lock(&self.0).errors.push(e.to_string());
        }
    }

    #[tokio::test]
    async fn tells_the_sink_about_a_failing_user_source_and_keeps_the_lag() {
        let shared = Arc::new(Shared::new());
        shared.lag.store(42, Atomic::Relaxed);
        let gate = Arc::new(Semaphore::new(4));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mut fail = true;
        let source = source_fn(move || {
            fail = !fail;
            if fail {
                Ok(Signals::default())
            } else {
                Err(SignalError::new("cpu", "no /proc"))
            }
        });
        let options = LoopOptions {
            sources: vec![("cpu", Box::new(source))],
            sinks: vec![Box::new(Recorder(Arc::clone(&recorded)))],
            tracing: false,
            metrics: false,
            ..LoopOptions::default()
        };
        let mut control = control_loop(
            TokioRuntime::from_handle(tokio::runtime::Handle::current()),
            Controller::new(AimdConfig::default()).unwrap(),
            options,
            Arc::default(),
            &shared,
            &gate,
        );
        control.step().await;
        control.step().await;
        let recorded = lock(&recorded);
        assert_eq!(recorded.errors, ["signal source `cpu` failed: no /proc"]);
        assert_eq!(recorded.lags, [Some(42), Some(42)]);
    }
}
