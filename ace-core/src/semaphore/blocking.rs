//! The blocking path, for threads (feature `std`): `blocking_acquire` and friends park the thread
//! on a [`ThreadWaker`] and wait in the same FIFO queue as tasks.

use alloc::sync::Arc;
use alloc::task::Wake;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use super::{AcquireError, OwnedPermit, Permit, Priority, Semaphore, TryAcquireError};

/// A [`Waker`] that unparks a thread: the way to poll a future from a plain thread, parking it
/// between polls ([`std::thread::park`] wakes on an unpark that came first, so no wake is lost).
///
/// The semaphore's blocking waits use it, and so can any other `block_on`.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context, Poll};
/// use ace_core::{Semaphore, ThreadWaker};
///
/// let sem = Semaphore::new(1);
/// let waker = ThreadWaker::current();
/// let mut cx = Context::from_waker(&waker);
/// let mut acquire = pin!(sem.acquire());
/// let permit = loop {
///     match acquire.as_mut().poll(&mut cx) {
///         Poll::Ready(permit) => break permit?,
///         Poll::Pending => std::thread::park(),
///     }
/// };
/// assert_eq!(sem.in_use(), 1);
/// drop(permit);
/// # Ok::<(), ace_core::AcquireError>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug)]
pub struct ThreadWaker(Thread);

impl ThreadWaker {
    /// A waker that unparks the calling thread. Cached per thread: after the first call, this is
    /// one reference count.
    pub fn current() -> Waker {
        std::thread_local! {
            static WAKER: Waker = ThreadWaker::to(thread::current());
        }
        WAKER.with(Waker::clone)
    }

    /// A waker that unparks `thread`.
    pub fn to(thread: Thread) -> Waker {
        Waker::from(Arc::new(Self(thread)))
    }
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parking between polls, until it is ready or `deadline` passes.
fn block_on<F: Future + Unpin>(mut future: F, deadline: Option<Instant>) -> Option<F::Output> {
    let waker = ThreadWaker::current();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return Some(output);
        }
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                thread::park_timeout(deadline - now);
            }
        }
    }
}

/// The blocking flavours, for threads.
impl Semaphore {
    /// Blocks the current thread until a permit is free: [`acquire`](Self::acquire) for sync code.
    ///
    /// Threads and tasks share one FIFO queue.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Panics
    ///
    /// Does not panic, but blocking an async executor's thread stalls its other tasks: call it
    /// from plain threads only.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::thread;
    /// use ace_core::Semaphore;
    ///
    /// let sem = Arc::new(Semaphore::new(1));
    /// let held = sem.try_acquire().unwrap();
    /// let worker = thread::spawn({
    ///     let sem = Arc::clone(&sem);
    ///     move || sem.blocking_acquire().map(drop)
    /// });
    /// drop(held);
    /// worker.join().unwrap()?;
    /// # Ok::<(), ace_core::AcquireError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire(&self) -> Result<Permit<'_>, AcquireError> {
        self.blocking_acquire_with(Priority::Normal)
    }

    /// [`blocking_acquire`](Self::blocking_acquire) in class `priority`: as
    /// [`acquire_with`](Self::acquire_with), the thread is served before the waiters of less
    /// important classes, threads and tasks alike.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::thread;
    /// use ace_core::{Priority, Semaphore};
    ///
    /// let sem = Arc::new(Semaphore::new(1));
    /// let held = sem.try_acquire().unwrap();
    /// let health = thread::spawn({
    ///     let sem = Arc::clone(&sem);
    ///     move || sem.blocking_acquire_with(Priority::Critical).map(|p| p.priority())
    /// });
    /// while sem.waiting() == 0 {
    ///     thread::yield_now();
    /// }
    /// drop(held);
    /// assert_eq!(health.join().unwrap()?, Priority::Critical);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire_with(&self, priority: Priority) -> Result<Permit<'_>, AcquireError> {
        match self.try_acquire_with(priority) {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(AcquireError::Closed),
            Err(TryAcquireError::NoPermits) => {
                block_on(self.acquire_with(priority), None).expect("no deadline")
            }
        }
    }

    /// [`blocking_acquire`](Self::blocking_acquire), returning a permit that owns a handle to the
    /// semaphore.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ace_core::Semaphore;
    ///
    /// let sem = Arc::new(Semaphore::new(1));
    /// let permit = Arc::clone(&sem).blocking_acquire_owned()?;
    /// std::thread::spawn(move || drop(permit)).join().unwrap();
    /// assert_eq!(sem.available(), 1);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire_owned(self: Arc<Self>) -> Result<OwnedPermit, AcquireError> {
        block_on(self.acquire_owned(), None).expect("no deadline")
    }

    /// [`blocking_acquire`](Self::blocking_acquire), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireTimeoutError::Timeout`] if no permit came within `timeout` (the thread's place in
    /// the queue is given up); [`AcquireTimeoutError::Closed`] if the semaphore is or becomes
    /// closed first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ace_core::{AcquireTimeoutError, Semaphore};
    ///
    /// let sem = Semaphore::new(0);
    /// let result = sem.blocking_acquire_timeout(Duration::from_millis(10));
    /// assert_eq!(result.err(), Some(AcquireTimeoutError::Timeout));
    /// assert_eq!(sem.waiting(), 0);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire_timeout(
        &self,
        timeout: core::time::Duration,
    ) -> Result<Permit<'_>, AcquireTimeoutError> {
        match self.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(AcquireTimeoutError::Closed),
            Err(TryAcquireError::NoPermits) => {
                let deadline = Instant::now().checked_add(timeout);
                match block_on(self.acquire(), deadline) {
                    Some(Ok(permit)) => Ok(permit),
                    Some(Err(AcquireError::Closed)) => Err(AcquireTimeoutError::Closed),
                    None => Err(AcquireTimeoutError::Timeout),
                }
            }
        }
    }
}

/// [`Semaphore::blocking_acquire_timeout`] failed.
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireTimeoutError {
    /// The semaphore was closed.
    Closed,
    /// No permit came in time.
    Timeout,
}

impl fmt::Display for AcquireTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireTimeoutError::Closed => f.write_str("semaphore closed"),
            AcquireTimeoutError::Timeout => f.write_str("timed out waiting for a permit"),
        }
    }
}

impl core::error::Error for AcquireTimeoutError {}
