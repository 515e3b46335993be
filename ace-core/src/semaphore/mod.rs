//! [`Semaphore`]: an async counting semaphore whose limit changes at run time, fair and
//! shrinkable without waiting.
//!
//! # How it works
//!
//! One atomic word holds the signed count of free permits (`limit - in_use`; negative is a debt
//! left by a shrink), a "someone is queued" flag and a "closed" flag. While nobody is queued,
//! acquiring is one compare-and-swap and releasing one `fetch_add`. Once somebody is queued, the
//! flag sends every acquirer and every releaser that frees a slot to a queue behind a tiny lock;
//! there a freed permit is handed straight to the oldest waiter of the most important class
//! waiting ([`Priority`]; a class under its guaranteed [`Shares`] first), so a later arrival of
//! the same or a lower class can never overtake it, and a permit released while a higher class
//! waits never goes to a lower one. The queue is a slab with an index-linked list per class: safe
//! code, no allocation per wait once warm, O(1) removal on cancel.
//!
//! Shares need to know how many permits each class holds: only a semaphore built
//! [`with_shares`](Semaphore::with_shares) counts them (one more atomic add on acquire and
//! release), so the plain fast path stays one compare-and-swap.
//!
//! `set_limit` swaps the limit and adds the difference to the free count in one `fetch_add`, both
//! under the queue lock so that concurrent setters apply their changes in the order of their
//! swaps (without it, a growth could land before the cut it follows and admit more than any limit
//! ever set). A shrink below what is in use just makes the count negative (a debt), which
//! releases pay off before anyone new is admitted. Nothing ever waits for a permit to come back.
//!
//! A waiter handed a permit learns it from a flag of its queue slot, raised by the releaser under
//! the lock and read (and lowered) by the waiter's next poll without it: a contended hand-off
//! takes the lock twice (the releaser's hand-over, the next arrival's enqueue), not three times.
//!
//! No waker's code runs under the lock: wakers are cloned before it is taken, and woken or
//! dropped after it is released. A waker that panics does not strand anyone: the rest of its
//! batch and the waiters still queued are served as the panic unwinds.
//!
//! # Layout
//!
//! - this file: the state word and the public API;
//! - `grant`: how permits move under the lock (hand-over, batches, joining and leaving the queue);
//! - `queue`: the wait queue, one FIFO list per class behind a small interface;
//! - `grants`: the flags a granted waiter reads without the lock;
//! - `priority`: [`Priority`] and [`Shares`];
//! - `wake`: the batch of wakers woken after the lock is dropped;
//! - `future`: [`Acquire`] and [`AcquireOwned`]; `permit`: [`Permit`] and [`OwnedPermit`];
//! - `error`: the acquire errors; `blocking` (feature `std`): the thread waits and [`ThreadWaker`].

use alloc::sync::Arc;
use core::fmt;

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Mutex;
use crate::{LimitTarget, Usage};

mod error;
mod future;
mod grant;
mod grants;
mod permit;
mod priority;
mod queue;
mod wake;

pub use error::{AcquireError, TryAcquireError};
pub use future::{Acquire, AcquireOwned};
pub use permit::{DetachedPermit, OwnedPermit, Permit};
pub use priority::{ParsePriorityError, Priority, Shares, SharesError};

use future::Waiter;
use grants::Grants;
use priority::CLASSES;
use queue::Queue;
use wake::WakeList;

// The blocking path, for threads: the crate's one `std`-only part of the semaphore.
#[cfg(feature = "std")]
mod blocking;
#[cfg(feature = "std")]
pub use blocking::{AcquireTimeoutError, ThreadWaker};

/// `const fn` except under loom, whose atomics cannot be built in a const context.
macro_rules! const_fn {
    ($(#[$attr:meta])* $vis:vis const fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $vis const fn $($rest)*

        #[cfg(loom)]
        $(#[$attr])*
        $vis fn $($rest)*
    };
}

// The state word: `free << SHIFT | WAITERS | CLOSED`, with `free` signed (two's complement), so a
// signed change of the free count is a plain wrapping add of `delta << SHIFT`.
const CLOSED: usize = 1;
const WAITERS: usize = 1 << 1;
const SHIFT: u32 = 2;
const ONE: usize = 1 << SHIFT;

/// The free count in a state word: `limit - in_use`, negative while a shrink is being paid off.
#[inline]
const fn free(state: usize) -> isize {
    #[allow(
        clippy::cast_possible_wrap,
        reason = "the word is a two's complement count shifted left; the arithmetic shift undoes it"
    )]
    let signed = state as isize;
    signed >> SHIFT
}

/// `delta` permits as a change of the state word.
#[inline]
const fn delta_word(delta: isize) -> usize {
    #[allow(
        clippy::cast_sign_loss,
        reason = "wrapping arithmetic on the shifted two's complement count"
    )]
    let word = (delta as usize) << SHIFT;
    word
}

/// An async counting semaphore whose limit changes at run time.
///
/// - **Adjustable:** [`set_limit`](Self::set_limit) is O(1) and never waits. Growing hands the new
///   slots to exactly as many waiters; shrinking below the permits in use takes nothing from anyone
///   but records a *debt* that returning permits pay off before anyone new is admitted.
/// - **Fair, by class:** an acquire carries a [`Priority`] ([`acquire_with`](Self::acquire_with);
///   plain calls are [`Priority::Normal`]). A released permit goes straight to the oldest waiter
///   of the most important class waiting, and [`try_acquire`](Self::try_acquire) fails while
///   anyone waits, so nobody is overtaken by its own class or a lower one. Optional
///   [`Shares`] guarantee a class part of the limit against floods of more important work.
/// - **Leak-free:** a cancelled [`acquire`](Self::acquire) leaves the queue, and if a permit had
///   already been handed to it, passes that permit on.
/// - **`no_std`:** atomics on the fast path, wakers for waiting; blocking waits for threads under
///   the `std` feature.
///
/// # Accounting
///
/// Whenever no call is in progress:
///
/// ```text
/// available() + in_use() - debt() == limit()      (at most one of available, debt is nonzero)
/// available() > 0  implies  waiting() == 0         (a free permit never idles while someone waits)
/// ```
///
/// `in_use` counts live permits plus permits already handed to a waiter that has not yet been
/// polled. Since only a positive `available` admits anyone, `in_use` never grows past the limit:
/// it stays at most `max(limit, in_use at the last shrink)` and reaches the limit again as permits
/// come back. A [forgotten](Permit::forget) permit leaves the semaphore: the limit drops by one.
///
/// # Examples
///
/// ```
/// use ace_core::{Semaphore, TryAcquireError};
/// # futures_lite::future::block_on(async {
///
/// let sem = Semaphore::new(2);
/// let a = sem.acquire().await?;
/// let b = sem.try_acquire().unwrap();
/// assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::NoPermits));
///
/// // Shrink below what is in use: nothing is taken back, a debt is recorded.
/// sem.set_limit(1);
/// assert_eq!((sem.in_use(), sem.debt()), (2, 1));
/// drop(a); // pays the debt
/// assert_eq!((sem.in_use(), sem.available(), sem.debt()), (1, 0, 0));
/// drop(b);
/// assert_eq!(sem.available(), 1);
/// # Ok::<(), ace_core::AcquireError>(())
/// # }).unwrap();
/// ```
pub struct Semaphore {
    state: AtomicUsize,
    limit: AtomicUsize,
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
    // A flag per low queue slot: a waiter handed a permit reads it without the lock.
    grants: Grants,
    shares: Shares,
    // `shares.is_set()`, computed once: the fast path tests one flag rather than every class.
    counted: bool,
    // Permits held per class, counted only when `shares` is set (the serving order needs them).
    held: [AtomicUsize; CLASSES],
}

impl Semaphore {
    /// The largest limit a semaphore can have.
    // A sixteenth of the address space leaves the signed, shifted free count room to spare.
    pub const MAX_PERMITS: usize = usize::MAX >> 4;

    const_fn! {
        /// A semaphore with `limit` permits, none in use.
        ///
        /// # Panics
        ///
        /// If `limit` is greater than [`MAX_PERMITS`](Self::MAX_PERMITS).
        ///
        /// # Examples
        ///
        /// ```
        /// use ace_core::Semaphore;
        ///
        /// static SEM: Semaphore = Semaphore::new(8);
        /// assert_eq!(SEM.available(), 8);
        /// ```
        #[track_caller]
        #[must_use]
        pub const fn new(limit: usize) -> Self {
            Self::with_shares(limit, Shares::new())
        }
    }

    const_fn! {
        /// A semaphore with `limit` permits whose classes have guaranteed [`Shares`]: a class
        /// holding less than its share is served before any class at or above its own.
        ///
        /// Counting the permits held per class costs one more atomic add on each acquire and
        /// release; [`new`](Self::new) (no shares) does not count them.
        ///
        /// # Panics
        ///
        /// If `limit` is greater than [`MAX_PERMITS`](Self::MAX_PERMITS).
        ///
        /// # Examples
        ///
        /// ```
        /// use ace_core::{Priority, Semaphore, Shares};
        /// # futures_lite::future::block_on(async {
        ///
        /// // Normal work may always use 1 of the 2 permits, however much Critical work waits.
        /// let sem = Semaphore::with_shares(2, Shares::new().with(Priority::Normal, 50));
        /// let a = sem.try_acquire_with(Priority::Critical).unwrap();
        /// let b = sem.try_acquire_with(Priority::Critical).unwrap();
        /// let mut critical = Box::pin(sem.acquire_with(Priority::Critical));
        /// let mut normal = Box::pin(sem.acquire_with(Priority::Normal));
        /// assert!(futures_lite::future::poll_once(&mut critical).await.is_none());
        /// assert!(futures_lite::future::poll_once(&mut normal).await.is_none());
        /// drop(a); // Normal holds less than its share: the permit is Normal's
        /// let permit = futures_lite::future::poll_once(&mut normal).await.unwrap().unwrap();
        /// assert_eq!(sem.held(Priority::Critical), 1);
        /// assert_eq!(sem.held(Priority::Normal), 1);
        /// # drop((b, permit, critical));
        /// # });
        /// ```
        #[track_caller]
        #[must_use]
        pub const fn with_shares(limit: usize, shares: Shares) -> Self {
            assert!(
                limit <= Self::MAX_PERMITS,
                "a semaphore's limit cannot exceed Semaphore::MAX_PERMITS"
            );
            #[allow(clippy::cast_possible_wrap, reason = "limit ≤ MAX_PERMITS < isize::MAX")]
            let state = delta_word(limit as isize);
            Self {
                state: AtomicUsize::new(state),
                limit: AtomicUsize::new(limit),
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(Queue::new()),
                grants: Grants::new(),
                counted: shares.is_set(),
                shares,
                held: [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)],
            }
        }
    }

    /// Waits for a permit.
    ///
    /// Waiters are served in the order they first polled. The permit is released when the returned
    /// [`Permit`] drops.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes [closed](Self::close) before a
    /// permit is handed over.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future gives up its place in the queue; if a permit had already
    /// been handed to it, the permit goes on to the next waiter, so nothing leaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::Semaphore;
    /// # futures_lite::future::block_on(async {
    ///
    /// let sem = Semaphore::new(1);
    /// let permit = sem.acquire().await?;
    /// assert_eq!(sem.in_use(), 1);
    /// drop(permit);
    /// assert_eq!(sem.in_use(), 0);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// # }).unwrap();
    /// ```
    #[inline]
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_with(Priority::Normal)
    }

    /// Waits for a permit in class `priority`: served before every waiter of a less important
    /// class (and, with [`Shares`], after any class still under its share), first in, first out
    /// within its class.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::{Priority, Semaphore};
    /// use futures_lite::future::poll_once;
    /// # futures_lite::future::block_on(async {
    ///
    /// let sem = Semaphore::new(1);
    /// let held = sem.acquire().await?;
    /// let mut batch = Box::pin(sem.acquire_with(Priority::Sheddable));
    /// let mut health = Box::pin(sem.acquire_with(Priority::Critical));
    /// assert!(poll_once(&mut batch).await.is_none());
    /// assert!(poll_once(&mut health).await.is_none());
    /// drop(held); // the later, more important waiter goes first
    /// assert!(poll_once(&mut batch).await.is_none());
    /// let permit = health.await?;
    /// assert_eq!(permit.priority(), Priority::Critical);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// # }).unwrap();
    /// ```
    #[inline]
    pub fn acquire_with(&self, priority: Priority) -> Acquire<'_> {
        Acquire {
            sem: self,
            waiter: Waiter::Init(false),
            class: priority,
        }
    }

    /// Waits for a permit that owns a handle to the semaphore, so it can outlive the borrow (move
    /// it into a spawned task).
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ace_core::Semaphore;
    /// # futures_lite::future::block_on(async {
    ///
    /// let sem = Arc::new(Semaphore::new(1));
    /// let permit = Arc::clone(&sem).acquire_owned().await?;
    /// assert_eq!(sem.in_use(), 1);
    /// drop(permit);
    /// # Ok::<(), ace_core::AcquireError>(())
    /// # }).unwrap();
    /// ```
    #[inline]
    pub fn acquire_owned(self: Arc<Self>) -> AcquireOwned {
        self.acquire_owned_with(Priority::Normal)
    }

    /// [`acquire_with`](Self::acquire_with), returning a permit that owns a handle to the
    /// semaphore.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed first.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    #[inline]
    pub fn acquire_owned_with(self: Arc<Self>, priority: Priority) -> AcquireOwned {
        AcquireOwned {
            sem: Some(self),
            waiter: Waiter::Init(false),
            class: priority,
        }
    }

    /// Takes a permit now, if one is free and nobody is waiting.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::Closed`] if the semaphore is closed; [`TryAcquireError::NoPermits`] if no
    /// permit is free or others are already waiting (they come first).
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::{Semaphore, TryAcquireError};
    ///
    /// let sem = Semaphore::new(1);
    /// let permit = sem.try_acquire().unwrap();
    /// assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::NoPermits));
    /// drop(permit);
    /// sem.close();
    /// assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::Closed));
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, TryAcquireError> {
        self.try_acquire_with(Priority::Normal)
    }

    /// [`try_acquire`](Self::try_acquire) in class `priority` (counted against its [`Shares`]).
    ///
    /// A permit is free only while nobody waits, whatever their class, so this fails while
    /// anyone is queued.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    #[inline]
    pub fn try_acquire_with(&self, priority: Priority) -> Result<Permit<'_>, TryAcquireError> {
        self.try_take()?;
        self.took(priority.rank());
        Ok(Permit {
            sem: self,
            class: priority,
        })
    }

    /// [`try_acquire`](Self::try_acquire), returning a permit that owns a handle to the semaphore.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ace_core::Semaphore;
    ///
    /// let sem = Arc::new(Semaphore::new(1));
    /// let permit = Arc::clone(&sem).try_acquire_owned().unwrap();
    /// assert!(Arc::clone(&sem).try_acquire_owned().is_err());
    /// drop(permit);
    /// ```
    #[inline]
    pub fn try_acquire_owned(self: Arc<Self>) -> Result<OwnedPermit, TryAcquireError> {
        self.try_acquire_owned_with(Priority::Normal)
    }

    /// [`try_acquire_with`](Self::try_acquire_with), returning a permit that owns a handle to
    /// the semaphore.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    #[inline]
    pub fn try_acquire_owned_with(
        self: Arc<Self>,
        priority: Priority,
    ) -> Result<OwnedPermit, TryAcquireError> {
        self.try_take()?;
        self.took(priority.rank());
        Ok(OwnedPermit {
            sem: Some(self),
            class: priority,
        })
    }

    /// Sets the limit, at once and without waiting for permits to come back.
    ///
    /// Concurrent calls are linearizable: they take effect one at a time, so the permits held
    /// never exceed the largest limit set (or, after a shrink, what was in use at the time).
    /// Growing hands the new slots to exactly as many waiters (after any debt is paid). Shrinking
    /// takes nothing from permits in use: if fewer are free than the cut, the rest becomes a
    /// [`debt`](Self::debt) that released permits pay off before anyone new is admitted.
    ///
    /// # Panics
    ///
    /// If `limit` is greater than [`MAX_PERMITS`](Self::MAX_PERMITS), or if a woken waiter's
    /// waker panics (after every new slot has been handed out and every other waiter woken).
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::Semaphore;
    ///
    /// let sem = Semaphore::new(1);
    /// let held = sem.try_acquire().unwrap();
    /// sem.set_limit(0);
    /// assert_eq!(sem.debt(), 1);
    /// drop(held);
    /// assert_eq!((sem.debt(), sem.available()), (0, 0));
    /// sem.set_limit(3);
    /// assert_eq!(sem.available(), 3);
    /// ```
    #[track_caller]
    pub fn set_limit(&self, limit: usize) {
        assert!(
            limit <= Self::MAX_PERMITS,
            "a semaphore's limit cannot exceed Semaphore::MAX_PERMITS"
        );
        if self.limit.load(Ordering::Acquire) == limit {
            return;
        }
        // The limit swap and the change of the free count are one step under the queue lock:
        // two setters applying their differences out of order would otherwise add a growth
        // before the cut it follows, and admit more than any limit ever set.
        let mut wakers = WakeList::new();
        let more = {
            let mut queue = self.queue.lock();
            let old = self.limit.swap(limit, Ordering::AcqRel);
            #[allow(
                clippy::cast_possible_wrap,
                reason = "both limits ≤ MAX_PERMITS, so the difference fits an isize"
            )]
            let delta = limit.wrapping_sub(old) as isize;
            let prev = self.state.fetch_add(delta_word(delta), Ordering::AcqRel);
            delta > 0
                && prev & WAITERS != 0
                && free(prev) + delta > 0
                && self.drain_locked(&mut queue, &mut wakers)
        };
        self.wake(&mut wakers, more);
    }

    /// The limit in force.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Permits held, counting those handed to a waiter that has not yet run.
    ///
    /// A snapshot: with calls in flight on other threads it may be momentarily off.
    #[inline]
    pub fn in_use(&self) -> usize {
        let limit = self.limit.load(Ordering::Acquire);
        let free = free(self.state.load(Ordering::Acquire));
        #[allow(
            clippy::cast_possible_wrap,
            clippy::cast_sign_loss,
            reason = "limit ≤ MAX_PERMITS; the result is clamped to ≥ 0"
        )]
        let in_use = (limit as isize).wrapping_sub(free).max(0) as usize;
        in_use
    }

    /// Permits free to take now (0 while a debt is being paid off).
    #[inline]
    pub fn available(&self) -> usize {
        let free = free(self.state.load(Ordering::Acquire));
        #[allow(clippy::cast_sign_loss, reason = "clamped to ≥ 0")]
        let available = free.max(0) as usize;
        available
    }

    /// Permits that must come back before anyone new is admitted: how far a shrink went below
    /// the permits in use, less what has been returned since.
    #[inline]
    pub fn debt(&self) -> usize {
        let free = free(self.state.load(Ordering::Acquire));
        free.min(0).unsigned_abs()
    }

    /// Tasks and threads queued for a permit.
    #[inline]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Tasks and threads queued for a permit in class `priority` (takes the queue's lock).
    pub fn waiting_in(&self, priority: Priority) -> usize {
        self.queue.lock().len_of(priority.rank())
    }

    /// Tasks and threads queued in classes less important than `priority` (takes the queue's
    /// lock): the waiters a `priority` arrival would be served before.
    pub fn waiting_below(&self, priority: Priority) -> usize {
        let queue = self.queue.lock();
        (priority.rank() + 1..CLASSES)
            .map(|c| queue.len_of(c))
            .sum()
    }

    /// Permits held by class `priority`, counting those handed to a waiter not yet run; counted
    /// only by a semaphore built [`with_shares`](Self::with_shares) (0 otherwise).
    #[inline]
    pub fn held(&self, priority: Priority) -> usize {
        self.held[priority.rank()].load(Ordering::Acquire)
    }

    /// The guaranteed shares the classes were given (none for [`new`](Self::new)).
    #[inline]
    pub fn shares(&self) -> Shares {
        self.shares
    }

    /// The limit, permits in use and waiters, in one [`Usage`].
    pub fn usage(&self) -> Usage {
        Usage {
            limit: self.limit(),
            in_flight: self.in_use(),
            waiting: self.waiting(),
        }
    }

    /// Closes the semaphore: every waiter, and every later acquire, fails with `Closed`.
    ///
    /// Permits already held stay valid and are still returned on drop; a waiter that had already
    /// been handed a permit keeps it.
    ///
    /// # Panics
    ///
    /// Only if a waiter's waker panics when woken; that panic reaches the caller after every other
    /// waiter has been woken and failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::{AcquireError, Semaphore};
    /// # futures_lite::future::block_on(async {
    ///
    /// let sem = Semaphore::new(0);
    /// sem.close();
    /// assert!(sem.is_closed());
    /// assert_eq!(sem.acquire().await.err(), Some(AcquireError::Closed));
    /// # });
    /// ```
    pub fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        // Anyone who queues after this sees CLOSED under the lock, so one sweep empties the queue.
        self.in_batches(Self::close_batch, WakeList::wake_all);
    }

    /// True once [`close`](Self::close) has been called.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("limit", &self.limit())
            .field("in_use", &self.in_use())
            .field("available", &self.available())
            .field("debt", &self.debt())
            .field("waiting", &self.waiting())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The control loop drives the semaphore directly.
///
/// A limit above [`Semaphore::MAX_PERMITS`] is clamped to it rather than panicking: the loop
/// must never stop.
impl LimitTarget for Semaphore {
    fn set_limit(&self, limit: usize) {
        Semaphore::set_limit(self, limit.min(Self::MAX_PERMITS));
    }

    fn usage(&self) -> Usage {
        Semaphore::usage(self)
    }
}
