//! Helpers every manager shares, written once: panic text, a poison-tolerant lock, a thread
//! executor (a parking waker, `block_on` and a thread [`Runtime`]), the object-safe signal
//! source, and the sink adapter that every control loop records through.

use std::any::Any;
use std::future::Future;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ace_core::{
    AimdConfig, Decision, DecisionSink, Runtime, Semaphore, SignalError, SignalSource, Signals,
};

use crate::log::{DecisionLog, HoldLogging};
use crate::signals::Merge;
use crate::stats::DecisionCounters;

/// The text of a panic payload: the `&str` or `String` passed to `panic!`, if it was one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Locks `mutex`, ignoring poison: no lock of ours is held across user code that could leave
/// the data half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The manager's limits, clamped to what the semaphore can hold (2^60 permits): a larger bound
/// ("no limit") is clamped, order preserved, rather than left to overflow later.
pub(crate) fn clamp_to_permits(config: AimdConfig) -> AimdConfig {
    let cap = Semaphore::MAX_PERMITS;
    AimdConfig {
        min_limit: config.min_limit.min(cap),
        initial_limit: config.initial_limit.min(cap),
        max_limit: config.max_limit.min(cap),
        ..config
    }
}

#[cfg(feature = "threadpool")]
pub(crate) use thread_executor::{block_on, ThreadRuntime};

/// The pool's executor: its control thread and `JobHandle::join` run futures on plain threads.
#[cfg(feature = "threadpool")]
mod thread_executor {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};
    use std::thread;
    use std::time::{Duration, Instant};

    use ace_core::{Runtime, ThreadWaker};

    thread_local! {
        /// The [`Sleep`]s polled on this thread that have not fired: `block_on` parks until the
        /// earliest and wakes it.
        static TIMERS: RefCell<Vec<(Instant, Waker)>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `future` to completion on this thread, parking between polls; [`ThreadRuntime`]'s
    /// sleeps polled here fire on time.
    pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let waker = ThreadWaker::current();
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            let now = Instant::now();
            let (due, next) = TIMERS.with(|timers| {
                let mut timers = timers.borrow_mut();
                let mut due = Vec::new();
                timers.retain(|(at, w)| {
                    if *at <= now {
                        due.push(w.clone());
                        false
                    } else {
                        true
                    }
                });
                (due, timers.iter().map(|(at, _)| *at).min())
            });
            if !due.is_empty() {
                due.into_iter().for_each(Waker::wake);
                continue;
            }
            // Spurious unparks are fine: the loop polls again.
            match next {
                Some(at) => thread::park_timeout(at.saturating_duration_since(now)),
                None => thread::park(),
            }
        }
    }

    /// A [`Runtime`] for threads without an executor: `sleep` fires inside [`block_on`] on the
    /// thread that polls it, and `spawn` runs the future on a thread of its own.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct ThreadRuntime {
        origin: Instant,
    }

    impl ThreadRuntime {
        pub(crate) fn new() -> Self {
            Self {
                origin: Instant::now(),
            }
        }
    }

    /// [`ThreadRuntime`]'s sleep.
    #[derive(Debug)]
    pub(crate) struct Sleep {
        pub(super) deadline: Instant,
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            TIMERS.with(|timers| {
                let mut timers = timers.borrow_mut();
                let known = timers
                    .iter()
                    .any(|(at, w)| *at == self.deadline && w.will_wake(cx.waker()));
                if !known {
                    timers.push((self.deadline, cx.waker().clone()));
                }
            });
            Poll::Pending
        }
    }

    impl Runtime for ThreadRuntime {
        type Sleep = Sleep;

        fn now(&self) -> Duration {
            self.origin.elapsed()
        }

        fn sleep(&self, duration: Duration) -> Sleep {
            // A duration past the clock's range sleeps "forever" (about a century), never panics.
            let now = Instant::now();
            let deadline = now
                .checked_add(duration)
                .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(now);
            Sleep { deadline }
        }

        fn spawn<F>(&self, future: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            // Nothing in the pool spawns; a thread keeps this correct should anything start to.
            drop(
                thread::Builder::new()
                    .name("ace-task".to_owned())
                    .spawn(move || block_on(future)),
            );
        }
    }
}

/// A boxed signal future that borrows its source.
pub(crate) type CollectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Signals, SignalError>> + Send + 'a>>;

/// An object-safe [`SignalSource`] (its `collect` returns `impl Future`), so builders need not
/// be generic over their sources. Every `SignalSource` is one.
pub(crate) trait DynSource: Send {
    fn collect_boxed(&mut self) -> CollectFuture<'_>;
}

impl<S: SignalSource> DynSource for S {
    fn collect_boxed(&mut self) -> CollectFuture<'_> {
        Box::pin(self.collect())
    }
}

/// Failed readings parked by a source that must not fail the whole collection (a
/// [`Merge`] child), for [`Sinks`] to report just before that cycle's decision.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorInbox(Arc<Mutex<Vec<SignalError>>>);

impl ErrorInbox {
    pub(crate) fn push(&self, error: &SignalError) {
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
pub(crate) struct Sinks {
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
    fn signal_error(&mut self, error: &SignalError) {
        (**self).signal_error(error);
    }
}

/// The options every manager's builder shares (the one vocabulary: `source`, `sink`,
/// `log_writer`, `log_holds`, `tracing`, `metrics`, `source_timeout`).
pub(crate) struct LoopOptions {
    pub(crate) sources: Vec<(&'static str, Box<dyn DynSource>)>,
    pub(crate) source_timeout: Option<Duration>,
    pub(crate) writer: Option<Box<dyn Write + Send>>,
    pub(crate) holds: HoldLogging,
    pub(crate) tracing: bool,
    pub(crate) metrics: bool,
    pub(crate) sinks: Vec<Box<dyn DecisionSink>>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            source_timeout: None,
            writer: None,
            holds: HoldLogging::OnChange,
            tracing: true,
            metrics: true,
            sinks: Vec::new(),
        }
    }
}

impl std::fmt::Debug for LoopOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.sources.iter().map(|(n, _)| *n).collect();
        f.debug_struct("LoopOptions")
            .field("sources", &names)
            .field("source_timeout", &self.source_timeout)
            .field("log_writer", &self.writer.is_some())
            .field("holds", &self.holds)
            .field("tracing", &self.tracing)
            .field("metrics", &self.metrics)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl LoopOptions {
    /// The loop's source (the user's sources, each bounded by the source timeout, default half
    /// the interval; the caller adds its defaults after them, so the user's win) and its sink.
    pub(crate) fn into_parts<R: Runtime>(
        self,
        runtime: R,
        interval: Duration,
        counters: Arc<DecisionCounters>,
    ) -> (Merge<R>, Sinks) {
        let inbox = ErrorInbox::default();
        let hook = inbox.clone();
        let mut merge = Merge::new(runtime, self.source_timeout.unwrap_or(interval / 2))
            .on_error(move |e| hook.push(e));
        for (name, source) in self.sources {
            merge.push_dyn(name, source);
        }
        let log = DecisionLog::builder()
            .holds(self.holds)
            .tracing(self.tracing)
            .metrics(self.metrics);
        let log = match self.writer {
            Some(w) => log.writer(w),
            None => log,
        }
        .build();
        let sinks = Sinks {
            log,
            extra: self.sinks,
            inbox,
            counters,
        };
        (merge, sinks)
    }
}

/// The builder methods of the one vocabulary, on a builder with a `LoopOptions` field named
/// `loop_options`. Written once so the three managers cannot drift apart.
// No `#[must_use]` on the methods: every builder type is `#[must_use]` itself.
macro_rules! loop_options_methods {
    () => {
        /// Adds a signal source named `name` (the name its errors are reported under). Sources
        /// added here win over the defaults for the signals they read; one that errors, panics,
        /// blocks or hangs is absent that cycle, with a `signal_error` record.
        pub fn source<S: ace_core::SignalSource + 'static>(
            mut self,
            name: &'static str,
            source: S,
        ) -> Self {
            self.loop_options.sources.push((name, Box::new(source)));
            self
        }

        /// How long one source may take before it counts as absent for the cycle (also the most
        /// one poll of its `collect` may block before it is reported). Default half the
        /// adjustment interval.
        pub fn source_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.loop_options.source_timeout = Some(timeout);
            self
        }

        /// Also sends every decision and signal error to `sink`, after the decision log. A sink
        /// that panics is logged and the loop goes on.
        pub fn sink(mut self, sink: impl ace_core::DecisionSink + 'static) -> Self {
            self.loop_options.sinks.push(Box::new(sink));
            self
        }

        /// Writes the decision log as JSON lines to `writer`. Default: no writer (the `tracing`
        /// events carry the same records).
        pub fn log_writer(mut self, writer: impl std::io::Write + Send + 'static) -> Self {
            self.loop_options.writer = Some(Box::new(writer));
            self
        }

        /// When holds are logged (default [`HoldLogging::OnChange`](crate::log::HoldLogging)).
        pub fn log_holds(mut self, holds: crate::log::HoldLogging) -> Self {
            self.loop_options.holds = holds;
            self
        }

        /// Whether logged records are also `tracing` events. Default on.
        pub fn tracing(mut self, on: bool) -> Self {
            self.loop_options.tracing = on;
            self
        }

        /// Whether to record `metrics` (see [`crate::log`]). Default on.
        pub fn metrics(mut self, on: bool) -> Self {
            self.loop_options.metrics = on;
            self
        }
    };
}
pub(crate) use loop_options_methods;

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "threadpool")]
    use std::time::Instant;

    #[cfg(feature = "threadpool")]
    #[test]
    fn block_on_fires_thread_runtime_sleeps() {
        let rt = ThreadRuntime::new();
        let start = Instant::now();
        block_on(async {
            futures_lite::future::or(rt.sleep(Duration::from_millis(20)), async {
                rt.sleep(Duration::from_secs(60)).await;
            })
            .await;
        });
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[cfg(feature = "threadpool")]
    #[test]
    fn a_sleep_past_the_clock_range_does_not_panic() {
        let rt = ThreadRuntime::new();
        let sleep = rt.sleep(Duration::MAX);
        assert!(sleep.deadline > Instant::now());
    }

    #[test]
    fn panic_text_of_str_string_and_other_payloads() {
        let text = |f: fn()| panic_message(&*catch_unwind(f).unwrap_err());
        assert_eq!(text(|| panic!("plain")), "plain");
        assert_eq!(text(|| panic!("{}", 42)), "42");
        assert_eq!(text(|| std::panic::panic_any(7_u8)), "Box<dyn Any>");
    }
}
