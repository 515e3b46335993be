//! The one place a control loop is wired: every manager (the async [`Manager`](crate::Manager),
//! the thread pool, the Kafka consumer) hands it its options, its target and its runtime, and
//! gets back a running, panic-guarded loop.
//!
//! The steps, in order, are written here and nowhere else:
//!
//! 1. [`Wiring::new`]: clamp the config to what a semaphore holds, validate it, make the
//!    counters behind `stats()` and (when tasks are timed) the latency recorder the manager
//!    records into.
//! 2. [`Wiring::assemble`]: the user's sources (each bounded by the source timeout), then the
//!    manager's defaults, merged into one source; the decision log, the user's sinks and the
//!    counters as one sink; the target wrapped by the fleet budget if there is one.
//! 3. [`Loop::spawn`] (on the manager's runtime) or [`Loop::spawn_thread`] (on a thread of its
//!    own): both time scales of [`ControlLoop`] run until [`LoopHandle::stop`], a panic is
//!    logged and ends the loop with the limit where it was, and [`LoopHandle::set_limit`]
//!    continues from a limit set by hand.
//!
//! It sits above signals, stats and log and below the managers; it knows no manager, so a
//! target that is not a semaphore (the pool's workers, the Kafka gate) is wired alike.

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{
    AimdConfig, ConfigError, ControlLoop, Controller, DecisionSink, LatencyRecorder, LimitTarget,
    Runtime, Shutdown, SignalError, SignalSource, Signals,
};
use futures_lite::FutureExt;

use crate::log::{EpochLogging, HoldLogging};
use crate::signals::{LagProbe, Merge, SystemSignals};
use crate::stats::{ClassProbe, DecisionCounters};
use crate::util::{clamp_to_permits, lock, panic_message, DynSource};

mod sinks;

use sinks::{merged, sinks, Sinks};

/// The options every manager's builder shares (the one vocabulary: `source`, `sink`,
/// `log_writer`, `log_holds`, `log_epochs`, `tracing`, `metrics`, `name`, `source_timeout`,
/// `default_signals`, `time_tasks`, `fleet`).
pub(crate) struct LoopOptions {
    pub(crate) sources: Vec<(&'static str, Box<dyn DynSource>)>,
    pub(crate) source_timeout: Option<Duration>,
    pub(crate) writer: Option<Box<dyn Write + Send>>,
    pub(crate) holds: HoldLogging,
    pub(crate) epochs: EpochLogging,
    pub(crate) tracing: bool,
    pub(crate) metrics: bool,
    pub(crate) name: Option<String>,
    /// A manager's per-class figures, for the log's records and metrics.
    pub(crate) classes: Option<ClassProbe>,
    pub(crate) sinks: Vec<Box<dyn DecisionSink>>,
    pub(crate) default_signals: bool,
    pub(crate) time_tasks: Option<bool>,
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::fleet::FleetBudget>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            source_timeout: None,
            writer: None,
            holds: HoldLogging::OnChange,
            epochs: EpochLogging::PerInterval,
            tracing: true,
            metrics: true,
            name: None,
            classes: None,
            sinks: Vec::new(),
            default_signals: true,
            time_tasks: None,
            #[cfg(feature = "redis")]
            fleet: None,
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
            .field("epochs", &self.epochs)
            .field("tracing", &self.tracing)
            .field("metrics", &self.metrics)
            .field("sinks", &self.sinks.len())
            .field("default_signals", &self.default_signals)
            .field("time_tasks", &self.time_tasks)
            .finish_non_exhaustive()
    }
}

/// The default sources a manager reads when `default_signals` is on (its own come after the
/// user's, so the user's win for the signals they read).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Defaults {
    /// [`SystemSignals`]: CPU and memory, cgroup aware.
    pub(crate) system: bool,
    /// A [`LagProbe`] waking this often (only where the runtime is an executor).
    pub(crate) lag_probe: Option<Duration>,
}

/// A manager's loop, configured but not yet started: [`new`](Self::new) at `build`,
/// [`assemble`](Self::assemble) once the target exists.
#[derive(Debug)]
pub(crate) struct Wiring {
    controller: Controller,
    options: LoopOptions,
    counters: Arc<DecisionCounters>,
    latency: Option<Arc<LatencyRecorder>>,
}

impl Wiring {
    /// Validates `config` (limits above [`ace_core::Semaphore::MAX_PERMITS`] clamped to it) and
    /// makes the counters and, when tasks are timed, the latency recorder.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    pub(crate) fn new(config: AimdConfig, options: LoopOptions) -> Result<Self, ConfigError> {
        let controller = Controller::new(clamp_to_permits(config))?;
        // Timing is on by default when the latency signal is (the config's default).
        let latency = options
            .time_tasks
            .unwrap_or(controller.config().latency_tolerance.is_some())
            // Striped: the executor's threads record every task, each into lines of its own.
            .then(|| Arc::new(LatencyRecorder::striped(crate::util::STRIPES)));
        Ok(Self {
            controller,
            options,
            counters: Arc::new(DecisionCounters::default()),
            latency,
        })
    }

    /// The validated (and clamped) config.
    pub(crate) fn config(&self) -> &AimdConfig {
        self.controller.config()
    }

    /// The limit the loop starts from.
    pub(crate) fn initial_limit(&self) -> usize {
        self.controller.limit()
    }

    /// The counters behind `stats()`, fed by the loop's sink.
    pub(crate) fn counters(&self) -> &Arc<DecisionCounters> {
        &self.counters
    }

    /// The recorder the manager records its tasks into, when tasks are timed.
    pub(crate) fn latency(&self) -> Option<&Arc<LatencyRecorder>> {
        self.latency.as_ref()
    }

    /// Assembles the loop on `runtime` for `target`: merged sources (the user's, then
    /// `defaults`), one sink (log, user's sinks, counters), the fleet wrapper.
    pub(crate) fn assemble<R: Runtime>(
        self,
        runtime: R,
        target: Arc<dyn LimitTarget>,
        defaults: Defaults,
    ) -> Loop<R, Merge<R>> {
        let Self {
            controller,
            mut options,
            counters,
            latency,
        } = self;
        let interval = controller.config().adjustment_interval;
        let source_timeout = options.source_timeout.unwrap_or(interval / 2);
        let (mut source, inbox) = merged(
            runtime.clone(),
            source_timeout,
            std::mem::take(&mut options.sources),
        );
        if options.default_signals {
            if defaults.system {
                source.push("system", SystemSignals::new());
            }
            if let Some(period) = defaults.lag_probe {
                source.push("lag", LagProbe::with_period(&runtime, period));
            }
        }
        let sink = sinks(&mut options, interval, inbox, counters);
        // With a fleet budget, the loop drives the budget's wrapper around the target.
        #[cfg(feature = "redis")]
        let target = match &options.fleet {
            Some(budget) => Arc::new(budget.target(target)) as Arc<dyn LimitTarget>,
            None => target,
        };
        Loop {
            runtime,
            controller,
            source,
            target,
            sink,
            latency,
            source_timeout,
            #[cfg(feature = "redis")]
            fleet: options.fleet,
        }
    }
}

/// An assembled loop, not yet running.
pub(crate) struct Loop<R, S> {
    runtime: R,
    controller: Controller,
    source: S,
    target: Arc<dyn LimitTarget>,
    sink: Sinks,
    latency: Option<Arc<LatencyRecorder>>,
    source_timeout: Duration,
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetBudget>,
}

impl<R, S> std::fmt::Debug for Loop<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("limit", &self.controller.limit())
            .field("timed", &self.latency.is_some())
            .finish_non_exhaustive()
    }
}

/// What a running loop shares with its handle.
#[derive(Debug, Default)]
struct LoopShared {
    stopping: AtomicBool,
    /// A limit set by hand, for the controller to continue from.
    manual: Mutex<Option<usize>>,
    /// Ends the loop's current run (to stop, or to continue from a limit set by hand).
    wake: Mutex<Shutdown>,
    /// Fires when the loop's task ends, however it ends.
    done: Shutdown,
}

/// The handle of a running loop: stop it, set its limit by hand, wait for it to end.
pub(crate) struct LoopHandle {
    shared: Arc<LoopShared>,
    source_timeout: Duration,
    /// The loop's target, as the loop sees it (wrapped by the fleet budget if there is one):
    /// a limit set by hand goes through it, so it never bypasses the fleet's grant. Asserted
    /// unwind-safe, so the managers that hold this handle stay so (`tests/unwind_safe.rs`): a
    /// target is a limit behind atomics or a lock (the semaphore, the pool's target, the fleet
    /// budget), consistent however a panic interrupts a caller.
    target: AssertUnwindSafe<Arc<dyn LimitTarget>>,
    /// The fleet budget the loop's target is wrapped in, to leave at shutdown.
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetBudget>,
}

impl Clone for LoopHandle {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            source_timeout: self.source_timeout,
            target: AssertUnwindSafe(Arc::clone(&self.target)),
            #[cfg(feature = "redis")]
            fleet: self.fleet.clone(),
        }
    }
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle")
            .field("shared", &self.shared)
            .field("source_timeout", &self.source_timeout)
            .finish_non_exhaustive()
    }
}

impl LoopHandle {
    /// Stops the loop at once, even mid-sleep or mid-collection. Idempotent.
    pub(crate) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        lock(&self.shared.wake).trigger();
    }

    /// Applies `limit` (already clamped by the caller) to the target at once, through the
    /// fleet's grant if there is one, and has the loop continue from it: the controller keeps
    /// its latency baseline, floor and averages.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.target.set_limit(limit);
        *lock(&self.shared.manual) = Some(limit);
        lock(&self.shared.wake).trigger();
    }

    /// Completes when the loop's task has ended, or after the source timeout, whichever comes
    /// first: a source that blocks its thread past its timeout does not hold a shutdown.
    pub(crate) async fn stopped(&self) {
        let done = &self.shared.done;
        if done.is_triggered() {
            return;
        }
        // The grace period runs on a thread of its own, not on the runtime's timer: a source
        // that blocks a tokio worker can stall the timer with it (no worker then drives it).
        let grace = Shutdown::new();
        let fire = grace.clone();
        let timeout = self.source_timeout;
        let spawned = std::thread::Builder::new()
            .name("ace-shutdown-grace".to_owned())
            .spawn(move || {
                std::thread::sleep(timeout);
                fire.trigger();
            });
        if spawned.is_err() {
            // No thread to time with: wait for the loop itself.
            done.wait().await;
            return;
        }
        futures_lite::future::or(done.wait(), grace.wait()).await;
    }
}

impl LoopHandle {
    /// Leaves the fleet, if the loop has a budget, and waits until Redis was told (or failed
    /// to be: a warning, and the lease expires there on its own). Call it once the manager's
    /// tasks have ended.
    pub(crate) async fn leave_fleet(&self) {
        #[cfg(feature = "redis")]
        if let Some(budget) = &self.fleet {
            if let Err(e) = budget.leave().await {
                tracing::warn!(
                    target: "ace",
                    error = %e,
                    "could not leave the fleet; its lease expires on its own"
                );
            }
        }
    }
}

/// Fires the loop's "done" signal when its task ends, however it ends (returns, panics, or is
/// dropped with its runtime).
struct LoopDone(Arc<LoopShared>);

impl Drop for LoopDone {
    fn drop(&mut self) {
        if !self.0.stopping.load(Ordering::SeqCst) {
            tracing::error!(
                target: "ace",
                "the control loop ended before shutdown (it panicked, or its runtime is gone); \
                 the limit stays where it was"
            );
        }
        self.0.done.trigger();
    }
}

/// Lends the loop's source for one run (the driver owns its parts; a limit set by hand starts
/// a new run with the same source and sink).
struct Lent<'a, S>(&'a mut S);

impl<S: SignalSource> SignalSource for Lent<'_, S> {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        self.0.collect()
    }
}

impl<R, S> Loop<R, S>
where
    R: Runtime,
    S: SignalSource + 'static,
{
    /// Wraps the merged source (the Kafka consumer adds its lag to it, say).
    #[cfg_attr(
        not(feature = "kafka"),
        allow(dead_code, reason = "only the Kafka consumer wraps the merged source")
    )]
    pub(crate) fn map_source<T>(self, f: impl FnOnce(S) -> T) -> Loop<R, T> {
        Loop {
            runtime: self.runtime,
            controller: self.controller,
            source: f(self.source),
            target: self.target,
            sink: self.sink,
            latency: self.latency,
            source_timeout: self.source_timeout,
            #[cfg(feature = "redis")]
            fleet: self.fleet,
        }
    }

    fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: Arc::new(LoopShared::default()),
            source_timeout: self.source_timeout,
            target: AssertUnwindSafe(Arc::clone(&self.target)),
            #[cfg(feature = "redis")]
            fleet: self.fleet.clone(),
        }
    }

    /// Runs the loop as a task of its runtime.
    pub(crate) fn spawn(self) -> LoopHandle {
        let handle = self.handle();
        let shared = Arc::clone(&handle.shared);
        let runtime = self.runtime.clone();
        // Made before the task, so that it fires even if the task is dropped unpolled.
        let done = LoopDone(Arc::clone(&shared));
        runtime.spawn(async move {
            let done = done;
            if let Err(panic) = AssertUnwindSafe(self.drive(&shared)).catch_unwind().await {
                log_panic(&*panic);
            }
            drop(done);
        });
        handle
    }

    /// Runs cycles until stopped; a limit set by hand ends the current run and the next one
    /// continues from it.
    async fn drive(self, shared: &LoopShared) {
        let Self {
            runtime,
            mut controller,
            mut source,
            target,
            mut sink,
            latency,
            ..
        } = self;
        loop {
            // Install the new wake first, then look: a stop or a limit set in between is seen.
            let wake = Shutdown::new();
            *lock(&shared.wake) = wake.clone();
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Some(limit) = lock(&shared.manual).take() {
                // The controller keeps its latency baseline, floor and averages; the sinks see
                // the change as a decision of its own (`Reason::Manual`), so their records chain.
                let decision = controller.override_limit(runtime.now(), limit);
                target.set_limit(decision.new_limit);
                sink.decision(&decision);
            }
            let mut control = ControlLoop::new(
                runtime.clone(),
                controller,
                Lent(&mut source),
                Arc::clone(&target),
                &mut sink,
            );
            if let Some(recorder) = &latency {
                control = control.with_latency(Arc::clone(recorder));
            }
            controller = control.run(wake).await.controller().clone();
        }
    }
}

#[cfg(feature = "threadpool")]
impl<S: SignalSource + 'static> Loop<crate::util::ThreadRuntime, S> {
    /// Runs the loop on a thread of its own named `name`; stop it with
    /// [`LoopHandle::stop`], then join the thread.
    ///
    /// # Errors
    ///
    /// The operating system's, if it refuses to start the thread.
    pub(crate) fn spawn_thread(
        self,
        name: String,
    ) -> std::io::Result<(LoopHandle, std::thread::JoinHandle<()>)> {
        let handle = self.handle();
        let shared = Arc::clone(&handle.shared);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let done = LoopDone(Arc::clone(&shared));
            let drive = AssertUnwindSafe(|| crate::util::block_on(self.drive(&shared)));
            if let Err(panic) = std::panic::catch_unwind(drive) {
                log_panic(&*panic);
            }
            drop(done);
        })?;
        Ok((handle, thread))
    }
}

fn log_panic(panic: &(dyn std::any::Any + Send)) {
    tracing::error!(
        target: "ace",
        "the control loop panicked; the limit stays where it was: {}",
        panic_message(panic)
    );
}

/// The builder methods of the one vocabulary, on a builder with a `LoopOptions` field named
/// `loop_options`. Written once so the managers cannot drift apart.
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
        /// one poll of its `collect` may block before it is reported, and the longest
        /// `shutdown` waits for the control loop). Default half the adjustment interval.
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

        /// Which latency-epoch changes the log writes (default
        /// [`EpochLogging::PerInterval`](crate::log::EpochLogging): a change of reason, and
        /// otherwise at most one line per adjustment interval). Sinks see every change either
        /// way.
        pub fn log_epochs(mut self, epochs: crate::log::EpochLogging) -> Self {
            self.loop_options.epochs = epochs;
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

        /// Labels this manager's metrics `name="…"`, so that two managers in one process do
        /// not overwrite each other's gauges. Default: no label.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.loop_options.name = Some(name.into());
            self
        }
    };
}
pub(crate) use loop_options_methods;

/// The builder methods of what [`Wiring`] adds to a loop (default sources, task timing, the
/// fleet), on a builder with a `LoopOptions` field named `loop_options`.
macro_rules! engine_methods {
    () => {
        /// Whether to read the default signals (CPU and memory, cgroup aware, and where the
        /// manager runs on an executor, its lag). Default on. Sources added with
        /// [`source`](Self::source) win over them either way.
        pub fn default_signals(mut self, on: bool) -> Self {
            self.loop_options.default_signals = on;
            self
        }

        /// Whether to time every task (admission to completion) for the latency signal.
        /// Default: on when the config's `latency_tolerance` is set (the default), off
        /// otherwise.
        pub fn time_tasks(mut self, on: bool) -> Self {
            self.loop_options.time_tasks = Some(on);
            self
        }

        /// Shares the limit with a fleet: the limit in force is `min(AIMD limit, grant)`, and
        /// the controller never increases past the grant (see [`crate::fleet`]).
        #[cfg(feature = "redis")]
        #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
        pub fn fleet(mut self, budget: crate::fleet::FleetBudget) -> Self {
            self.loop_options.fleet = Some(budget);
            self
        }
    };
}
pub(crate) use engine_methods;
