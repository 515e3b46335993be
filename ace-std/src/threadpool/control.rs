//! The pool's control loop, on a thread of its own: the same cycle as
//! [`ace_core::ControlLoop`] (collect → decide → apply → record on a fixed grid, a reading that
//! fails or hangs past one interval counts as absent), without an async runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::Instant;

use ace_core::{
    AimdConfig, BoxFuture, Controller, DecisionSink, LimitTarget, SignalError, SignalSource,
    Signals, Usage,
};

use super::job::lock;
use super::shared::Shared;

/// An object-safe [`SignalSource`], so the builder need not be generic over it.
pub(crate) trait DynSource: Send {
    fn collect_boxed(&mut self) -> BoxFuture<'_, Result<Signals, SignalError>>;
}

impl<S: SignalSource> DynSource for S {
    fn collect_boxed(&mut self) -> BoxFuture<'_, Result<Signals, SignalError>> {
        Box::pin(self.collect())
    }
}

/// The pool as a [`LimitTarget`], so that a fleet budget can wrap it.
pub(crate) struct PoolTarget(pub(crate) Arc<Shared>);

impl LimitTarget for PoolTarget {
    fn set_limit(&self, limit: usize) {
        self.0.set_limit(limit);
    }

    fn usage(&self) -> Usage {
        Usage {
            limit: self.0.limit(),
            in_flight: self.0.running(),
            waiting: self.0.queued(),
        }
    }
}

/// What the control thread shares with the pool.
#[derive(Debug, Default)]
pub(crate) struct ControlShared {
    stop: AtomicBool,
    /// A limit set by hand, for the controller to continue from.
    manual: Mutex<Option<usize>>,
}

impl ControlShared {
    pub(crate) fn set_manual(&self, limit: usize) {
        *lock(&self.manual) = Some(limit);
    }
}

/// The running control thread.
#[derive(Debug)]
pub(crate) struct ControlThread {
    shared: Arc<ControlShared>,
    thread: JoinHandle<()>,
}

impl ControlThread {
    pub(crate) fn spawn(
        name: String,
        controller: Controller,
        source: Box<dyn DynSource>,
        sink: Box<dyn DecisionSink>,
        pool: Arc<dyn LimitTarget>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(ControlShared::default());
        let state = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || run(controller, source, sink, &pool, &state))?;
        Ok(Self { shared, thread })
    }

    pub(crate) fn shared(&self) -> &ControlShared {
        &self.shared
    }

    /// Stops the loop at once, even mid-sleep or mid-collection, and waits for the thread.
    pub(crate) fn stop(self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.thread().unpark();
        if self.thread.thread().id() != thread::current().id() {
            // A sink that panicked already ended the loop; nothing more to report here.
            let _ = self.thread.join();
        }
    }
}

/// Wakes the control thread when a signal future can make progress.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

enum Polled<T> {
    Ready(T),
    TimedOut,
    Stopped,
}

/// Drives `future` on this thread until it completes, `deadline` passes, or `stop` is set.
fn block_on_until<F: Future>(future: F, deadline: Instant, stop: &AtomicBool) -> Polled<F::Output> {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if stop.load(SeqCst) {
            return Polled::Stopped;
        }
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Polled::Ready(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return Polled::TimedOut;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Sleeps until `deadline`; false if stopped first.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::park_timeout(deadline - now);
    }
}

fn run(
    mut controller: Controller,
    mut source: Box<dyn DynSource>,
    mut sink: Box<dyn DecisionSink>,
    pool: &Arc<dyn LimitTarget>,
    state: &ControlShared,
) {
    let start = Instant::now();
    let interval = controller.config().adjustment_interval;
    let mut next = start + interval;
    loop {
        if !sleep_until(next, &state.stop) {
            return;
        }
        // Skip ticks this thread missed rather than running them back to back.
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        let signals = match block_on_until(source.collect_boxed(), now + interval, &state.stop) {
            Polled::Ready(Ok(signals)) => signals,
            Polled::Ready(Err(error)) => {
                sink.signal_error(&error);
                Signals::default()
            }
            Polled::TimedOut => {
                sink.signal_error(&SignalError::new(
                    "collect",
                    "timed out after one adjustment interval",
                ));
                Signals::default()
            }
            Polled::Stopped => return,
        };
        if let Some(limit) = lock(&state.manual).take() {
            controller = continue_from(&controller, limit);
        }
        let usage = pool.usage();
        controller.set_ceiling(pool.ceiling());
        let decision = controller.decide(start.elapsed(), &signals, usage);
        if decision.new_limit != decision.previous_limit {
            pool.set_limit(decision.new_limit);
        }
        sink.decision(&decision);
    }
}

/// A controller like `old` but at `limit` (set by hand).
fn continue_from(old: &Controller, limit: usize) -> Controller {
    let config = AimdConfig {
        initial_limit: limit,
        ..old.config().clone()
    };
    // `limit` was clamped to [min_limit, max_limit], so the config stays valid.
    Controller::new(config).unwrap_or_else(|_| old.clone())
}
