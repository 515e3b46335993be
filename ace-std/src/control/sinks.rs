//! The loop's one sink ([`Sinks`]: the decision log, the user's sinks, the counters behind
//! `stats()`, the sources' parked errors) and the one source the user's sources merge into.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{Decision, DecisionSink, Runtime, SignalError};

use super::LoopOptions;
use crate::log::DecisionLog;
use crate::signals::Merge;
use crate::stats::DecisionCounters;
use crate::util::{lock, panic_message, DynSource};

/// Failed readings parked by a source that must not fail the whole collection (a
/// [`Merge`] child), for [`Sinks`] to report just before that cycle's decision.
#[derive(Debug, Clone, Default)]
pub(super) struct ErrorInbox(Arc<Mutex<Vec<SignalError>>>);

impl ErrorInbox {
    fn push(&self, error: &SignalError) {
        lock(&self.0).push(error.clone());
    }

    fn take(&self) -> Vec<SignalError> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// Calls `f` on a sink, logging a panic instead of passing it on: a broken sink must not stop
/// the control loop.
fn guarded(f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        tracing::error!(
            target: "ace",
            "a decision sink panicked (the control loop goes on): {}",
            panic_message(&*panic)
        );
    }
}

/// Every manager's control-loop sink: the [`DecisionLog`], the user's sinks, the counters behind
/// `stats()`, and the errors parked in the [`ErrorInbox`] (reported first, as they happened
/// before the decision). A sink that panics is logged and skipped for that record.
pub(super) struct Sinks {
    log: DecisionLog,
    extra: Vec<Box<dyn DecisionSink>>,
    inbox: ErrorInbox,
    counters: Arc<DecisionCounters>,
}

impl DecisionSink for Sinks {
    fn decision(&mut self, decision: &Decision) {
        for error in self.inbox.take() {
            self.signal_error(&error);
        }
        self.counters.record(decision);
        guarded(|| self.log.decision(decision));
        for sink in &mut self.extra {
            guarded(|| sink.decision(decision));
        }
    }

    fn epoch(&mut self, summary: &ace_core::LatencySummary) {
        self.counters.epoch(summary);
        for sink in &mut self.extra {
            guarded(|| sink.epoch(summary));
        }
    }

    fn signal_error(&mut self, error: &SignalError) {
        guarded(|| self.log.signal_error(error));
        for sink in &mut self.extra {
            guarded(|| sink.signal_error(error));
        }
    }
}

impl DecisionSink for &mut Sinks {
    fn decision(&mut self, decision: &Decision) {
        (**self).decision(decision);
    }
    fn epoch(&mut self, summary: &ace_core::LatencySummary) {
        (**self).epoch(summary);
    }
    fn signal_error(&mut self, error: &SignalError) {
        (**self).signal_error(error);
    }
}

/// The user's sources as one, their failures parked in the returned inbox.
pub(super) fn merged<R: Runtime>(
    runtime: R,
    timeout: Duration,
    sources: Vec<(&'static str, Box<dyn DynSource>)>,
) -> (Merge<R>, ErrorInbox) {
    let inbox = ErrorInbox::default();
    let hook = inbox.clone();
    let mut merge = Merge::new(runtime, timeout).on_error(move |e| hook.push(e));
    for (name, source) in sources {
        merge.push_dyn(name, source);
    }
    (merge, inbox)
}

/// The loop's one sink: the decision log (its epoch lines paced by `interval`), then the user's
/// sinks, and the counters.
pub(super) fn sinks(
    options: &mut LoopOptions,
    interval: Duration,
    inbox: ErrorInbox,
    counters: Arc<DecisionCounters>,
) -> Sinks {
    let log = DecisionLog::builder()
        .holds(options.holds)
        .epochs(options.epochs)
        .epoch_interval(interval)
        .tracing(options.tracing)
        .metrics(options.metrics);
    let log = match options.name.take() {
        Some(name) => log.name(name),
        None => log,
    };
    let log = match options.classes.take() {
        Some(probe) => log.classes(probe),
        None => log,
    };
    let log = match options.writer.take() {
        Some(w) => log.writer(w),
        None => log,
    }
    .build();
    Sinks {
        log,
        extra: std::mem::take(&mut options.sinks),
        inbox,
        counters,
    }
}
