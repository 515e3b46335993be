//! The permits: [`Permit`] borrows its semaphore, [`OwnedPermit`] holds an `Arc` of it. Dropping
//! either returns the permit; `forget` takes it out of the semaphore for good.

use alloc::sync::Arc;
use core::fmt;
use core::num::NonZeroUsize;

use super::{Priority, Semaphore};

/// A permit from [`Semaphore::acquire`] or [`Semaphore::try_acquire`]; dropping it returns it.
#[must_use = "the permit is returned as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct Permit<'a> {
    pub(super) sem: &'a Semaphore,
    pub(super) class: Priority,
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
        let (sem, class) = (self.sem, self.class);
        core::mem::forget(self);
        sem.gave_back(class.rank());
        sem.forget_one();
    }

    /// The semaphore this permit came from.
    pub fn semaphore(&self) -> &Semaphore {
        self.sem
    }

    /// The class the permit was acquired in.
    pub fn priority(&self) -> Priority {
        self.class
    }

    /// Takes the permit out of its borrow: it stays in use until it is given to
    /// [`Semaphore::release_detached`] of the same semaphore. For a handle that already owns the
    /// semaphore through a structure of its own (one `Arc` for both, where an
    /// [`OwnedPermit`] would add a second one to clone and drop on every acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use ace_core::Semaphore;
    ///
    /// let sem = Semaphore::new(1);
    /// let detached = sem.try_acquire().unwrap().detach();
    /// assert_eq!(sem.in_use(), 1);
    /// sem.release_detached(detached);
    /// assert_eq!(sem.in_use(), 0);
    /// ```
    pub fn detach(self) -> DetachedPermit {
        let class = self.class;
        core::mem::forget(self);
        DetachedPermit::new(class)
    }
}

/// A permit held without a handle to its semaphore, from [`Permit::detach`]: it is returned
/// only by [`Semaphore::release_detached`] (dropping it keeps the permit in use for good).
///
/// Give it back to the semaphore it came from: another semaphore would count a permit it never
/// gave out (a wrong count, never memory unsafety).
#[must_use = "a detached permit is returned only by `Semaphore::release_detached`"]
pub struct DetachedPermit {
    // The class's rank plus one: a whole word with no padding, its niche at zero. Holders move
    // it on every task (a tower layer's permit goes from `poll_ready`'s slot into the response
    // future); a one-byte field with seven bytes of padding was copied as a byte and a 7-byte
    // run, and the loads that read those stores back as wider words missed the CPU's store
    // forwarding (equal instruction counts, a third more time per call).
    rank: NonZeroUsize,
}

impl DetachedPermit {
    #[inline]
    fn new(class: Priority) -> Self {
        Self {
            rank: NonZeroUsize::MIN.saturating_add(class.rank()),
        }
    }

    #[inline]
    fn rank(&self) -> usize {
        self.rank.get() - 1
    }

    /// The class the permit was acquired in.
    pub fn priority(&self) -> Priority {
        Priority::ALL[self.rank()]
    }
}

impl fmt::Debug for DetachedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedPermit")
            .field("class", &self.priority())
            .finish()
    }
}

impl Semaphore {
    /// Returns a [detached](Permit::detach) permit of this semaphore, as dropping its
    /// [`Permit`] would have.
    #[inline]
    pub fn release_detached(&self, permit: DetachedPermit) {
        self.gave_back(permit.rank());
        self.release();
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.gave_back(self.class.rank());
        self.sem.release();
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("priority", &self.class)
            .finish_non_exhaustive()
    }
}

/// A permit that owns a handle to its semaphore; dropping it returns it.
#[must_use = "the permit is returned as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct OwnedPermit {
    // `None` only once `forget` took it.
    pub(super) sem: Option<Arc<Semaphore>>,
    pub(super) class: Priority,
}

impl OwnedPermit {
    /// Keeps the permit from ever being returned: the semaphore's limit (and permits in use) drop
    /// by one. See [`Permit::forget`].
    pub fn forget(mut self) {
        if let Some(sem) = self.sem.take() {
            sem.gave_back(self.class.rank());
            sem.forget_one();
        }
    }

    /// The class the permit was acquired in.
    pub fn priority(&self) -> Priority {
        self.class
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
            sem.gave_back(self.class.rank());
            sem.release();
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("priority", &self.class)
            .finish_non_exhaustive()
    }
}
