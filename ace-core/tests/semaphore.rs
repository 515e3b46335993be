//! The semaphore's behaviours, one per test, and a property test over random operation sequences.
#![cfg(not(loom))]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use ace_core::{
    Acquire, AcquireError, LimitTarget, Permit, Priority, Semaphore, Shares, TryAcquireError, Usage,
};
use proptest::prelude::*;

/// A waker that remembers it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
    fn peek(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An acquire under test, polled by hand.
struct Pending<'a> {
    future: Pin<Box<Acquire<'a>>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<'a> Pending<'a> {
    fn start(sem: &'a Semaphore) -> (Self, Poll<Result<Permit<'a>, AcquireError>>) {
        Self::start_with(sem, Priority::Normal)
    }

    fn start_with(
        sem: &'a Semaphore,
        priority: Priority,
    ) -> (Self, Poll<Result<Permit<'a>, AcquireError>>) {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        let mut this = Self {
            future: Box::pin(sem.acquire_with(priority)),
            flag,
            waker,
        };
        let poll = this.poll();
        (this, poll)
    }

    fn poll(&mut self) -> Poll<Result<Permit<'a>, AcquireError>> {
        let mut cx = Context::from_waker(&self.waker);
        self.future.as_mut().poll(&mut cx)
    }
}

fn check_accounting(sem: &Semaphore) {
    assert_eq!(
        sem.available() + sem.in_use() - sem.debt(),
        sem.limit(),
        "{sem:?}"
    );
    assert!(sem.available() == 0 || sem.debt() == 0, "{sem:?}");
    assert!(sem.available() == 0 || sem.waiting() == 0, "{sem:?}");
}

#[test]
fn should_serve_waiters_first_in_first_out() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (mut a, pa) = Pending::start(&sem);
    let (mut b, pb) = Pending::start(&sem);
    assert!(pa.is_pending() && pb.is_pending());
    assert_eq!(sem.waiting(), 2);
    drop(held);
    assert!(a.flag.take() && !b.flag.peek());
    let pa = a.poll();
    assert!(matches!(pa, Poll::Ready(Ok(_))));
    drop(pa);
    assert!(b.flag.take());
    assert!(matches!(b.poll(), Poll::Ready(Ok(_))));
    check_accounting(&sem);
    assert_eq!(sem.in_use(), 0);
}

#[test]
fn should_hand_a_released_permit_to_the_most_important_class_waiting() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (shed, _) = Pending::start_with(&sem, Priority::Sheddable);
    let (mut normal, _) = Pending::start_with(&sem, Priority::Normal);
    let (mut critical, _) = Pending::start_with(&sem, Priority::Critical);
    assert_eq!(sem.waiting_in(Priority::Critical), 1);
    assert_eq!(sem.waiting_below(Priority::Critical), 2);
    drop(held);
    assert!(critical.flag.take() && !normal.flag.peek() && !shed.flag.peek());
    let Poll::Ready(Ok(permit)) = critical.poll() else {
        panic!("critical was woken without a permit")
    };
    assert_eq!(permit.priority(), Priority::Critical);
    drop(permit);
    assert!(normal.flag.take() && !shed.flag.peek());
    let Poll::Ready(Ok(permit)) = normal.poll() else {
        panic!("normal was woken without a permit")
    };
    drop(permit);
    assert!(shed.flag.take());
    check_accounting(&sem);
}

#[test]
fn should_serve_a_class_under_its_share_before_a_flood_of_a_higher_one() {
    let sem = Semaphore::with_shares(4, Shares::new().with(Priority::Normal, 25));
    let mut held: Vec<_> = (0..4)
        .map(|_| sem.try_acquire_with(Priority::Critical).unwrap())
        .collect();
    let flood: Vec<_> = (0..8)
        .map(|_| Pending::start_with(&sem, Priority::Critical).0)
        .collect();
    let (mut normal, _) = Pending::start_with(&sem, Priority::Normal);
    drop(held.pop());
    assert!(normal.flag.take(), "the share was not served first");
    assert!(flood.iter().all(|p| !p.flag.peek()));
    let Poll::Ready(Ok(permit)) = normal.poll() else {
        panic!("normal was woken without a permit")
    };
    assert_eq!(
        (sem.held(Priority::Normal), sem.held(Priority::Critical)),
        (1, 3)
    );
    // At its share, Normal waits behind Critical again.
    let (mut second, _) = Pending::start_with(&sem, Priority::Normal);
    drop(held.pop());
    assert!(flood[0].flag.take() && !second.flag.peek());
    drop(permit);
    drop(second.poll());
    drop(flood);
    drop(held);
    check_accounting(&sem);
}

#[test]
fn should_refuse_shares_over_a_hundred_percent() {
    let shares = Shares::new().with(Priority::Critical, 60);
    let error = shares.try_with(Priority::Normal, 50).unwrap_err();
    assert_eq!(error.total, 110);
    assert_eq!(
        error.to_string(),
        "the shares of the classes add up to 110 %, more than 100 %"
    );
    assert_eq!(shares.guaranteed(Priority::Critical, 1), 1);
    assert_eq!(shares.guaranteed(Priority::Critical, 0), 0);
}

#[test]
fn should_refuse_try_acquire_while_others_wait() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (mut waiter, _) = Pending::start(&sem);
    drop(held);
    // The freed permit went to the waiter, not to whoever asks next.
    assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::NoPermits));
    assert_eq!(sem.in_use(), 1);
    assert!(matches!(waiter.poll(), Poll::Ready(Ok(_))));
}

#[test]
fn should_pass_on_a_permit_handed_to_a_cancelled_waiter() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (a, _) = Pending::start(&sem);
    let (mut b, _) = Pending::start(&sem);
    drop(held);
    assert!(a.flag.peek());
    drop(a); // cancelled after being handed the permit
    assert!(b.flag.take());
    assert!(matches!(b.poll(), Poll::Ready(Ok(_))));
    assert_eq!(sem.in_use(), 0);
    check_accounting(&sem);
}

#[test]
fn should_give_up_the_place_of_a_cancelled_waiter() {
    let sem = Semaphore::new(0);
    let (a, _) = Pending::start(&sem);
    let (b, _) = Pending::start(&sem);
    drop(a);
    assert_eq!(sem.waiting(), 1);
    sem.set_limit(1);
    assert!(b.flag.peek());
    drop(b);
    assert_eq!((sem.in_use(), sem.available(), sem.waiting()), (0, 1, 0));
}

#[test]
fn should_wake_exactly_as_many_waiters_as_new_slots() {
    let sem = Semaphore::new(0);
    let waiters: Vec<_> = (0..5).map(|_| Pending::start(&sem).0).collect();
    sem.set_limit(3);
    let woken: Vec<bool> = waiters.iter().map(|w| w.flag.peek()).collect();
    assert_eq!(woken, [true, true, true, false, false]);
    assert_eq!((sem.in_use(), sem.waiting()), (3, 2));
    check_accounting(&sem);
}

#[test]
fn should_hand_out_and_close_in_batches_past_the_wake_list() {
    let sem = Semaphore::new(0);
    let waiters: Vec<_> = (0..50).map(|_| Pending::start(&sem).0).collect();
    sem.set_limit(37);
    let woken = waiters.iter().filter(|w| w.flag.peek()).count();
    assert_eq!((woken, sem.waiting(), sem.in_use()), (37, 13, 37));
    assert!(waiters[..37].iter().all(|w| w.flag.peek()));
    sem.close();
    assert!(waiters.iter().all(|w| w.flag.peek()));
    assert_eq!(sem.waiting(), 0);
    drop(waiters);
    assert_eq!((sem.in_use(), sem.available()), (0, 37));
}

/// Waiters in more queue slots than have a grant flag (64), served in rounds: the ones past the
/// flags learn their grant under the lock, the slots lent to the ones before are reused only
/// after their owners took their permits, and every grant reaches its own waiter.
#[test]
fn should_serve_every_waiter_past_the_flagged_slots_and_reuse_their_slots() {
    let sem = Semaphore::new(0);
    let mut held = Vec::new();
    for round in 0..3 {
        let mut waiters: Vec<_> = (0..150).map(|_| Pending::start(&sem).0).collect();
        assert_eq!(sem.waiting(), 150, "round {round}");
        // Half are granted; a few of those are cancelled before they look (the permit moves on
        // to the next in line), the rest polled in reverse order.
        sem.set_limit(75);
        assert_eq!(waiters.iter().filter(|w| w.flag.peek()).count(), 75);
        for i in [3, 70, 74] {
            waiters.remove(i);
        }
        assert_eq!(waiters.iter().filter(|w| w.flag.peek()).count(), 75);
        // New arrivals while granted waiters have not looked yet: no lent slot may be reused.
        let mut late: Vec<_> = (0..20).map(|_| Pending::start(&sem).0).collect();
        for w in waiters.iter_mut().rev() {
            if w.flag.take() {
                match w.poll() {
                    Poll::Ready(Ok(p)) => held.push(p),
                    other => panic!("round {round}: a granted waiter got {other:?}"),
                }
            } else {
                assert!(w.poll().is_pending(), "round {round}");
            }
        }
        assert_eq!((held.len(), sem.in_use()), (75, 75), "round {round}");
        check_accounting(&sem);
        // The rest, newest arrivals last, each to its own waiter.
        sem.set_limit(75 + 72 + 20);
        for w in waiters.iter_mut().chain(late.iter_mut()) {
            if w.flag.take() {
                match w.poll() {
                    Poll::Ready(Ok(p)) => held.push(p),
                    other => panic!("round {round}: a waiter got {other:?}"),
                }
            }
        }
        assert_eq!((held.len(), sem.waiting()), (167, 0), "round {round}");
        drop((waiters, late));
        held.clear();
        sem.set_limit(0);
        assert_eq!((sem.in_use(), sem.available(), sem.debt()), (0, 0, 0));
    }
}

#[test]
fn should_record_a_debt_on_shrink_and_pay_it_before_admitting() {
    let sem = Semaphore::new(4);
    let permits: Vec<_> = (0..4).map(|_| sem.try_acquire().unwrap()).collect();
    sem.set_limit(1);
    assert_eq!((sem.in_use(), sem.debt(), sem.available()), (4, 3, 0));
    let (waiter, _) = Pending::start(&sem);
    let mut permits = permits.into_iter();
    for debt in [2, 1, 0] {
        drop(permits.next());
        assert_eq!(sem.debt(), debt);
        assert!(!waiter.flag.peek(), "admitted before the debt was paid");
        check_accounting(&sem);
    }
    drop(permits.next());
    assert!(waiter.flag.peek());
    assert_eq!(sem.in_use(), 1);
}

#[test]
fn should_pay_a_debt_before_growth_admits_anyone() {
    let sem = Semaphore::new(3);
    let _permits: Vec<_> = (0..3).map(|_| sem.try_acquire().unwrap()).collect();
    sem.set_limit(0);
    let (waiter, _) = Pending::start(&sem);
    sem.set_limit(2); // still 1 in debt
    assert!(!waiter.flag.peek());
    sem.set_limit(4); // one slot free
    assert!(waiter.flag.peek());
    check_accounting(&sem);
}

#[test]
fn should_fail_waiters_and_later_acquires_on_close() {
    let sem = Semaphore::new(0);
    let (mut a, _) = Pending::start(&sem);
    sem.close();
    assert!(a.flag.take());
    assert!(matches!(a.poll(), Poll::Ready(Err(AcquireError::Closed))));
    let (_, p) = Pending::start(&sem);
    assert!(matches!(p, Poll::Ready(Err(AcquireError::Closed))));
    assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::Closed));
    assert_eq!(sem.waiting(), 0);
}

#[test]
fn should_keep_a_permit_handed_over_before_close() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (mut a, _) = Pending::start(&sem);
    drop(held);
    sem.close();
    assert!(matches!(a.poll(), Poll::Ready(Ok(_))));
    assert_eq!(sem.in_use(), 0);
}

#[test]
fn should_lower_the_limit_when_a_permit_is_forgotten() {
    let sem = Semaphore::new(2);
    sem.try_acquire().unwrap().forget();
    assert_eq!((sem.limit(), sem.in_use(), sem.available()), (1, 0, 1));
    // With the limit already 0, forgetting pays the debt instead.
    let p = sem.try_acquire().unwrap();
    sem.set_limit(0);
    p.forget();
    assert_eq!((sem.limit(), sem.in_use(), sem.debt()), (0, 0, 0));
}

#[test]
fn should_release_owned_permits_and_forget_them() {
    let sem = Arc::new(Semaphore::new(2));
    let a = Arc::clone(&sem).try_acquire_owned().unwrap();
    let b = futures_lite::future::block_on(Arc::clone(&sem).acquire_owned()).unwrap();
    assert!(Arc::ptr_eq(a.semaphore(), &sem));
    assert_eq!(sem.in_use(), 2);
    drop(a);
    b.forget();
    assert_eq!((sem.limit(), sem.in_use()), (1, 0));
    assert_eq!(
        Arc::strong_count(&sem),
        1,
        "forget must not leak the handle"
    );
}

#[test]
fn should_report_usage_as_a_limit_target() {
    let sem = Semaphore::new(1);
    let _p = sem.try_acquire().unwrap();
    let (_w, _) = Pending::start(&sem);
    assert_eq!(
        LimitTarget::usage(&sem),
        Usage {
            limit: 1,
            in_flight: 1,
            waiting: 1
        }
    );
    LimitTarget::set_limit(&sem, 5);
    assert_eq!(
        LimitTarget::usage(&sem),
        Usage {
            limit: 5,
            in_flight: 2,
            waiting: 0
        }
    );
    LimitTarget::set_limit(&sem, usize::MAX); // clamped, never panics
    assert_eq!(sem.limit(), Semaphore::MAX_PERMITS);
}

#[test]
#[should_panic(expected = "MAX_PERMITS")]
fn should_panic_on_a_limit_over_max() {
    let _ = Semaphore::new(Semaphore::MAX_PERMITS + 1);
}

#[test]
fn should_format_errors_in_lowercase_without_period() {
    assert_eq!(AcquireError::Closed.to_string(), "semaphore closed");
    assert_eq!(TryAcquireError::Closed.to_string(), "semaphore closed");
    assert_eq!(
        TryAcquireError::NoPermits.to_string(),
        "no permits available"
    );
    let sem = Semaphore::new(1);
    assert!(format!("{sem:?}").contains("limit: 1"));
    assert!(format!("{:?}", sem.acquire()).starts_with("Acquire"));
}

#[cfg(feature = "std")]
mod blocking {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use ace_core::{AcquireError, AcquireTimeoutError, Priority, Semaphore};

    #[test]
    fn should_never_exceed_the_limit_across_threads() {
        let sem = Arc::new(Semaphore::new(2));
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        let _p = sem.blocking_acquire().unwrap();
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!((sem.in_use(), sem.available()), (0, 2));
    }

    #[test]
    fn should_time_out_and_leave_the_queue() {
        let sem = Semaphore::new(0);
        let err = sem.blocking_acquire_timeout(Duration::from_millis(5));
        assert_eq!(err.err(), Some(AcquireTimeoutError::Timeout));
        assert_eq!(sem.waiting(), 0);
        sem.set_limit(1);
        assert!(sem.blocking_acquire_timeout(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn should_wake_a_blocked_thread_on_close() {
        let sem = Arc::new(Semaphore::new(0));
        let t = thread::spawn({
            let sem = Arc::clone(&sem);
            move || sem.blocking_acquire().map(drop)
        });
        while sem.waiting() == 0 {
            thread::yield_now();
        }
        sem.close();
        assert_eq!(t.join().unwrap(), Err(AcquireError::Closed));
        let owned = Arc::clone(&sem).blocking_acquire_owned();
        assert_eq!(owned.err(), Some(AcquireError::Closed));
        assert_eq!(
            AcquireTimeoutError::Timeout.to_string(),
            "timed out waiting for a permit"
        );
    }

    #[test]
    fn should_serve_a_blocked_critical_thread_before_an_earlier_sheddable_one() {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.try_acquire().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (n, priority) in [Priority::Sheddable, Priority::Critical]
            .into_iter()
            .enumerate()
        {
            let (mine, tx) = (Arc::clone(&sem), tx.clone());
            threads.push(thread::spawn(move || {
                let permit = mine.blocking_acquire_with(priority).unwrap();
                tx.send(permit.priority()).unwrap();
            }));
            // Bounded: the thread queues at once.
            for _ in 0..10_000 {
                if sem.waiting() == n + 1 {
                    break;
                }
                thread::sleep(Duration::from_micros(100));
            }
            assert_eq!(sem.waiting(), n + 1, "the thread queued");
        }
        drop(held);
        let watchdog = Duration::from_secs(10);
        let first = rx.recv_timeout(watchdog).expect("a thread got the permit");
        let second = rx.recv_timeout(watchdog).expect("the other got it next");
        assert_eq!((first, second), (Priority::Critical, Priority::Sheddable));
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(Priority),
    TryAcquire(Priority),
    Release(usize),
    Forget(usize),
    Cancel(usize),
    PollWoken,
    SetLimit(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        6 => class.clone().prop_map(Op::Acquire),
        3 => class.prop_map(Op::TryAcquire),
        5 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Forget),
        3 => any::<usize>().prop_map(Op::Cancel),
        5 => Just(Op::PollWoken),
        4 => (0_usize..8).prop_map(Op::SetLimit),
        1 => Just(Op::Close),
    ]
}

/// A queued acquire in the model: did its wake come from `close` (or before it, from a grant)?
struct Queued<'a> {
    pending: Pending<'a>,
    class: Priority,
    woken_by_close: bool,
}

fn run(initial: usize, shares: Shares, ops: &[Op]) {
    let sem = Semaphore::with_shares(initial, shares);
    let mut held: Vec<Permit<'_>> = Vec::new();
    let mut queued: Vec<Queued<'_>> = Vec::new();
    // in_use may exceed the limit only by what was in use at the last shrink.
    let mut cap = 0;
    let mut closed = false;

    for op in ops {
        let waiting_before = sem.waiting();
        let free_before = sem.available() as isize - sem.debt() as isize;
        let woken_before = queued.iter().filter(|q| q.pending.flag.peek()).count();
        let limit_before = sem.limit();
        // Who was already woken, by identity: ops remove entries, so positions shift.
        let already_woken: Vec<*const Flag> = queued
            .iter()
            .filter(|q| q.pending.flag.peek())
            .map(|q| Arc::as_ptr(&q.pending.flag))
            .collect();
        match *op {
            Op::Acquire(class) => match Pending::start_with(&sem, class) {
                (_, Poll::Ready(Ok(p))) => {
                    assert_eq!(waiting_before, 0, "overtook a waiter");
                    assert!(!closed);
                    held.push(p);
                }
                (_, Poll::Ready(Err(AcquireError::Closed))) => assert!(closed),
                (_, Poll::Ready(Err(e))) => panic!("unexpected {e}"),
                (pending, Poll::Pending) => queued.push(Queued {
                    pending,
                    class,
                    woken_by_close: false,
                }),
            },
            Op::TryAcquire(class) => match sem.try_acquire_with(class) {
                Ok(p) => {
                    assert_eq!(waiting_before, 0, "overtook a waiter");
                    held.push(p);
                }
                Err(TryAcquireError::NoPermits) => {
                    assert!(!closed && (waiting_before > 0 || free_before <= 0));
                }
                Err(TryAcquireError::Closed) => assert!(closed),
                Err(e) => panic!("unexpected {e}"),
            },
            Op::Release(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
            Op::Forget(i) if !held.is_empty() => {
                let limit = sem.limit();
                held.swap_remove(i % held.len()).forget();
                assert_eq!(sem.limit(), limit.saturating_sub(1));
            }
            Op::Cancel(i) if !queued.is_empty() => drop(queued.remove(i % queued.len())),
            Op::PollWoken => {
                let mut i = 0;
                while i < queued.len() {
                    if !queued[i].pending.flag.take() {
                        i += 1;
                        continue;
                    }
                    let q = queued.remove(i);
                    let mut pending = q.pending;
                    match pending.poll() {
                        Poll::Ready(Ok(p)) => {
                            assert!(!q.woken_by_close);
                            held.push(p);
                        }
                        Poll::Ready(Err(_)) => assert!(q.woken_by_close),
                        Poll::Pending => panic!("woken without a permit or a close"),
                    }
                }
            }
            Op::SetLimit(n) => {
                if n < sem.limit() {
                    cap = sem.in_use();
                }
                sem.set_limit(n);
            }
            Op::Close => {
                let granted: Vec<bool> = queued.iter().map(|q| q.pending.flag.peek()).collect();
                sem.close();
                closed = true;
                for (q, granted) in queued.iter_mut().zip(granted) {
                    q.woken_by_close |= !granted;
                }
            }
            Op::Release(_) | Op::Forget(_) | Op::Cancel(_) => {}
        }

        // Exactly as many are handed a permit as slots came free, oldest first.
        let woken = queued.iter().filter(|q| q.pending.flag.peek()).count();
        if let Op::SetLimit(n) = *op {
            let new_slots = (free_before + n as isize - limit_before as isize).max(0) as usize;
            assert_eq!(woken - woken_before, new_slots.min(waiting_before));
        }
        // First in, first out within a class.
        for class in Priority::ALL {
            let flags: Vec<bool> = queued
                .iter()
                .filter(|q| q.class == class)
                .map(|q| q.pending.flag.peek())
                .collect();
            assert!(
                flags.windows(2).all(|w| w[0] || !w[1]),
                "{class} woken out of order: {flags:?}"
            );
        }
        // A grant never skips a more important waiter, unless the class granted was under its
        // guaranteed share.
        if !closed && !matches!(op, Op::Close) {
            for q in &queued {
                let newly =
                    q.pending.flag.peek() && !already_woken.contains(&Arc::as_ptr(&q.pending.flag));
                let skipped = queued
                    .iter()
                    .any(|o| o.class < q.class && !o.pending.flag.peek());
                if newly && skipped {
                    let guaranteed = shares.guaranteed(q.class, sem.limit().max(limit_before));
                    assert!(
                        sem.held(q.class) <= guaranteed,
                        "{} granted over a more important waiter: {sem:?}",
                        q.class
                    );
                }
            }
        }
        if shares.is_set() {
            for class in Priority::ALL {
                let mine = held.iter().filter(|p| p.priority() == class).count()
                    + queued
                        .iter()
                        .filter(|q| q.class == class && q.pending.flag.peek() && !q.woken_by_close)
                        .count();
                assert_eq!(sem.held(class), mine, "{class}: {sem:?}");
            }
        }

        // The accounting invariant, exact between calls.
        check_accounting(&sem);
        let granted = queued
            .iter()
            .filter(|q| q.pending.flag.peek() && !q.woken_by_close)
            .count();
        assert_eq!(sem.in_use(), held.len() + granted, "{sem:?}");
        let still_waiting = queued.iter().filter(|q| !q.pending.flag.peek()).count();
        assert_eq!(sem.waiting(), still_waiting);
        assert!(sem.in_use() <= sem.limit().max(cap), "{sem:?}, cap {cap}");
    }

    // Every permit comes back.
    let limit = sem.limit();
    drop(queued);
    drop(held);
    assert_eq!(sem.in_use(), 0);
    assert_eq!(sem.debt(), 0);
    assert_eq!(sem.available(), limit);
    assert_eq!(sem.waiting(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accounting_holds_under_any_sequence(
        initial in 0_usize..6,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        run(initial, Shares::new(), &ops);
    }

    #[test]
    fn shares_and_priorities_hold_under_any_sequence(
        initial in 0_usize..6,
        critical in 0_u8..40,
        normal in 0_u8..40,
        sheddable in 0_u8..20,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let shares = Shares::new()
            .with(Priority::Critical, critical)
            .with(Priority::Normal, normal)
            .with(Priority::Sheddable, sheddable);
        run(initial, shares, &ops);
    }
}

/// A waker whose last drop releases a permit of the semaphore it waits on.
struct ReleaseOnDrop {
    _permit: ace_core::OwnedPermit,
}

impl Wake for ReleaseOnDrop {
    fn wake(self: Arc<Self>) {}
}

/// Runs `f` on its own thread and fails (instead of hanging) if it has not finished in 10 s: a
/// deadlock on the semaphore's own lock would otherwise hang the test binary.
fn within_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let (done, finished) = channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("deadlock: {what} did not finish within 10 s"),
        // It panicked: pass its panic on.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("it sends before it returns"),
        },
    }
}

#[test]
fn should_drop_a_replaced_waker_outside_the_lock() {
    within_watchdog("re-polling with a new waker", || {
        let sem = Arc::new(Semaphore::new(1));
        let held = Arc::clone(&sem).try_acquire_owned().unwrap();
        let mut acquire = Box::pin(Arc::clone(&sem).acquire_owned());
        // The first waker owns the only permit; once the queue holds the last handle to it,
        // replacing it releases that permit, which comes back into the semaphore's lock.
        let owner = Arc::new(ReleaseOnDrop { _permit: held });
        let first = Waker::from(owner);
        assert!(acquire
            .as_mut()
            .poll(&mut Context::from_waker(&first))
            .is_pending());
        drop(first);
        let flag = Arc::new(Flag::default());
        let second = Waker::from(Arc::clone(&flag));
        // The dropped waker's permit goes straight to this waiter, which was queued first.
        assert!(acquire
            .as_mut()
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        assert!(flag.take(), "the released permit was not handed over");
        let permit = match acquire.as_mut().poll(&mut Context::from_waker(&second)) {
            Poll::Ready(permit) => permit.unwrap(),
            Poll::Pending => panic!("handed a permit but still pending"),
        };
        assert_eq!((sem.in_use(), sem.waiting()), (1, 0));
        drop(permit);
        assert_eq!(sem.available(), 1);
    });
}

/// A waker that panics when woken.
struct PanicOnWake;

impl Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics");
    }
}

/// Queues an acquire whose waker panics when woken.
fn queue_with_panicking_waker(sem: &Semaphore) -> (Pin<Box<Acquire<'_>>>, Waker) {
    let mut acquire = Box::pin(sem.acquire());
    let waker = Waker::from(Arc::new(PanicOnWake));
    assert!(acquire
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    (acquire, waker)
}

#[test]
fn should_wake_every_waiter_on_close_even_if_a_waker_panics() {
    let sem = Semaphore::new(0);
    // Two full wake batches and more, with the panicking waker second in the first batch.
    let mut before: Vec<_> = (0..1).map(|_| Pending::start(&sem).0).collect();
    let (mut bad, bad_waker) = queue_with_panicking_waker(&sem);
    let after: Vec<_> = (0..40).map(|_| Pending::start(&sem).0).collect();
    assert_eq!(sem.waiting(), 42);
    let closing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sem.close()));
    assert!(closing.is_err(), "the waker's panic reaches the caller");
    before.extend(after);
    let stranded = before.iter().filter(|w| !w.flag.peek()).count();
    assert_eq!(stranded, 0, "{stranded} waiters were never woken");
    assert_eq!(sem.waiting(), 0);
    for waiter in &mut before {
        assert!(matches!(
            waiter.poll(),
            Poll::Ready(Err(AcquireError::Closed))
        ));
    }
    assert!(matches!(
        bad.as_mut().poll(&mut Context::from_waker(&bad_waker)),
        Poll::Ready(Err(AcquireError::Closed))
    ));
}

#[test]
fn should_hand_out_every_new_slot_even_if_a_waker_panics() {
    let sem = Semaphore::new(0);
    let (bad, _waker) = queue_with_panicking_waker(&sem);
    let waiters: Vec<_> = (0..40).map(|_| Pending::start(&sem).0).collect();
    let growing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sem.set_limit(41)));
    assert!(growing.is_err(), "the waker's panic reaches the caller");
    assert!(
        waiters.iter().all(|w| w.flag.peek()),
        "a waiter was stranded"
    );
    assert_eq!((sem.waiting(), sem.in_use(), sem.available()), (0, 41, 0));
    drop(waiters);
    drop(bad);
    assert_eq!((sem.in_use(), sem.available()), (0, 41));
}

#[test]
fn should_be_unwind_safe() {
    use std::panic::{RefUnwindSafe, UnwindSafe};
    fn assert_unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    assert_unwind_safe::<Semaphore>();
    assert_unwind_safe::<Permit<'static>>();
    assert_unwind_safe::<ace_core::OwnedPermit>();
    assert_unwind_safe::<Arc<Semaphore>>();
}
