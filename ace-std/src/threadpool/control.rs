//! The pool's control loop, on a thread of its own: the core's [`ControlLoop`] (collect → decide
//! → apply → record, with the same fail-open rules and the job-latency feed), driven by a small
//! blocking executor ([`block_on`] over a thread [`Runtime`](ace_core::Runtime)).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use ace_core::{
    AimdConfig, ControlLoop, Controller, LatencyRecorder, Shutdown, SignalError, SignalSource,
    Signals,
};

use super::shared::{PoolTarget, Shared};
use crate::signals::Merge;
use crate::util::{block_on, lock, panic_message, Sinks, ThreadRuntime};

/// What the control thread shares with the pool.
#[derive(Debug)]
pub(crate) struct ControlShared {
    stopping: AtomicBool,
    /// A limit set by hand, for the controller to continue from.
    manual: Mutex<Option<usize>>,
    /// Ends the loop's current run (to stop, or to continue from a limit set by hand).
    wake: Mutex<Shutdown>,
}

impl ControlShared {
    pub(crate) fn set_manual(&self, limit: usize) {
        *lock(&self.manual) = Some(limit);
        lock(&self.wake).trigger();
    }
}

/// The running control thread.
#[derive(Debug)]
pub(crate) struct ControlThread {
    shared: Arc<ControlShared>,
    thread: JoinHandle<()>,
}

/// What the loop runs on: everything but the controller, which a limit set by hand replaces.
pub(crate) struct LoopParts {
    pub(crate) source: Merge<ThreadRuntime>,
    pub(crate) sink: Sinks,
    pub(crate) pool: Arc<Shared>,
    pub(crate) latency: Option<Arc<LatencyRecorder>>,
}

impl ControlThread {
    pub(crate) fn spawn(
        name: String,
        controller: Controller,
        parts: LoopParts,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(ControlShared {
            stopping: AtomicBool::new(false),
            manual: Mutex::new(None),
            wake: Mutex::new(Shutdown::new()),
        });
        let state = Arc::clone(&shared);
        let thread = thread::Builder::new().name(name).spawn(move || {
            // A panic here (the controller's, or the pool's) must not pass silently: the limit
            // then stays where it was, and `shutdown` still returns (it joins this thread).
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(controller, parts, &state))) {
                tracing::error!(
                    target: "ace",
                    "the pool's control loop panicked; the limit stays where it was: {}",
                    panic_message(&*panic)
                );
            }
        })?;
        Ok(Self { shared, thread })
    }

    pub(crate) fn shared(&self) -> &ControlShared {
        &self.shared
    }

    /// Stops the loop at once, even mid-sleep or mid-collection, and waits for the thread.
    pub(crate) fn stop(self) {
        self.shared.stopping.store(true, SeqCst);
        lock(&self.shared.wake).trigger();
        if self.thread.thread().id() != thread::current().id() {
            // A panic was logged on the thread itself.
            let _ = self.thread.join();
        }
    }
}

/// Lends the loop's source for one run (the loop owns its parts; a limit set by hand starts
/// a new run with the same source and sink).
struct Lent<'a>(&'a mut Merge<ThreadRuntime>);

impl SignalSource for Lent<'_> {
    async fn collect(&mut self) -> Result<Signals, SignalError> {
        self.0.collect().await
    }
}

fn run(mut controller: Controller, mut parts: LoopParts, state: &ControlShared) {
    let runtime = ThreadRuntime::new();
    loop {
        // Install the new wake first, then look: a stop or a limit set in between is seen.
        let wake = Shutdown::new();
        *lock(&state.wake) = wake.clone();
        if state.stopping.load(SeqCst) {
            return;
        }
        if let Some(limit) = lock(&state.manual).take() {
            controller = continue_from(&controller, limit);
        }
        let mut control = ControlLoop::new(
            runtime,
            controller,
            Lent(&mut parts.source),
            PoolTarget(Arc::clone(&parts.pool)),
            &mut parts.sink,
        );
        if let Some(recorder) = &parts.latency {
            control = control.with_latency(Arc::clone(recorder));
        }
        controller = block_on(control.run(wake)).controller().clone();
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
