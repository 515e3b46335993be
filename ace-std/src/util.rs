//! Leaf helpers, written once: panic text, a poison-tolerant lock, the limits clamped to what a
//! semaphore holds, a thread executor (a parking waker, `block_on` and a thread
//! [`Runtime`](ace_core::Runtime)), and
//! the object-safe signal source. A leaf: it imports nothing of this crate.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ace_core::{AimdConfig, Semaphore, SignalError, SignalSource, Signals};

/// What every "shut down" error of every manager displays (`SubmitError::Shutdown`, the pool's
/// `JoinError::Shutdown` and `TrySubmitError::Shutdown`, …): one meaning, one text.
pub(crate) const SHUT_DOWN: &str = "the manager is shut down";

/// The text of a panic payload: the `&str` or `String` passed to `panic!`, if it was one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Locks `mutex`, ignoring poison: no lock of ours is held across user code that could leave
/// the data half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The manager's limits, clamped to what the semaphore can hold (2^60 permits): a larger bound
/// ("no limit") is clamped, order preserved, rather than left to overflow later.
pub(crate) fn clamp_to_permits(config: AimdConfig) -> AimdConfig {
    let cap = Semaphore::MAX_PERMITS;
    AimdConfig {
        min_limit: config.min_limit.min(cap),
        initial_limit: config.initial_limit.min(cap),
        max_limit: config.max_limit.min(cap),
        ..config
    }
}

/// The stripes of a manager's latency recorder (`LatencyRecorder::striped`): enough that the
/// threads recording at once seldom share one, few enough to stay small (about 1.5 KiB each).
pub(crate) const STRIPES: usize = 8;

/// This thread's stripe hint for striped counters ([`STRIPES`]): threads take the next number on
/// their first call, so the first [`STRIPES`] threads to record (an executor's workers) write
/// lines of their own, and a task that moves to another thread records into that thread's.
#[inline(always)]
pub(crate) fn stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // 0: not taken yet; otherwise the hint plus one. Const-initialised and without a destructor,
    // so reading it is a plain thread-local load, even while the thread exits.
    thread_local!(static STRIPE: Cell<usize> = const { Cell::new(0) });
    #[cold]
    fn take(cell: &Cell<usize>) -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let hint = NEXT.fetch_add(1, Ordering::Relaxed);
        cell.set(hint.wrapping_add(1).max(1));
        hint
    }
    STRIPE.with(|cell| match cell.get() {
        0 => take(cell),
        plus_one => plus_one - 1,
    })
}

#[cfg(feature = "threadpool")]
pub(crate) use thread_executor::{block_on, ThreadRuntime};

/// The pool's executor: its control thread and `JoinHandle::join` run futures on plain threads.
#[cfg(feature = "threadpool")]
mod thread_executor {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};
    use std::thread;
    use std::time::{Duration, Instant};

    use ace_core::{Runtime, ThreadWaker};

    thread_local! {
        /// The [`Sleep`]s polled on this thread that have not fired: `block_on` parks until the
        /// earliest and wakes it.
        static TIMERS: RefCell<Vec<(Instant, Waker)>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `future` to completion on this thread, parking between polls; [`ThreadRuntime`]'s
    /// sleeps polled here fire on time.
    pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let waker = ThreadWaker::current();
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            let now = Instant::now();
            let (due, next) = TIMERS.with(|timers| {
                let mut timers = timers.borrow_mut();
                let mut due = Vec::new();
                timers.retain(|(at, w)| {
                    if *at <= now {
                        due.push(w.clone());
                        false
                    } else {
                        true
                    }
                });
                (due, timers.iter().map(|(at, _)| *at).min())
            });
            if !due.is_empty() {
                due.into_iter().for_each(Waker::wake);
                continue;
            }
            // Spurious unparks are fine: the loop polls again.
            match next {
                Some(at) => thread::park_timeout(at.saturating_duration_since(now)),
                None => thread::park(),
            }
        }
    }

    /// A [`Runtime`] for threads without an executor: `sleep` fires inside [`block_on`] on the
    /// thread that polls it, and `spawn` runs the future on a thread of its own.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct ThreadRuntime {
        origin: Instant,
    }

    impl ThreadRuntime {
        pub(crate) fn new() -> Self {
            Self {
                origin: Instant::now(),
            }
        }
    }

    /// [`ThreadRuntime`]'s sleep.
    #[derive(Debug)]
    pub(crate) struct Sleep {
        pub(super) deadline: Instant,
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            TIMERS.with(|timers| {
                let mut timers = timers.borrow_mut();
                let known = timers
                    .iter()
                    .any(|(at, w)| *at == self.deadline && w.will_wake(cx.waker()));
                if !known {
                    timers.push((self.deadline, cx.waker().clone()));
                }
            });
            Poll::Pending
        }
    }

    impl Runtime for ThreadRuntime {
        type Sleep = Sleep;

        fn now(&self) -> Duration {
            self.origin.elapsed()
        }

        fn sleep(&self, duration: Duration) -> Sleep {
            // A duration past the clock's range sleeps "forever" (about a century), never panics.
            let now = Instant::now();
            let deadline = now
                .checked_add(duration)
                .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(now);
            Sleep { deadline }
        }

        fn spawn<F>(&self, future: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            // Nothing in the pool spawns; a thread keeps this correct should anything start to.
            drop(
                thread::Builder::new()
                    .name("ace-task".to_owned())
                    .spawn(move || block_on(future)),
            );
        }
    }
}

/// A boxed signal future that borrows its source.
pub(crate) type CollectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Signals, SignalError>> + Send + 'a>>;

/// An object-safe [`SignalSource`] (its `collect` returns `impl Future`), so builders need not
/// be generic over their sources. Every `SignalSource` is one.
pub(crate) trait DynSource: Send {
    fn collect_boxed(&mut self) -> CollectFuture<'_>;
}

impl<S: SignalSource> DynSource for S {
    fn collect_boxed(&mut self) -> CollectFuture<'_> {
        Box::pin(self.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::catch_unwind;
    #[cfg(feature = "threadpool")]
    use {
        ace_core::Runtime,
        std::time::{Duration, Instant},
    };

    #[cfg(feature = "threadpool")]
    #[test]
    fn block_on_fires_thread_runtime_sleeps() {
        let rt = ThreadRuntime::new();
        let start = Instant::now();
        block_on(async {
            futures_lite::future::or(rt.sleep(Duration::from_millis(20)), async {
                rt.sleep(Duration::from_secs(60)).await;
            })
            .await;
        });
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[cfg(feature = "threadpool")]
    #[test]
    fn a_sleep_past_the_clock_range_does_not_panic() {
        let rt = ThreadRuntime::new();
        let sleep = rt.sleep(Duration::MAX);
        assert!(sleep.deadline > Instant::now());
    }

    #[test]
    fn panic_text_of_str_string_and_other_payloads() {
        let text = |f: fn()| panic_message(&*catch_unwind(f).unwrap_err());
        assert_eq!(text(|| panic!("plain")), "plain");
        assert_eq!(text(|| panic!("{}", 42)), "42");
        assert_eq!(text(|| std::panic::panic_any(7_u8)), "Box<dyn Any>");
    }
}
