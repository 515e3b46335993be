//! [`Semaphore`]: an async counting semaphore whose limit changes at run time, fair and
//! shrinkable without waiting.
//!
//! # How it works
//!
//! One atomic word holds the signed count of free permits (`limit - in_use`; negative is a debt
//! left by a shrink), a "someone is queued" flag and a "closed" flag. While nobody is queued,
//! acquiring is one compare-and-swap and releasing one `fetch_add`. Once somebody is queued, the
//! flag sends every acquirer and every releaser that frees a slot to a FIFO queue behind a tiny
//! lock; there a freed permit is handed straight to the oldest waiter, so a later arrival can never
//! overtake it. The queue is a slab with an index-linked list: safe code, no allocation per wait
//! once warm, O(1) removal on cancel.
//!
//! `set_limit` swaps the limit and adds the difference to the free count in one `fetch_add`, both
//! under the queue lock so that concurrent setters apply their changes in the order of their
//! swaps (without it, a growth could land before the cut it follows and admit more than any limit
//! ever set). A shrink below what is in use just makes the count negative (a debt), which
//! releases pay off before anyone new is admitted. Nothing ever waits for a permit to come back.
//!
//! No waker's code runs under the lock: wakers are cloned before it is taken, and woken or
//! dropped after it is released. A waker that panics does not strand anyone: the rest of its
//! batch and the waiters still queued are served as the panic unwinds.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Mutex;
use crate::{LimitTarget, Usage};

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

const NIL: usize = usize::MAX;

// How many wakers one pass collects before it drops the lock to wake them: never wake under the
// lock (a waker may run arbitrary code), and never hold it for long.
const WAKE_BATCH: usize = 16;

/// An async counting semaphore whose limit changes at run time.
///
/// - **Adjustable:** [`set_limit`](Self::set_limit) is O(1) and never waits. Growing hands the new
///   slots to exactly as many waiters; shrinking below the permits in use takes nothing from anyone
///   but records a *debt* that returning permits pay off before anyone new is admitted.
/// - **Fair:** waiters are served first in, first out. A released permit goes straight to the oldest
///   waiter, and [`try_acquire`](Self::try_acquire) fails while anyone waits, so nobody is
///   overtaken.
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
        Acquire {
            sem: self,
            waiter: Waiter::Init,
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
        AcquireOwned {
            sem: Some(self),
            waiter: Waiter::Init,
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
        self.try_take().map(|()| Permit { sem: self })
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
        self.try_take().map(|()| OwnedPermit { sem: Some(self) })
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

    /// Under the lock: fails the oldest waiters, as many as `wakers` holds. Returns true if some
    /// are left.
    fn close_batch(&self, queue: &mut Queue, wakers: &mut WakeList) -> bool {
        while !wakers.is_full() {
            let Some(key) = queue.pop_front() else { break };
            let slot = &mut queue.slots[key];
            slot.state = SlotState::Closed;
            wakers.push(slot.waker.take());
        }
        self.queue_changed(queue);
        queue.head != NIL
    }

    /// True once [`close`](Self::close) has been called.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// One permit, if free and nobody is queued: a single compare-and-swap.
    #[inline]
    fn try_take(&self) -> Result<(), TryAcquireError> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & CLOSED != 0 {
                return Err(TryAcquireError::Closed);
            }
            if state & WAITERS != 0 || free(state) <= 0 {
                return Err(TryAcquireError::NoPermits);
            }
            match self.state.compare_exchange_weak(
                state,
                state.wrapping_sub(ONE),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => state = actual,
            }
        }
    }

    /// Returns one permit: pays a debt, or frees a slot, or hands it to the oldest waiter.
    #[inline]
    fn release(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // Someone is queued and no debt is owed: the permit is theirs.
            if state & WAITERS != 0 && free(state) >= 0 {
                self.hand_over();
                return;
            }
            match self.state.compare_exchange_weak(
                state,
                state.wrapping_add(ONE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    /// Hands a released permit straight to the oldest waiter: the count never sees it, so nobody
    /// can take it on the way.
    #[inline(never)]
    fn hand_over(&self) {
        let mut queue = self.queue.lock();
        // A shrink that lands after this load is ordered after the hand-over: no debt is skipped.
        if queue.head != NIL && free(self.state.load(Ordering::Acquire)) >= 0 {
            let key = queue.pop_front().expect("the queue is not empty");
            let slot = &mut queue.slots[key];
            slot.state = SlotState::Granted;
            let waker = slot.waker.take();
            self.queue_changed(&queue);
            drop(queue);
            if let Some(waker) = waker {
                waker.wake();
            }
            return;
        }
        drop(queue);
        // The queue emptied meanwhile, or a shrink came in: count the permit back instead.
        let prev = self.state.fetch_add(ONE, Ordering::AcqRel);
        if prev & WAITERS != 0 && free(prev) >= 0 {
            self.notify_waiters();
        }
    }

    /// The permit leaves the semaphore: the limit and the permits in use both drop by one.
    fn forget_one(&self) {
        let mut limit = self.limit.load(Ordering::Acquire);
        loop {
            if limit == 0 {
                // A shrink to 0 already owes this permit back: returning it pays that debt.
                self.release();
                return;
            }
            match self.limit.compare_exchange_weak(
                limit,
                limit - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => limit = actual,
            }
        }
    }

    /// Hands free permits to waiters, in batches, waking them outside the lock.
    #[cold]
    fn notify_waiters(&self) {
        self.in_batches(Self::drain_locked, WakeList::wake_all);
    }

    /// Runs `batch` under the lock and wakes what it collected after unlocking, until it reports
    /// nothing left. If a waker panics, the rest of its batch is still woken and the remaining
    /// batches still run while the panic unwinds (see [`WakeList::wake_all`]), so no waiter is
    /// stranded by another's waker.
    fn in_batches(
        &self,
        batch: fn(&Self, &mut Queue, &mut WakeList) -> bool,
        wake: fn(&mut WakeList),
    ) {
        /// Finishes the batches if a wake panicked half-way.
        struct Finish<'a> {
            sem: &'a Semaphore,
            batch: fn(&Semaphore, &mut Queue, &mut WakeList) -> bool,
            done: bool,
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                while !self.done {
                    let mut wakers = WakeList::new();
                    self.done = !(self.batch)(self.sem, &mut self.sem.queue.lock(), &mut wakers);
                    wakers.wake_all_quietly();
                }
            }
        }

        let mut finish = Finish {
            sem: self,
            batch,
            done: false,
        };
        while !finish.done {
            let mut wakers = WakeList::new();
            finish.done = !batch(self, &mut self.queue.lock(), &mut wakers);
            wake(&mut wakers);
        }
    }

    /// After unlocking: wakes `wakers`, then serves the waiters left over if `more`, even if one
    /// of the wakers panics.
    #[inline]
    fn wake(&self, wakers: &mut WakeList, more: bool) {
        /// Serves the rest if a wake panicked.
        struct Finish<'a>(Option<&'a Semaphore>);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if let Some(sem) = self.0 {
                    sem.in_batches(Semaphore::drain_locked, WakeList::wake_all_quietly);
                }
            }
        }

        let mut finish = Finish(more.then_some(self));
        wakers.wake_all();
        if let Some(sem) = finish.0.take() {
            sem.notify_waiters();
        }
    }

    /// Under the lock: moves free permits to the oldest waiters, clearing the flag once the queue
    /// is empty. Returns true if `wakers` filled up before the work was done.
    fn drain_locked(&self, queue: &mut Queue, wakers: &mut WakeList) -> bool {
        loop {
            if queue.head == NIL {
                self.queue_changed(queue);
                return false;
            }
            if wakers.is_full() {
                return true;
            }
            let state = self.state.load(Ordering::Acquire);
            let free = free(state);
            if free <= 0 {
                return false;
            }
            #[allow(clippy::cast_sign_loss, reason = "free > 0")]
            let n = (free as usize).min(queue.len).min(wakers.room());
            #[allow(clippy::cast_possible_wrap, reason = "n ≤ free")]
            let taken = state.wrapping_sub(delta_word(n as isize));
            if self
                .state
                .compare_exchange(state, taken, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            for _ in 0..n {
                let key = queue.pop_front().expect("n ≤ queue.len");
                let slot = &mut queue.slots[key];
                slot.state = SlotState::Granted;
                wakers.push(slot.waker.take());
            }
            self.queue_changed(queue);
        }
    }

    /// Under the lock: publishes the queue length, and clears the flag once it is empty.
    #[inline]
    fn queue_changed(&self, queue: &Queue) {
        self.waiting.store(queue.len, Ordering::Release);
        // Only lock holders set the flag, so this load sees its true value.
        if queue.head == NIL && self.state.load(Ordering::Relaxed) & WAITERS != 0 {
            self.state.fetch_and(!WAITERS, Ordering::AcqRel);
        }
    }

    /// The slow path of a first poll: under the lock, take a permit if nobody is queued, or
    /// join the queue.
    #[inline(never)]
    fn enqueue(&self, waker: &Waker) -> Enqueued {
        // Cloned before locking and dropped after unlocking if unused: a waker's code never runs
        // under the lock.
        let mut mine = Some(waker.clone());
        let mut queue = self.queue.lock();
        let state = self.state.load(Ordering::Acquire);
        // The common contended case: others queued (so the flag is set) and nothing free to hand
        // them. Join the back; whoever frees a permit next comes to the lock and serves the head.
        if state & CLOSED == 0 && queue.head != NIL && free(state) <= 0 {
            let key = queue.push_back(mine.take());
            self.waiting.store(queue.len, Ordering::Release);
            return Enqueued::Queued(key);
        }
        let mut wakers = WakeList::new();
        let (outcome, more) = loop {
            // Serve those already queued first: they come before us.
            let more = self.drain_locked(&mut queue, &mut wakers);
            let state = self.state.load(Ordering::Acquire);
            if state & CLOSED != 0 {
                break (Enqueued::Closed, more);
            }
            if queue.head == NIL && free(state) > 0 {
                if self
                    .state
                    .compare_exchange(
                        state,
                        state.wrapping_sub(ONE),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    break (Enqueued::Taken, more);
                }
                continue;
            }
            // Set the flag before queueing, by CAS on the word we judged: a release that slipped
            // in makes it fail and we look again; one that comes later sees the flag and comes
            // here to hand us its permit.
            if state & WAITERS == 0
                && self
                    .state
                    .compare_exchange(state, state | WAITERS, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            let key = queue.push_back(mine.take());
            self.waiting.store(queue.len, Ordering::Release);
            break (Enqueued::Queued(key), more);
        };
        drop(queue);
        drop(mine);

        /// If a waker panics, the outcome never reaches the caller: give back what it holds.
        struct Undo<'a>(&'a Semaphore, Option<&'a Enqueued>);
        impl Drop for Undo<'_> {
            fn drop(&mut self) {
                match self.1 {
                    Some(Enqueued::Taken) => self.0.release(),
                    Some(&Enqueued::Queued(key)) => self.0.cancel(key),
                    Some(Enqueued::Closed) | None => {}
                }
            }
        }
        let mut undo = Undo(self, Some(&outcome));
        self.wake(&mut wakers, more);
        undo.1 = None;
        drop(undo);
        outcome
    }

    /// A later poll: has our slot been served?
    fn poll_queued(&self, key: usize, waker: &Waker) -> Poll<Result<(), AcquireError>> {
        // A new waker is cloned outside the lock, and the one it replaces dropped outside it: a
        // waker's code (its drop may release a permit of this very semaphore) never runs under
        // the lock.
        let mut new: Option<Waker> = None;
        loop {
            let mut queue = self.queue.lock();
            let slot = &mut queue.slots[key];
            let (result, old) = match slot.state {
                SlotState::Granted => (Poll::Ready(Ok(())), queue.free(key)),
                SlotState::Closed => (Poll::Ready(Err(AcquireError::Closed)), queue.free(key)),
                SlotState::Waiting => {
                    if slot.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
                        return Poll::Pending;
                    }
                    match new.take() {
                        Some(new) => (Poll::Pending, slot.waker.replace(new)),
                        None => {
                            drop(queue);
                            new = Some(waker.clone());
                            continue;
                        }
                    }
                }
                SlotState::Free => unreachable!("a queued acquire's slot is never freed by others"),
            };
            drop(queue);
            drop(old);
            drop(new);
            return result;
        }
    }

    /// A queued acquire is dropped: leave the queue, or pass on a permit handed to us.
    #[cold]
    fn cancel(&self, key: usize) {
        let mut wakers = WakeList::new();
        let mut queue = self.queue.lock();
        let (old_waker, more) = match queue.slots[key].state {
            SlotState::Waiting => {
                queue.unlink(key);
                let waker = queue.free(key);
                self.queue_changed(&queue);
                (waker, false)
            }
            SlotState::Granted => {
                let waker = queue.free(key);
                let prev = self.state.fetch_add(ONE, Ordering::AcqRel);
                let more = prev & WAITERS != 0
                    && free(prev) >= 0
                    && self.drain_locked(&mut queue, &mut wakers);
                (waker, more)
            }
            SlotState::Closed => (queue.free(key), false),
            SlotState::Free => unreachable!("a queued acquire's slot is never freed by others"),
        };
        drop(queue);
        self.wake(&mut wakers, more);
        drop(old_waker);
    }

    /// The blocking flavours, for threads.
    #[cfg(feature = "std")]
    fn block_on<F: Future + Unpin>(
        mut future: F,
        deadline: Option<std::time::Instant>,
    ) -> Option<F::Output> {
        use alloc::task::Wake;
        use std::thread::{self, Thread};

        struct Unpark(Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.unpark();
            }
        }

        std::thread_local! {
            static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
        }

        WAKER.with(|waker| {
            let mut cx = Context::from_waker(waker);
            loop {
                if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
                    return Some(output);
                }
                match deadline {
                    None => thread::park(),
                    Some(deadline) => {
                        let now = std::time::Instant::now();
                        if now >= deadline {
                            return None;
                        }
                        thread::park_timeout(deadline - now);
                    }
                }
            }
        })
    }

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
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire(&self) -> Result<Permit<'_>, AcquireError> {
        match self.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(AcquireError::Closed),
            Err(TryAcquireError::NoPermits) => {
                Self::block_on(self.acquire(), None).expect("no deadline")
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
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire_owned(self: Arc<Self>) -> Result<OwnedPermit, AcquireError> {
        Self::block_on(self.acquire_owned(), None).expect("no deadline")
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
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn blocking_acquire_timeout(
        &self,
        timeout: core::time::Duration,
    ) -> Result<Permit<'_>, AcquireTimeoutError> {
        match self.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(AcquireTimeoutError::Closed),
            Err(TryAcquireError::NoPermits) => {
                let deadline = std::time::Instant::now().checked_add(timeout);
                match Self::block_on(self.acquire(), deadline) {
                    Some(Ok(permit)) => Ok(permit),
                    Some(Err(AcquireError::Closed)) => Err(AcquireTimeoutError::Closed),
                    None => Err(AcquireTimeoutError::Timeout),
                }
            }
        }
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

/// Where a slow first poll landed.
enum Enqueued {
    Taken,
    Closed,
    Queued(usize),
}

/// An acquire's progress.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    Init,
    Queued(usize),
    Done,
}

impl Waiter {
    #[inline]
    fn poll(&mut self, sem: &Semaphore, cx: &mut Context<'_>) -> Poll<Result<(), AcquireError>> {
        let result = match *self {
            Waiter::Init => match sem.try_take() {
                Ok(()) => Ok(()),
                Err(TryAcquireError::Closed) => Err(AcquireError::Closed),
                Err(TryAcquireError::NoPermits) => match sem.enqueue(cx.waker()) {
                    Enqueued::Taken => Ok(()),
                    Enqueued::Closed => Err(AcquireError::Closed),
                    Enqueued::Queued(key) => {
                        *self = Waiter::Queued(key);
                        return Poll::Pending;
                    }
                },
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
    fn cancel(&mut self, sem: &Semaphore) {
        if let Waiter::Queued(key) = *self {
            *self = Waiter::Done;
            sem.cancel(key);
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
    sem: &'a Semaphore,
    waiter: Waiter,
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, AcquireError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let sem = self.sem;
        self.waiter
            .poll(sem, cx)
            .map(|result| result.map(|()| Permit { sem }))
    }
}

impl Drop for Acquire<'_> {
    #[inline]
    fn drop(&mut self) {
        self.waiter.cancel(self.sem);
    }
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
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
    sem: Option<Arc<Semaphore>>,
    waiter: Waiter,
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
        match this.waiter.poll(sem, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(OwnedPermit {
                sem: this.sem.take(),
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
            self.waiter.cancel(sem);
        }
    }
}

impl fmt::Debug for AcquireOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireOwned")
            .field("queued", &matches!(self.waiter, Waiter::Queued(_)))
            .finish_non_exhaustive()
    }
}

/// A permit from [`Semaphore::acquire`] or [`Semaphore::try_acquire`]; dropping it returns it.
#[must_use = "the permit is returned as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Permit<'_> {
    /// Keeps the permit from ever being returned: it leaves the semaphore, whose limit (and
    /// permits in use) drop by one. The next [`set_limit`](Semaphore::set_limit) sets the limit
    /// afresh.
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::Semaphore;
    ///
    /// let sem = Semaphore::new(3);
    /// sem.try_acquire().unwrap().forget();
    /// assert_eq!((sem.limit(), sem.in_use(), sem.available()), (2, 0, 2));
    /// ```
    pub fn forget(self) {
        let sem = self.sem;
        core::mem::forget(self);
        sem.forget_one();
    }

    /// The semaphore this permit came from.
    pub fn semaphore(&self) -> &Semaphore {
        self.sem
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// A permit that owns a handle to its semaphore; dropping it returns it.
#[must_use = "the permit is returned as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct OwnedPermit {
    // `None` only once `forget` took it.
    sem: Option<Arc<Semaphore>>,
}

impl OwnedPermit {
    /// Keeps the permit from ever being returned: the semaphore's limit (and permits in use) drop
    /// by one. See [`Permit::forget`].
    pub fn forget(mut self) {
        if let Some(sem) = self.sem.take() {
            sem.forget_one();
        }
    }

    /// The semaphore this permit came from.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        self.sem
            .as_ref()
            .expect("only `forget` takes it, and that consumes the permit")
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        if let Some(sem) = &self.sem {
            sem.release();
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").finish_non_exhaustive()
    }
}

/// [`Semaphore::acquire`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireError {
    /// The semaphore was closed.
    Closed,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Closed => f.write_str("semaphore closed"),
        }
    }
}

impl core::error::Error for AcquireError {}

/// [`Semaphore::try_acquire`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// The semaphore was closed.
    Closed,
    /// No permit is free, or others are waiting for one.
    NoPermits,
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::Closed => f.write_str("semaphore closed"),
            TryAcquireError::NoPermits => f.write_str("no permits available"),
        }
    }
}

impl core::error::Error for TryAcquireError {}

/// [`Semaphore::blocking_acquire_timeout`] failed.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireTimeoutError {
    /// The semaphore was closed.
    Closed,
    /// No permit came in time.
    Timeout,
}

#[cfg(feature = "std")]
impl fmt::Display for AcquireTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireTimeoutError::Closed => f.write_str("semaphore closed"),
            AcquireTimeoutError::Timeout => f.write_str("timed out waiting for a permit"),
        }
    }
}

#[cfg(feature = "std")]
impl core::error::Error for AcquireTimeoutError {}

/// The wait queue: a slab of slots with a doubly linked FIFO list through the waiting ones.
///
/// A slot belongs to its acquire from enqueue until that acquire frees it (on completion or drop);
/// others only move it from `Waiting` to `Granted` or `Closed`, so keys are never reused early.
struct Queue {
    slots: Vec<Slot>,
    head: usize,
    tail: usize,
    free: usize,
    len: usize,
}

struct Slot {
    state: SlotState,
    waker: Option<Waker>,
    prev: usize,
    next: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Waiting,
    Granted,
    Closed,
}

impl Queue {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
        }
    }

    fn push_back(&mut self, waker: Option<Waker>) -> usize {
        let key = if self.free == NIL {
            self.slots.push(Slot {
                state: SlotState::Free,
                waker: None,
                prev: NIL,
                next: NIL,
            });
            self.slots.len() - 1
        } else {
            let key = self.free;
            self.free = self.slots[key].next;
            key
        };
        let tail = self.tail;
        let slot = &mut self.slots[key];
        slot.state = SlotState::Waiting;
        slot.waker = waker;
        slot.prev = tail;
        slot.next = NIL;
        if tail == NIL {
            self.head = key;
        } else {
            self.slots[tail].next = key;
        }
        self.tail = key;
        self.len += 1;
        key
    }

    fn pop_front(&mut self) -> Option<usize> {
        let key = self.head;
        if key == NIL {
            return None;
        }
        self.unlink(key);
        Some(key)
    }

    fn unlink(&mut self, key: usize) {
        let Slot { prev, next, .. } = self.slots[key];
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.len -= 1;
    }

    /// Returns the slot to the free list, with its waker (drop that outside the lock).
    fn free(&mut self, key: usize) -> Option<Waker> {
        let slot = &mut self.slots[key];
        slot.state = SlotState::Free;
        slot.next = self.free;
        self.free = key;
        slot.waker.take()
    }
}

/// Wakers collected under the lock, woken after it is dropped.
struct WakeList {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
    // `wakers[next..len]` are still to be woken.
    next: usize,
}

impl WakeList {
    #[inline]
    const fn new() -> Self {
        Self {
            wakers: [const { None }; WAKE_BATCH],
            len: 0,
            next: 0,
        }
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.len == WAKE_BATCH
    }

    #[inline]
    fn room(&self) -> usize {
        WAKE_BATCH - self.len
    }

    #[inline]
    fn push(&mut self, waker: Option<Waker>) {
        self.wakers[self.len] = waker;
        self.len += 1;
    }

    /// The next waker to wake, oldest first.
    #[inline]
    fn pop(&mut self) -> Option<Waker> {
        while self.next < self.len {
            let waker = self.wakers[self.next].take();
            self.next += 1;
            if waker.is_some() {
                return waker;
            }
        }
        None
    }

    /// Wakes every waker. If one panics, the rest are still woken while the panic unwinds (the
    /// guard tokio's wake list has), and then the panic goes on to the caller.
    #[inline]
    fn wake_all(&mut self) {
        /// Wakes the rest if a wake panicked.
        struct Rest<'a>(&'a mut WakeList);
        impl Drop for Rest<'_> {
            fn drop(&mut self) {
                self.0.wake_all_quietly();
            }
        }

        let rest = Rest(self);
        while let Some(waker) = rest.0.pop() {
            waker.wake();
        }
    }

    /// Wakes every waker while a panic may already be unwinding: with `std`, a further panic is
    /// caught and dropped, so it cannot abort the process; without `std` it aborts, as any panic
    /// during unwinding does.
    fn wake_all_quietly(&mut self) {
        while let Some(waker) = self.pop() {
            #[cfg(feature = "std")]
            drop(std::panic::catch_unwind(core::panic::AssertUnwindSafe(
                || waker.wake(),
            )));
            #[cfg(not(feature = "std"))]
            waker.wake();
        }
    }
}
