//! Commits: the periodic one (synchronous, on a blocking thread, one at a time) and the final
//! one at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, StreamConsumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::context::{bump, Context, Shared};

/// How long the final commit may take at least, whatever is left of the shutdown deadline.
const FINAL_COMMIT: Duration = Duration::from_secs(10);

/// `(topic, partition, offset)` of each partition in a commit, sorted.
type Offsets = Vec<(String, i32, i64)>;

/// The committed offsets of a list, sorted, to compare one commit with the next.
fn offsets_of(tpl: &TopicPartitionList) -> Offsets {
    let mut offsets: Vec<_> = tpl
        .elements()
        .iter()
        .filter_map(|e| Some((e.topic().to_owned(), e.partition(), e.offset().to_raw()?)))
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Periodic commits: synchronous, on a blocking thread, one at a time. Synchronous, because
/// librdkafka does not report the outcome of an asynchronous manual commit to rdkafka
/// (rust-rdkafka #856), so a refused one would go unnoticed and never be made again; on a
/// blocking thread, because a synchronous commit waits for the coordinator, for as long as it
/// takes (a broker that is down).
#[derive(Default)]
pub(super) struct Committer {
    /// What the last successful commit committed.
    last: Option<Offsets>,
    /// The commit in flight: what it commits, and whether it succeeded.
    inflight: Option<(Offsets, JoinHandle<bool>)>,
}

impl Committer {
    /// Commits if any partition's committable offset differs from the last successful commit
    /// (a refused commit is therefore made again at the next tick), unless one is in flight.
    pub(super) fn tick(&mut self, consumer: &Arc<StreamConsumer<Context>>, shared: &Arc<Shared>) {
        if let Some((offsets, handle)) = self.inflight.take() {
            if !handle.is_finished() {
                self.inflight = Some((offsets, handle));
                return;
            }
            if let Some(Ok(true)) = handle.now_or_never() {
                self.last = Some(offsets);
            }
        }
        let tpl = shared.committable(None);
        let now = offsets_of(&tpl);
        if now.is_empty() || self.last.as_ref() == Some(&now) {
            return;
        }
        let (consumer, shared) = (Arc::clone(consumer), Arc::clone(shared));
        let handle = tokio::task::spawn_blocking(move || {
            // Every partition, not only those that moved: one refused earlier is made good.
            shared.commit(&*consumer, &tpl, CommitMode::Sync).is_ok()
        });
        self.inflight = Some((now, handle));
    }

    /// Waits for the commit in flight, if any, until `deadline`.
    async fn settle(&mut self, deadline: Instant) {
        if let Some((_, handle)) = self.inflight.take() {
            drop(tokio::time::timeout_at(deadline, handle).await);
        }
    }

    /// The final commit at shutdown, after the one in flight: bounded by `deadline` (the end of
    /// the wait for handlers), but given [`FINAL_COMMIT`] at least, since a coordinator that is
    /// away would hold it forever. Returns what it committed and its error, if any.
    pub(super) async fn finish(
        &mut self,
        consumer: &Arc<StreamConsumer<Context>>,
        shared: &Arc<Shared>,
        deadline: Instant,
    ) -> (Offsets, Option<String>) {
        let deadline = deadline.max(Instant::now() + FINAL_COMMIT);
        self.settle(deadline).await;
        let tpl = shared.committable(None);
        let committed = offsets_of(&tpl);
        let commit = tokio::task::spawn_blocking({
            let (consumer, shared) = (Arc::clone(consumer), Arc::clone(shared));
            move || shared.commit(&*consumer, &tpl, CommitMode::Sync)
        });
        let commit_error = match tokio::time::timeout_at(deadline, commit).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                bump(&shared.counters.commit_errors);
                shared.record_error("final commit", &"timed out");
                Some("the final commit timed out".to_owned())
            }
        };
        (committed, commit_error)
    }
}
