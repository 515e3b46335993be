//! Helpers shared by the Kafka integration tests (`kafka.rs`, `kafka_mock.rs`).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The group's committed offsets for partitions `0..partitions` (`-1` for none), read back from
/// the broker: rdkafka's commit callback never fires for manual commits (rust-rdkafka #856).
pub(crate) fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> KafkaResult<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, timeout)?;
    let offsets = (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect();
    // Drop the list before the consumer: a list that outlives it makes the drop hang.
    drop(got);
    Ok(offsets)
}

pub(crate) use super::wait::wait_for;
