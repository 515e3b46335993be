//! [`Builder`]: every option of the consumer, checked by `build`.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{AimdConfig, Semaphore};

use super::context::Shared;
use super::handler::Handler;
use super::options::{client_config, Options};
use super::retry::{AfterRetries, DeadLetterFn};
use super::{
    BoxError, BuildError, HandlerFailure, KafkaConsumerManager, KafkaMessage, Ordering, Parts,
    RetryPolicy, State,
};
use crate::control::{engine_methods, loop_options_methods, LoopOptions, Wiring};

/// Builds a [`KafkaConsumerManager`]; from [`KafkaConsumerManager::builder`] (or
/// [`builder`](super::builder)).
///
/// Required: [`brokers`](Self::brokers), at least one [`topic`](Self::topic), a
/// [`group_id`](Self::group_id) and a [`handler`](Self::handler). Everything else has a default.
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    brokers: Option<String>,
    topics: Vec<String>,
    group_id: Option<String>,
    rdkafka: Vec<(String, String)>,
    config: AimdConfig,
    loop_options: LoopOptions,
    handler: Option<Handler>,
    options: Options,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
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

impl Builder {
    pub(super) fn new(config: AimdConfig) -> Self {
        Self {
            brokers: None,
            topics: Vec::new(),
            group_id: None,
            rdkafka: Vec::new(),
            config,
            loop_options: LoopOptions::default(),
            handler: None,
            options: Options::default(),
        }
    }

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

    /// Replaces the AIMD config given to [`builder`](super::builder).
    pub fn config(mut self, config: AimdConfig) -> Self {
        self.config = config;
        self
    }

    // The one vocabulary: `.source(name, s)`, `.sink(s)`, `.log_writer(w)`, `.log_holds(h)`,
    // `.tracing(bool)`, `.metrics(bool)`, `.source_timeout(t)`; and the engine's
    // `.default_signals(bool)` (CPU, memory and the executor's lag, as the async `Manager`),
    // `.time_tasks(bool)` (each handler attempt timed for the latency signal) and
    // `.fleet(budget)`. The lag is read whatever the sources, as demand, never as stress; a
    // failing source is absent for that cycle while the lag still counts. Every decision goes
    // to the same `DecisionLog` as the other managers' (with the `ace_kafka_lag` gauge).
    loop_options_methods!();
    engine_methods!();

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

    /// Whether handlers see each message's headers ([`KafkaMessage::headers`]). Default `true`.
    ///
    /// `false` leaves them unread: librdkafka parses a message's headers only when asked, and
    /// asking costs a buffer allocation even for a message with no header (librdkafka 2.12:
    /// counted by callgrind, a third of the consumer task's work per message of 100 bytes).
    ///
    /// [`KafkaMessage::headers`]: super::KafkaMessage::headers
    pub fn headers(mut self, read: bool) -> Self {
        self.options.headers = read;
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
        let wiring = Wiring::new(self.config, self.loop_options)?;
        let mut options = self.options;
        options.validate()?;
        let (client, max_poll) = client_config(brokers, group_id, &self.rdkafka)?;
        options.fit_poll_interval(max_poll)?;

        let config = wiring.config();
        Ok(KafkaConsumerManager {
            shared: Arc::new(Shared::new()),
            gate: Arc::new(Semaphore::new(wiring.initial_limit())),
            counters: Arc::clone(wiring.counters()),
            bounds: (config.min_limit, config.max_limit),
            state: Mutex::new(State::Built(Box::new(Parts {
                client,
                topics: self.topics,
                wiring,
                handler,
                options,
                limit: None,
            }))),
        })
    }
}
