//! The wait queue: the acquires waiting for a permit, in the order they are served.
//!
//! Everything here runs under the semaphore's lock; the queue knows nothing of permits or of
//! the state word. Its interface is what the semaphore asks of any serving order:
//!
//! - [`push`](Queue::push) joins an acquire to the back of its class (or the front, for a
//!   newest-first acquire), returning its [`Key`];
//! - [`serve`](Queue::serve) takes the oldest waiter of a class out of the queue, marks it
//!   [`Granted`](Status::Granted) or [`Closed`](Status::Closed), and returns its waker (which
//!   class to serve is the semaphore's choice: priority, then shares);
//! - [`status`](Queue::status) and [`waker_mut`](Queue::waker_mut) let the owner of a key look at
//!   its entry and replace its waker;
//! - [`remove`](Queue::remove) takes a still-waiting entry out (a cancelled acquire), and
//!   [`release`](Queue::release) frees a served one once its owner has seen the outcome;
//! - [`lend`](Queue::lend) marks a granted entry whose owner will see the grant without the lock
//!   (its flag in [`Grants`](super::grants::Grants)), and [`reclaim`](Queue::reclaim) frees the
//!   lent entries whose owners have left, when a new waiter needs a slot.
//!
//! Each class is served first in, first out. The store is one slab with an index-linked list per
//! class: safe code, no allocation per wait once warm, O(1) removal on cancel. An entry belongs to its acquire from
//! `push` until that acquire releases or removes it; others only move it from `Waiting` to
//! `Granted` or `Closed`, so keys are never reused early.

use alloc::vec::Vec;
use core::task::Waker;

use super::grants::FAST;
use super::priority::CLASSES;

// One bit of `Queue::lent` per slot with a grant flag.
const _: () = assert!(FAST <= u64::BITS as usize);

/// "No slot" in the index-linked lists.
const NIL: usize = usize::MAX;

/// An entry of the queue, held by the acquire that joined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key(usize);

impl Key {
    /// The slot's index (its flag in [`Grants`](super::grants::Grants)).
    #[inline]
    pub(super) fn index(self) -> usize {
        self.0
    }
}

/// Where a queued acquire stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Still in the queue.
    Waiting,
    /// Served: a permit was handed to it.
    Granted,
    /// Served: the semaphore closed.
    Closed,
}

/// The wait queue: a slab of slots with a doubly linked FIFO list per class through the waiting
/// ones.
pub(super) struct Queue {
    slots: Vec<Slot>,
    head: [usize; CLASSES],
    tail: [usize; CLASSES],
    lens: [usize; CLASSES],
    free: usize,
    len: usize,
    // Bit `k`: slot `k` is lent (granted, its owner reads the grant from its flag, not here).
    lent: u64,
}

struct Slot {
    // `None` while the slot is on the free list.
    status: Option<Status>,
    waker: Option<Waker>,
    class: usize,
    prev: usize,
    next: usize,
}

impl Queue {
    pub(super) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            head: [NIL; CLASSES],
            tail: [NIL; CLASSES],
            lens: [0; CLASSES],
            free: NIL,
            len: 0,
            lent: 0,
        }
    }

    /// Waiters in the queue (served ones not counted).
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waiters of class `class`.
    #[inline]
    pub(super) fn len_of(&self, class: usize) -> usize {
        self.lens[class]
    }

    /// The most important class with a waiter.
    #[inline]
    pub(super) fn first_class(&self) -> Option<usize> {
        self.lens.iter().position(|&len| len != 0)
    }

    /// Joins class `class`, at the back (`front` false: first in, first out) or at the front
    /// (`front` true: served before the others of its class), to be woken through `waker` once
    /// served.
    pub(super) fn push(&mut self, waker: Option<Waker>, class: usize, front: bool) -> Key {
        let key = if self.free == NIL {
            self.slots.push(Slot {
                status: None,
                waker: None,
                class,
                prev: NIL,
                next: NIL,
            });
            self.slots.len() - 1
        } else {
            let key = self.free;
            self.free = self.slots[key].next;
            key
        };
        let (head, tail) = (self.head[class], self.tail[class]);
        let slot = &mut self.slots[key];
        slot.status = Some(Status::Waiting);
        slot.waker = waker;
        slot.class = class;
        if front {
            slot.prev = NIL;
            slot.next = head;
            if head == NIL {
                self.tail[class] = key;
            } else {
                self.slots[head].prev = key;
            }
            self.head[class] = key;
        } else {
            slot.prev = tail;
            slot.next = NIL;
            if tail == NIL {
                self.head[class] = key;
            } else {
                self.slots[tail].next = key;
            }
            self.tail[class] = key;
        }
        self.lens[class] += 1;
        self.len += 1;
        Key(key)
    }

    /// Serves the oldest waiter of `class`: it leaves the queue with `outcome` (`Granted` or
    /// `Closed`), and its key and waker are returned (the waker to be woken after the lock is
    /// dropped). `None` if nobody of that class waits.
    pub(super) fn serve(&mut self, outcome: Status, class: usize) -> Option<(Key, Option<Waker>)> {
        debug_assert_ne!(outcome, Status::Waiting, "serving decides an outcome");
        let key = self.head[class];
        if key == NIL {
            return None;
        }
        self.unlink(key);
        let slot = &mut self.slots[key];
        slot.status = Some(outcome);
        Some((Key(key), slot.waker.take()))
    }

    /// The granted entry `key` is lent: its owner learns of the grant from its flag and may
    /// leave without coming back here; [`reclaim`](Self::reclaim) frees it once it has.
    #[inline]
    pub(super) fn lend(&mut self, Key(key): Key) {
        debug_assert!(key < FAST, "only slots with a flag are lent");
        self.lent |= 1 << key;
    }

    /// If no slot with a flag is free, frees the lent entries whose owners have left
    /// (`left(key)`: their flag is lowered), so the slab grows only when every slot is really
    /// in use, and a slot past the flags is used only when none with a flag can be.
    #[inline]
    pub(super) fn reclaim(&mut self, left: impl Fn(usize) -> bool) {
        if self.lent == 0 || self.free < FAST {
            return;
        }
        let mut lent = self.lent;
        while lent != 0 {
            let key = lent.trailing_zeros() as usize;
            lent &= lent - 1;
            if left(key) {
                let waker = self.release(Key(key));
                debug_assert!(waker.is_none(), "a served entry's waker was taken");
            }
        }
    }

    /// Where the entry stands.
    pub(super) fn status(&self, Key(key): Key) -> Status {
        self.slots[key]
            .status
            .expect("a key is only used until its owner releases it")
    }

    /// The waker the entry will be woken through (`None` once served).
    pub(super) fn waker_mut(&mut self, Key(key): Key) -> &mut Option<Waker> {
        &mut self.slots[key].waker
    }

    /// A waiting entry gives up its place; returns its waker (drop that outside the lock).
    pub(super) fn remove(&mut self, key: Key) -> Option<Waker> {
        debug_assert_eq!(self.status(key), Status::Waiting);
        self.unlink(key.0);
        self.release(key)
    }

    /// The owner of a served (or removed) entry is done with it: the slot is reused. Returns any
    /// waker left in it (drop that outside the lock).
    pub(super) fn release(&mut self, Key(key): Key) -> Option<Waker> {
        if key < FAST {
            self.lent &= !(1 << key);
        }
        let slot = &mut self.slots[key];
        slot.status = None;
        slot.next = self.free;
        self.free = key;
        slot.waker.take()
    }

    fn unlink(&mut self, key: usize) {
        let Slot {
            prev, next, class, ..
        } = self.slots[key];
        if prev == NIL {
            self.head[class] = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail[class] = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.lens[class] -= 1;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a burst past the flagged slots, the slots past them sit on the
    /// free list while the flagged ones stay lent (their owners took their grants from the
    /// flags and left). `reclaim` runs only once the free list is empty, so with fewer waiters
    /// at a time than free slots past `FAST`, every later waiter gets a slot without a flag:
    /// the lock-free grant never comes back.
    #[test]
    fn a_waiter_after_a_burst_gets_a_flagged_slot_again() {
        let mut queue = Queue::new();
        let keys: Vec<Key> = (0..FAST + 8).map(|_| queue.push(None, 0, false)).collect();
        for _ in &keys {
            let (key, _) = queue.serve(Status::Granted, 0).expect("waits");
            if key.index() < FAST {
                // As `grant_next`: the flag raised, the slot lent.
                queue.lend(key);
            } else {
                // As `poll_queued_locked`: the owner learns it under the lock, frees the slot.
                drop(queue.release(key));
            }
        }
        // Every owner of a flagged slot took its grant and left (flags lowered).
        queue.reclaim(|_| true);
        let key = queue.push(None, 0, false);
        assert!(
            key.index() < FAST,
            "slot {} has no flag while {FAST} flagged slots are reclaimable",
            key.index()
        );
    }
}
