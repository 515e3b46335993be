//! The state the pool's threads share: the queue, the gate, the worker count, and the worker
//! loop itself.
//!
//! # The gate
//!
//! An [`ace_core::Semaphore`] whose permits are the closures executing. A worker takes a job
//! first and is admitted after (`try_acquire`: one CAS that fails while no permit is free or a
//! shrink's debt is owed), so a worker never holds a permit while it waits for work, and a shrink
//! binds at once: after `set_limit` cuts, no job starts until fewer than the new limit run, while
//! the closures already running finish undisturbed. The pool never queues on the semaphore (no
//! blocking acquire), so a release never hands a permit over to another thread.
//!
//! Two cheap checks keep that strict test off the hot path's slow branch:
//! - the *soft gate*: before taking a job a worker looks for a free permit, and if none sleeps
//!   on `gate_cv` (excess threads after a shrink park here, not in the queue);
//! - a worker that took a job and then lost the race for a slot *deposits* the job in `pending`
//!   (checked first by every worker) and goes to the soft gate. Depositing and finishing form a
//!   Dekker pair (push then read the semaphore; release then read `pending_len`, with SeqCst
//!   fences), so a deposited job is always picked up by someone.
//!
//! A worker that finishes a job and finds the next at once keeps its permit for it, unless the
//! semaphore owes a debt (a cut is in force): two contended CASes per job saved in steady state.
//!
//! # Threads
//!
//! Workers are spawned on demand (`ensure_workers`: fewer threads alive than
//! `min(limit, running + queued)`, checked by a submitter after its push and by a worker after
//! its admission, since between taking a job and its permit a worker counts as neither) and
//! retire after `idle_timeout` without work, or when draining leaves nothing.
//!
//! # Ordering
//!
//! The submit path has no fence: each party that must not miss another does one SeqCst
//! read-modify-write on `state` right after its step (`sync`), and the word's modification order
//! decides: a submitter after its push, a leaving worker after leaving `alive`, an admitted
//! worker before it looks for needed threads, shutdown when it sets `CLOSED`. Whoever syncs later
//! sees the other's step.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ace_core::{LatencyRecorder, LimitTarget, Permit, Priority, Semaphore, Usage};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::{Backoff, CachePadded};

use super::job::{BoxTask, Counters};
use super::lanes::{Lanes, Woke};
use crate::stats::DecisionCounters;
use crate::util::{lock, stripe};

/// The bit of `state` that says "closed to new jobs".
const CLOSED: usize = 1;

/// What the workers are doing; only ever moves up (`close` takes the maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Accepting and running jobs.
    Running = 0,
    /// `shutdown`: run what is queued, then exit.
    Drain = 1,
    /// `shutdown_now`: finish the jobs running, start no other.
    Now = 2,
}

impl Mode {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Drain,
            _ => Self::Now,
        }
    }
}

/// What the pool state is built from (its builder's options, the limits already clamped to the
/// semaphore's range).
#[derive(Debug)]
pub(crate) struct SharedOptions {
    /// The limit at start.
    pub(crate) initial_limit: usize,
    /// The bounds for a limit set by hand.
    pub(crate) min_limit: usize,
    /// See `min_limit`.
    pub(crate) max_limit: usize,
    /// The bound of the queue of jobs not started; `None` for unbounded.
    pub(crate) queue_capacity: Option<usize>,
    /// How long a worker waits for work before it exits.
    pub(crate) idle_timeout: Duration,
    /// Workers are named `{thread_name}-{n}`.
    pub(crate) thread_name: String,
    /// Where each job's run time (or panic) goes, for the latency signal.
    pub(crate) timing: Option<JobTiming>,
}

/// The latency feed: the recorder the control loop reads, and the sampling mask its sink sets.
#[derive(Debug)]
pub(crate) struct JobTiming {
    pub(crate) recorder: Arc<LatencyRecorder>,
    pub(crate) counters: Arc<DecisionCounters>,
}

thread_local! {
    /// The pool whose worker this thread is (its `Shared`'s address), or 0.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
}

/// Why `push` refused a job.
pub(crate) enum PushError {
    Full(BoxTask),
    Closed(BoxTask),
}

/// What a worker found when it looked for work.
enum Next {
    Task(BoxTask),
    /// Nothing now; look again (the mode may have changed).
    Again,
    /// Idle for `idle_timeout`.
    Idle,
    /// Draining and nothing is left, or stopping now.
    Exit,
}

pub(crate) struct Shared {
    /// The queue of jobs not started, one channel per class.
    lanes: Lanes,
    /// Never sent on: dropping the sender (at shutdown) wakes every idle worker.
    stop_rx: Receiver<()>,
    stop_tx: Mutex<Option<Sender<()>>>,

    /// `CLOSED`, and the word every party does one SeqCst read-modify-write on after its own
    /// step (a submitter after its push, a leaving worker after leaving `alive`, an admitted
    /// worker that looks for needed threads, shutdown when it closes). Their order in this one
    /// word's modification order decides each race: the later one sees the earlier one's step.
    state: CachePadded<AtomicUsize>,
    /// The gate: one permit per closure executing.
    gate: CachePadded<Semaphore>,
    // Read by every job, written rarely: kept off the gate's and state's lines.
    /// The gate's limit, for `push` to read off the gate's busy cache line.
    limit_hint: AtomicUsize,
    /// A [`Mode`].
    mode: AtomicU8,
    pending_len: AtomicUsize,
    alive: AtomicUsize,

    /// Jobs taken by a worker that then found no slot; run before the queue.
    pending: Mutex<VecDeque<BoxTask>>,
    gate_cv: Condvar,
    /// Jobs a worker took after `shutdown_now` began, or a late push found, for it to hand
    /// back; `None` once it has.
    cancelled: Mutex<Option<Vec<BoxTask>>>,
    /// Guards the waits for "no submitter in flight" and "no worker alive".
    exit_lock: Mutex<()>,
    exit_cv: Condvar,

    /// Counts of workers that exited; each live worker counts on a cache line of its own.
    retired_counts: Counters,
    live_counts: Mutex<Vec<Arc<CachePadded<Counters>>>>,
    pub(crate) min_limit: usize,
    pub(crate) max_limit: usize,
    idle_timeout: Duration,
    thread_name: String,
    next_id: AtomicUsize,
    timing: Option<JobTiming>,
}

impl Shared {
    pub(crate) fn new(options: SharedOptions) -> Self {
        let SharedOptions {
            initial_limit: limit,
            min_limit,
            max_limit,
            queue_capacity: capacity,
            idle_timeout,
            thread_name,
            timing,
        } = options;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        Self {
            lanes: Lanes::new(capacity),
            stop_rx,
            stop_tx: Mutex::new(Some(stop_tx)),
            state: CachePadded::new(AtomicUsize::new(0)),
            gate: CachePadded::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            limit_hint: AtomicUsize::new(limit.min(Semaphore::MAX_PERMITS)),
            alive: AtomicUsize::new(0),
            mode: AtomicU8::new(Mode::Running as u8),
            pending_len: AtomicUsize::new(0),
            pending: Mutex::new(VecDeque::new()),
            gate_cv: Condvar::new(),
            cancelled: Mutex::new(Some(Vec::new())),
            exit_lock: Mutex::new(()),
            exit_cv: Condvar::new(),
            retired_counts: Counters::default(),
            live_counts: Mutex::new(Vec::new()),
            min_limit,
            max_limit,
            idle_timeout,
            thread_name,
            next_id: AtomicUsize::new(0),
            timing,
        }
    }

    /// Jobs completed and jobs that panicked, over every worker, live or gone.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let live = lock(&self.live_counts);
        live.iter()
            .map(|c| &***c)
            .chain([&self.retired_counts])
            .fold((0, 0), |(done, panicked), c| {
                (
                    done + c.completed.load(SeqCst),
                    panicked + c.panicked.load(SeqCst),
                )
            })
    }

    pub(crate) fn limit(&self) -> usize {
        self.gate.limit()
    }
    pub(crate) fn running(&self) -> usize {
        self.gate.in_use()
    }
    /// A slot is free under the limit (no debt owed).
    fn has_room(&self) -> bool {
        self.gate.available() > 0
    }
    pub(crate) fn alive(&self) -> usize {
        self.alive.load(SeqCst)
    }
    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(SeqCst))
    }
    /// True once new jobs are refused.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(SeqCst) & CLOSED != 0
    }
    /// Jobs accepted and not started: in the queue, or taken and waiting for a slot.
    pub(crate) fn queued(&self) -> usize {
        self.lanes.len() + self.pending_len.load(SeqCst)
    }

    /// True if the current thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        CURRENT_POOL.with(Cell::get) == std::ptr::from_ref(self) as usize
    }

    /// Sets the limit (already clamped), wakes threads parked at the gate if it grew, and
    /// spawns threads if there is work for them.
    pub(crate) fn set_limit(self: &Arc<Self>, limit: usize) {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        let old = self.gate.limit();
        self.gate.set_limit(limit);
        self.limit_hint.store(limit, SeqCst);
        if limit > old {
            // Lock so a worker between its check and its wait cannot miss this.
            drop(lock(&self.pending));
            self.gate_cv.notify_all();
            self.ensure_workers();
        }
    }

    /// The one read-modify-write that orders this thread's last step against the others'
    /// (see `state`); returns the state.
    fn sync(&self) -> usize {
        self.state.fetch_or(0, SeqCst)
    }

    /// Queues a job in class `priority`, blocking while its bounded queue is full if `block`.
    pub(crate) fn push(
        self: &Arc<Self>,
        priority: Priority,
        task: BoxTask,
        block: bool,
    ) -> Result<(), PushError> {
        if self.state.load(SeqCst) & CLOSED != 0 {
            return Err(PushError::Closed(task));
        }
        if block {
            // The pool holds a receiver: the channel never disconnects.
            if let Err(e) = self.lanes.send(priority, task) {
                return Err(PushError::Closed(e.0));
            }
        } else if let Err(e) = self.lanes.try_send(priority, task) {
            return Err(match e {
                TrySendError::Full(t) => PushError::Full(t),
                TrySendError::Disconnected(t) => PushError::Closed(t),
            });
        }
        // Push, then sync, then read `alive`: a worker leaving `alive` syncs before it looks at
        // the queue, so one of the two sees the other.
        if self.sync() & CLOSED != 0 {
            self.late_push();
        } else if self.alive.load(SeqCst) < self.limit_hint.load(SeqCst) {
            self.ensure_workers();
        }
        Ok(())
    }

    /// The pool closed between this submitter's check and its sync: its job may have landed
    /// after the workers looked for the last time.
    #[cold]
    fn late_push(self: &Arc<Self>) {
        if self.mode() == Mode::Now {
            // Hand what is queued to `shutdown_now`, or, if it has already returned, cancel it:
            // either way every handle hears.
            let mut cancelled = lock(&self.cancelled);
            match cancelled.as_mut() {
                Some(out) => out.extend(self.lanes.drain()),
                None => {
                    drop(cancelled);
                    for task in self.lanes.drain() {
                        task.abandon(super::JoinError::Cancelled);
                    }
                }
            }
        } else {
            // Draining: make sure a thread will run it.
            self.ensure_workers();
        }
    }

    /// Spawns workers while fewer are alive than `min(limit, running + queued)`.
    pub(crate) fn ensure_workers(self: &Arc<Self>) {
        loop {
            let alive = self.alive.load(SeqCst);
            if alive >= self.gate.limit() {
                return;
            }
            if alive >= self.gate.in_use() + self.queued() {
                return;
            }
            if self
                .alive
                .compare_exchange(alive, alive + 1, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            // Draining still spawns: a job pushed by a late submitter needs a thread.
            if self.mode() == Mode::Now || !self.spawn_worker() {
                self.leave_alive();
                return;
            }
        }
    }

    /// Starts one worker thread, its place in `alive` already taken.
    fn spawn_worker(self: &Arc<Self>) -> bool {
        let id = self.next_id.fetch_add(1, SeqCst);
        let shared = Arc::clone(self);
        thread::Builder::new()
            .name(format!("{}-{id}", self.thread_name))
            .spawn(move || worker_main(&shared))
            .is_ok()
    }

    /// Leaves `alive` and wakes a shutdown waiting for the last thread.
    fn leave_alive(&self) {
        let _guard = lock(&self.exit_lock);
        self.alive.fetch_sub(1, SeqCst);
        self.exit_cv.notify_all();
    }

    /// Idle for `idle_timeout`, or draining with nothing left: leave, unless work turned up that
    /// no one else would take.
    fn try_retire(&self) -> bool {
        let _guard = lock(&self.exit_lock);
        self.alive.fetch_sub(1, SeqCst);
        // Leave, sync, then look: pairs with `push`'s push, sync, read of `alive`.
        self.sync();
        let work = !self.lanes.is_empty() || self.pending_len.load(SeqCst) > 0;
        if work && self.mode() != Mode::Now && self.has_room() {
            self.alive.fetch_add(1, SeqCst);
            return false;
        }
        self.exit_cv.notify_all();
        true
    }

    /// The strict gate: a permit if one is free and no debt is owed.
    fn try_admit(&self) -> Option<Permit<'_>> {
        let permit = self.gate.try_acquire().ok();
        // The latency epochs' demand signal (issue 11): this job took the last slot, or found
        // none: the limit was reached.
        if let Some(timing) = &self.timing {
            timing
                .recorder
                .record_admission_in(stripe(), self.gate.in_use(), self.gate.limit());
        }
        permit
    }

    fn deposit(&self, task: BoxTask) {
        let mut pending = lock(&self.pending);
        pending.push_back(task);
        self.pending_len.fetch_add(1, SeqCst);
        // Push, then (at the soft gate) read the semaphore: pairs with the finisher's fence.
        fence(SeqCst);
    }

    fn pop_pending(&self) -> Option<BoxTask> {
        let mut pending = lock(&self.pending);
        let task = pending.pop_front();
        if task.is_some() {
            self.pending_len.fetch_sub(1, SeqCst);
        }
        task
    }

    /// Parks at the soft gate until there is room under the limit, the pool stops, or
    /// `idle_timeout` passes (then returns false).
    fn wait_for_room(&self) -> bool {
        let deadline = Instant::now() + self.idle_timeout;
        let mut guard = lock(&self.pending);
        loop {
            if self.has_room() || self.mode() != Mode::Running {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .gate_cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn next_task(&self) -> Next {
        if self.pending_len.load(SeqCst) > 0 {
            if let Some(task) = self.pop_pending() {
                return Next::Task(task);
            }
        }
        // Spin, then yield, a little before blocking, as crossbeam's own `recv` does: with tiny
        // jobs the next one usually arrives within that, and a blocked worker costs the
        // submitter a futex wake.
        let backoff = Backoff::new();
        loop {
            if let Some(task) = self.lanes.try_recv() {
                return Next::Task(task);
            }
            if backoff.is_completed() {
                break;
            }
            backoff.snooze();
        }
        if self.mode() != Mode::Running {
            // Nothing left: leave by `try_retire`, which looks again after leaving (a submit
            // racing the shutdown may still push).
            return Next::Exit;
        }
        // Woken by a job in any class, then take the most important one (another worker may
        // have taken it meanwhile: look again).
        match self.lanes.wait(&self.stop_rx, self.idle_timeout) {
            Woke::Work => self.lanes.try_recv().map_or(Next::Again, Next::Task),
            Woke::Stop => Next::Again,
            Woke::Idle => Next::Idle,
        }
    }

    /// Stops accepting jobs and switches to `mode` (a later `Now` overrides `Drain`); wakes every
    /// parked and idle worker.
    pub(crate) fn close(&self, mode: Mode) {
        self.mode.fetch_max(mode as u8, SeqCst);
        self.state.fetch_or(CLOSED, SeqCst);
        drop(lock(&self.stop_tx).take());
        drop(lock(&self.pending));
        self.gate_cv.notify_all();
    }

    /// Waits until every worker thread has exited.
    pub(crate) fn wait_workers(&self) {
        let mut guard = lock(&self.exit_lock);
        while self.alive.load(SeqCst) > 0 {
            guard = self
                .exit_cv
                .wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Everything not started, oldest first as far as known: the pending jobs (taken from the
    /// queue first), the jobs workers took from the queue's head as `shutdown_now` began,
    /// `drained` (the queue's head, moved out at once so blocked submitters get through), and
    /// the queue's rest. Later late pushes cancel their jobs themselves.
    pub(crate) fn take_unstarted(&self, drained: Vec<BoxTask>) -> Vec<BoxTask> {
        let mut pending = lock(&self.pending);
        self.pending_len.fetch_sub(pending.len(), SeqCst);
        let mut out: Vec<BoxTask> = pending.drain(..).collect();
        drop(pending);
        let mut cancelled = lock(&self.cancelled);
        out.extend(cancelled.take().unwrap_or_default());
        out.extend(drained);
        out.extend(self.lanes.drain());
        drop(cancelled);
        out
    }

    /// The queue's jobs now (for `shutdown_now`, so submitters blocked on a full queue get
    /// through).
    pub(crate) fn drain_queue(&self) -> Vec<BoxTask> {
        self.lanes.drain().collect()
    }

    /// A job a worker took after `shutdown_now` began: hand it back, or cancel it if too late.
    fn hand_back(&self, task: BoxTask) {
        let mut cancelled = lock(&self.cancelled);
        match cancelled.as_mut() {
            Some(out) => out.push(task),
            None => {
                drop(cancelled);
                task.abandon(super::JoinError::Cancelled);
            }
        }
    }
}

impl Shared {
    /// Runs one admitted job, timed into the latency recorder if this one is sampled.
    fn run_job(&self, task: BoxTask, counts: &Counters) {
        let Some(timing) = self
            .timing
            .as_ref()
            .filter(|t| t.counters.sampled(counts.completed.load(SeqCst)))
        else {
            let _ = task.run(counts);
            return;
        };
        let started = Instant::now();
        if task.run(counts) {
            timing.recorder.record_error_in(stripe());
        } else {
            timing.recorder.record_in(stripe(), started.elapsed());
        }
    }
}

/// The pool as the control loop drives it.
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

/// On the worker's exit, even by an unexpected panic: folds its counts into the pool's and
/// leaves `alive` (unless `try_retire` already did).
struct WorkerGuard<'a> {
    shared: &'a Shared,
    counts: Arc<CachePadded<Counters>>,
    alive: bool,
}

impl<'a> WorkerGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        let counts = Arc::new(CachePadded::new(Counters::default()));
        lock(&shared.live_counts).push(Arc::clone(&counts));
        Self {
            shared,
            counts,
            alive: true,
        }
    }
}

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        let mut live = lock(&self.shared.live_counts);
        live.retain(|c| !Arc::ptr_eq(c, &self.counts));
        let retired = &self.shared.retired_counts;
        retired
            .completed
            .fetch_add(self.counts.completed.load(SeqCst), SeqCst);
        retired
            .panicked
            .fetch_add(self.counts.panicked.load(SeqCst), SeqCst);
        drop(live);
        if self.alive {
            self.shared.leave_alive();
        }
    }
}

fn worker_main(arc: &Arc<Shared>) {
    CURRENT_POOL.with(|c| c.set(Arc::as_ptr(arc) as usize));
    let shared: &Shared = arc;
    let mut me = WorkerGuard::new(shared);
    loop {
        let mode = shared.mode();
        if mode == Mode::Now {
            break;
        }
        // Soft gate: take no job that could not start.
        if !shared.has_room() {
            if mode != Mode::Running {
                // Draining: someone is running and will take what is left.
                break;
            }
            if !shared.wait_for_room() && shared.try_retire() {
                // `try_retire` already left `alive`.
                me.alive = false;
                break;
            }
            continue;
        }
        let task = match shared.next_task() {
            Next::Task(task) => task,
            Next::Again => continue,
            Next::Exit | Next::Idle => {
                if shared.try_retire() {
                    me.alive = false;
                    break;
                }
                continue;
            }
        };
        if shared.mode() == Mode::Now {
            shared.hand_back(task);
            break;
        }
        let Some(permit) = shared.try_admit() else {
            shared.deposit(task);
            continue;
        };
        // Between taking the job and its permit this worker counted as neither running nor
        // queued, so a submit then may have seen no need for a thread: look again now.
        if shared.alive() < shared.limit() {
            shared.sync();
            if !shared.lanes.is_empty() {
                arc.ensure_workers();
            }
        }
        shared.run_job(task, &me.counts);
        // Keep the permit for the next job while one is at hand and no shrink is owed: two
        // contended CASes saved per job. A cut is honoured at once (the debt check), and a
        // worker never holds a permit while it waits.
        loop {
            if shared.gate.debt() > 0 || shared.mode() == Mode::Now {
                break;
            }
            let next = if shared.pending_len.load(SeqCst) > 0 {
                shared.pop_pending()
            } else {
                None
            };
            let Some(next) = next.or_else(|| shared.lanes.try_recv()) else {
                break;
            };
            if shared.mode() == Mode::Now {
                shared.hand_back(next);
                break;
            }
            shared.run_job(next, &me.counts);
        }
        drop(permit);
        // Release, then read `pending_len` (next loop): pairs with `deposit`'s fence.
        fence(SeqCst);
    }
    drop(me);
}
