//! [`WakeList`]: wakers collected under the lock, woken after it is dropped, in batches.

use core::task::Waker;

// How many wakers one pass collects before it drops the lock to wake them: never wake under the
// lock (a waker may run arbitrary code), and never hold it for long.
const WAKE_BATCH: usize = 16;

/// Wakers collected under the lock, woken after it is dropped.
pub(super) struct WakeList {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
    // `wakers[next..len]` are still to be woken.
    next: usize,
}

impl WakeList {
    #[inline]
    pub(super) const fn new() -> Self {
        Self {
            wakers: [const { None }; WAKE_BATCH],
            len: 0,
            next: 0,
        }
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.len == WAKE_BATCH
    }

    #[inline]
    pub(super) fn room(&self) -> usize {
        WAKE_BATCH - self.len
    }

    #[inline]
    pub(super) fn push(&mut self, waker: Option<Waker>) {
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
    pub(super) fn wake_all(&mut self) {
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
    pub(super) fn wake_all_quietly(&mut self) {
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
