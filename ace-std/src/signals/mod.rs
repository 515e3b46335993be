//! Real health signals, each an [`ace_core::SignalSource`] that fails open.
//!
//! - [`SystemSignals`]: CPU % and memory % of the machine, or of the cgroup v2 quota the process
//!   runs in, and this process's own CPU %.
//! - [`LagProbe`]: executor lag, as the delay between waking a task and its poll.
//! - [`QueueDepth`]: a gauge the program feeds (the length of its work channel, say).
//! - [`Merge`]: several sources as one; a child that errors or hangs is absent that cycle, with a
//!   warning, never a stop.

mod lag;
mod parse;
mod system;

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ace_core::{Runtime, SignalError, SignalSource, Signals};

use crate::util::{panic_message, CollectFuture, DynSource};

pub use lag::LagProbe;
pub use system::{CpuBasis, SystemReading, SystemSignals, MIN_CPU_WINDOW};

/// The queue-depth gauge: a cloneable, atomic counter the program feeds, read as
/// [`Signals::queue_depth`].
///
/// ```
/// use ace_std::signals::QueueDepth;
///
/// let depth = QueueDepth::new();
/// let producer = depth.clone();
/// producer.add(3);
/// producer.sub(1);
/// assert_eq!(depth.get(), 2);
/// depth.set(10);
/// assert_eq!(producer.get(), 10);
/// ```
#[derive(Clone, Default)]
pub struct QueueDepth(Arc<AtomicU64>);

impl fmt::Debug for QueueDepth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QueueDepth").field(&self.get()).finish()
    }
}

impl QueueDepth {
    /// A gauge at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the depth.
    pub fn set(&self, depth: u64) {
        self.0.store(depth, Ordering::Relaxed);
    }

    /// Adds `n` (saturating).
    pub fn add(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
    }

    /// Subtracts `n`, stopping at 0.
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// The depth now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl SignalSource for QueueDepth {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        std::future::ready(Ok(Signals {
            queue_depth: Some(self.get()),
            ..Signals::default()
        }))
    }
}

struct Child {
    name: &'static str,
    source: Box<dyn DynSource>,
}

/// One child's reading, guarded: a panic in `collect` (or in its future) is a failed reading,
/// and so is a call or one poll that blocked the thread for longer than the timeout (the timer
/// could not cut it: it runs on the same thread).
struct Guarded<'a> {
    name: &'static str,
    budget: Duration,
    /// The source, until the first poll calls its `collect` (inside the guard).
    source: Option<&'a mut Box<dyn DynSource>>,
    read: Option<CollectFuture<'a>>,
}

impl<'a> Guarded<'a> {
    fn new(child: &'a mut Child, budget: Duration) -> Self {
        Self {
            name: child.name,
            budget,
            source: Some(&mut child.source),
            read: None,
        }
    }
}

impl Future for Guarded<'_> {
    type Output = Result<Signals, SignalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let (name, budget) = (self.name, self.budget);
        let this = &mut *self;
        let started = Instant::now();
        let polled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(source) = this.source.take() {
                this.read = Some(source.collect_boxed());
            }
            match this.read.as_mut() {
                Some(read) => read.as_mut().poll(cx),
                None => Poll::Ready(Err(SignalError::new(name, "polled after it completed"))),
            }
        }));
        let blocked = started.elapsed();
        let out = match polled {
            Ok(Poll::Pending) if blocked <= budget => return Poll::Pending,
            Ok(Poll::Ready(r)) if blocked <= budget => r,
            Ok(_) => {
                tracing::warn!(
                    target: "ace",
                    source = name,
                    "signal source `{name}` blocked its thread for {blocked:?} in one call of \
                     `collect` (more than its {budget:?} timeout): `SignalSource::collect` must \
                     not block; read blocking sources on a thread of their own"
                );
                Err(SignalError::new(
                    name,
                    format!(
                        "collect blocked the thread for {blocked:?} in one call, over the \
                         {budget:?} timeout (collect must not block)"
                    ),
                ))
            }
            Err(panic) => Err(SignalError::new(
                name,
                format!("collect panicked: {}", panic_message(&*panic)),
            )),
        };
        // A source that panicked may have left its future broken: drop it now, not later.
        this.read = None;
        Poll::Ready(out)
    }
}

type ErrorHook = Box<dyn FnMut(&SignalError) + Send>;

/// Several sources read as one snapshot, concurrently, each bounded by a timeout.
///
/// Each cycle every child is collected at once; a child that errors, panics, or takes longer
/// than the timeout (waiting, or blocking its thread in one poll), is absent that cycle and reported to the error hook (by default a `tracing`
/// warning). The snapshots are combined with [`Signals::merge`]: for each signal, the first
/// child (in the order added) that read it wins. `collect` itself never fails: with every
/// child absent it returns an empty snapshot, and the controller holds (fail-open).
///
/// ```
/// use ace_core::{source_fn, SignalError, SignalSource};
/// use ace_std::signals::{Merge, QueueDepth};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let depth = QueueDepth::new();
/// depth.set(7);
/// let mut merged = Merge::new(ace_tokio::TokioRuntime::current(), Duration::from_millis(500))
///     .with("queue", depth)
///     .with("broken", source_fn(|| Err(SignalError::new("broken", "no such file"))));
/// let signals = merged.collect().await.unwrap();
/// assert_eq!(signals.queue_depth, Some(7));
/// # }
/// ```
pub struct Merge<R> {
    runtime: R,
    timeout: Duration,
    children: Vec<Child>,
    on_error: ErrorHook,
}

impl<R> fmt::Debug for Merge<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.children.iter().map(|c| c.name).collect();
        f.debug_struct("Merge")
            .field("timeout", &self.timeout)
            .field("children", &names)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Merge<R> {
    /// No children yet; each child's reading is bounded by `timeout` (keep it under the
    /// adjustment interval, which bounds the whole collection).
    pub fn new(runtime: R, timeout: Duration) -> Self {
        Self {
            runtime,
            timeout,
            children: Vec::new(),
            on_error: Box::new(|e| tracing::warn!(target: "ace", source = e.source_name(), "{e}")),
        }
    }

    /// Adds a child named `name` (the name a timeout is reported under).
    #[must_use]
    pub fn with<S: SignalSource + 'static>(mut self, name: &'static str, source: S) -> Self {
        self.push(name, source);
        self
    }

    /// Adds a child named `name`.
    pub fn push<S: SignalSource + 'static>(&mut self, name: &'static str, source: S) {
        self.children.push(Child {
            name,
            source: Box::new(source),
        });
    }

    pub(crate) fn push_dyn(&mut self, name: &'static str, source: Box<dyn DynSource>) {
        self.children.push(Child { name, source });
    }

    /// Where a child's error or timeout goes (instead of the default `tracing` warning).
    #[must_use]
    pub fn on_error(mut self, hook: impl FnMut(&SignalError) + Send + 'static) -> Self {
        self.on_error = Box::new(hook);
        self
    }

    /// The number of children.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// True with no children.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    async fn collect_all(&mut self) -> Signals {
        let timeout = self.timeout;
        let runtime = &self.runtime;
        let mut reads: Vec<Pin<Box<dyn Future<Output = Option<_>> + Send + '_>>> = self
            .children
            .iter_mut()
            .map(|c| {
                let sleep = runtime.sleep(timeout);
                let read = Guarded::new(c, timeout);
                Box::pin(futures_lite::future::or(
                    async move { Some(read.await) },
                    async move {
                        sleep.await;
                        None
                    },
                )) as Pin<Box<dyn Future<Output = _> + Send + '_>>
            })
            .collect();
        let mut results: Vec<Option<Option<Result<Signals, SignalError>>>> =
            (0..reads.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut done = true;
            for (read, result) in reads.iter_mut().zip(results.iter_mut()) {
                if result.is_none() {
                    match read.as_mut().poll(cx) {
                        Poll::Ready(r) => *result = Some(r),
                        Poll::Pending => done = false,
                    }
                }
            }
            if done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        drop(reads);
        let mut merged = Signals::default();
        for (child, result) in self.children.iter().zip(results) {
            match result.flatten() {
                Some(Ok(s)) => merged.merge(&s),
                Some(Err(e)) => (self.on_error)(&e),
                None => (self.on_error)(&SignalError::new(
                    child.name,
                    format!("timed out after {timeout:?}"),
                )),
            }
        }
        merged
    }
}

impl<R: Runtime> SignalSource for Merge<R> {
    async fn collect(&mut self) -> Result<Signals, SignalError> {
        Ok(self.collect_all().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ace_core::source_fn;
    use std::sync::Mutex;

    struct Hang;
    impl SignalSource for Hang {
        fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_and_hanging_children_are_absent_and_reported() {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        let mut m = Merge::new(ace_tokio::TokioRuntime::current(), Duration::from_secs(1))
            .with("hang", Hang)
            .with(
                "err",
                source_fn(|| Err(SignalError::new("err", "cannot read"))),
            )
            .with(
                "cpu",
                source_fn(|| {
                    Ok(Signals {
                        cpu_percent: Some(12.0),
                        ..Signals::default()
                    })
                }),
            )
            .with(
                "cpu2",
                source_fn(|| {
                    Ok(Signals {
                        cpu_percent: Some(99.0),
                        queue_depth: Some(4),
                        ..Signals::default()
                    })
                }),
            )
            .on_error(move |e| seen.lock().unwrap().push(e.clone()));
        let t0 = tokio::time::Instant::now();
        let s = m.collect().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        // First child to read a signal wins; the others fill the gaps.
        assert_eq!(s.cpu_percent, Some(12.0));
        assert_eq!(s.queue_depth, Some(4));
        {
            let errors = errors.lock().unwrap();
            let names: Vec<_> = errors.iter().map(SignalError::source_name).collect();
            assert_eq!(names, ["hang", "err"]);
            assert!(errors[0].message().contains("timed out"));
        }
        // The next cycle works the same: a hang is per cycle, never a stop.
        assert_eq!(m.collect().await.unwrap().queue_depth, Some(4));
    }

    #[tokio::test]
    async fn a_child_that_blocks_its_thread_is_reported_and_absent() {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        let mut m = Merge::new(
            ace_tokio::TokioRuntime::current(),
            Duration::from_millis(20),
        )
        .with(
            "blocking",
            source_fn(|| {
                // What a source must never do: block the executor's thread.
                std::thread::sleep(Duration::from_millis(80));
                Ok(Signals {
                    cpu_percent: Some(10.0),
                    ..Signals::default()
                })
            }),
        )
        .with(
            "depth",
            source_fn(|| {
                Ok(Signals {
                    queue_depth: Some(3),
                    ..Signals::default()
                })
            }),
        )
        .on_error(move |e| seen.lock().unwrap().push(e.clone()));
        let s = m.collect().await.unwrap();
        assert_eq!((s.cpu_percent, s.queue_depth), (None, Some(3)));
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].source_name(), "blocking");
        assert!(
            errors[0].message().contains("blocked the thread"),
            "{}",
            errors[0]
        );
    }

    #[tokio::test]
    async fn a_child_that_panics_is_a_failed_reading_every_cycle() {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        let mut m = Merge::new(ace_tokio::TokioRuntime::current(), Duration::from_secs(1))
            .with(
                "boom",
                source_fn(|| -> Result<Signals, SignalError> { panic!("no reading") }),
            )
            .with("depth", QueueDepth::new())
            .on_error(move |e| seen.lock().unwrap().push(e.to_string()));
        for _ in 0..2 {
            assert_eq!(m.collect().await.unwrap().queue_depth, Some(0));
        }
        assert_eq!(
            *errors.lock().unwrap(),
            ["signal source `boom` failed: collect panicked: no reading"; 2]
        );
    }

    #[tokio::test]
    async fn queue_depth_saturates() {
        let mut q = QueueDepth::new();
        q.sub(5);
        assert_eq!(q.get(), 0);
        q.set(u64::MAX);
        q.add(1);
        assert_eq!(q.collect().await.unwrap().queue_depth, Some(u64::MAX));
    }
}
