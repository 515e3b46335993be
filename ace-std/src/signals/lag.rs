//! [`LagProbe`]: how late the executor polls a task that was woken at a known instant.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ace_core::{Runtime, SignalError, SignalSource, Signals};

/// No wake is pending.
const IDLE: u64 = u64::MAX;

/// The executor-lag probe: a [`SignalSource`] for [`Signals::event_loop_lag`].
///
/// A probe task lives on the executor, parked. Every `period` a small thread of the probe's own
/// (`ace-lag-probe`) stamps the time and wakes it; when the executor polls it, the task records
/// how long after the wake that was. [`collect`](SignalSource::collect) reports the **largest
/// wake-to-poll delay since the last collect**, or, if a wake is still waiting to be polled,
/// how long it has waited (an executor stuck right now shows as lag at once).
///
/// This measures scheduling delay only: no timer takes part, so neither tokio's millisecond
/// timer wheel (a 10 ms sleep overshoots by ≈ 1 ms) nor async-io's timer adds to it, and it
/// does not grow with the number of tasks waiting for a permit. Its idle floor is the cost of
/// one cross-thread wake (tens of microseconds; BENCHMARKS-std.md has the figures per
/// runtime), far below the 50 ms default threshold.
///
/// On a multi-threaded executor a task that blocks one worker shows as lag only if it delays
/// the probe, which another worker may poll: the probe reports the executor's ability to run
/// new work, which is what the controller needs.
///
/// Dropping the probe stops its task and its thread.
pub struct LagProbe {
    shared: Arc<Shared>,
}

struct Shared {
    origin: Instant,
    /// When the pending wake was stamped (ns since `origin`), or `IDLE`.
    pending: AtomicU64,
    /// The largest wake-to-poll delay (ns) since the last collect.
    max: AtomicU64,
    /// Delays recorded since the last collect.
    samples: AtomicU64,
    waker: Mutex<Option<Waker>>,
    stop: AtomicBool,
}

impl Shared {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "u64 nanoseconds last 584 years"
    )]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

impl fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LagProbe")
            .field(
                "max_since_collect",
                &Duration::from_nanos(self.shared.max.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

impl LagProbe {
    /// The default wake period: 10 ms (100 cheap polls a second). A block of the executor for
    /// `b` shows as a lag of at least `b − period`.
    pub const DEFAULT_PERIOD: Duration = Duration::from_millis(10);

    /// Starts a probe on `runtime`, woken every [`DEFAULT_PERIOD`](Self::DEFAULT_PERIOD).
    pub fn new<R: Runtime>(runtime: &R) -> Self {
        Self::with_period(runtime, Self::DEFAULT_PERIOD)
    }

    /// Starts a probe on `runtime`, woken every `period`.
    ///
    /// # Panics
    ///
    /// If the OS cannot start the probe's thread.
    #[track_caller]
    pub fn with_period<R: Runtime>(runtime: &R, period: Duration) -> Self {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            pending: AtomicU64::new(IDLE),
            max: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            waker: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        runtime.spawn(ProbeTask {
            shared: Arc::clone(&shared),
        });
        let ticker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ace-lag-probe".into())
            .spawn(move || tick(&ticker, period))
            .expect("cannot start the ace-lag-probe thread");
        Self { shared }
    }

    /// The lag since the last call, and resets it: the largest wake-to-poll delay, or the age
    /// of a wake not yet polled, whichever is larger. `None` before the first wake.
    pub fn take(&self) -> Option<Duration> {
        let s = &self.shared;
        let pending = s.pending.load(Ordering::Acquire);
        let waiting = if pending == IDLE {
            0
        } else {
            s.now_ns().saturating_sub(pending)
        };
        let max = s.max.swap(0, Ordering::AcqRel);
        let samples = s.samples.swap(0, Ordering::AcqRel);
        if samples == 0 && pending == IDLE {
            return None;
        }
        Some(Duration::from_nanos(max.max(waiting)))
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(w) = self.shared.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }
}

impl SignalSource for LagProbe {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        std::future::ready(Ok(Signals {
            event_loop_lag: self.take(),
            ..Signals::default()
        }))
    }
}

/// The probe thread: stamp, wake, sleep, until the probe is dropped.
fn tick(shared: &Shared, period: Duration) {
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(period);
        // A wake not yet polled keeps its stamp, so a stuck executor's lag keeps growing.
        if shared.pending.load(Ordering::Acquire) != IDLE {
            continue;
        }
        shared.pending.store(shared.now_ns(), Ordering::SeqCst);
        let waker = shared.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The task on the executor: records the delay of each wake.
struct ProbeTask {
    shared: Arc<Shared>,
}

impl Future for ProbeTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let s = &*self.shared;
        if s.stop.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        // Register first, then look: a stamp made after the look finds this waker.
        if let Ok(mut slot) = s.waker.lock() {
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        let pending = s.pending.swap(IDLE, Ordering::SeqCst);
        if pending != IDLE {
            let delay = s.now_ns().saturating_sub(pending);
            s.max.fetch_max(delay, Ordering::AcqRel);
            s.samples.fetch_add(1, Ordering::AcqRel);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_before_the_first_wake_then_small_lag_when_idle() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let probe = LagProbe::with_period(
                &ace_tokio::TokioRuntime::current(),
                Duration::from_millis(5),
            );
            assert_eq!(probe.take(), None);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let lag = probe.take().expect("woken by now");
            assert!(lag < Duration::from_millis(20), "idle lag {lag:?}");
        });
    }
}
