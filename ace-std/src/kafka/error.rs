//! The consumer's errors, one per operation (build, start, stop), and what a handler failure
//! looks like.

use ace_core::ConfigError;
use std::error::Error;
use std::fmt;

/// A boxed error, as returned by handlers: the crate's one [`BoxError`](crate::BoxError).
pub use crate::BoxError;

/// Why [`build`](super::Builder::build) refused the settings.
///
/// `Display` says what was refused; the cause, where there is one, is the
/// [`source`](Error::source).
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A required builder field was not set, or is empty (`brokers`, `topics`, `group_id`,
    /// `handler`).
    Missing(&'static str),
    /// A config value broke a rule: the [`AimdConfig`](ace_core::AimdConfig), the
    /// [`RetryPolicy`](super::RetryPolicy), or one of the manager's own options; the source
    /// names the field and the rule.
    Config(ConfigError),
    /// An rdkafka setting that would break the manager's guarantees (for example
    /// `enable.auto.commit=true`, which would commit messages not yet handled).
    Forbidden {
        /// The rdkafka property.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// librdkafka refused a property or its value (the source says which).
    Client(rdkafka::error::KafkaError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(field) => {
                write!(f, "invalid kafka consumer config: `{field}` is required")
            }
            Self::Config(_) => f.write_str("invalid kafka consumer config"),
            Self::Forbidden { key, reason } => {
                write!(
                    f,
                    "invalid kafka consumer config: rdkafka property `{key}`: {reason}"
                )
            }
            Self::Client(_) => f.write_str("librdkafka refused the consumer config"),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Client(e) => Some(e),
            Self::Missing(_) | Self::Forbidden { .. } => None,
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<rdkafka::error::KafkaError> for BuildError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Client(e)
    }
}

/// Why [`start`](super::KafkaConsumerManager::start) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// `start` was called outside a tokio runtime.
    NoRuntime,
    /// `start` was called twice.
    AlreadyStarted,
    /// librdkafka could not create the consumer or subscribe (the source says why).
    Client(rdkafka::error::KafkaError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRuntime => {
                f.write_str("the kafka consumer must be started inside a tokio runtime")
            }
            Self::AlreadyStarted => f.write_str("the kafka consumer is already started"),
            Self::Client(_) => f.write_str("the kafka consumer could not subscribe"),
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Client(e) => Some(e),
            Self::NoRuntime | Self::AlreadyStarted => None,
        }
    }
}

impl From<rdkafka::error::KafkaError> for StartError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Client(e)
    }
}

/// Why [`shutdown`](super::KafkaConsumerManager::shutdown) reports a failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum StopError {
    /// The manager was never started.
    NotRunning,
    /// The manager was shut down already (the meaning and words of every manager's
    /// `Shutdown` error).
    Shutdown,
    /// A handler failed and the policy said stop: the manager stopped, committing nothing at or
    /// past the failed message (the failure is the source).
    HandlerFailed(HandlerFailure),
    /// The manager's own task panicked (a bug in ACE): offsets may not have been committed.
    Crashed(String),
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning => f.write_str("the kafka consumer was never started"),
            Self::Shutdown => f.write_str("the manager is shut down"),
            Self::HandlerFailed(_) => {
                f.write_str("the kafka consumer stopped after a handler failure")
            }
            Self::Crashed(msg) => write!(f, "the kafka consumer task crashed: {msg}"),
        }
    }
}

impl Error for StopError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::HandlerFailed(f) => Some(f),
            Self::NotRunning | Self::Shutdown | Self::Crashed(_) => None,
        }
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
            Self::Failed(_) => f.write_str("the handler returned an error"),
            Self::Panicked(msg) => write!(f, "the handler panicked: {msg}"),
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
            "{}[{}]@{} failed after {} attempt(s)",
            self.topic, self.partition, self.offset, self.attempts
        )
    }
}

impl Error for HandlerFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}
