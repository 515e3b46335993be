//! [`TaskPermit`]: one admitted task's slot, owned.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_core::{DetachedPermit, Runtime};

use super::inner::Inner;

/// One admitted task's slot, from [`Manager::acquire`](super::Manager::acquire) or
/// [`Manager::try_acquire`](super::Manager::try_acquire): owned,
/// `'static` and `Send`, it counts as in flight until it is dropped.
///
/// What it tells the latency signal:
/// - [`record_attempt`](Self::record_attempt) and [`record_failure`](Self::record_failure), any
///   number of times: one sample per attempt (so a task that retries reports each call, not
///   its backoff), one back-pressure event per failed or rejected attempt;
/// - if it recorded nothing, [`success`](Self::success) times admission → now as one sample,
///   and [`failure`](Self::failure) or a plain drop counts one failure (a task dropped while
///   running was most likely timed out or cancelled).
#[must_use = "dropping a TaskPermit releases its slot at once"]
#[clippy::has_significant_drop]
// In this order: `permit` and `started` not side by side, so that a tower service's `call`,
// binding a [`Reserved`] (the same two words, stored singly by `poll_ready`), reads them singly;
// next to each other they were copied with one 16-byte load, which store forwarding does not
// serve from two 8-byte stores.
#[repr(C)]
pub struct TaskPermit<R: Runtime> {
    // `None` once the task ended or the slot went back: one field says both, so ending checks
    // one thing (a `success` followed by the drop's `end` costs a compare).
    permit: Option<DetachedPermit>,
    // The one `Arc` the permit holds: the semaphore's permit goes back through `inner.sem`
    // (an `OwnedPermit` would clone and drop a second `Arc` on every task).
    inner: Arc<Inner<R>>,
    // When the task was admitted, in nanoseconds of the manager's clock plus one; 0 if it is not
    // timed, or no longer: a recorded attempt stands in for the task's own sample, so recording
    // one clears it (atomic only for that: `record_attempt` takes `&self`). One word rather than
    // an `Option<Duration>` and a flag keeps the permit at 24 bytes, which it is moved as (from
    // the semaphore to the caller, into a tower response future) on every task.
    started: AtomicU64,
}

/// A slot taken and counted as admitted, not yet bound to a task: what a tower service holds
/// between `poll_ready` and `call`. Two whole words and no `Arc`: the service binds it to its
/// manager ([`Manager::bind`](super::Manager::bind)) in `call`. A whole [`TaskPermit`] stored by
/// `poll_ready` was read back by `call` with a 16-byte load across two 8-byte stores, which the
/// CPU's store forwarding does not serve (a stall of some ten cycles on every call).
pub(crate) struct Reserved {
    pub(super) permit: DetachedPermit,
    /// As [`TaskPermit`]'s `started`.
    pub(super) started: u64,
}

/// [`TaskPermit`]'s `started` of a task admitted at `started` (if it is sampled).
#[inline(always)]
pub(super) fn started_word(started: Option<Duration>) -> u64 {
    started.map_or(0, |now| {
        u64::try_from(now.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    })
}

impl<R: Runtime> TaskPermit<R> {
    /// An admitted task's permit; `started` as [`started_word`] makes it.
    #[inline(always)]
    pub(super) fn new(inner: Arc<Inner<R>>, permit: DetachedPermit, started: u64) -> Self {
        Self {
            inner,
            permit: Some(permit),
            started: AtomicU64::new(started),
        }
    }

    /// The slot without the manager's handle, for a holder that binds it again later; `None`
    /// if the task already ended.
    #[cfg(feature = "tower")]
    pub(crate) fn into_reserved(mut self) -> Option<Reserved> {
        let permit = self.permit.take()?;
        let started = self.started.load(Ordering::Relaxed);
        // The drop that follows sees no permit: it ends nothing.
        Some(Reserved { permit, started })
    }

    /// The manager's clock.
    #[cfg(feature = "tower")]
    pub(crate) fn now(&self) -> Duration {
        self.inner.runtime.now()
    }
}

impl<R: Runtime> TaskPermit<R> {
    /// Records one attempt's time as a latency sample (the recorder's cost: one atomic add).
    pub fn record_attempt(&self, latency: Duration) {
        self.started.store(0, Ordering::Relaxed);
        if let Some(recorder) = &self.inner.latency {
            recorder.record_in(crate::util::stripe(), latency);
        }
    }

    /// Records one failed or rejected attempt: back-pressure, never a latency sample.
    pub fn record_failure(&self) {
        self.started.store(0, Ordering::Relaxed);
        if let Some(recorder) = &self.inner.latency {
            recorder.record_error_in(crate::util::stripe());
        }
    }

    /// Ends the task as a success and releases its slot. If nothing was recorded, the time
    /// since admission is one sample.
    #[inline]
    pub fn success(mut self) {
        self.end(true);
    }

    /// Ends the task as a failure and releases its slot. If nothing was recorded, it counts
    /// one failure.
    #[inline]
    pub fn failure(mut self) {
        self.end(false);
    }

    /// Gives the slot back without ending a task: no sample, no failure, not counted as
    /// completed. For a slot reserved and never used (a tower `poll_ready` without `call`, a
    /// stream with no item yet), as tower's `ConcurrencyLimit` drops its permit.
    #[cfg(feature = "tower")]
    pub(crate) fn release(mut self) {
        if let Some(permit) = self.permit.take() {
            self.inner.give_back(permit);
        }
    }

    /// Ends the task (a success if `ok`) and releases its slot, once: later calls and the drop
    /// do nothing. In place, for a holder that keeps the permit until it is dropped (a tower
    /// response future).
    #[inline]
    pub(crate) fn end(&mut self, ok: bool) {
        if let Some(permit) = self.permit.take() {
            self.finish(permit, ok);
        }
    }

    // Inlined into `success`, `failure` and the drop: the hot path of every task (a call here
    // cost a frame of its own in the instruction counts).
    #[inline(always)]
    fn finish(&self, permit: DetachedPermit, ok: bool) {
        let i = &*self.inner;
        // Recorded attempts stand in for the task's own sample.
        let started = match self.started.load(Ordering::Relaxed) {
            0 => None,
            plus_one => Some(Duration::from_nanos(plus_one - 1)),
        };
        i.count_end(started, ok);
        // Release before telling a shutdown waiter, so that `in_flight` reads 0 once it wakes.
        i.sem.release_detached(permit);
        // SeqCst pairs with `shutdown`'s store of `closing` and its loads of the counters: either
        // this load sees `closing` or `shutdown` sees this task's `finished`.
        if i.closing.load(Ordering::SeqCst) {
            i.idle.notify(usize::MAX);
        }
    }
}

impl<R: Runtime> Drop for TaskPermit<R> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl<R: Runtime> fmt::Debug for TaskPermit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPermit")
            .field("timed", &(self.started.load(Ordering::Relaxed) != 0))
            .finish_non_exhaustive()
    }
}
