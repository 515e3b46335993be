//! The executor seam ([`Runtime`]) and the control loop written once over it.
//!
//! The loop's parts are small traits, so the core needs no clock, no I/O and no executor:
//! - [`Runtime`]: spawn a task, sleep, read a monotonic clock;
//! - [`SignalSource`]: read one [`Signals`] snapshot;
//! - [`LimitTarget`]: apply a limit and report its [`Usage`] (the [`Semaphore`](crate::Semaphore)
//!   is one);
//! - [`DecisionSink`]: receive each [`Decision`] and each failed reading.

use alloc::string::String;
use core::fmt;
use core::future::Future;
use core::time::Duration;

use futures_lite::future;

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;
use crate::{
    Action, Ceiling, Controller, Decision, LatencyRecorder, LatencySummary, Signals, Usage,
};

/// What the control loop needs from an executor: spawn a task, sleep, read a monotonic clock.
///
/// One small implementation per executor lives in `shims/` (`ace-tokio`, `ace-smol`,
/// `ace-async-std`): copy one to embed ACE in your own executor. The clock may be simulated
/// (tokio's paused time, or a test clock): the control loop only ever asks this trait for time.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The future returned by [`sleep`](Self::sleep).
    type Sleep: Future<Output = ()> + Send + 'static;

    /// Monotonic time since an arbitrary, fixed origin.
    fn now(&self) -> Duration;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;

    /// Runs `future` to completion as a detached task.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;
}

/// A source of health signals, read once per control cycle.
///
/// A source that fails returns an error (the cycle then treats its signals as absent); one that
/// takes longer than the adjustment interval is dropped for that cycle. Either way the loop goes on:
/// monitoring that fails never stops work. A source that combines several readers should return
/// `Ok` with the signals it could read, leaving the others `None`.
///
/// # `collect` must not block
///
/// `collect` (the call, and each poll of its future) runs on the executor's thread. A timeout
/// can only cut a future that waits; one that blocks the thread (a synchronous read of a slow
/// file, a lock held elsewhere, an HTTP call made with a blocking client) stalls the executor and
/// its timers for as long as it blocks. Read a blocking source on a thread of its own
/// (`spawn_blocking`, or a thread that updates a gauge) and return its last value at once. The
/// managers of `ace-std` detect a call or a poll that blocked for longer than the source timeout
/// and log a warning naming the source (its reading then counts as absent).
pub trait SignalSource: Send {
    /// Reads one snapshot.
    ///
    /// # Cancel safety
    ///
    /// The future may be dropped before it completes (a reading that hangs past the interval);
    /// the next call must still work.
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send;
}

/// A [`SignalSource`] from a closure that returns a snapshot at once. See [`source_fn`].
#[derive(Clone)]
pub struct FnSource<F>(F);

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

/// Turns a closure into a [`SignalSource`]: handy for tests, scripted signals and gauges.
///
/// ```
/// use ace_core::{source_fn, Signals};
///
/// let source = source_fn(|| Ok(Signals { queue_depth: Some(3), ..Signals::default() }));
/// # let _ = source;
/// ```
pub fn source_fn<F>(f: F) -> FnSource<F>
where
    F: FnMut() -> Result<Signals, SignalError> + Send,
{
    FnSource(f)
}

impl<F> SignalSource for FnSource<F>
where
    F: FnMut() -> Result<Signals, SignalError> + Send,
{
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        future::ready((self.0)())
    }
}

/// A signal source failed: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalError {
    source: &'static str,
    message: String,
}

impl SignalError {
    /// An error from the source named `source`.
    pub fn new(source: &'static str, message: impl Into<String>) -> Self {
        Self {
            source,
            message: message.into(),
        }
    }

    /// The failing source's name.
    pub fn source_name(&self) -> &'static str {
        self.source
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signal source `{}` failed: {}",
            self.source, self.message
        )
    }
}

impl core::error::Error for SignalError {}

/// Whatever enforces the limit: the control loop applies each new limit through this.
pub trait LimitTarget: Send + Sync {
    /// Applies a new limit. Must not wait: a shrink below the permits in use takes effect as
    /// they come back.
    fn set_limit(&self, limit: usize);

    /// The limit in force and how much of it is used.
    fn usage(&self) -> Usage;

    /// A ceiling the controller must respect (a fleet grant), read before each decision.
    /// Default: none.
    fn ceiling(&self) -> Option<Ceiling> {
        None
    }
}

impl<T: LimitTarget + ?Sized> LimitTarget for &T {
    fn set_limit(&self, limit: usize) {
        (**self).set_limit(limit);
    }
    fn usage(&self) -> Usage {
        (**self).usage()
    }
    fn ceiling(&self) -> Option<Ceiling> {
        (**self).ceiling()
    }
}

impl<T: LimitTarget + ?Sized> LimitTarget for alloc::sync::Arc<T> {
    fn set_limit(&self, limit: usize) {
        (**self).set_limit(limit);
    }
    fn usage(&self) -> Usage {
        (**self).usage()
    }
    fn ceiling(&self) -> Option<Ceiling> {
        (**self).ceiling()
    }
}

/// Receives what the control loop decides and what went wrong reading signals.
pub trait DecisionSink: Send {
    /// One decision, every cycle (holds included: the sink picks what to keep).
    fn decision(&mut self, decision: &Decision);

    /// A signal source failed or hung this cycle; its signals counted as absent.
    fn signal_error(&mut self, error: &SignalError) {
        let _ = error;
    }

    /// The summary of one latency epoch, every epoch (holds included; only the epochs that
    /// move the limit reach [`decision`](Self::decision)), just before the controller sees it:
    /// for a sink that needs the samples of every epoch (a manager sizes its latency sampling
    /// from them).
    fn epoch(&mut self, summary: &LatencySummary) {
        let _ = summary;
    }
}

/// The sink that keeps nothing.
impl DecisionSink for () {
    fn decision(&mut self, _: &Decision) {}
}

impl<F: FnMut(&Decision) + Send> DecisionSink for F {
    fn decision(&mut self, decision: &Decision) {
        self(decision);
    }
}

/// A one-shot, cloneable stop signal: [`trigger`](Self::trigger) once, and every
/// [`wait`](Self::wait) completes.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

struct ShutdownInner {
    stopped: AtomicBool,
    event: event_listener::Event,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ShutdownInner {
                stopped: AtomicBool::new(false),
                event: event_listener::Event::new(),
            }),
        }
    }

    /// Triggers it: every waiter wakes, now and later.
    pub fn trigger(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Completes once triggered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping it loses nothing.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

/// The control loop on two time scales: every `adjustment_interval` the machine cycle (collect →
/// decide → apply → record), and, given a [`LatencyRecorder`], a latency epoch about once per
/// round trip (take the recorder's summary → [`Controller::epoch`] → apply → record).
///
/// Written once over [`Runtime`]; every executor shim and every manager runs this same loop, in
/// one task: it sleeps until the next epoch deadline ([`Controller::next_epoch`]) or machine
/// tick, whichever comes first.
///
/// - The first thing [`run`](Self::run) does is apply the controller's initial limit.
/// - Machine ticks are on a fixed grid (`start + k × interval`); a tick missed because the
///   executor was late is skipped, not bunched.
/// - The sink sees every machine decision and every epoch that changes the limit, so that its
///   records chain (each `previous_limit` is the last `new_limit`). A steady epoch (a hold)
///   records nothing. Throttling is the sink's own business (ace-std's decision log writes at
///   most one epoch line per interval by default).
/// - A source that errors, or takes longer than one interval, counts as absent for that cycle, and
///   the sink is told through [`DecisionSink::signal_error`]. The loop never stops for it.
/// - [`Shutdown::trigger`] ends the loop promptly, even mid-sleep or mid-collection.
/// - Given a [`LatencyRecorder`] ([`with_latency`](Self::with_latency)) and a config with the
///   latency signal on, [`run`](Self::run) takes its summary at each epoch; without the latency
///   signal it runs the machine cycle alone.
#[derive(Debug)]
pub struct ControlLoop<R, S, T, K> {
    runtime: R,
    controller: Controller,
    source: S,
    target: T,
    sink: K,
    latency: Option<alloc::sync::Arc<LatencyRecorder>>,
}

impl<R, S, T, K> ControlLoop<R, S, T, K>
where
    R: Runtime,
    S: SignalSource,
    T: LimitTarget,
    K: DecisionSink,
{
    /// Assembles a loop; nothing runs until [`run`](Self::run) or [`step`](Self::step).
    pub fn new(runtime: R, controller: Controller, source: S, target: T, sink: K) -> Self {
        Self {
            runtime,
            controller,
            source,
            target,
            sink,
            latency: None,
        }
    }

    /// Feeds the latency epochs from `recorder`: each epoch takes its
    /// [summary](LatencyRecorder::take_summary) ([`step`](Self::step) takes it into
    /// [`Signals::latency`] instead). The managers record every task's latency (or failure) and
    /// every admission into the same recorder.
    #[must_use]
    pub fn with_latency(mut self, recorder: alloc::sync::Arc<LatencyRecorder>) -> Self {
        self.latency = Some(recorder);
        self
    }

    /// The controller, with its current limit.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The target the loop drives.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The sink the loop records to.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// One cycle of both paths at once, now: collect (bounded by one interval), take the
    /// latency recorder's summary into the signals, decide, apply, record. [`run`](Self::run)
    /// paces the two instead.
    pub async fn step(&mut self) -> Decision {
        self.cycle(true).await
    }

    /// One latency epoch, now: take the recorder's summary, [`Controller::epoch`], apply; the
    /// sink sees the decision if it changed the limit. `None` without a recorder.
    pub fn epoch_step(&mut self) -> Option<Decision> {
        let recorder = self.latency.as_ref()?;
        let summary = recorder.take_summary();
        self.sink.epoch(&summary);
        let now = self.runtime.now();
        let usage = self.target.usage();
        self.controller.set_ceiling(self.target.ceiling());
        let decision = self.controller.epoch(now, &summary, usage);
        if decision.new_limit != decision.previous_limit {
            self.target.set_limit(decision.new_limit);
        }
        if decision.action != Action::Hold {
            self.sink.decision(&decision);
        }
        Some(decision)
    }

    async fn cycle(&mut self, take_latency: bool) -> Decision {
        let interval = self.controller.config().adjustment_interval;
        let sleep = self.runtime.sleep(interval);
        let collected = future::or(async { Some(self.source.collect().await) }, async {
            sleep.await;
            None
        })
        .await;
        let mut signals = match collected {
            Some(Ok(signals)) => signals,
            Some(Err(error)) => {
                self.sink.signal_error(&error);
                Signals::default()
            }
            None => {
                self.sink.signal_error(&SignalError::new(
                    "collect",
                    "timed out after one adjustment interval",
                ));
                Signals::default()
            }
        };
        // NaN or out-of-range readings are absent, not healthy (nor alarming).
        if let Some(error) = signals.sanitize() {
            self.sink.signal_error(&error);
        }
        if let Some(recorder) = self.latency.as_ref().filter(|_| take_latency) {
            signals.latency = Some(recorder.take_summary());
        }
        let now = self.runtime.now();
        let usage = self.target.usage();
        self.controller.set_ceiling(self.target.ceiling());
        let decision = self.controller.decide(now, &signals, usage);
        if decision.new_limit != decision.previous_limit {
            self.target.set_limit(decision.new_limit);
        }
        self.sink.decision(&decision);
        decision
    }

    /// Runs cycles until `shutdown` is triggered, then returns the loop (with its final
    /// controller and sink).
    pub async fn run(mut self, shutdown: Shutdown) -> Self {
        self.target.set_limit(self.controller.limit());
        let interval = self.controller.config().adjustment_interval;
        let paced = self.latency.is_some() && self.controller.config().latency_tolerance.is_some();
        let mut next = self.runtime.now().saturating_add(interval);
        loop {
            let now = self.runtime.now();
            let wake = if paced {
                next.min(self.controller.next_epoch())
            } else {
                next
            };
            if wake > now {
                let sleep = self.runtime.sleep(wake - now);
                let stopped = future::or(
                    async {
                        shutdown.wait().await;
                        true
                    },
                    async {
                        sleep.await;
                        false
                    },
                )
                .await;
                if stopped {
                    return self;
                }
            }
            let now = self.runtime.now();
            if paced && now >= self.controller.next_epoch() {
                self.epoch_step();
            }
            if now < next {
                continue;
            }
            let stopped = future::or(
                async {
                    shutdown.wait().await;
                    true
                },
                async {
                    self.cycle(!paced).await;
                    false
                },
            )
            .await;
            if stopped {
                return self;
            }
            // Skip ticks missed while the executor was late or the cycle ran long, rather than
            // running cycles back to back.
            let now = self.runtime.now();
            while next <= now {
                next = next.saturating_add(interval);
                if next == Duration::MAX {
                    break;
                }
            }
        }
    }
}
