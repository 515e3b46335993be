//! Loom models of the semaphore: every interleaving (up to a preemption bound) of acquires,
//! releases, limit changes, cancellations and close.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p ace-core --release --test loom --features loom
//! ```
//!
//! Each model ends by checking that no permit was double-granted (a holder count never exceeds
//! what the limit allowed) and none was lost (every thread finishes, which loom would otherwise
//! report as a deadlock, and the books balance: `in_use == 0`, `available == limit`).
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ace_core::{AcquireError, AcquireOwned, Priority, Semaphore, Shares};
use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Runs `f` under loom with a preemption bound that keeps the suite to minutes on 2 cores.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// Counts holders and fails if more than `max` ever hold at once.
struct Holders {
    now: AtomicUsize,
    max: usize,
}

impl Holders {
    fn new(max: usize) -> Self {
        Self {
            now: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts one holder until the guard drops (drop it before the permit).
    fn enter(&self) -> Holding<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            now <= self.max,
            "{now} holders, at most {} allowed",
            self.max
        );
        Holding(self)
    }

    fn hold(&self) {
        drop(self.enter());
    }

    /// If a permit is free now, holds it (counted) across a yield.
    fn try_hold(&self, sem: &Semaphore) {
        if let Ok(permit) = sem.try_acquire() {
            let holding = self.enter();
            thread::yield_now();
            drop(holding);
            drop(permit);
        }
    }
}

struct Holding<'a>(&'a Holders);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn assert_settled(sem: &Semaphore) {
    assert_eq!(sem.in_use(), 0, "{sem:?}");
    assert_eq!(sem.debt(), 0, "{sem:?}");
    assert_eq!(sem.available(), sem.limit(), "{sem:?}");
    assert_eq!(sem.waiting(), 0, "{sem:?}");
}

/// Polls a future once and reports whether it finished, then lets it drop (cancel).
struct PollOnce<F>(Option<F>);

impl<F: Future + Unpin> Future for PollOnce<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut future = self.0.take().expect("polled once");
        Poll::Ready(match Pin::new(&mut future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    }
}

#[test]
fn acquire_release_race() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let holders = Arc::new(Holders::new(1));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
                thread::spawn(move || {
                    let permit = block_on(sem.acquire()).unwrap();
                    let holding = holders.enter();
                    thread::yield_now();
                    drop(holding);
                    drop(permit);
                })
            })
            .collect();
        holders.try_hold(&sem);
        for t in threads {
            t.join().unwrap();
        }
        assert_settled(&sem);
    });
}

#[test]
fn grow_during_wait() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let holders = Arc::new(Holders::new(1));
        let waiter = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                let permit = block_on(sem.acquire()).unwrap();
                holders.hold();
                drop(permit);
            })
        };
        sem.set_limit(1);
        waiter.join().unwrap();
        assert_settled(&sem);
        assert_eq!(sem.limit(), 1);
    });
}

#[test]
fn shrink_during_wait() {
    model(|| {
        let sem = Arc::new(Semaphore::new(2));
        // At most 2 (the in-use count at the shrink) ever hold at once, though two permits are
        // held and two tasks wait. (`in_use()` itself is a snapshot of two atomics and may be
        // off while `set_limit` runs, so the true count is kept here.)
        let holders = Arc::new(Holders::new(2));
        let a = (sem.try_acquire().unwrap(), holders.enter());
        let b = (sem.try_acquire().unwrap(), holders.enter());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
                thread::spawn(move || {
                    let permit = block_on(sem.acquire()).unwrap();
                    let holding = holders.enter();
                    drop(holding);
                    drop(permit);
                })
            })
            .collect();
        let shrinker = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.set_limit(1))
        };
        for (permit, holding) in [a, b] {
            drop(holding);
            drop(permit);
        }
        shrinker.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(sem.limit(), 1);
        assert_settled(&sem);
    });
}

#[test]
fn cancel_while_being_woken() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.try_acquire().unwrap();
        let holders = Arc::new(Holders::new(1));
        // Polls once (queues, or is handed the permit) and then is dropped: a grant it got
        // must pass on to the next waiter.
        let canceller = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                if let Some(result) = block_on(PollOnce(Some(sem.acquire()))) {
                    let _permit = result.unwrap();
                    holders.hold();
                }
            })
        };
        let waiter = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                let permit = block_on(sem.acquire()).unwrap();
                holders.hold();
                drop(permit);
            })
        };
        drop(held);
        canceller.join().unwrap();
        waiter.join().unwrap();
        assert_settled(&sem);
    });
}

#[test]
fn close_while_waiting() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiter = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || match block_on(sem.acquire()) {
                Ok(permit) => drop(permit),
                Err(AcquireError::Closed) => {}
                Err(e) => panic!("unexpected {e}"),
            })
        };
        let grower = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.set_limit(1))
        };
        sem.close();
        grower.join().unwrap();
        waiter.join().unwrap();
        assert!(sem.is_closed());
        assert_settled(&sem);
    });
}

#[test]
fn forget_races_set_limit() {
    model(|| {
        let sem = Arc::new(Semaphore::new(2));
        let a = sem.try_acquire().unwrap();
        let b = sem.try_acquire().unwrap();
        let shrinker = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.set_limit(0))
        };
        a.forget();
        drop(b);
        shrinker.join().unwrap();
        assert_eq!(sem.limit(), 0);
        assert_settled(&sem);
    });
}

#[test]
fn owned_permit_across_threads() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let holders = Arc::new(Holders::new(1));
        let permit = Arc::clone(&sem).try_acquire_owned().unwrap();
        let releaser = thread::spawn(move || drop(permit));
        let waiter = {
            let holders = Arc::clone(&holders);
            let sem = Arc::clone(&sem);
            thread::spawn(move || {
                let permit = block_on(sem.acquire_owned()).unwrap();
                holders.hold();
                drop(permit);
            })
        };
        releaser.join().unwrap();
        waiter.join().unwrap();
        assert_settled(&sem);
    });
}

#[test]
fn two_setters_never_over_admit() {
    model(|| {
        // The limit is only ever 1 or 0, so at most one permit may be held at any moment. Two
        // setters whose changes of the free count land out of order would let two in.
        let sem = Arc::new(Semaphore::new(1));
        let holders = Arc::new(Holders::new(1));
        let setters: Vec<_> = [0, 1]
            .into_iter()
            .map(|limit| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.set_limit(limit))
            })
            .collect();
        let acquirer = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                holders.try_hold(&sem);
            })
        };
        holders.try_hold(&sem);
        for t in setters {
            t.join().unwrap();
        }
        acquirer.join().unwrap();
        assert!(sem.limit() <= 1);
        assert_settled(&sem);
    });
}

/// Polls an owned acquire once with a waker that does nothing: it joins its class's queue.
fn queue_up(acquire: &mut AcquireOwned) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(acquire).poll(&mut cx).is_pending()
}

fn assert_no_class_holds(sem: &Semaphore) {
    for class in Priority::ALL {
        assert_eq!(sem.held(class), 0, "{class}: {sem:?}");
    }
}

#[test]
fn classes_race_for_a_released_permit() {
    model(|| {
        let sem = Arc::new(Semaphore::with_shares(
            1,
            Shares::new().with(Priority::Normal, 50),
        ));
        let holders = Arc::new(Holders::new(1));
        let threads: Vec<_> = [Priority::Critical, Priority::Sheddable]
            .into_iter()
            .map(|class| {
                let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
                thread::spawn(move || {
                    let permit = block_on(sem.acquire_with(class)).unwrap();
                    let holding = holders.enter();
                    thread::yield_now();
                    drop(holding);
                    drop(permit);
                })
            })
            .collect();
        holders.try_hold(&sem);
        for t in threads {
            t.join().unwrap();
        }
        assert_settled(&sem);
        assert_no_class_holds(&sem);
    });
}

#[test]
fn cancelled_higher_class_passes_its_permit_down() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let held = Arc::clone(&sem).try_acquire_owned().unwrap();
        let mut sheddable = Arc::clone(&sem).acquire_owned_with(Priority::Sheddable);
        let mut critical = Arc::clone(&sem).acquire_owned_with(Priority::Critical);
        assert!(queue_up(&mut sheddable) && queue_up(&mut critical));
        // The release hands the permit to Critical (the higher class) unless its cancel came
        // first; either way it must reach Sheddable.
        let releaser = thread::spawn(move || drop(held));
        let canceller = thread::spawn(move || drop(critical));
        let permit = block_on(sheddable).unwrap();
        assert_eq!(permit.priority(), Priority::Sheddable);
        drop(permit);
        releaser.join().unwrap();
        canceller.join().unwrap();
        assert_settled(&sem);
    });
}

#[test]
fn share_is_served_before_a_flood_of_a_higher_class() {
    model(|| {
        let sem = Arc::new(Semaphore::with_shares(
            2,
            Shares::new().with(Priority::Normal, 50),
        ));
        let a = Arc::clone(&sem)
            .try_acquire_owned_with(Priority::Critical)
            .unwrap();
        let b = Arc::clone(&sem)
            .try_acquire_owned_with(Priority::Critical)
            .unwrap();
        let mut critical = Arc::clone(&sem).acquire_owned_with(Priority::Critical);
        let mut normal = Arc::clone(&sem).acquire_owned_with(Priority::Normal);
        assert!(queue_up(&mut critical) && queue_up(&mut normal));
        let releaser = thread::spawn(move || drop(a));
        // Normal holds less than its share: the released permit is Normal's, not Critical's.
        let permit = block_on(normal).unwrap();
        releaser.join().unwrap();
        assert!(
            queue_up(&mut critical),
            "critical overtook the share: {sem:?}"
        );
        assert_eq!(sem.held(Priority::Normal), 1);
        let other = thread::spawn(move || drop(b));
        drop(block_on(critical).unwrap());
        other.join().unwrap();
        drop(permit);
        assert_settled(&sem);
        assert_no_class_holds(&sem);
    });
}

// The models below aim at the grant flags: a waiter handed a permit reads it from its slot's
// flag without the lock, and the slot is reused only once its owner has left. Loom builds give
// two slots a flag, so three waiters also take the locked path of a slot without one.

#[test]
fn two_acquirers_a_releaser_and_a_cancel() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.try_acquire().unwrap();
        let holders = Arc::new(Holders::new(1));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
                thread::spawn(move || {
                    let permit = block_on(sem.acquire()).unwrap();
                    holders.hold();
                    drop(permit);
                })
            })
            .collect();
        // Queues (or is handed the permit) and is dropped: a grant it never saw passes on.
        let canceller = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                if let Some(result) = block_on(PollOnce(Some(sem.acquire()))) {
                    let _permit = result.unwrap();
                    holders.hold();
                }
            })
        };
        drop(held);
        canceller.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_settled(&sem);
    });
}

#[test]
fn set_limit_races_a_hand_off() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.try_acquire().unwrap();
        // The limit goes 1 → 0 → 1: never more than one holder, whatever the order.
        let holders = Arc::new(Holders::new(1));
        let waiter = {
            let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
            thread::spawn(move || {
                let permit = block_on(sem.acquire()).unwrap();
                holders.hold();
                drop(permit);
            })
        };
        let setter = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || {
                sem.set_limit(0);
                sem.set_limit(1);
            })
        };
        drop(held);
        setter.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(sem.limit(), 1);
        assert_settled(&sem);
    });
}

#[test]
fn a_lent_slot_is_reused_only_after_its_owner_left() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.try_acquire().unwrap();
        let holders = Arc::new(Holders::new(1));
        // One acquires twice: its second wait needs a slot while the first ones may still be
        // lent (granted, owner not yet back), which must not be reused before their owners left.
        let threads: Vec<_> = [2, 1]
            .into_iter()
            .map(|times| {
                let (sem, holders) = (Arc::clone(&sem), Arc::clone(&holders));
                thread::spawn(move || {
                    for _ in 0..times {
                        let permit = block_on(sem.acquire()).unwrap();
                        holders.hold();
                        drop(permit);
                    }
                })
            })
            .collect();
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_settled(&sem);
    });
}
