//! [`Manager`], the handle: submit, acquire, spawn, stats, set the limit, shut down.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ace_core::{DetachedPermit, LimitTarget, Permit, Priority, Runtime, TryAcquireError};
use futures_lite::FutureExt;

use super::inner::{note_admission, Finish, Inner};
use super::join::{JoinError, JoinHandle, JoinRepr};
use super::permit::{started_word, Reserved, TaskPermit};
use crate::stats::Stats;

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
            Self::Shutdown => f.write_str(crate::util::SHUT_DOWN),
        }
    }
}

impl std::error::Error for SubmitError {}

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
/// reads the signals, decides with the AIMD [`Controller`](ace_core::Controller), and moves the semaphore's limit.
/// Tasks wait for a slot in [`submit`](Self::submit) (backpressure). `Manager` is a cheap
/// handle (`Clone`, an `Arc` inside); the control loop stops when [`shutdown`](Self::shutdown)
/// is called or the last handle is dropped.
pub struct Manager<R: Runtime> {
    pub(super) inner: Arc<Inner<R>>,
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

impl<R: Runtime> Manager<R> {
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
        self.run(Priority::Normal, fut, |_| true).await
    }

    /// [`submit`](Self::submit) in class `priority`: while tasks wait for a slot, a freed slot
    /// goes to the most important class waiting (first in, first out within a class), after
    /// any class still under its guaranteed [share](crate::Builder::shares).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`], as [`submit`](Self::submit).
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ace_std::{AimdConfig, Priority};
    ///
    /// let manager = ace_std::tokio::Manager::new(AimdConfig::default())?;
    /// let health = manager.submit_with(Priority::Critical, async { "ok" }).await?;
    /// assert_eq!(health, "ok");
    /// let critical = &manager.stats().priorities[Priority::Critical.rank()];
    /// assert_eq!((critical.priority, critical.admitted), (Priority::Critical, 1));
    /// # manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    pub async fn submit_with<F: Future>(
        &self,
        priority: Priority,
        fut: F,
    ) -> Result<F::Output, SubmitError> {
        self.run(priority, fut, |_| true).await
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
        self.run(Priority::Normal, fut, Result::is_ok).await
    }

    /// [`submit_result`](Self::submit_result) in class `priority` (see
    /// [`submit_with`](Self::submit_with)).
    ///
    /// # Errors
    ///
    /// As [`submit_result`](Self::submit_result).
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_result_with<F, T, E>(
        &self,
        priority: Priority,
        fut: F,
    ) -> Result<Result<T, E>, SubmitError>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.run(priority, fut, Result::is_ok).await
    }

    async fn run<F: Future>(
        &self,
        priority: Priority,
        fut: F,
        ok: impl FnOnce(&F::Output) -> bool,
    ) -> Result<F::Output, SubmitError> {
        let inner = &*self.inner;
        if inner.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::Shutdown);
        }
        // The fast path first, as `acquire` would: only a task that queues reads the clock to
        // time its wait.
        let permit = match inner.sem.try_acquire_with(priority) {
            Ok(permit) => {
                inner.classes.admitted(priority, None);
                permit
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::Shutdown),
            Err(_) => {
                let queued = inner.runtime.now();
                let permit = inner
                    .sem
                    .acquire_with(priority)
                    .await
                    .map_err(|_| SubmitError::Shutdown)?;
                let waited = inner.runtime.now().saturating_sub(queued);
                inner.classes.admitted(priority, Some(waited));
                permit
            }
        };
        let seq = inner.count_admission();
        // Shutdown began between the acquire and the count: it may not have seen this task, so
        // it must not run (SeqCst pairs with `shutdown`'s store and loads). The slot goes back
        // before the waiter is told, so that `in_flight` reads 0 once it wakes.
        if inner.closing.load(Ordering::SeqCst) {
            drop(permit);
            inner.unadmit();
            return Err(SubmitError::Shutdown);
        }
        let mut finish = Finish {
            inner,
            started: None,
            ok: None,
        };
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
        self.acquire_with(Priority::Normal).await
    }

    /// [`acquire`](Self::acquire) in class `priority` (see [`submit_with`](Self::submit_with)).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`] once [`shutdown`](Self::shutdown) has been called.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_with(&self, priority: Priority) -> Result<TaskPermit<R>, SubmitError> {
        self.acquire_in(priority, false).await
    }

    /// [`acquire_with`](Self::acquire_with), joining the front of its class if it has to wait
    /// (`newest_first`: an adaptive queue under overload).
    pub(crate) async fn acquire_in(
        &self,
        priority: Priority,
        newest_first: bool,
    ) -> Result<TaskPermit<R>, SubmitError> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::Shutdown);
        }
        // Borrowed permits, detached at once (no await in between, so a cancelled acquire
        // leaks nothing): the `TaskPermit` returns them through its one `Arc` of the manager.
        let permit = match inner.sem.try_acquire_with(priority).map(Permit::detach) {
            Ok(permit) => {
                inner.classes.admitted(priority, None);
                permit
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::Shutdown),
            Err(_) => {
                let queued = inner.runtime.now();
                let acquire = inner.sem.acquire_with(priority);
                let acquire = if newest_first {
                    acquire.newest_first()
                } else {
                    acquire
                };
                let permit = acquire.await.map_err(|_| SubmitError::Shutdown)?.detach();
                let waited = inner.runtime.now().saturating_sub(queued);
                inner.classes.admitted(priority, Some(waited));
                permit
            }
        };
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
        self.try_acquire_with(Priority::Normal)
    }

    /// [`try_acquire`](Self::try_acquire) in class `priority`; a refusal is counted in the
    /// class's [`refused`](crate::PriorityStats::refused).
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_with(&self, priority: Priority) -> Result<TaskPermit<R>, TryAcquireError> {
        let result = self.try_admit(priority);
        if let Err(TryAcquireError::NoPermits) = result {
            self.inner.classes.refused(priority);
        }
        result
    }

    /// [`try_acquire_with`](Self::try_acquire_with) without counting a refusal: for a caller
    /// that waits when this fails.
    #[inline]
    pub(crate) fn try_admit(&self, priority: Priority) -> Result<TaskPermit<R>, TryAcquireError> {
        let inner = &self.inner;
        // No early look at `closing`: `shutdown` closes the semaphore right after setting it, and
        // `admit` refuses a slot taken in between.
        let permit = inner.sem.try_acquire_with(priority)?.detach();
        inner.classes.admitted(priority, None);
        self.admit(permit).ok_or(TryAcquireError::Closed)
    }

    /// [`try_admit`](Self::try_admit) of a slot not yet bound to a task: no `Arc` clone until
    /// [`bind`](Self::bind).
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn try_reserve(&self, priority: Priority) -> Result<Reserved, TryAcquireError> {
        let inner = &self.inner;
        let permit = inner.sem.try_acquire_with(priority)?.detach();
        inner.classes.admitted(priority, None);
        self.admit_reserved(permit).ok_or(TryAcquireError::Closed)
    }

    /// The task of a reserved slot: from now on it counts as running until its permit ends.
    #[cfg(feature = "tower")]
    #[inline(always)]
    pub(crate) fn bind(&self, slot: Reserved) -> TaskPermit<R> {
        TaskPermit::new(Arc::clone(&self.inner), slot.permit, slot.started)
    }

    /// Gives a reserved slot back unused, as [`TaskPermit`]'s `release` does: no task, no
    /// sample, no failure.
    #[cfg(feature = "tower")]
    pub(crate) fn give_back(&self, slot: Reserved) {
        self.inner.give_back(slot.permit);
    }

    /// For each class, true if it holds fewer slots than its guaranteed share (never without
    /// shares).
    #[cfg(feature = "tower")]
    pub(crate) fn under_shares(&self) -> [bool; Priority::ALL.len()] {
        let sem = &self.inner.sem;
        let (shares, limit) = (sem.shares(), sem.limit());
        Priority::ALL.map(|p| sem.held(p) < shares.guaranteed(p, limit))
    }

    /// Tasks waiting in `priority` or a more important class: those a new `priority` task
    /// would be served after.
    #[cfg(feature = "tower")]
    pub(crate) fn waiting_ahead_of(&self, priority: Priority) -> usize {
        let sem = &self.inner.sem;
        Priority::ALL[..=priority.rank()]
            .iter()
            .map(|&p| sem.waiting_in(p))
            .sum()
    }

    /// Counts a refusal of `priority` decided outside the manager (a tower layer's shed, a full
    /// queue, a deadline that cannot be met).
    #[cfg(feature = "tower")]
    pub(crate) fn note_refused(&self, priority: Priority) {
        self.inner.classes.refused(priority);
    }

    /// Counts an acquired slot as an admitted task, or gives it back if shutdown began
    /// meanwhile (it did not see this task, so the task must not run).
    #[inline(always)]
    fn admit(&self, permit: DetachedPermit) -> Option<TaskPermit<R>> {
        let Reserved { permit, started } = self.admit_reserved(permit)?;
        Some(TaskPermit::new(Arc::clone(&self.inner), permit, started))
    }

    /// [`admit`](Self::admit) without the task's handle on the manager.
    #[inline(always)]
    fn admit_reserved(&self, permit: DetachedPermit) -> Option<Reserved> {
        let inner = &self.inner;
        let seq = inner.count_admission();
        // SeqCst pairs with `shutdown`'s store and loads, as in `run`.
        if inner.closing.load(Ordering::SeqCst) {
            self.admitted_after_shutdown(permit);
            return None;
        }
        note_admission(inner);
        // The permit is built in one piece at the end: the fast path moves it once.
        let started = if inner.latency.is_some() && inner.counters.sampled(seq) {
            Some(inner.runtime.now())
        } else {
            None
        };
        Some(Reserved {
            permit,
            started: started_word(started),
        })
    }

    /// Gives back a slot counted as admitted after shutdown began: its task never runs, so it
    /// records nothing (neither a sample nor a failure) and is un-admitted, not finished.
    #[cold]
    fn admitted_after_shutdown(&self, permit: DetachedPermit) {
        self.inner.sem.release_detached(permit);
        self.inner.unadmit();
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
        self.spawn_with(Priority::Normal, fut)
    }

    /// [`spawn`](Self::spawn) in class `priority` (see [`submit_with`](Self::submit_with)).
    pub fn spawn_with<F>(&self, priority: Priority, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let this = self.clone();
        self.inner.runtime.spawn(async move {
            let run = this.run(
                priority,
                AssertUnwindSafe(fut).catch_unwind(),
                Result::is_ok,
            );
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

    /// Sets the limit by hand, clamped to `[min_limit, max_limit]`; returns the limit applied.
    ///
    /// A raise admits waiting tasks at once; a cut interrupts nothing (running tasks finish,
    /// and no new one starts until fewer than the new limit run). The control loop continues
    /// from this limit, keeping what it learned (its latency baseline among it). With a fleet
    /// budget ([`Builder::fleet`](super::Builder)) the limit in force is at most the grant, as
    /// for the controller's own limits.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ace_std::AimdConfig;
    ///
    /// let manager = ace_std::tokio::Manager::new(AimdConfig { min_limit: 2, max_limit: 8, ..AimdConfig::fixed(4) })?;
    /// assert_eq!(manager.set_limit(6), 6);
    /// assert_eq!(manager.limit(), 6);
    /// assert_eq!(manager.set_limit(100), 8);
    /// # manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    pub fn set_limit(&self, limit: usize) -> usize {
        let (min, max) = self.inner.bounds;
        let limit = limit.clamp(min, max);
        self.inner.control.set_limit(limit);
        limit
    }

    /// True when a slot is free now (another caller may still take it first).
    #[cfg(feature = "tower")]
    pub(crate) fn has_free_slot(&self) -> bool {
        self.inner.sem.available() > 0
    }

    /// A snapshot of the limit, its use, and the counters.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        let usage = LimitTarget::usage(&*i.sem);
        let completed = i.finished.0.load(Ordering::Relaxed);
        let failed = i.failed.0.load(Ordering::Relaxed);
        let mut stats = i.counters.snapshot(usage, completed, failed);
        stats.priorities = i.priorities();
        stats
    }

    /// The runtime the manager runs on.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// True once [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closing.load(Ordering::Relaxed)
    }

    /// Stops admitting work, lets running work finish, stops the control loop (waiting for it
    /// at most the source timeout), and with a fleet budget ([`Builder::fleet`](super::Builder)),
    /// leaves the fleet and waits until Redis was told.
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
        inner.control.stop();
        async move {
            loop {
                if inner.admitted(Ordering::SeqCst) == inner.finished.0.load(Ordering::SeqCst) {
                    break;
                }
                let listener = inner.idle.listen();
                if inner.admitted(Ordering::SeqCst) == inner.finished.0.load(Ordering::SeqCst) {
                    break;
                }
                listener.await;
            }
            // At most the source timeout: a source that blocks its thread must not hold the
            // shutdown (the loop ends as soon as its task is polled again).
            inner.control.stopped().await;
            // Leave the fleet now, not from a background task at drop that nothing waits for:
            // the others take this member's share back at once.
            inner.control.leave_fleet().await;
        }
    }
}
