//! The gate that bounds handlers in flight: an adjustable semaphore.
//!
//! Everything the consumer needs from a semaphore goes through [`Gate`], so the team's
//! `ace_core::Semaphore` can replace the `tokio::sync::Semaphore` below by changing this file
//! only (`new`, `acquire`, `try_acquire`, `close`, `limit`, `in_use`, `set_limit`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An adjustable limit on handlers in flight. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sem: Arc<Semaphore>,
    limit: AtomicUsize,
    in_use: AtomicUsize,
    /// Permits still to take out of circulation after a shrink: each one released while this is
    /// positive is forgotten instead (O(1) shrink, taking effect as permits come back).
    debt: AtomicUsize,
    /// Serialises `set_limit`.
    resize: Mutex<()>,
}

/// One handler's slot; released on drop.
#[derive(Debug)]
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    gate: Arc<Inner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.in_use.fetch_sub(1, Ordering::AcqRel);
        let Some(permit) = self.permit.take() else {
            return;
        };
        let paid = self
            .gate
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if paid {
            permit.forget();
        }
    }
}

impl Gate {
    /// A gate with `limit` slots.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(limit)),
                limit: AtomicUsize::new(limit),
                in_use: AtomicUsize::new(0),
                debt: AtomicUsize::new(0),
                resize: Mutex::new(()),
            }),
        }
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> Permit {
        self.inner.in_use.fetch_add(1, Ordering::AcqRel);
        Permit {
            permit: Some(permit),
            gate: Arc::clone(&self.inner),
        }
    }

    /// Waits for a slot; `None` once closed.
    pub(crate) async fn acquire(&self) -> Option<Permit> {
        let permit = Arc::clone(&self.inner.sem).acquire_owned().await.ok()?;
        Some(self.wrap(permit))
    }

    /// A slot if one is free now.
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        let permit = Arc::clone(&self.inner.sem).try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }

    /// Wakes every waiter with `None`; later acquires fail at once.
    pub(crate) fn close(&self) {
        self.inner.sem.close();
    }

    /// The limit in force.
    pub(crate) fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Slots held.
    pub(crate) fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Acquire)
    }

    /// Sets the limit without waiting: a grow adds permits (paying off debt first); a shrink
    /// forgets free permits now and the rest as they are released.
    pub(crate) fn set_limit(&self, limit: usize) {
        let inner = &self.inner;
        let _guard = inner.resize.lock().unwrap_or_else(PoisonError::into_inner);
        let old = inner.limit.swap(limit, Ordering::AcqRel);
        if limit > old {
            let mut grow = limit - old;
            let _ = inner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    let pay = d.min(limit - old);
                    grow = limit - old - pay;
                    Some(d - pay)
                });
            inner.sem.add_permits(grow);
        } else if limit < old {
            let shrink = old - limit;
            let forgotten = inner.sem.forget_permits(shrink);
            inner.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Free permits plus debt; for the invariant check in tests.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.inner.sem.available_permits()
    }

    #[cfg(test)]
    fn debt(&self) -> usize {
        self.inner.debt.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn should_shrink_as_permits_come_back() {
        let gate = Gate::new(3);
        let held: Vec<_> = (0..3).map(|_| gate.try_acquire().unwrap()).collect();
        gate.set_limit(1);
        assert_eq!(gate.limit(), 1);
        drop(held);
        assert_eq!(gate.in_use(), 0);
        let one = gate.try_acquire().unwrap();
        assert!(gate.try_acquire().is_none());
        drop(one);
    }

    #[test]
    fn should_pay_debt_before_adding_permits() {
        let gate = Gate::new(4);
        let held: Vec<_> = (0..4).map(|_| gate.try_acquire().unwrap()).collect();
        gate.set_limit(1);
        assert_eq!(gate.debt(), 3);
        gate.set_limit(3);
        assert_eq!(gate.debt(), 1);
        drop(held);
        assert_eq!(gate.available(), 3);
    }

    proptest! {
        /// available + held == limit + debt, after any sequence of resizes, acquires and releases.
        #[test]
        fn permits_balance(ops in proptest::collection::vec((0u8..3, 0usize..20), 0..100)) {
            let gate = Gate::new(5);
            let mut held = Vec::new();
            for (op, n) in ops {
                match op {
                    0 => gate.set_limit(n.max(1)),
                    1 => if let Some(p) = gate.try_acquire() { held.push(p) },
                    _ => { held.pop(); }
                }
                prop_assert_eq!(gate.available() + held.len(), gate.limit() + gate.debt());
                prop_assert_eq!(gate.in_use(), held.len());
            }
        }
    }
}
