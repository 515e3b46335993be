//! Jobs as the pool stores them ([`Task`]), the result slot, [`JoinHandle`], [`JoinError`] and
//! [`CancelledJob`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::util::{block_on, lock, panic_message};

/// Jobs finished and jobs that panicked: one per worker, on a cache line of its own.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

impl Counters {
    /// Counts one job; only its own worker writes here, so a load and a store would do, but
    /// an uncontended `fetch_add` on a line this core owns costs about the same.
    fn finish(&self, panicked: bool) {
        if panicked {
            self.panicked.fetch_add(1, Ordering::SeqCst);
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// One job in the queue, its type erased.
pub(crate) trait Task: Send + 'static {
    /// Runs the job to the end, catching a panic; counts it before the handle hears of it, so a
    /// caller who joined sees the counters already moved. True if it panicked.
    fn run(self: Box<Self>, counters: &Counters) -> bool;

    /// Gives up the job without running it; its handle (if any) reports `error`.
    fn abandon(self: Box<Self>, error: JoinError);

    /// For [`try_submit`](super::ThreadPoolManager::try_submit) to hand the closure back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// A boxed job.
pub(crate) type BoxTask = Box<dyn Task>;

/// A job submitted with `submit`: runs `f` and fills the slot its [`JoinHandle`] watches.
pub(crate) struct SubmitTask<F, T> {
    f: Option<F>,
    slot: Arc<Slot<T>>,
}

impl<F, T> SubmitTask<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    pub(crate) fn new(f: F) -> (Self, JoinHandle<T>) {
        let slot = Arc::new(Slot::new());
        let handle = JoinHandle {
            slot: Arc::clone(&slot),
        };
        (Self { f: Some(f), slot }, handle)
    }

    /// The closure back, with the handle left unfilled (the caller never saw it).
    pub(crate) fn into_closure(mut self) -> Option<F> {
        self.f.take()
    }
}

impl<F, T> Task for SubmitTask<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(mut self: Box<Self>, counters: &Counters) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(f));
        let panicked = result.is_err();
        counters.finish(panicked);
        self.slot
            .complete(result.map_err(|payload| JoinError::Panicked(panic_message(&*payload))));
        panicked
    }

    fn abandon(mut self: Box<Self>, error: JoinError) {
        if self.f.take().is_some() {
            self.slot.complete(Err(error));
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl<F, T> Drop for SubmitTask<F, T> {
    fn drop(&mut self) {
        // A job dropped without running (whoever dropped it) still tells its handle.
        if self.f.take().is_some() {
            self.slot.complete(Err(JoinError::Cancelled));
        }
    }
}

/// A job submitted with `execute`: no handle; a panic is only counted.
pub(crate) struct ExecuteTask<F>(pub(crate) F);

impl<F> Task for ExecuteTask<F>
where
    F: FnOnce() + Send + 'static,
{
    fn run(self: Box<Self>, counters: &Counters) -> bool {
        let panicked = catch_unwind(AssertUnwindSafe(self.0)).is_err();
        counters.finish(panicked);
        panicked
    }

    fn abandon(self: Box<Self>, _: JoinError) {}

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// Where a job's result waits for its [`JoinHandle`].
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

enum SlotState<T> {
    /// Not finished; the waker of whoever waits, if anyone does.
    Pending(Option<Waker>),
    Done(Result<T, JoinError>),
    /// The result was handed out.
    Taken,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new(SlotState::Pending(None)),
        }
    }

    /// Stores the result (the first one wins) and wakes the waiter outside the lock.
    fn complete(&self, result: Result<T, JoinError>) {
        let waker = {
            let mut state = lock(&self.state);
            match &mut *state {
                SlotState::Pending(waker) => {
                    let waker = waker.take();
                    *state = SlotState::Done(result);
                    waker
                }
                SlotState::Done(_) | SlotState::Taken => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll(&self, waker: &Waker) -> Poll<Result<T, JoinError>> {
        let mut state = lock(&self.state);
        match &mut *state {
            SlotState::Pending(slot) => {
                match slot {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                Poll::Pending
            }
            SlotState::Done(_) => match std::mem::replace(&mut *state, SlotState::Taken) {
                SlotState::Done(result) => Poll::Ready(result),
                SlotState::Pending(_) | SlotState::Taken => unreachable!("matched Done above"),
            },
            SlotState::Taken => panic!("`JoinHandle` polled after it returned its result"),
        }
    }

    fn is_done(&self) -> bool {
        !matches!(*lock(&self.state), SlotState::Pending(_))
    }
}

/// A handle to a job submitted with [`submit`](super::ThreadPoolManager::submit): wait for its
/// result with [`join`](Self::join) from sync code, or `.await` it from async code.
///
/// Dropping the handle does not cancel the job; its result is then thrown away.
///
/// # Examples
///
/// ```
/// use ace_std::threadpool::{JoinError, ThreadPoolManager};
/// use ace_std::AimdConfig;
///
/// let pool = ThreadPoolManager::new(AimdConfig::default())?;
/// assert_eq!(pool.submit(|| 6 * 7).join(), Ok(42));
///
/// let boom = pool.submit(|| -> u32 { panic!("boom") });
/// assert_eq!(boom.join(), Err(JoinError::Panicked("boom".into())));
///
/// // And from async code (any executor):
/// let answer = futures_lite::future::block_on(pool.submit(|| "async"));
/// assert_eq!(answer, Ok("async"));
/// # Ok::<(), ace_std::ConfigError>(())
/// ```
#[must_use = "a job's result (and its panic) is lost unless the handle is joined or awaited"]
pub struct JoinHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> JoinHandle<T> {
    /// Blocks the current thread until the job has finished, and returns its result.
    ///
    /// # Errors
    ///
    /// - [`JoinError::Panicked`] if the closure panicked (the pool and its worker go on);
    /// - [`JoinError::Cancelled`] if the pool gave the job back unrun
    ///   ([`shutdown_now`](super::ThreadPoolManager::shutdown_now)) and it was then dropped;
    /// - [`JoinError::Shutdown`] if the pool was already shut down when the job was submitted.
    pub fn join(self) -> Result<T, JoinError> {
        block_on(self)
    }

    /// True once the job has finished (or was cancelled or rejected): [`join`](Self::join) will
    /// then return at once.
    pub fn is_finished(&self) -> bool {
        self.slot.is_done()
    }
}

/// Completes with the job's result, like [`JoinHandle::join`] (same errors).
///
/// # Panics
///
/// If polled again after it returned `Poll::Ready`.
impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll(cx.waker())
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

/// Why a job returned no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The closure panicked; this is the panic's message (`"Box<dyn Any>"` when the payload was
    /// not a string). The worker thread and the pool survived it.
    Panicked(String),
    /// The job was queued when the pool shut down with
    /// [`shutdown_now`](super::ThreadPoolManager::shutdown_now), and the [`CancelledJob`] it
    /// came back as was dropped without being run.
    Cancelled,
    /// The pool was already shut down when the job was submitted; it never ran.
    Shutdown,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(message) => write!(f, "job panicked: {message}"),
            Self::Cancelled => f.write_str("job cancelled: the pool shut down before it ran"),
            Self::Shutdown => f.write_str(crate::util::SHUT_DOWN),
        }
    }
}

impl std::error::Error for JoinError {}

/// A job that was still queued when [`shutdown_now`](super::ThreadPoolManager::shutdown_now)
/// stopped the pool: run it yourself with [`run`](Self::run), or drop it, and its
/// [`JoinHandle`] reports [`JoinError::Cancelled`].
///
/// # Examples
///
/// ```
/// use ace_std::threadpool::ThreadPoolManager;
/// use ace_std::AimdConfig;
///
/// let pool = ThreadPoolManager::new(AimdConfig::fixed(1))?;
/// let handles: Vec<_> = (0..100).map(|i| pool.submit(move || i * 2)).collect();
/// // Whatever had not started is handed back; run it here rather than lose it.
/// for job in pool.shutdown_now() {
///     job.run();
/// }
/// for (i, handle) in handles.into_iter().enumerate() {
///     assert_eq!(handle.join(), Ok(i * 2));
/// }
/// # Ok::<(), ace_std::ConfigError>(())
/// ```
pub struct CancelledJob {
    task: BoxTask,
}

impl CancelledJob {
    pub(crate) fn new(task: BoxTask) -> Self {
        Self { task }
    }

    /// Runs the job on the current thread; its [`JoinHandle`] gets the result (a panic is caught
    /// and reported there, as in the pool).
    pub fn run(self) {
        let _ = self.task.run(&Counters::default());
    }
}

impl fmt::Debug for CancelledJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelledJob").finish_non_exhaustive()
    }
}
