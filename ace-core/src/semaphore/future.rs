//! The futures of [`Semaphore::acquire`] and [`Semaphore::acquire_owned`], over one state
//! machine ([`Waiter`]): a first poll tries the fast path, then joins the queue; later polls ask
//! whether the queue served it; a drop leaves the queue or passes on a permit handed to it.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::queue::Key;
use super::{AcquireError, OwnedPermit, Permit, Priority, Semaphore, TryAcquireError};

/// Where a slow first poll landed.
pub(super) enum Enqueued {
    Taken,
    Closed,
    Queued(Key),
}

/// An acquire's progress.
#[derive(Debug, Clone, Copy)]
pub(super) enum Waiter {
    /// Not polled yet; joins the front of its class if `true` (newest first).
    Init(bool),
    Queued(Key),
    Done,
}

impl Waiter {
    #[inline]
    fn poll(
        &mut self,
        sem: &Semaphore,
        class: Priority,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), AcquireError>> {
        let result = match *self {
            Waiter::Init(front) => match sem.try_take() {
                Ok(()) => {
                    sem.took(class.rank());
                    Ok(())
                }
                Err(TryAcquireError::Closed) => Err(AcquireError::Closed),
                Err(TryAcquireError::NoPermits) => {
                    match sem.enqueue(cx.waker(), class.rank(), front) {
                        Enqueued::Taken => Ok(()),
                        Enqueued::Closed => Err(AcquireError::Closed),
                        Enqueued::Queued(key) => {
                            *self = Waiter::Queued(key);
                            return Poll::Pending;
                        }
                    }
                }
            },
            Waiter::Queued(key) => match sem.poll_queued(key, cx.waker()) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            },
            Waiter::Done => panic!("`Acquire` polled after completion"),
        };
        *self = Waiter::Done;
        Poll::Ready(result)
    }

    #[inline]
    fn cancel(&mut self, sem: &Semaphore, class: Priority) {
        if let Waiter::Queued(key) = *self {
            *self = Waiter::Done;
            sem.cancel(key, class.rank());
        }
    }
}

/// The future of [`Semaphore::acquire`].
///
/// # Panics
///
/// Polling it again after it completed panics.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Acquire<'a> {
    pub(super) sem: &'a Semaphore,
    pub(super) waiter: Waiter,
    pub(super) class: Priority,
}

impl Acquire<'_> {
    /// The class this acquire waits in.
    pub fn priority(&self) -> Priority {
        self.class
    }

    /// Makes this acquire, if it has to wait, join the *front* of its class: served before the
    /// waiters of its class already queued (last in, first out). For a server under overload,
    /// where the fresh requests are the ones still worth answering; a class above still comes
    /// first. No effect once polled.
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::Semaphore;
    /// use futures_lite::future::poll_once;
    /// # futures_lite::future::block_on(async {
    ///
    /// let sem = Semaphore::new(1);
    /// let held = sem.acquire().await?;
    /// let mut old = Box::pin(sem.acquire());
    /// let mut fresh = Box::pin(sem.acquire().newest_first());
    /// assert!(poll_once(&mut old).await.is_none());
    /// assert!(poll_once(&mut fresh).await.is_none());
    /// drop(held);
    /// assert!(poll_once(&mut old).await.is_none());
    /// drop(fresh.await?);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// # }).unwrap();
    /// ```
    pub fn newest_first(mut self) -> Self {
        if let Waiter::Init(_) = self.waiter {
            self.waiter = Waiter::Init(true);
        }
        self
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, AcquireError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (sem, class) = (self.sem, self.class);
        self.waiter
            .poll(sem, class, cx)
            .map(|result| result.map(|()| Permit { sem, class }))
    }
}

impl Drop for Acquire<'_> {
    #[inline]
    fn drop(&mut self) {
        self.waiter.cancel(self.sem, self.class);
    }
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("priority", &self.class)
            .field("queued", &matches!(self.waiter, Waiter::Queued(_)))
            .finish_non_exhaustive()
    }
}

/// The future of [`Semaphore::acquire_owned`].
///
/// # Panics
///
/// Polling it again after it completed panics.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct AcquireOwned {
    // `None` once the permit took it.
    pub(super) sem: Option<Arc<Semaphore>>,
    pub(super) waiter: Waiter,
    pub(super) class: Priority,
}

impl AcquireOwned {
    /// The class this acquire waits in.
    pub fn priority(&self) -> Priority {
        self.class
    }

    /// Joins the front of its class if it has to wait: see [`Acquire::newest_first`].
    pub fn newest_first(mut self) -> Self {
        if let Waiter::Init(_) = self.waiter {
            self.waiter = Waiter::Init(true);
        }
        self
    }
}

impl Future for AcquireOwned {
    type Output = Result<OwnedPermit, AcquireError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let sem = this
            .sem
            .as_deref()
            .expect("`AcquireOwned` polled after completion");
        match this.waiter.poll(sem, this.class, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(OwnedPermit {
                sem: this.sem.take(),
                class: this.class,
            })),
            Poll::Ready(Err(error)) => {
                this.sem = None;
                Poll::Ready(Err(error))
            }
        }
    }
}

impl Drop for AcquireOwned {
    #[inline]
    fn drop(&mut self) {
        if let Some(sem) = &self.sem {
            self.waiter.cancel(sem, self.class);
        }
    }
}

impl fmt::Debug for AcquireOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireOwned")
            .field("priority", &self.class)
            .field("queued", &matches!(self.waiter, Waiter::Queued(_)))
            .finish_non_exhaustive()
    }
}
