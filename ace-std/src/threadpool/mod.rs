//! An adaptive pool of threads for sync closures: [`ThreadPoolManager`].
//!
//! The pool runs closures on threads of its own and keeps the number running at once at a limit
//! that an AIMD [`Controller`](ace_core::Controller) moves with the machine's health, every `adjustment_interval`, on a
//! control thread of its own (no async runtime needed).
//!
//! - [`ThreadPoolManager`]: `submit`, `try_submit`, `execute`, `submit_with` and `execute_with`
//!   (in a [`Priority`] class: the queue serves the most important class first), `limit`,
//!   `set_limit`, `stats`, `is_shut_down`, `shutdown`, `shutdown_now`; built by [`Builder`].
//! - [`JoinHandle`]: wait for a result with `join`, or `.await` it; a panic comes back as
//!   [`JoinError::Panicked`].
//! - [`TrySubmitError`]: a full or shut queue hands the closure back.
//! - [`CancelledJob`]: what `shutdown_now` hands back instead of dropping it.
//! - [`PoolStats`]: the common [`Stats`](crate::Stats) (limit, in flight, waiting, completed,
//!   failed, decisions) as `core`, plus the threads alive.
//!
//! The control thread runs the same control loop as every manager: each job's run time (or its
//! panic) feeds the latency signal, a source that fails, panics or hangs counts as absent, and
//! every decision goes to the [`DecisionLog`](crate::log::DecisionLog) (`tracing` events and
//! metrics, JSON lines with [`log_writer`](Builder::log_writer)).
//!
//! # How it follows the limit
//!
//! - **Up:** raising the limit to 50 lets 50 closures run: threads are spawned on demand up to the
//!   limit (never more than `max_limit`).
//! - **Down:** lowering it interrupts nothing. Running closures finish; no new one starts until
//!   fewer than the new limit are running. A worker takes a slot only when it has a job in hand,
//!   so no thread ever holds a slot while it waits for work, and a shrink while saturated cannot
//!   deadlock.
//! - **Idle:** a thread with no work for `idle_timeout` exits, so an idle pool holds no thread but
//!   its control thread.
//!
//! # Examples
//!
//! ```
//! use ace_std::threadpool::ThreadPoolManager;
//! use ace_std::AimdConfig;
//!
//! let pool = ThreadPoolManager::new(AimdConfig::default())?;
//! let handles: Vec<_> = (0..100u64).map(|i| pool.submit(move || i * i)).collect();
//! let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 328_350);
//! pool.shutdown();
//! # Ok::<(), ace_std::ConfigError>(())
//! ```

mod job;
mod lanes;
mod shared;
mod sys;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_core::{AimdConfig, ConfigError, LimitTarget, Priority};

use crate::control::{
    engine_methods, loop_options_methods, Defaults, LoopHandle, LoopOptions, Wiring,
};
use crate::stats::DecisionCounters;
use crate::util::{lock, ThreadRuntime};
use job::{BoxTask, ExecuteTask, SubmitTask};
pub use job::{CancelledJob, JoinError, JoinHandle};

/// The pool's job handle, under its old name.
#[deprecated(since = "0.2.0", note = "renamed `JoinHandle`, as on every manager")]
pub type JobHandle<T> = JoinHandle<T>;

/// The pool's job error, under its old name (its `Rejected` is now `Shutdown`).
#[deprecated(since = "0.2.0", note = "renamed `JoinError`, as on every manager")]
pub type JobError = JoinError;

/// The pool's builder, under its old name.
#[deprecated(since = "0.2.0", note = "renamed `threadpool::Builder`")]
pub type ThreadPoolBuilder = Builder;
use shared::{JobTiming, Mode, PoolTarget, PushError, Shared, SharedOptions};

/// An adaptive thread pool: closures run on its threads, at most [`limit`](Self::limit) at once,
/// and the limit follows the machine's health.
///
/// Build one with [`new`](Self::new) (default signals and decision log) or
/// [`builder`](Self::builder). It is `Send + Sync`: share it by reference or in an `Arc`.
/// Dropping it drains it, like [`shutdown`](Self::shutdown).
///
/// The default signals are [`SystemSignals`](crate::signals::SystemSignals): the machine's (or the cgroup's) CPU and memory
/// use, and the jobs' own latency; a signal that cannot be read is absent and the limit holds.
///
/// # Examples
///
/// ```
/// use ace_std::threadpool::ThreadPoolManager;
/// use ace_std::AimdConfig;
/// use std::time::Duration;
///
/// let config = AimdConfig { min_limit: 2, max_limit: 16, initial_limit: 4, ..AimdConfig::default() };
/// let pool = ThreadPoolManager::builder(config)
///     .queue_capacity(1_000)
///     .idle_timeout(Duration::from_secs(5))
///     .thread_name("resize")
///     .build()?;
/// let handle = pool.submit(|| "done");
/// assert_eq!(handle.join(), Ok("done"));
/// assert_eq!(pool.limit(), 4);
/// # Ok::<(), ace_std::ConfigError>(())
/// ```
pub struct ThreadPoolManager {
    shared: Arc<Shared>,
    control: LoopHandle,
    /// The control thread, joined at shutdown.
    control_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serialises `shutdown` and `shutdown_now`.
    stopping: Mutex<()>,
    counters: Arc<DecisionCounters>,
}

impl ThreadPoolManager {
    /// A pool with `config`, the default signals and the default decision log.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`] if `config` breaks a rule.
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start the control thread.
    #[track_caller]
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for a pool with `config`: set sources, sinks and the log, the queue's capacity,
    /// the idle timeout and the threads' names, then [`build`](Builder::build).
    pub fn builder(config: AimdConfig) -> Builder {
        Builder {
            config,
            loop_options: LoopOptions::default(),
            queue_capacity: None,
            idle_timeout: Builder::default_idle_timeout(),
            thread_name: PoolOptions::default().thread_name,
        }
    }

    /// Queues `f` and returns a handle to its result. Blocks while a bounded queue is full.
    ///
    /// If the pool is already shut down, `f` is dropped unrun and the handle reports
    /// [`JoinError::Shutdown`]; use [`try_submit`](Self::try_submit) to get `f` back instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::ThreadPoolManager;
    /// # let pool = ThreadPoolManager::new(ace_std::AimdConfig::default())?;
    /// let handle = pool.submit(|| (1..=10).product::<u64>());
    /// assert_eq!(handle.join(), Ok(3_628_800));
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn submit<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_with(Priority::Normal, f)
    }

    /// [`submit`](Self::submit) in class `priority`: a worker takes the queued job of the most
    /// important class first (first in, first out within a class), as
    /// [`Manager::submit_with`](crate::Manager::submit_with) is admitted. Each class has its own
    /// queue, of the builder's [`queue_capacity`](Builder::queue_capacity) when bounded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::ThreadPoolManager;
    /// use ace_std::Priority;
    /// # let pool = ThreadPoolManager::new(ace_std::AimdConfig::default())?;
    /// let health = pool.submit_with(Priority::Critical, || "ok");
    /// assert_eq!(health.join(), Ok("ok"));
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn submit_with<F, T>(&self, priority: Priority, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (task, handle) = SubmitTask::new(f);
        if let Err(PushError::Closed(task) | PushError::Full(task)) =
            self.shared.push(priority, Box::new(task), true)
        {
            task.abandon(JoinError::Shutdown);
        }
        handle
    }

    /// Queues `f` if the queue has room, without blocking.
    ///
    /// # Errors
    ///
    /// [`TrySubmitError::Full`] if a bounded queue is full, [`TrySubmitError::Shutdown`] if the
    /// pool is shut down; both hand `f` back unrun.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::{ThreadPoolManager, TrySubmitError};
    /// # let pool = ThreadPoolManager::new(ace_std::AimdConfig::default())?;
    /// pool.shutdown();
    /// match pool.try_submit(|| 1) {
    ///     Err(TrySubmitError::Shutdown(f)) => assert_eq!(f(), 1),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn try_submit<F, T>(&self, f: F) -> Result<JoinHandle<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (task, handle) = SubmitTask::new(f);
        let back = |task: BoxTask| -> F {
            match task.into_any().downcast::<SubmitTask<F, T>>() {
                Ok(task) => match task.into_closure() {
                    Some(f) => f,
                    None => unreachable!("a refused job was never run"),
                },
                Err(_) => unreachable!("the pool boxed this very type"),
            }
        };
        match self.shared.push(Priority::Normal, Box::new(task), false) {
            Ok(()) => Ok(handle),
            Err(PushError::Full(task)) => Err(TrySubmitError::Full(back(task))),
            Err(PushError::Closed(task)) => Err(TrySubmitError::Shutdown(back(task))),
        }
    }

    /// Queues `f` with no handle: its result is dropped and a panic only counts in
    /// [`Stats::failed`](crate::Stats::failed). The cheapest way to run a closure on the pool.
    ///
    /// Blocks while a bounded queue is full; if the pool is shut down, `f` is dropped unrun.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::ThreadPoolManager;
    /// # let pool = ThreadPoolManager::new(ace_std::AimdConfig::default())?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.execute(move || tx.send(7).unwrap());
    /// assert_eq!(rx.recv(), Ok(7));
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn execute<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.execute_with(Priority::Normal, f);
    }

    /// [`execute`](Self::execute) in class `priority` (see [`submit_with`](Self::submit_with)).
    pub fn execute_with<F>(&self, priority: Priority, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        // Refused only after shutdown, as documented: nothing to report to.
        let _ = self.shared.push(priority, Box::new(ExecuteTask(f)), true);
    }

    /// The limit in force: at most this many closures start running at once.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// Sets the limit by hand, clamped to `[min_limit, max_limit]`; returns the limit applied.
    ///
    /// A raise takes effect at once (threads are spawned for queued work). A cut interrupts
    /// nothing: running closures finish, and no new one starts until fewer than the new limit
    /// run. The control loop continues from this limit at its next cycle. With a fleet budget
    /// the limit in force is at most the grant.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::ThreadPoolManager;
    /// # use ace_std::AimdConfig;
    /// let pool = ThreadPoolManager::new(AimdConfig { min_limit: 2, max_limit: 8, ..AimdConfig::fixed(4) })?;
    /// assert_eq!(pool.set_limit(6), 6);
    /// assert_eq!(pool.set_limit(100), 8);
    /// assert_eq!(pool.set_limit(0), 2);
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn set_limit(&self, limit: usize) -> usize {
        let limit = limit.clamp(self.shared.min_limit, self.shared.max_limit);
        self.control.set_limit(limit);
        limit
    }

    /// A snapshot of the pool's state and counters.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::ThreadPoolManager;
    /// let pool = ThreadPoolManager::new(ace_std::AimdConfig::fixed(4))?;
    /// pool.submit(|| ()).join().unwrap();
    /// let stats = pool.stats();
    /// assert_eq!((stats.core.limit, stats.core.completed, stats.core.failed), (4, 1, 0));
    /// assert!(stats.threads <= 4);
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        let (completed, panicked) = self.shared.counts();
        let usage = ace_core::Usage {
            limit: self.shared.limit(),
            in_flight: self.shared.running(),
            waiting: self.shared.queued(),
        };
        PoolStats {
            core: self.counters.snapshot(usage, completed, panicked),
            threads: self.shared.alive(),
        }
    }

    /// True once [`shutdown`](Self::shutdown) or [`shutdown_now`](Self::shutdown_now) has begun:
    /// new jobs are refused.
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_closed()
    }

    /// Stops accepting jobs and waits until every queued and running job has finished.
    ///
    /// The control thread stops at once (not at the end of its interval). Later submits are
    /// refused; a submit racing the shutdown is either refused or run (possibly just after this
    /// returns). Calling it again, or after [`shutdown_now`](Self::shutdown_now), just waits.
    /// Called from one of the pool's own jobs, it starts the drain but does not wait (the job
    /// would wait for itself).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ace_std::threadpool::{JoinError, ThreadPoolManager};
    /// # let pool = ThreadPoolManager::new(ace_std::AimdConfig::default())?;
    /// let queued: Vec<_> = (0..50).map(|i| pool.submit(move || i)).collect();
    /// pool.shutdown();
    /// assert_eq!(pool.stats().core.completed, 50);
    /// assert_eq!(pool.submit(|| 0).join(), Err(JoinError::Shutdown));
    /// # drop(queued);
    /// # Ok::<(), ace_std::ConfigError>(())
    /// ```
    pub fn shutdown(&self) {
        let _serial = lock(&self.stopping);
        self.stop_control();
        self.shared.close(Mode::Drain);
        if self.shared.is_own_worker() {
            return;
        }
        self.shared.wait_workers();
    }

    /// Stops accepting jobs, lets the running ones finish, and hands back every job that had
    /// not started, in queue order as far as it can.
    ///
    /// Returns once the running jobs have finished: within one job's duration. Nothing is
    /// dropped silently: run a [`CancelledJob`] yourself, or drop it and its [`JoinHandle`]
    /// reports [`JoinError::Cancelled`]. A submit racing the shutdown is rejected, handed back
    /// here, or (if its job lands after this returned) cancelled; an
    /// [`execute`](Self::execute)d job in that last case is dropped. Called from one of the pool's
    /// own jobs, it hands back what it can without waiting for the running jobs (the caller is
    /// one of them).
    ///
    /// # Examples
    ///
    /// See [`CancelledJob`].
    pub fn shutdown_now(&self) -> Vec<CancelledJob> {
        let _serial = lock(&self.stopping);
        self.stop_control();
        self.shared.close(Mode::Now);
        let drained = self.shared.drain_queue();
        if !self.shared.is_own_worker() {
            self.shared.wait_workers();
        }
        self.shared
            .take_unstarted(drained)
            .into_iter()
            .map(CancelledJob::new)
            .collect()
    }

    /// Stops the loop at once, even mid-sleep or mid-collection, and waits for its thread.
    fn stop_control(&self) {
        self.control.stop();
        let thread = lock(&self.control_thread).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                // A panic was logged on the thread itself.
                let _ = thread.join();
            }
        }
    }
}

impl Drop for ThreadPoolManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for ThreadPoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolManager")
            .field("stats", &self.stats())
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ThreadPoolManager`]; from [`ThreadPoolManager::builder`].
///
/// The same vocabulary as every manager's builder: `.source(name, s)`, `.sink(s)`,
/// `.log_writer(w)`, `.log_holds(h)`, `.tracing(bool)`, `.metrics(bool)`.
///
/// # Examples
///
/// ```
/// use ace_std::core::source_fn;
/// use ace_std::threadpool::ThreadPoolManager;
/// use ace_std::{AimdConfig, Decision, Signals};
///
/// let pool = ThreadPoolManager::builder(AimdConfig::default())
///     .default_signals(false)
///     .source("cpu", source_fn(|| Ok(Signals { cpu_percent: Some(30.0), ..Signals::default() })))
///     .sink(|d: &Decision| println!("{d}"))
///     .log_writer(std::io::stderr())
///     .build()?;
/// # drop(pool);
/// # Ok::<(), ace_std::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    config: AimdConfig,
    loop_options: LoopOptions,
    queue_capacity: Option<usize>,
    idle_timeout: Duration,
    thread_name: String,
}

impl Builder {
    /// Default for [`idle_timeout`](Self::idle_timeout): 10 s.
    pub const fn default_idle_timeout() -> Duration {
        // Five default control intervals: a limit that dips for a cycle keeps its threads.
        Duration::from_secs(10)
    }

    /// The longest [`idle_timeout`](Self::idle_timeout): a day (longer is "never", in
    /// practice, and would overflow the clock).
    pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);

    loop_options_methods!();
    engine_methods!();

    /// Bounds the queue of jobs not yet started to `capacity` (at least 1) per class
    /// ([`ThreadPoolManager::submit_with`]; plain jobs are `Normal`): `submit` then blocks while
    /// it is full and `try_submit` returns [`TrySubmitError::Full`]. Unbounded by default.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// How long a thread waits for work before it exits. Default
    /// [`default_idle_timeout`](Self::default_idle_timeout); longer than
    /// [`MAX_IDLE_TIMEOUT`](Self::MAX_IDLE_TIMEOUT) counts as that.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.min(Self::MAX_IDLE_TIMEOUT);
        self
    }

    /// Names the threads `{prefix}-{n}` and the control thread `{prefix}-control`. Default
    /// `ace-pool`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Sets the plain options at once (from a config file, say): the queue's capacity, the
    /// idle timeout and the threads' names.
    pub fn options(self, options: PoolOptions) -> Self {
        let PoolOptions {
            queue_capacity,
            idle_timeout,
            thread_name,
        } = options;
        let mut this = self.idle_timeout(idle_timeout).thread_name(thread_name);
        this.queue_capacity = queue_capacity;
        this
    }

    /// Builds the pool and starts its control thread; worker threads start with the first jobs.
    /// Limits above [`Semaphore::MAX_PERMITS`](ace_core::Semaphore::MAX_PERMITS) are clamped to
    /// it.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`] if the config breaks a rule.
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start the control thread.
    #[track_caller]
    pub fn build(self) -> Result<ThreadPoolManager, ConfigError> {
        let wiring = Wiring::new(self.config, self.loop_options)?;
        let config = wiring.config();
        let counters = Arc::clone(wiring.counters());
        let shared = Arc::new(Shared::new(SharedOptions {
            initial_limit: wiring.initial_limit(),
            min_limit: config.min_limit,
            max_limit: config.max_limit,
            queue_capacity: self.queue_capacity,
            idle_timeout: self.idle_timeout,
            thread_name: self.thread_name.clone(),
            timing: wiring.latency().map(|recorder| JobTiming {
                recorder: Arc::clone(recorder),
                counters: Arc::clone(&counters),
            }),
        }));
        let target: Arc<dyn LimitTarget> = Arc::new(PoolTarget(Arc::clone(&shared)));
        // System signals only: a lag probe measures an executor, and the pool has none.
        let defaults = Defaults {
            system: true,
            lag_probe: None,
        };
        let name = format!("{}-control", self.thread_name);
        let (control, thread) = match wiring
            .assemble(ThreadRuntime::new(), target, defaults)
            .spawn_thread(name)
        {
            Ok(spawned) => spawned,
            Err(e) => panic!("failed to start the pool's control thread: {e}"),
        };
        Ok(ThreadPoolManager {
            shared,
            control,
            control_thread: Mutex::new(Some(thread)),
            stopping: Mutex::new(()),
            counters,
        })
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("loop_options", &self.loop_options)
            .field("queue_capacity", &self.queue_capacity)
            .field("idle_timeout", &self.idle_timeout)
            .field("thread_name", &self.thread_name)
            .finish_non_exhaustive()
    }
}

/// The pool's plain options, for [`Builder::options`]; with the `serde` feature they
/// load from a file (`idle_timeout = "30s"`; unknown fields refused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PoolOptions {
    /// See [`Builder::queue_capacity`]; `None` (the default) is unbounded.
    pub queue_capacity: Option<usize>,
    /// See [`Builder::idle_timeout`].
    #[cfg_attr(feature = "serde", serde(with = "ace_core::serde_text::duration"))]
    pub idle_timeout: Duration,
    /// See [`Builder::thread_name`].
    pub thread_name: String,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            queue_capacity: None,
            idle_timeout: Builder::default_idle_timeout(),
            thread_name: "ace-pool".to_owned(),
        }
    }
}

impl PoolOptions {
    /// Checks the options.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `queue_capacity` is `Some(0)`,
    /// `idle_timeout` is longer than [`Builder::MAX_IDLE_TIMEOUT`], or `thread_name`
    /// contains a NUL byte ([`ConfigRule::NoNulByte`](crate::ConfigRule::NoNulByte): the
    /// operating system could not name the threads, and starting them would panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_std::threadpool::PoolOptions;
    ///
    /// let mut options = PoolOptions::default();
    /// options.thread_name = "worker\0".to_owned();
    /// let e = options.validate().unwrap_err();
    /// assert_eq!(e.field(), "thread_name");
    /// assert_eq!(e.rule(), ace_std::ConfigRule::NoNulByte);
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ace_core::ConfigRule;
        if self.queue_capacity == Some(0) {
            return Err(ConfigError::custom(
                "queue_capacity",
                ConfigRule::AtLeastOne,
                0.0,
            ));
        }
        if self.idle_timeout > Builder::MAX_IDLE_TIMEOUT {
            return Err(ConfigError::custom(
                "idle_timeout",
                ConfigRule::AtMost(Builder::MAX_IDLE_TIMEOUT),
                self.idle_timeout.as_secs_f64(),
            ));
        }
        if self.thread_name.contains('\0') {
            return Err(ConfigError::custom_text(
                "thread_name",
                ConfigRule::NoNulByte,
                &self.thread_name,
            ));
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl crate::config::FromConfigFile for PoolOptions {
    fn validate_loaded(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

/// A snapshot of a [`ThreadPoolManager`]: from [`stats`](ThreadPoolManager::stats).
///
/// Each field is read on its own, so a snapshot taken while jobs run may not add up exactly.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolStats {
    /// What every manager reports: the limit, jobs running (`in_flight`) and queued
    /// (`waiting`), jobs the pool's threads finished (`completed`, panicked ones included, not
    /// those run from a [`CancelledJob`]) and panicked (`failed`), and the control loop's
    /// decisions.
    pub core: crate::Stats,
    /// Worker threads alive (running, idle, or parked above a lowered limit).
    pub threads: usize,
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} threads", self.core, self.threads)
    }
}

/// [`try_submit`](ThreadPoolManager::try_submit) refused a job; the closure comes back.
#[non_exhaustive]
pub enum TrySubmitError<F> {
    /// The bounded queue is full.
    Full(F),
    /// The pool is shut down.
    Shutdown(F),
}

impl<F> TrySubmitError<F> {
    /// The closure that was refused.
    pub fn into_inner(self) -> F {
        match self {
            Self::Full(f) | Self::Shutdown(f) => f,
        }
    }
}

impl<F> fmt::Debug for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Shutdown(_) => f.write_str("Shutdown(..)"),
        }
    }
}

impl<F> fmt::Display for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("the pool's queue is full"),
            Self::Shutdown(_) => f.write_str(crate::util::SHUT_DOWN),
        }
    }
}

impl<F> std::error::Error for TrySubmitError<F> {}
