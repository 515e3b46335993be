//! Fetch fairness under key or partition order: each assigned partition's share of the
//! buffer.
//!
//! librdkafka hands over a partition's fetched messages in batches, one partition after the
//! other. Under [`Ordering::Key`](super::Ordering::Key) a message waits while its key is busy, so
//! a buffer filled with one partition's messages runs only that partition's keys, and stops
//! taking messages (the high-water mark) while the other partitions' keys sit idle: measured, 25
//! handlers of 64 for 97 keys on 4 partitions, and two partitions served nothing for seconds.
//!
//! So while slots are free and every waiting message is behind a busy key, the consumer keeps
//! taking past the mark, and a partition whose waiting messages reach the mark is paused on its
//! own: librdkafka then serves the others. It resumes once half of them have drained, so what
//! still waits covers librdkafka's refetch (a pause throws away that partition's prefetched
//! messages). The queue stays below the mark times the partitions assigned. Unordered
//! consumers, whose messages never wait behind a key, are left alone, and so is a consumer of
//! one partition (there is no other to serve).

use std::sync::atomic::Ordering;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::context::{bump, Context, PartitionState, Shared};

/// How many waiting messages one partition may hold before it is paused on its own: the mark.
fn share(high: usize) -> usize {
    high.max(1)
}

/// True if the queue (`queued` messages) may grow past the mark `high`: more than one partition
/// is assigned, and it is below the mark times the partitions (each partition holds at most its
/// share, then is paused).
pub(super) fn may_exceed_the_mark(queued: usize, high: usize, assigned: usize) -> bool {
    assigned >= 2 && queued < high.saturating_mul(assigned)
}

/// One message of `part` joined the queue: pauses `part` alone if it now holds its share and
/// other partitions could be served instead.
pub(super) fn queued(
    consumer: &StreamConsumer<Context>,
    shared: &Shared,
    part: &PartitionState,
    high: usize,
    assigned: usize,
) {
    let waiting = part.queued.fetch_add(1, Ordering::Relaxed) + 1;
    if assigned < 2 || waiting < share(high) || part.held.load(Ordering::Relaxed) {
        return;
    }
    part.held.store(true, Ordering::Release);
    match consumer.pause(&one(part)) {
        Ok(()) => {
            bump(&shared.counters.holds);
            tracing::debug!(
                target: "ace::kafka",
                topic = %part.topic,
                partition = part.partition,
                waiting,
                "partition paused: its share of the buffer is full"
            );
        }
        Err(e) => shared.record_error("pausing a partition failed", &e),
    }
}

/// One message of `part` left the queue: resumes `part` once half its share has drained (unless
/// every partition is paused, whose resume then includes it).
pub(super) fn dequeued(
    consumer: &StreamConsumer<Context>,
    shared: &Shared,
    part: &PartitionState,
    high: usize,
) {
    let waiting = part
        .queued
        .fetch_sub(1, Ordering::Relaxed)
        .saturating_sub(1);
    if !part.held.load(Ordering::Relaxed) || waiting > share(high) / 2 {
        return;
    }
    release(consumer, shared, part);
}

/// Ends `part`'s own pause.
fn release(consumer: &StreamConsumer<Context>, shared: &Shared, part: &PartitionState) {
    part.held.store(false, Ordering::Release);
    if shared.paused.load(Ordering::Acquire) || part.revoked.load(Ordering::Acquire) {
        return;
    }
    if let Err(e) = consumer.resume(&one(part)) {
        shared.record_error("resuming a partition failed", &e);
    }
}

/// The assigned partitions that are not held, to resume after a pause of all of them.
pub(super) fn unheld(shared: &Shared) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for part in crate::util::lock(&shared.partitions).values() {
        if !part.held.load(Ordering::Acquire) {
            tpl.add_partition(&part.topic, part.partition);
        }
    }
    tpl
}

fn one(part: &PartitionState) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&part.topic, part.partition);
    tpl
}

#[cfg(test)]
mod tests {
    use super::{may_exceed_the_mark, share};

    #[test]
    fn the_queue_passes_the_mark_only_with_another_partition_to_serve() {
        assert_eq!(share(320), 320);
        assert_eq!(share(0), 1);
        assert!(
            !may_exceed_the_mark(400, 320, 1),
            "one partition: the mark holds"
        );
        assert!(may_exceed_the_mark(400, 320, 2));
        assert!(
            !may_exceed_the_mark(640, 320, 2),
            "each partition at its share"
        );
    }
}
