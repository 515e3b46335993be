//! What happens when a handler fails: retries with backoff, then stop or dead-letter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{ConfigError, ConfigRule};
use futures_lite::future::Boxed;

use super::error::{BoxError, HandlerFailure};
use super::KafkaMessage;

/// How a failing handler is retried: up to `max_retries` more attempts, waiting
/// `initial_backoff`, then twice that, and so on up to `max_backoff`.
///
/// What happens after the last retry is the builder's choice: stop the manager (the default), or
/// hand the message to a dead-letter callback
/// ([`dead_letter`](super::Builder::dead_letter)).
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
