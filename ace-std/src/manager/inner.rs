//! What every handle of one [`Manager`](super::Manager) shares: the semaphore, the task
//! counters, the latency recorder and the control loop's handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "tower")]
use ace_core::DetachedPermit;
use ace_core::{LatencyRecorder, Runtime, Semaphore};
use event_listener::Event;

use super::classes::Classes;
use crate::control::LoopHandle;
use crate::stats::{DecisionCounters, PriorityStats};
use crate::util::stripe;

/// A padded counter: the per-task counters sit on their own cache lines, away from each other
/// and from the semaphore, so concurrent submits do not false-share.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Counter(pub(super) AtomicU64);

pub(super) struct Inner<R> {
    pub(super) runtime: R,
    pub(super) sem: Arc<Semaphore>,
    /// The config's `[min_limit, max_limit]`, for a limit set by hand.
    pub(super) bounds: (usize, usize),
    /// Admissions, when tasks are not timed; timed, they are counted in the latency recorder's
    /// running total instead (one atomic add per task serves both), so read them through
    /// [`admitted`](Self::admitted).
    admitted: Counter,
    pub(super) finished: Counter,
    /// Only failures count here: the success path pays for no third counter.
    pub(super) failed: Counter,
    pub(super) closing: AtomicBool,
    pub(super) idle: Event,
    pub(super) control: LoopHandle,
    pub(super) counters: Arc<DecisionCounters>,
    pub(super) latency: Option<Arc<LatencyRecorder>>,
    pub(super) classes: Classes,
}

impl<R> Inner<R> {
    /// What every handle shares; `admitted` counts from 0 (unless tasks are timed).
    pub(super) fn new(
        runtime: R,
        sem: Arc<Semaphore>,
        bounds: (usize, usize),
        control: LoopHandle,
        counters: Arc<DecisionCounters>,
        latency: Option<Arc<LatencyRecorder>>,
    ) -> Self {
        Self {
            runtime,
            sem,
            bounds,
            admitted: Counter::default(),
            finished: Counter::default(),
            failed: Counter::default(),
            closing: AtomicBool::new(false),
            idle: Event::new(),
            control,
            counters,
            latency,
            classes: Classes::default(),
        }
    }

    /// Counts one admission; returns the count before it (the task's number, for sampling).
    /// SeqCst: it pairs with `shutdown`'s store of `closing` and its loads of the counts.
    #[inline(always)]
    pub(super) fn count_admission(&self) -> u64 {
        match &self.latency {
            Some(recorder) => recorder.count_admission(Ordering::SeqCst),
            None => self.admitted.0.fetch_add(1, Ordering::SeqCst),
        }
    }

    /// Admissions so far (less those taken back).
    pub(super) fn admitted(&self, ordering: Ordering) -> u64 {
        match &self.latency {
            Some(recorder) => recorder.counted_admissions(ordering),
            None => self.admitted.0.load(ordering),
        }
    }

    /// Per class: admissions, refusals, waits ([`Stats::priorities`](crate::Stats::priorities)).
    pub(super) fn priorities(&self) -> Vec<PriorityStats> {
        let admitted = self.admitted(Ordering::Relaxed);
        self.classes
            .snapshot(admitted, |priority| self.sem.waiting_in(priority))
    }
}

impl<R> Inner<R> {
    /// Gives back a slot admitted and never used: no task, no sample, no failure.
    #[cfg(feature = "tower")]
    pub(super) fn give_back(&self, permit: DetachedPermit) {
        self.sem.release_detached(permit);
        // Un-admit rather than finish: `shutdown` waits for `admitted == finished`.
        self.unadmit();
    }

    /// Takes back the count of an admission whose task never runs (shutdown began between the
    /// slot and the count) or of a slot given back unused. Never counted as finished instead:
    /// `shutdown` waits for `admitted == finished`, and a finish read after its `admitted`
    /// snapshot missed this admission would stand in for a task still running.
    pub(super) fn unadmit(&self) {
        match &self.latency {
            Some(recorder) => recorder.uncount_admission(Ordering::SeqCst),
            None => {
                self.admitted.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // SeqCst pairs with `shutdown`'s store of `closing` and its loads of the counters.
        if self.closing.load(Ordering::SeqCst) {
            self.idle.notify(usize::MAX);
        }
    }
}

impl<R: Runtime> Inner<R> {
    /// Counts one admitted task's end: its sample (if it was timed, from `started`) or failure
    /// for the latency signal, and the counters behind `stats()`. Inlined into every task's end
    /// (the permit's drop among them); a call here cost the untimed path 30 instructions.
    #[inline(always)]
    pub(super) fn count_end(&self, started: Option<Duration>, ok: bool) {
        if let (Some(recorder), Some(started)) = (&self.latency, started) {
            self.record_end(recorder, started, ok);
        }
        if !ok {
            self.failed.0.fetch_add(1, Ordering::Relaxed);
        }
        self.finished.0.fetch_add(1, Ordering::SeqCst);
    }

    /// The timed part of [`count_end`](Self::count_end), out of line: inlined, it made the
    /// untimed path longer too (more registers to save), by 9 to 11 instructions per task.
    #[inline(never)]
    fn record_end(&self, recorder: &LatencyRecorder, started: Duration, ok: bool) {
        if ok {
            recorder.record_in(stripe(), self.runtime.now().saturating_sub(started));
        } else {
            recorder.record_error_in(stripe());
        }
    }
}

/// The latency epochs' demand signal: tells the recorder whether this admission took the last
/// free slot (the limit was reached), so the controller grows only a limit that is used.
/// The admission itself is counted by [`Inner::count_admission`].
pub(super) fn note_admission<R>(inner: &Inner<R>) {
    if let Some(recorder) = &inner.latency {
        if inner.sem.in_use() >= inner.sem.limit() {
            recorder.note_limit_reached_in(stripe());
        }
    }
}

impl<R> Drop for Inner<R> {
    fn drop(&mut self) {
        // The last handle is gone: stop the control loop (and with it the lag probe).
        self.control.stop();
    }
}

/// Ends one admitted task: counted, timed into the latency recorder (a task dropped while
/// running counts as a failure: it was most likely timed out), and the shutdown waiter told if
/// it is the last.
pub(super) struct Finish<'a, R: Runtime> {
    pub(super) inner: &'a Inner<R>,
    pub(super) started: Option<Duration>,
    pub(super) ok: Option<bool>,
}

impl<R: Runtime> Drop for Finish<'_, R> {
    fn drop(&mut self) {
        let i = self.inner;
        i.count_end(self.started, self.ok == Some(true));
        if i.closing.load(Ordering::SeqCst) {
            i.idle.notify(usize::MAX);
        }
    }
}
