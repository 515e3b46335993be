//! [`Manager`]: an adaptive concurrency limit for async tasks, on any [`Runtime`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ace_core::{
    AimdConfig, ConfigError, ControlLoop, Controller, LatencyRecorder, LimitTarget, OwnedPermit,
    Runtime, Semaphore, Shutdown, TryAcquireError,
};
use event_listener::Event;
use futures_lite::FutureExt;

use crate::signals::{LagProbe, QueueDepth, SystemSignals};
use crate::stats::{DecisionCounters, Stats};
use crate::util::{clamp_to_permits, loop_options_methods, panic_message, LoopOptions};

mod sealed {
    /// Only this crate's runtimes are ambient: the trait may grow without breaking anyone.
    pub trait Sealed {}
    #[cfg(feature = "tokio")]
    impl Sealed for ace_tokio::TokioRuntime {}
    #[cfg(feature = "smol")]
    impl Sealed for ace_smol::SmolRuntime {}
    #[cfg(feature = "async-std")]
    impl Sealed for ace_async_std::AsyncStdRuntime {}
}

/// A [`Runtime`] that can be found from the calling context, so [`Manager::new`] needs no
/// handle: tokio's current runtime, smol's global executor, async-std's global runtime.
///
/// Sealed: for another runtime use [`Manager::with_runtime`].
pub trait AmbientRuntime: Runtime + sealed::Sealed {
    /// The runtime of the calling context.
    ///
    /// # Panics
    ///
    /// Where there is none (tokio outside a runtime).
    fn ambient() -> Self;
}

#[cfg(feature = "tokio")]
impl AmbientRuntime for ace_tokio::TokioRuntime {
    #[track_caller]
    fn ambient() -> Self {
        Self::current()
    }
}

#[cfg(feature = "smol")]
impl AmbientRuntime for ace_smol::SmolRuntime {
    fn ambient() -> Self {
        Self::global()
    }
}

#[cfg(feature = "async-std")]
impl AmbientRuntime for ace_async_std::AsyncStdRuntime {
    fn ambient() -> Self {
        Self::new()
    }
}

/// Submitting failed: the manager is shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// [`Manager::shutdown`] was called: no new work is admitted.
    Shutdown,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown => f.write_str("the manager is shut down"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// A task started with [`Manager::spawn`] did not return a value.
pub struct JoinError {
    repr: JoinRepr,
}

enum JoinRepr {
    Panic(Box<dyn Any + Send + 'static>),
    Shutdown,
    Cancelled,
}

impl JoinError {
    /// True if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, JoinRepr::Panic(_))
    }

    /// True if the manager was shut down before the task got a slot.
    pub fn is_shut_down(&self) -> bool {
        matches!(self.repr, JoinRepr::Shutdown)
    }

    /// True if the executor dropped the task before it finished (it was shutting down).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, JoinRepr::Cancelled)
    }

    /// The panic payload, if the task panicked; the error back otherwise.
    ///
    /// # Errors
    ///
    /// `self`, if the task did not panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, Self> {
        match self.repr {
            JoinRepr::Panic(p) => Ok(p),
            repr => Err(Self { repr }),
        }
    }

    fn panic_message(&self) -> Option<String> {
        match &self.repr {
            JoinRepr::Panic(p) => Some(panic_message(&**p)),
            _ => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Panic(_) => f
                .debug_tuple("Panic")
                .field(&self.panic_message().unwrap_or_default())
                .finish(),
            JoinRepr::Shutdown => f.write_str("Shutdown"),
            JoinRepr::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Panic(_) => {
                write!(
                    f,
                    "task panicked: {}",
                    self.panic_message().unwrap_or_default()
                )
            }
            JoinRepr::Shutdown => f.write_str("the manager is shut down"),
            JoinRepr::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The handle of a task started with [`Manager::spawn`]: a future of its output.
///
/// Dropping it detaches the task (it still runs).
#[must_use = "dropping a JoinHandle detaches the task"]
pub struct JoinHandle<T> {
    rx: futures_channel::oneshot::Receiver<Result<T, JoinError>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or(Err(JoinError {
                repr: JoinRepr::Cancelled,
            }))
        })
    }
}

/// One admitted task's slot, from [`Manager::acquire`] or [`Manager::try_acquire`]: owned,
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
pub struct TaskPermit<R: Runtime> {
    inner: Arc<Inner<R>>,
    permit: Option<OwnedPermit>,
    started: Option<Duration>,
    recorded: AtomicBool,
    ended: bool,
}

impl<R: Runtime> TaskPermit<R> {
    /// Records one attempt's time as a latency sample (the recorder's cost: one atomic add).
    pub fn record_attempt(&self, latency: Duration) {
        self.recorded.store(true, Ordering::Relaxed);
        if let Some(recorder) = &self.inner.latency {
            recorder.record(latency);
        }
    }

    /// Records one failed or rejected attempt: back-pressure, never a latency sample.
    pub fn record_failure(&self) {
        self.recorded.store(true, Ordering::Relaxed);
        if let Some(recorder) = &self.inner.latency {
            recorder.record_error();
        }
    }

    /// Ends the task as a success and releases its slot. If nothing was recorded, the time
    /// since admission is one sample.
    pub fn success(mut self) {
        self.end(true);
    }

    /// Ends the task as a failure and releases its slot. If nothing was recorded, it counts
    /// one failure.
    pub fn failure(mut self) {
        self.end(false);
    }

    /// Gives the slot back without ending a task: no sample, no failure, not counted as
    /// completed. For a slot reserved and never used (a tower `poll_ready` without `call`, a
    /// stream with no item yet), as tower's `ConcurrencyLimit` drops its permit.
    pub(crate) fn release(mut self) {
        self.ended = true;
        let i = &*self.inner;
        drop(self.permit.take());
        // Un-admit rather than finish: `shutdown` waits for `admitted == finished`.
        i.admitted.0.fetch_sub(1, Ordering::SeqCst);
        if i.closing.load(Ordering::SeqCst) {
            i.idle.notify(usize::MAX);
        }
    }

    fn end(&mut self, ok: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let i = &*self.inner;
        // Recorded attempts stand in for the task's own sample.
        let started = self
            .started
            .filter(|_| !self.recorded.load(Ordering::Relaxed));
        i.count_end(started, ok);
        // Release before telling a shutdown waiter, so that `in_flight` reads 0 once it wakes.
        drop(self.permit.take());
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
            .field("recorded", &self.recorded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A padded counter: the per-task counters sit on their own cache lines, away from each other
/// and from the semaphore, so concurrent submits do not false-share.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counter(AtomicU64);

struct Inner<R> {
    runtime: R,
    sem: Arc<Semaphore>,
    admitted: Counter,
    finished: Counter,
    /// Only failures count here: the success path pays for no third counter.
    failed: Counter,
    closing: AtomicBool,
    idle: Event,
    stop: Shutdown,
    loop_done: Shutdown,
    counters: Arc<DecisionCounters>,
    latency: Option<Arc<LatencyRecorder>>,
}

impl<R: Runtime> Inner<R> {
    /// Counts one admitted task's end: its sample (if it was timed, from `started`) or failure
    /// for the latency signal, and the counters behind `stats()`.
    fn count_end(&self, started: Option<Duration>, ok: bool) {
        if let (Some(recorder), Some(started)) = (&self.latency, started) {
            if ok {
                recorder.record(self.runtime.now().saturating_sub(started));
            } else {
                recorder.record_error();
            }
        }
        if !ok {
            self.failed.0.fetch_add(1, Ordering::Relaxed);
        }
        self.finished.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The latency epochs' demand signal: tells the recorder whether this admission took the last
/// free slot (the limit was reached), so the controller grows only a limit that is used.
fn note_admission<R>(inner: &Inner<R>) {
    if let Some(recorder) = &inner.latency {
        recorder.record_admission(inner.sem.in_use(), inner.sem.limit());
    }
}

impl<R> Drop for Inner<R> {
    fn drop(&mut self) {
        // The last handle is gone: stop the control loop (and with it the lag probe).
        self.stop.trigger();
    }
}

/// An adaptive concurrency limit for async tasks on the executor `R`.
///
/// Use it through `ace_std::tokio::Manager`, `ace_std::smol::Manager` or
/// `ace_std::async_std::Manager` (features `tokio`, `smol`, `async-std`: type aliases of this
/// type), or on any [`Runtime`] with [`with_runtime`](Self::with_runtime).
///
/// # Examples
///
/// The quick start of the Python package ace-concurrency, in Rust:
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ace_std::AimdConfig;
///
/// async fn work(i: u32) -> u32 {
///     i + 1
/// }
///
/// let config = AimdConfig { min_limit: 5, max_limit: 50, initial_limit: 10, ..Default::default() };
/// let manager = ace_std::tokio::Manager::new(config)?;
/// let results = futures::future::join_all((0..100).map(|i| manager.submit(work(i)))).await;
/// assert_eq!(results.len(), 100);
/// manager.shutdown().await;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
///
/// Creating a manager starts its control loop on the runtime: every `adjustment_interval` it
/// reads the signals, decides with the AIMD [`Controller`], and moves the semaphore's limit.
/// Tasks wait for a slot in [`submit`](Self::submit) (backpressure). `Manager` is a cheap
/// handle (`Clone`, an `Arc` inside); the control loop stops when [`shutdown`](Self::shutdown)
/// is called or the last handle is dropped.
pub struct Manager<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for Manager<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R: Runtime> fmt::Debug for Manager<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usage = self.inner.sem.usage();
        f.debug_struct("Manager")
            .field("usage", &usage)
            .field("closing", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

/// Ends one admitted task: counted, timed into the latency recorder (a task dropped while
/// running counts as a failure: it was most likely timed out), and the shutdown waiter told if
/// it is the last.
struct Finish<'a, R: Runtime> {
    inner: &'a Inner<R>,
    started: Option<Duration>,
    ok: Option<bool>,
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

impl<R: AmbientRuntime> Manager<R> {
    /// A manager on the runtime of the calling context, with the default signals (system CPU
    /// and memory, executor lag) and the default log (`tracing` events and metrics).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    ///
    /// # Panics
    ///
    /// Where the context has no runtime (tokio outside a runtime).
    #[track_caller]
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for the optional parts, on the runtime of the calling context (found at
    /// [`build`](Builder::build) unless [`Builder::runtime`] sets one).
    pub fn builder(config: AimdConfig) -> Builder<R> {
        Builder::new(RuntimeChoice::Ambient(R::ambient), config)
    }
}

impl<R: Runtime> Manager<R> {
    /// A manager on `runtime`, with the default signals and log.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    pub fn with_runtime(runtime: R, config: AimdConfig) -> Result<Self, ConfigError> {
        Self::builder_with_runtime(runtime, config).build()
    }

    /// A builder for a manager on `runtime`.
    pub fn builder_with_runtime(runtime: R, config: AimdConfig) -> Builder<R> {
        Builder::new(RuntimeChoice::Given(runtime), config)
    }

    /// Waits for a slot, runs `fut`, releases the slot, and returns its output.
    ///
    /// The future runs in the caller's task; use [`spawn`](Self::spawn) for a task of its
    /// own. The per-task path takes no lock and allocates nothing: a permit and two atomic
    /// counters. When the latency signal is on, tasks are timed (two clock reads and one more
    /// counter) and each admission tells the latency epochs whether it reached the limit (two
    /// atomic loads). A machine cycle that carried over 1,024 tasks would time one in 2^k; the
    /// latency epochs take their summaries themselves, a round trip each, so every task is timed.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`] once [`shutdown`](Self::shutdown) has been called (a task
    /// already running finishes; one still waiting gets the error).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future gives up the wait, or releases the slot if `fut` was
    /// running.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ace_std::AimdConfig;
    ///
    /// let manager = ace_std::tokio::Manager::new(AimdConfig::default())?;
    /// let answer = manager.submit(async { 6 * 7 }).await?;
    /// assert_eq!(answer, 42);
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    pub async fn submit<F: Future>(&self, fut: F) -> Result<F::Output, SubmitError> {
        self.run(fut, |_| true).await
    }

    /// [`submit`](Self::submit) for a fallible future: an `Err` output counts as a failed task
    /// in the latency signal (so a downstream that fails fast never looks fast).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`], as [`submit`](Self::submit); `fut`'s own error is in the
    /// `Ok` value.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_result<F, T, E>(&self, fut: F) -> Result<Result<T, E>, SubmitError>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.run(fut, Result::is_ok).await
    }

    async fn run<F: Future>(
        &self,
        fut: F,
        ok: impl FnOnce(&F::Output) -> bool,
    ) -> Result<F::Output, SubmitError> {
        let inner = &*self.inner;
        if inner.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::Shutdown);
        }
        let permit = inner
            .sem
            .acquire()
            .await
            .map_err(|_| SubmitError::Shutdown)?;
        let seq = inner.admitted.0.fetch_add(1, Ordering::SeqCst);
        let mut finish = Finish {
            inner,
            started: None,
            ok: None,
        };
        // Shutdown began between the acquire and the count: it did not see this task, so it
        // must not run (SeqCst pairs with `shutdown`'s store and loads).
        if inner.closing.load(Ordering::SeqCst) {
            finish.ok = Some(true);
            return Err(SubmitError::Shutdown);
        }
        note_admission(inner);
        if inner.latency.is_some() && inner.counters.sampled(seq) {
            finish.started = Some(inner.runtime.now());
        }
        let out = fut.await;
        finish.ok = Some(ok(&out));
        drop(finish);
        drop(permit);
        Ok(out)
    }

    /// Waits for a slot and returns it as an owned [`TaskPermit`], for work whose slot must
    /// outlive one future: a tower service holding it from `poll_ready` to the end of the
    /// response, a task that retries and records each attempt on its own.
    ///
    /// The permit counts as in flight until it is dropped or ended with
    /// [`TaskPermit::success`] / [`TaskPermit::failure`]; what it records feeds the latency
    /// signal as a task of [`submit`](Self::submit) would.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`] once [`shutdown`](Self::shutdown) has been called.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up its place in the queue and leaks no slot.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, Instant};
    ///
    /// let manager = ace_std::tokio::Manager::new(ace_std::AimdConfig::default())?;
    /// let permit = manager.acquire().await?;
    /// for attempt in 0..3 {
    ///     let started = Instant::now();
    ///     let ok = attempt == 2; // call the downstream here
    ///     if ok {
    ///         permit.record_attempt(started.elapsed());
    ///         break;
    ///     }
    ///     permit.record_failure(); // back-pressure; the backoff below is not latency
    ///     tokio::time::sleep(Duration::from_millis(1)).await;
    /// }
    /// drop(permit);
    /// assert_eq!(manager.stats().in_flight, 0);
    /// # manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    pub async fn acquire(&self) -> Result<TaskPermit<R>, SubmitError> {
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::Shutdown);
        }
        let permit = Arc::clone(&self.inner.sem)
            .acquire_owned()
            .await
            .map_err(|_| SubmitError::Shutdown)?;
        self.admit(permit).ok_or(SubmitError::Shutdown)
    }

    /// A slot now, as an owned [`TaskPermit`], or an error: no slot is free (or someone is
    /// queued for one: a waiter is never overtaken), or the manager is shut down.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] when no slot is free, [`TryAcquireError::Closed`] once
    /// [`shutdown`](Self::shutdown) has been called.
    pub fn try_acquire(&self) -> Result<TaskPermit<R>, TryAcquireError> {
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(TryAcquireError::Closed);
        }
        let permit = Arc::clone(&self.inner.sem).try_acquire_owned()?;
        self.admit(permit).ok_or(TryAcquireError::Closed)
    }

    /// Counts an acquired slot as an admitted task, or gives it back if shutdown began
    /// meanwhile (it did not see this task, so the task must not run).
    fn admit(&self, permit: OwnedPermit) -> Option<TaskPermit<R>> {
        let inner = &self.inner;
        let seq = inner.admitted.0.fetch_add(1, Ordering::SeqCst);
        let mut task = TaskPermit {
            inner: Arc::clone(inner),
            permit: Some(permit),
            started: None,
            recorded: AtomicBool::new(false),
            ended: false,
        };
        // SeqCst pairs with `shutdown`'s store and loads, as in `run`. Ending the untimed
        // permit balances the count and records nothing (neither a sample nor a failure).
        if inner.closing.load(Ordering::SeqCst) {
            task.end(true);
            return None;
        }
        note_admission(inner);
        if inner.latency.is_some() && inner.counters.sampled(seq) {
            task.started = Some(inner.runtime.now());
        }
        Some(task)
    }

    /// Runs `fut` as a task of the executor once it has a slot; the handle yields its output.
    ///
    /// A panic in `fut` comes back as a [`JoinError`] from the handle (its slot is released and
    /// the manager keeps going); so does a shutdown before it got a slot.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let this = self.clone();
        self.inner.runtime.spawn(async move {
            let run = this.run(AssertUnwindSafe(fut).catch_unwind(), Result::is_ok);
            let result = match run.await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(panic)) => Err(JoinError {
                    repr: JoinRepr::Panic(panic),
                }),
                Err(SubmitError::Shutdown) => Err(JoinError {
                    repr: JoinRepr::Shutdown,
                }),
            };
            let _ = tx.send(result);
        });
        JoinHandle { rx }
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.inner.sem.limit()
    }

    /// True when a slot is free now (another caller may still take it first).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.inner.sem.available() > 0
    }

    /// A snapshot of the limit, its use, and the counters.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        let usage = LimitTarget::usage(&*i.sem);
        let completed = i.finished.0.load(Ordering::Relaxed);
        let failed = i.failed.0.load(Ordering::Relaxed);
        i.counters.snapshot(usage, completed, failed)
    }

    /// The runtime the manager runs on.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// True once [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closing.load(Ordering::Relaxed)
    }

    /// Stops admitting work, lets running work finish, and stops the control loop.
    ///
    /// From the call on, `submit` and `spawn` fail with [`SubmitError::Shutdown`] (tasks
    /// waiting for a slot get it too); the returned future completes once every task that had
    /// a slot has ended and the control loop has stopped (promptly: it is woken, not polled).
    /// Calling it again is harmless.
    ///
    /// Do not await it from inside a task of this manager: it would wait for itself.
    ///
    /// # Cancel safety
    ///
    /// The shutdown starts at the call; dropping the future only stops waiting for it.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        inner.closing.store(true, Ordering::SeqCst);
        inner.sem.close();
        inner.stop.trigger();
        async move {
            loop {
                if inner.admitted.0.load(Ordering::SeqCst)
                    == inner.finished.0.load(Ordering::SeqCst)
                {
                    break;
                }
                let listener = inner.idle.listen();
                if inner.admitted.0.load(Ordering::SeqCst)
                    == inner.finished.0.load(Ordering::SeqCst)
                {
                    break;
                }
                listener.await;
            }
            inner.loop_done.wait().await;
        }
    }
}

enum RuntimeChoice<R> {
    Given(R),
    Ambient(fn() -> R),
}

/// Builds a [`Manager`] with its optional parts. Start from [`Manager::builder`].
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ace_std::log::HoldLogging;
/// use ace_std::signals::QueueDepth;
/// use ace_std::AimdConfig;
///
/// let depth = QueueDepth::new();
/// let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
///     .queue_depth(depth.clone())
///     .log_writer(std::io::stderr())
///     .log_holds(HoldLogging::Always)
///     .metrics(false)
///     .build()?;
/// # manager.shutdown().await;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R> {
    runtime: RuntimeChoice<R>,
    config: AimdConfig,
    default_signals: bool,
    loop_options: LoopOptions,
    queue_depth: Option<QueueDepth>,
    lag_period: Duration,
    latency: Option<bool>,
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetBudget>,
}

impl<R> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("default_signals", &self.default_signals)
            .field("loop_options", &self.loop_options)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Builder<R> {
    fn new(runtime: RuntimeChoice<R>, config: AimdConfig) -> Self {
        Self {
            runtime,
            config,
            default_signals: true,
            loop_options: LoopOptions::default(),
            queue_depth: None,
            lag_period: LagProbe::DEFAULT_PERIOD,
            latency: None,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    loop_options_methods!();

    /// Whether to time every task (admission to completion) for the latency signal. Default:
    /// on when the config's `latency_tolerance` is set (the default), off otherwise.
    pub fn time_tasks(mut self, on: bool) -> Self {
        self.latency = Some(on);
        self
    }

    /// The runtime to run on (instead of the calling context's).
    pub fn runtime(mut self, runtime: R) -> Self {
        self.runtime = RuntimeChoice::Given(runtime);
        self
    }

    /// Whether to read the default signals: [`SystemSignals`] (CPU and memory, cgroup aware)
    /// and a [`LagProbe`]. Default on.
    pub fn default_signals(mut self, on: bool) -> Self {
        self.default_signals = on;
        self
    }

    /// Reads `depth` as the queue depth.
    pub fn queue_depth(mut self, depth: QueueDepth) -> Self {
        self.queue_depth = Some(depth);
        self
    }

    /// How often the default lag probe wakes (default [`LagProbe::DEFAULT_PERIOD`]).
    pub fn lag_probe_period(mut self, period: Duration) -> Self {
        self.lag_period = period;
        self
    }

    /// Shares the limit with a fleet: the limit in force is `min(AIMD limit, grant)`, and the
    /// controller never increases past the grant (see [`crate::fleet`]).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet(mut self, budget: crate::fleet::FleetBudget) -> Self {
        self.fleet = Some(budget);
        self
    }

    /// Starts the manager: validates the config, then spawns the control loop. Limits above
    /// [`Semaphore::MAX_PERMITS`] are clamped to it.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    ///
    /// # Panics
    ///
    /// With no runtime given, where the context has none (tokio outside a runtime).
    #[track_caller]
    pub fn build(self) -> Result<Manager<R>, ConfigError> {
        let controller = Controller::new(clamp_to_permits(self.config))?;
        let runtime = match self.runtime {
            RuntimeChoice::Given(r) => r,
            RuntimeChoice::Ambient(f) => f(),
        };
        let interval = controller.config().adjustment_interval;
        let counters = Arc::new(DecisionCounters::default());
        let (mut merge, sink) =
            self.loop_options
                .into_parts(runtime.clone(), interval, Arc::clone(&counters));
        if let Some(depth) = self.queue_depth {
            merge.push("queue_depth", depth);
        }
        if self.default_signals {
            merge.push("system", SystemSignals::new());
            merge.push("lag", LagProbe::with_period(&runtime, self.lag_period));
        }
        let sem = Arc::new(Semaphore::new(controller.limit()));
        let stop = Shutdown::new();
        let loop_done = Shutdown::new();
        let latency = self
            .latency
            .unwrap_or(controller.config().latency_tolerance.is_some())
            .then(|| Arc::new(LatencyRecorder::new()));
        // With a fleet budget, the loop drives the budget's wrapper around the semaphore.
        let target: Arc<dyn LimitTarget> = Arc::clone(&sem) as Arc<dyn LimitTarget>;
        #[cfg(feature = "redis")]
        let target = match &self.fleet {
            Some(budget) => Arc::new(budget.target(target)) as Arc<dyn LimitTarget>,
            None => target,
        };
        let mut control = ControlLoop::new(runtime.clone(), controller, merge, target, sink);
        if let Some(recorder) = &latency {
            control = control.with_latency(Arc::clone(recorder));
        }
        let done = LoopDone {
            done: loop_done.clone(),
            stop: stop.clone(),
        };
        let loop_stop = stop.clone();
        runtime.spawn(async move {
            // However the task ends (returns, panics, or is dropped with its runtime), `done`
            // fires, so `shutdown` returns.
            let done = done;
            if let Err(panic) = AssertUnwindSafe(control.run(loop_stop))
                .catch_unwind()
                .await
            {
                tracing::error!(
                    target: "ace",
                    "the control loop panicked; the limit stays where it was: {}",
                    panic_message(&*panic)
                );
            }
            drop(done);
        });
        Ok(Manager {
            inner: Arc::new(Inner {
                runtime,
                sem,
                admitted: Counter::default(),
                finished: Counter::default(),
                failed: Counter::default(),
                closing: AtomicBool::new(false),
                idle: Event::new(),
                stop,
                loop_done,
                counters,
                latency,
            }),
        })
    }
}

/// Fires the manager's "control loop done" signal when the loop's task ends, however it ends.
struct LoopDone {
    done: Shutdown,
    stop: Shutdown,
}

impl Drop for LoopDone {
    fn drop(&mut self) {
        if !self.stop.is_triggered() {
            tracing::error!(
                target: "ace",
                "the control loop ended before shutdown (it panicked, or its runtime is gone); \
                 the limit stays where it was"
            );
        }
        self.done.trigger();
    }
}
