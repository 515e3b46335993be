//! What a [`KafkaConsumerManager`](super::KafkaConsumerManager) reports: [`KafkaStats`] and
//! [`ShutdownReport`].

use crate::stats::Stats;

/// A snapshot of a [`KafkaConsumerManager`](super::KafkaConsumerManager)'s state and counters.
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
    /// Times one partition was paused on its own, its waiting messages at its share of the
    /// buffer (key or partition order: see [`Ordering::Key`](super::Ordering::Key)), so the others are served.
    pub partition_holds: u64,
    /// The last error reported, as text.
    pub last_error: Option<String>,
}

/// What a graceful stop did: from [`KafkaConsumerManager::shutdown`](super::KafkaConsumerManager::shutdown).
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
