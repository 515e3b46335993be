//! [`Grants`]: one flag per low queue slot, so that a waiter handed a permit learns it without
//! taking the lock.
//!
//! A hand-off used to take the queue lock three times: the releaser's hand-over, the next
//! acquirer's enqueue and the woken waiter's poll, which only read its slot's status and gave the
//! slot back. Now the releaser, under the lock, also raises the slot's flag; the woken waiter's
//! poll reads the flag, lowers it and is done, with no lock and no read-modify-write.
//!
//! The slot itself stays with the queue, marked lent (granted, owner not yet back), until a later
//! lock holder that needs a free slot sees the flag lowered and takes it back
//! ([`Queue::reclaim`](super::queue::Queue::reclaim)). Only the owner lowers a raised flag, and
//! only lock holders raise one (for a slot whose owner waits), so:
//!
//! - a lent slot with its flag lowered is one its owner has left for good: reusing it is safe;
//! - a lent slot with its flag raised is one its owner has not seen yet: a locked poll or a
//!   cancel of that owner lowers the flag itself before it gives the slot back.
//!
//! Slots past [`FAST`] (more waiters than that at once) take the locked path as before.

use crate::sync::atomic::{AtomicBool, Ordering};

/// How many slots have a flag: a bit each in the queue's `lent` word, a byte each here. Loom
/// models use a few slots, so that a model also exercises the locked path of the slots past it.
#[cfg(not(loom))]
pub(super) const FAST: usize = 64;
#[cfg(loom)]
pub(super) const FAST: usize = 2;

/// The grant flags of the first [`FAST`] queue slots.
pub(super) struct Grants {
    flags: [AtomicBool; FAST],
}

impl Grants {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            flags: [const { AtomicBool::new(false) }; FAST],
        }
    }

    // Loom's atomics cannot be built in a const context.
    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            flags: core::array::from_fn(|_| AtomicBool::new(false)),
        }
    }

    /// Under the lock: slot `key`'s waiter was handed a permit. Returns false if the slot has no
    /// flag (the waiter learns it under the lock).
    #[inline]
    pub(super) fn raise(&self, key: usize) -> bool {
        match self.flags.get(key) {
            Some(flag) => {
                // Release: whoever sees the flag sees everything the grant changed before it.
                flag.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// The owner of slot `key`, without the lock: true if a permit was handed to it, and then the
    /// flag is lowered (the slot is the queue's again).
    #[inline]
    pub(super) fn take(&self, key: usize) -> bool {
        match self.flags.get(key) {
            Some(flag) if flag.load(Ordering::Acquire) => {
                // Release: a lock holder that sees the flag lowered reuses the slot, after the
                // owner's last look at it.
                flag.store(false, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Under the lock: the owner of slot `key` is done with it through the lock (a locked poll or
    /// a cancel of a granted slot): lowers its flag, if raised, before the slot is given back.
    #[inline]
    pub(super) fn lower(&self, key: usize) {
        if let Some(flag) = self.flags.get(key) {
            flag.store(false, Ordering::Relaxed);
        }
    }

    /// Under the lock: true if the lent slot `key`'s owner has taken its grant and left.
    #[inline]
    pub(super) fn is_lowered(&self, key: usize) -> bool {
        !self.flags[key].load(Ordering::Acquire)
    }
}
