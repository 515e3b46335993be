//! The builder's own options and the rdkafka settings it makes.

use std::time::Duration;

use ace_core::{ConfigError, ConfigRule};
use rdkafka::config::ClientConfig;

use super::retry::{AfterRetries, RetryPolicy};
use super::scheduler::Ordering;
use super::{BuildError, Builder};

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
    /// Whether messages carry their headers.
    pub(crate) headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        type B = Builder;
        Self {
            ordering: Ordering::default(),
            retry: RetryPolicy::default(),
            after: AfterRetries::Stop,
            buffer: B::default_buffer(),
            pause_after: B::default_pause_after(),
            commit_interval: B::default_commit_interval(),
            revoke_timeout: None,
            shutdown_timeout: B::default_shutdown_timeout(),
            headers: true,
        }
    }
}

impl Options {
    /// Checks the options that stand alone.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        self.retry.validate()?;
        if self.commit_interval.is_zero() {
            return Err(ConfigError::custom("commit_interval", ConfigRule::NonZero, 0.0).into());
        }
        Ok(())
    }

    /// Checks the options against `max.poll.interval.ms` (`max_poll`, the time the group lets a
    /// consumer go without polling), and picks the revoke timeout's default from it.
    pub(crate) fn fit_poll_interval(&mut self, max_poll: Duration) -> Result<(), BuildError> {
        // Both hold up polling: past max.poll.interval.ms the group evicts the consumer.
        let revoke_timeout = *self
            .revoke_timeout
            .get_or_insert_with(|| Builder::default_revoke_timeout().min(max_poll / 4));
        for (field, value) in [
            ("pause_after", self.pause_after),
            ("revoke_timeout", revoke_timeout),
        ] {
            if value.saturating_mul(2) >= max_poll {
                return Err(ConfigError::custom(
                    field,
                    ConfigRule::Below("max.poll.interval.ms / 2", max_poll.as_secs_f64() * 500.0),
                    value.as_secs_f64() * 1000.0,
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The rdkafka settings: the manager's own, then the user's (`set`), which win except that
/// auto-commit is refused. Every property is checked now, without connecting; returns the
/// config and its `max.poll.interval.ms`.
pub(crate) fn client_config(
    brokers: String,
    group_id: String,
    user: &[(String, String)],
) -> Result<(ClientConfig, Duration), BuildError> {
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
        .set("fetch.queue.backoff.ms", "50")
        // A paused partition (back-pressure, or its share of the buffer under key order) is
        // fetched again only after the fetch request in flight returns, and a broker holds that
        // one up to `fetch.wait.max.ms` (default 500) while the other partitions have nothing
        // new: measured on Tansu, 97 keys on 4 partitions with handlers of 0-5 ms ran at 0.07 x
        // the unordered throughput, idle half a second after each resume; 0.99 x at 50 ms.
        .set("fetch.wait.max.ms", "50");
    for (key, value) in user {
        if key == "enable.auto.commit" && value.trim() != "false" {
            return Err(BuildError::Forbidden {
                key: key.clone(),
                reason: "the manager commits only handled messages; auto-commit would commit \
                         messages not yet handled",
            });
        }
        client.set(key, value);
    }
    let native = client.create_native_config()?;
    let max_poll_ms: u64 = native
        .get("max.poll.interval.ms")?
        .trim_end_matches(char::from(0))
        .parse()
        .unwrap_or(300_000);
    Ok((client, Duration::from_millis(max_poll_ms)))
}
