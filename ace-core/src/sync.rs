//! The one place atomics, `Arc` and locks come from: `core`, `portable-atomic`, or loom under
//! `cfg(loom)`.
//!
//! The lock is a tiny spin lock ([`Mutex`]) for the semaphore's waiter queue: it is held for a
//! handful of instructions, never across a wake or an allocation-heavy call, so spinning is cheaper
//! than parking. Under loom it is loom's own mutex, so the models see every interleaving.
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

#[cfg(all(not(loom), not(feature = "std")))]
pub(crate) use spin::Mutex;
#[cfg(all(not(loom), feature = "std"))]
pub(crate) use ab::Mutex;

/// EXPERIMENT (to be removed): both locks, picked at run time, to measure them in one run.
#[cfg(all(not(loom), feature = "std"))]
pub(crate) mod ab {
    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};

    use super::atomic::{AtomicBool, Ordering};

    pub(crate) static USE_SPIN: AtomicBool = AtomicBool::new(false);

    pub(crate) struct Mutex<T> {
        spin: super::spin::Mutex<()>,
        park: std::sync::Mutex<()>,
        value: UnsafeCell<T>,
    }
    // Safety: experiment.
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // Safety: experiment.
    unsafe impl<T: Send> Send for Mutex<T> {}
    impl<T> core::panic::RefUnwindSafe for Mutex<T> {}
    impl<T> core::panic::UnwindSafe for Mutex<T> {}

    #[allow(dead_code, reason = "experiment")]
    enum Inner<'a> {
        Spin(super::spin::MutexGuard<'a, ()>),
        Park(std::sync::MutexGuard<'a, ()>),
    }

    pub(crate) struct MutexGuard<'a, T> {
        _inner: Inner<'a>,
        value: &'a UnsafeCell<T>,
    }

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self {
                spin: super::spin::Mutex::new(()),
                park: std::sync::Mutex::new(()),
                value: UnsafeCell::new(value),
            }
        }
        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            let inner = if USE_SPIN.load(Ordering::Relaxed) {
                Inner::Spin(self.spin.lock())
            } else {
                Inner::Park(self.park.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            };
            MutexGuard {
                _inner: inner,
                value: &self.value,
            }
        }
    }
    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // Safety: experiment, the guard holds the lock.
            unsafe { &*self.value.get() }
        }
    }
    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // Safety: experiment, the guard holds the lock.
            unsafe { &mut *self.value.get() }
        }
    }
}

#[cfg(loom)]
pub(crate) use loom_mutex::Mutex;

#[cfg(not(loom))]
#[allow(dead_code, unreachable_pub, reason = "experiment")]
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
