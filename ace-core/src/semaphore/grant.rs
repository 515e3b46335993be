//! How permits move under the lock: the fast paths on the state word, handing a released permit
//! to the oldest waiter of the class served next (priority, then shares), serving the queue in batches after a growth or a close, joining and
//! leaving the queue. No waker's code runs under the lock: wakers are cloned before it is taken,
//! and woken or dropped after it is released.

use core::task::{Poll, Waker};

use super::future::Enqueued;
use super::priority::CLASSES;
use super::queue::{Key, Queue, Status};
use super::wake::WakeList;
use super::{delta_word, free, AcquireError, Semaphore, TryAcquireError, CLOSED, ONE, WAITERS};
use crate::sync::atomic::Ordering;

impl Semaphore {
    /// A permit was taken by class `class`: counted when shares need it.
    #[inline]
    pub(super) fn took(&self, class: usize) {
        if self.counted {
            self.held[class].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A permit of class `class` comes back: uncounted (before it is released, so the serving
    /// order never sees a class holding more than it does).
    #[inline]
    pub(super) fn gave_back(&self, class: usize) {
        if self.counted {
            self.held[class].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Under the lock: the class the next permit goes to. The most important class still under
    /// its guaranteed share, else the most important class waiting.
    #[inline]
    fn next_class(&self, queue: &Queue) -> Option<usize> {
        if self.counted {
            let limit = self.limit.load(Ordering::Acquire);
            let starved = (0..CLASSES).find(|&c| {
                queue.len_of(c) != 0
                    && self.held[c].load(Ordering::Acquire) < self.shares.guaranteed_rank(c, limit)
            });
            if starved.is_some() {
                return starved;
            }
        }
        queue.first_class()
    }

    /// Under the lock: grants a permit (already taken off the count) to the next waiter in
    /// serving order, returning its waker. `None` if nobody waits.
    #[inline]
    fn grant_next(&self, queue: &mut Queue) -> Option<Option<Waker>> {
        let class = self.next_class(queue)?;
        let (key, waker) = queue.serve(Status::Granted, class)?;
        self.took(class);
        // After the count above: the waiter that sees its flag sees the permit counted.
        if self.grants.raise(key.index()) {
            queue.lend(key);
        }
        Some(waker)
    }

    /// Under the lock: fails the waiters, most important class first, as many as `wakers`
    /// holds. Returns true if some are left.
    pub(super) fn close_batch(&self, queue: &mut Queue, wakers: &mut WakeList) -> bool {
        while !wakers.is_full() {
            let Some(class) = queue.first_class() else {
                break;
            };
            wakers.push(
                queue
                    .serve(Status::Closed, class)
                    .expect("the class waits")
                    .1,
            );
        }
        self.queue_changed(queue);
        !queue.is_empty()
    }
    /// One permit, if free and nobody is queued: a single compare-and-swap.
    #[inline]
    pub(super) fn try_take(&self) -> Result<(), TryAcquireError> {
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

    /// Returns one permit: pays a debt, or frees a slot, or hands it to the next waiter.
    #[inline]
    pub(super) fn release(&self) {
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

    /// Hands a released permit straight to the next waiter in serving order: the count never sees
    /// it, so nobody can take it on the way, and a waiting higher class always gets it first.
    #[inline(never)]
    fn hand_over(&self) {
        let mut queue = self.queue.lock();
        // A shrink that lands after this load is ordered after the hand-over: no debt is skipped.
        if !queue.is_empty() && free(self.state.load(Ordering::Acquire)) >= 0 {
            let waker = self.grant_next(&mut queue).expect("the queue is not empty");
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
    pub(super) fn forget_one(&self) {
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
    pub(super) fn in_batches(
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
    pub(super) fn wake(&self, wakers: &mut WakeList, more: bool) {
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

    /// Under the lock: moves free permits to the next waiters in serving order, clearing the flag once the queue
    /// is empty. Returns true if `wakers` filled up before the work was done.
    pub(super) fn drain_locked(&self, queue: &mut Queue, wakers: &mut WakeList) -> bool {
        loop {
            if queue.is_empty() {
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
            let n = (free as usize).min(queue.len()).min(wakers.room());
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
                wakers.push(self.grant_next(queue).expect("n ≤ queue.len()"));
            }
            self.queue_changed(queue);
        }
    }

    /// Under the lock: publishes the queue length, and clears the flag once it is empty.
    #[inline]
    fn queue_changed(&self, queue: &Queue) {
        self.waiting.store(queue.len(), Ordering::Release);
        // Only lock holders set the flag, so this load sees its true value.
        if queue.is_empty() && self.state.load(Ordering::Relaxed) & WAITERS != 0 {
            self.state.fetch_and(!WAITERS, Ordering::AcqRel);
        }
    }

    /// The slow path of a first poll: under the lock, take a permit if nobody is queued, or
    /// join the queue.
    #[inline(never)]
    pub(super) fn enqueue(&self, waker: &Waker, class: usize, front: bool) -> Enqueued {
        // Cloned before locking and dropped after unlocking if unused: a waker's code never runs
        // under the lock.
        let mut mine = Some(waker.clone());
        let mut queue = self.queue.lock();
        let state = self.state.load(Ordering::Acquire);
        // The common contended case: others queued (so the flag is set) and nothing free to hand
        // them. Join the back; whoever frees a permit next comes to the lock and serves the head.
        if state & CLOSED == 0 && !queue.is_empty() && free(state) <= 0 {
            let key = self.join(&mut queue, mine.take(), class, front);
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
            if queue.is_empty() && free(state) > 0 {
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
                    self.took(class);
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
            let key = self.join(&mut queue, mine.take(), class, front);
            break (Enqueued::Queued(key), more);
        };
        drop(queue);
        drop(mine);

        /// If a waker panics, the outcome never reaches the caller: give back what it holds.
        struct Undo<'a>(&'a Semaphore, Option<&'a Enqueued>, usize);
        impl Drop for Undo<'_> {
            fn drop(&mut self) {
                match self.1 {
                    Some(Enqueued::Taken) => {
                        self.0.gave_back(self.2);
                        self.0.release();
                    }
                    Some(&Enqueued::Queued(key)) => self.0.cancel(key, self.2),
                    Some(Enqueued::Closed) | None => {}
                }
            }
        }
        let mut undo = Undo(self, Some(&outcome), class);
        self.wake(&mut wakers, more);
        undo.1 = None;
        drop(undo);
        outcome
    }

    /// Under the lock: joins the queue (in a lent slot whose owner has left, if no other slot is
    /// free) and publishes the new length.
    #[inline]
    fn join(&self, queue: &mut Queue, waker: Option<Waker>, class: usize, front: bool) -> Key {
        queue.reclaim(|key| self.grants.is_lowered(key));
        let key = queue.push(waker, class, front);
        self.waiting.store(queue.len(), Ordering::Release);
        key
    }

    /// A later poll: has our entry been served?
    #[inline]
    pub(super) fn poll_queued(&self, key: Key, waker: &Waker) -> Poll<Result<(), AcquireError>> {
        // A permit handed to us is read from our flag, without the lock.
        if self.grants.take(key.index()) {
            return Poll::Ready(Ok(()));
        }
        self.poll_queued_locked(key, waker)
    }

    /// [`poll_queued`](Self::poll_queued) under the lock: closed, still waiting (keep the waker
    /// current), or granted since the flag was read (or to a slot without a flag).
    #[inline(never)]
    fn poll_queued_locked(&self, key: Key, waker: &Waker) -> Poll<Result<(), AcquireError>> {
        // A new waker is cloned outside the lock, and the one it replaces dropped outside it: a
        // waker's code (its drop may release a permit of this very semaphore) never runs under
        // the lock.
        let mut new: Option<Waker> = None;
        loop {
            let mut queue = self.queue.lock();
            let (result, old) = match queue.status(key) {
                Status::Granted => {
                    self.grants.lower(key.index());
                    (Poll::Ready(Ok(())), queue.release(key))
                }
                Status::Closed => (Poll::Ready(Err(AcquireError::Closed)), queue.release(key)),
                Status::Waiting => {
                    let slot = queue.waker_mut(key);
                    if slot.as_ref().is_some_and(|old| old.will_wake(waker)) {
                        return Poll::Pending;
                    }
                    match new.take() {
                        Some(new) => (Poll::Pending, slot.replace(new)),
                        None => {
                            drop(queue);
                            new = Some(waker.clone());
                            continue;
                        }
                    }
                }
            };
            drop(queue);
            drop(old);
            drop(new);
            return result;
        }
    }

    /// A queued acquire is dropped: leave the queue, or pass on a permit handed to us.
    #[cold]
    pub(super) fn cancel(&self, key: Key, class: usize) {
        let mut wakers = WakeList::new();
        let mut queue = self.queue.lock();
        let (old_waker, more) = match queue.status(key) {
            Status::Waiting => {
                let waker = queue.remove(key);
                self.queue_changed(&queue);
                (waker, false)
            }
            Status::Granted => {
                // Never seen by its owner (whose flag, if any, is still raised).
                self.grants.lower(key.index());
                let waker = queue.release(key);
                self.gave_back(class);
                let prev = self.state.fetch_add(ONE, Ordering::AcqRel);
                let more = prev & WAITERS != 0
                    && free(prev) >= 0
                    && self.drain_locked(&mut queue, &mut wakers);
                (waker, more)
            }
            Status::Closed => (queue.release(key), false),
        };
        drop(queue);
        self.wake(&mut wakers, more);
        drop(old_waker);
    }
}
