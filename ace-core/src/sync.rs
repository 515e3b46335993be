//! The one place atomics, `Arc` and locks come from: `core`, `portable-atomic`, or loom under
//! `cfg(loom)`.
//!
//! The lock ([`Mutex`]) guards the semaphore's waiter queue, for a handful of instructions and
//! never across a wake or a waker's clone or drop:
//!
//! - with `std`, it is std's `Mutex` (futex-based on Linux): as cheap as a spin lock when free,
//!   and when the holder is descheduled, waiting threads sleep instead of burning the core the
//!   holder needs. Measured against the spin lock in the same runs (ARCHITECTURE.md), it was
//!   as fast or faster with 8 and 64 threads and with busy cores;
//! - without `std`, a tiny test-and-test-and-set spin lock, as there is nothing to park on;
//! - under loom, loom's own mutex, so the models see every interleaving.
#![cfg_attr(
    not(loom),
    allow(
        unsafe_code,
        reason = "the spin lock hands out `&mut T` from an `UnsafeCell`"
    )
)]

#[cfg(not(loom))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use alloc::sync::Arc;
#[cfg(loom)]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use loom::sync::Arc;

#[cfg(all(not(loom), not(feature = "portable-atomic")))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use core::sync::atomic;
#[cfg(loom)]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use loom::sync::atomic;
#[cfg(all(not(loom), feature = "portable-atomic"))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use portable_atomic as atomic;

#[cfg(all(not(loom), feature = "std"))]
pub(crate) use parking::Mutex;
#[cfg(all(not(loom), not(feature = "std")))]
pub(crate) use spin::Mutex;

#[cfg(loom)]
pub(crate) use loom_mutex::Mutex;

#[cfg(all(not(loom), feature = "std"))]
mod parking {
    use std::sync::PoisonError;

    /// std's `Mutex`, never poisoned in practice: nothing under it panics, and if something did,
    /// the queue would still be consistent (each change is one step), so poisoning is ignored.
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }
}

#[cfg(not(loom))]
#[cfg_attr(
    feature = "std",
    allow(
        dead_code,
        reason = "with `std` the queue lock is std's `Mutex`; the spin lock stays compiled so its \
                  test keeps running"
    )
)]
mod spin {
    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};

    use super::atomic::{AtomicBool, Ordering};

    /// A test-and-test-and-set spin lock for critical sections of a few instructions.
    pub(crate) struct Mutex<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // Safety: the lock hands out at most one `&mut T` at a time, so sharing the lock across
    // threads is sound whenever moving the value across threads is.
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // Safety: as above; owning the lock is owning the value.
    unsafe impl<T: Send> Send for Mutex<T> {}

    // A panic cannot leave the value half-changed behind the lock: the semaphore runs no user
    // code (no wake, no waker clone or drop) while holding it, and its own code under the lock
    // does not panic. So, like std's `Mutex` (which tracks poisoning instead), it is unwind-safe.
    impl<T> core::panic::RefUnwindSafe for Mutex<T> {}
    impl<T> core::panic::UnwindSafe for Mutex<T> {}

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                self.lock_contended();
            }
            MutexGuard { lock: self }
        }

        #[cold]
        fn lock_contended(&self) {
            let mut spins: u32 = 0;
            loop {
                // Spin on a plain load so waiting cores share the cache line instead of
                // bouncing it with failed read-modify-writes.
                while self.locked.load(Ordering::Relaxed) {
                    spins = spins.wrapping_add(1);
                    backoff(spins);
                }
                if self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
            }
        }
    }

    // 64 spins ≈ a few hundred ns: longer than any critical section here, so past it the holder
    // was most likely preempted, and giving the core back lets it finish.
    #[inline]
    fn backoff(spins: u32) {
        #[cfg(feature = "std")]
        if spins > 64 {
            std::thread::yield_now();
            return;
        }
        let _ = spins;
        core::hint::spin_loop();
    }

    pub(crate) struct MutexGuard<'a, T> {
        lock: &'a Mutex<T>,
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            // Safety: the guard exists only while `locked` is held by us, so no other reference
            // to the value exists.
            unsafe { &*self.lock.value.get() }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            // Safety: as in `deref`, and `&mut self` makes this the only borrow of the guard.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}

#[cfg(loom)]
mod loom_mutex {
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // Nothing panics while holding the lock, so it is never poisoned.
            self.0.lock().unwrap()
        }
    }
}

#[cfg(all(test, not(loom), feature = "std"))]
mod tests {
    use super::Mutex;

    #[test]
    fn spin_lock_excludes() {
        extern crate std;
        use std::thread;

        let lock = Mutex::new(0_u64);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock(), 40_000);
    }
}
