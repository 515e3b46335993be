//! The consumer's errors, the failure policy and what a handler failure looks like.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{ConfigError, ConfigRule};
use futures_lite::future::Boxed;

use super::KafkaMessage;

/// A boxed error, as returned by handlers.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Everything that can go wrong building, starting or running a
/// [`KafkaConsumerManager`](super::KafkaConsumerManager).
#[derive(Debug)]
#[non_exhaustive]
pub enum KafkaError {
    /// A config value broke a rule: the [`AimdConfig`](ace_core::AimdConfig) or one of the
    /// manager's own numeric options (the error names the field).
    Config(ConfigError),
    /// A required builder field was not set (`brokers`, `topics`, `group_id`, `handler`).
    Missing(&'static str),
    /// An rdkafka setting that would break the manager's guarantees (for example
    /// `enable.auto.commit=true`, which would commit messages not yet handled).
    Forbidden {
        /// The rdkafka property.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// librdkafka refused a setting or an operation.
    Client(rdkafka::error::KafkaError),
    /// [`start`](super::KafkaConsumerManager::start) was called outside a tokio runtime.
    NoRuntime,
    /// [`start`](super::KafkaConsumerManager::start) was called twice.
    AlreadyStarted,
    /// [`shutdown`](super::KafkaConsumerManager::shutdown) was called on a manager never started,
    /// or twice.
    NotRunning,
    /// A handler failed and the policy said stop: the manager stopped, committing nothing at or
    /// past the failed message.
    HandlerFailed(HandlerFailure),
    /// The manager's own task panicked (a bug in ACE): offsets may not have been committed.
    Crashed(String),
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Missing(field) => write!(f, "invalid config: `{field}` is required"),
            Self::Forbidden { key, reason } => {
                write!(f, "invalid config: rdkafka property `{key}`: {reason}")
            }
            Self::Client(e) => write!(f, "kafka client error: {e}"),
            Self::NoRuntime => {
                f.write_str("the kafka consumer must be started inside a tokio runtime")
            }
            Self::AlreadyStarted => f.write_str("the kafka consumer is already started"),
            Self::NotRunning => f.write_str("the kafka consumer is not running"),
            Self::HandlerFailed(failure) => {
                write!(f, "stopped after a handler failure: {failure}")
            }
            Self::Crashed(msg) => write!(f, "the kafka consumer task crashed: {msg}"),
        }
    }
}

impl Error for KafkaError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Client(e) => Some(e),
            Self::HandlerFailed(f) => Some(&f.error),
            _ => None,
        }
    }
}

impl From<ConfigError> for KafkaError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Client(e)
    }
}

/// Why one attempt of a handler failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler returned an error.
    Failed(BoxError),
    /// The handler panicked; the payload's message, if it was a string.
    Panicked(String),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "handler failed: {e}"),
            Self::Panicked(msg) => write!(f, "handler panicked: {msg}"),
        }
    }
}

impl Error for HandlerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed(e) => Some(&**e),
            Self::Panicked(_) => None,
        }
    }
}

/// A message whose handler failed every attempt: where it is, how often it was tried, and the
/// last error.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerFailure {
    /// The message's topic.
    pub topic: String,
    /// The message's partition.
    pub partition: i32,
    /// The message's offset: nothing at or past it is committed.
    pub offset: i64,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    /// The last attempt's error.
    pub error: HandlerError,
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]@{} after {} attempt(s): {}",
            self.topic, self.partition, self.offset, self.attempts, self.error
        )
    }
}

/// How a failing handler is retried: up to `max_retries` more attempts, waiting
/// `initial_backoff`, then twice that, and so on up to `max_backoff`.
///
/// What happens after the last retry is the builder's choice: stop the manager (the default), or
/// hand the message to a dead-letter callback
/// ([`dead_letter`](super::KafkaConsumerManagerBuilder::dead_letter)).
///
/// ```
/// use ace_std::kafka::RetryPolicy;
/// use std::time::Duration;
///
/// let retry = RetryPolicy { max_retries: 5, ..RetryPolicy::default() };
/// assert!(retry.validate().is_ok());
/// assert_eq!(retry.backoff(1), Duration::from_millis(100));
/// assert_eq!(retry.backoff(3), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first. Default 3; 0 means no retry.
    pub max_retries: u32,
    /// Wait before the first retry. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts. Default 5 s.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Default for [`max_retries`](Self::max_retries): 3.
    pub const fn default_max_retries() -> u32 {
        3
    }
    /// Default for [`initial_backoff`](Self::initial_backoff): 100 ms.
    pub const fn default_initial_backoff() -> Duration {
        Duration::from_millis(100)
    }
    /// Default for [`max_backoff`](Self::max_backoff): 5 s.
    pub const fn default_max_backoff() -> Duration {
        Duration::from_secs(5)
    }

    /// No retry at all: the first failure goes straight to the policy.
    pub const fn none() -> Self {
        Self {
            max_retries: 0,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (1-based): `initial_backoff × 2^(retry−1)`, capped
    /// at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Checks the rules.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `retry.max_backoff` when `max_backoff < initial_backoff`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_backoff < self.initial_backoff {
            return Err(ConfigError::custom(
                "retry.max_backoff",
                ConfigRule::AtLeast(
                    "retry.initial_backoff",
                    u64::try_from(self.initial_backoff.as_millis()).unwrap_or(u64::MAX),
                ),
                self.max_backoff.as_secs_f64() * 1000.0,
            ));
        }
        Ok(())
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: Self::default_max_retries(),
            initial_backoff: Self::default_initial_backoff(),
            max_backoff: Self::default_max_backoff(),
        }
    }
}

pub(crate) type DeadLetterFn =
    Arc<dyn Fn(KafkaMessage, HandlerFailure) -> Boxed<Result<(), BoxError>> + Send + Sync>;

/// What happens to a message once its retries are spent.
#[derive(Clone, Default)]
pub(crate) enum AfterRetries {
    /// Stop the manager; commit nothing at or past the message.
    #[default]
    Stop,
    /// Hand it to the dead-letter callback; once that returns `Ok`, the message counts as done.
    DeadLetter(DeadLetterFn),
}

impl fmt::Debug for AfterRetries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stop => f.write_str("Stop"),
            Self::DeadLetter(_) => f.write_str("DeadLetter(..)"),
        }
    }
}
