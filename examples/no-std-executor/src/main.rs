//! ACE embedded in a custom executor, with no `std`: the adjustable [`Semaphore`] and the
//! [`ControlLoop`] run on a tiny hand-written single-threaded executor with a virtual clock.
//!
//! ```text
//! cargo run --release --manifest-path examples/no-std-executor/Cargo.toml
//! ```
//!
//! What is here, all without `std` (only libc, for `write` and `exit`):
//! - a `#[panic_handler]` and a bump `#[global_allocator]` over a static array;
//! - an executor: a task list, a ready queue, wakers built from `core::task::RawWaker`;
//! - a [`Runtime`] whose clock is virtual: when every task waits, time jumps to the next timer;
//! - six worker tasks contending for the semaphore, and a control loop whose (simulated) CPU signal
//!   rises with the work in flight, so the AIMD controller moves the limit up and down.
//!
//! It prints each decision and exits 0, or exits 1 if concurrency ever went past what the limit
//! allowed: at most the limit, or, just after a shrink, at most what was already in flight.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::{RefCell, UnsafeCell};
use core::fmt::{self, Write as _};
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use core::time::Duration;

use ace_core::{
    source_fn, AimdConfig, ControlLoop, Controller, Decision, Runtime, Semaphore, Shutdown, Signals,
};

// ---------------------------------------------------------------------------------------------
// Printing, panics, memory: the three things std usually brings.

struct Stdout;

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            // Safety: the pointer and length describe a live byte slice.
            let n = unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
            if n <= 0 {
                return Err(fmt::Error);
            }
            bytes = &bytes[n.unsigned_abs()..];
        }
        Ok(())
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = writeln!(Stdout, $($arg)*);
    }};
}

fn exit(code: i32) -> ! {
    // Safety: `exit` may be called at any time; nothing here relies on destructors running.
    unsafe { libc::exit(code) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("panic: {info}");
    exit(101)
}

/// With `panic = "abort"` nothing unwinds, but the prebuilt `alloc` still names the unwinding
/// personality routine in its unwind tables: give the linker a symbol that is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// The same for `_Unwind_Resume`, which the prebuilt `alloc`'s formatting code names (ace-core's
/// signal checks format their error messages).
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(134)
}

/// A bump allocator over a static array: never frees, which a short demo can afford.
struct Bump {
    arena: UnsafeCell<[u8; ARENA]>,
    next: AtomicUsize,
}

const ARENA: usize = 4 << 20;

// Safety: the arena is only handed out in disjoint pieces, claimed with an atomic bump.
unsafe impl Sync for Bump {}

// Safety: every block returned is inside the arena, aligned as asked, and never handed out twice.
unsafe impl core::alloc::GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let base = self.arena.get().cast::<u8>();
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base.addr() + next).next_multiple_of(layout.align()) - base.addr();
            let Some(end) = start.checked_add(layout.size()).filter(|&end| end <= ARENA) else {
                return core::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange_weak(next, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return base.wrapping_add(start),
                Err(actual) => next = actual,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    arena: UnsafeCell::new([0; ARENA]),
    next: AtomicUsize::new(0),
};

// ---------------------------------------------------------------------------------------------
// The executor: single-threaded, so its globals are `RefCell`s.

/// A global for a single-threaded program.
struct Global<T>(RefCell<T>);

// Safety: this program never starts a second thread, so no two threads ever touch it.
unsafe impl<T> Sync for Global<T> {}

type Task = Pin<Box<dyn Future<Output = ()>>>;

static TASKS: Global<Vec<Option<Task>>> = Global(RefCell::new(Vec::new()));
static SPAWNED: Global<Vec<Task>> = Global(RefCell::new(Vec::new()));
static READY: Global<VecDeque<usize>> = Global(RefCell::new(VecDeque::new()));
static TIMERS: Global<Vec<(u64, Waker)>> = Global(RefCell::new(Vec::new()));
/// The virtual clock, in milliseconds.
static NOW_MS: AtomicU64 = AtomicU64::new(0);

fn spawn(future: impl Future<Output = ()> + 'static) {
    SPAWNED.0.borrow_mut().push(Box::pin(future));
}

// A waker's data is its task's index: waking queues the index.
static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_waker, wake, wake, drop_waker);

fn raw_waker(task: usize) -> RawWaker {
    RawWaker::new(core::ptr::without_provenance(task), &VTABLE)
}

fn clone_waker(data: *const ()) -> RawWaker {
    raw_waker(data.addr())
}

fn wake(data: *const ()) {
    READY.0.borrow_mut().push_back(data.addr());
}

fn drop_waker(_: *const ()) {}

fn waker(task: usize) -> Waker {
    // Safety: the vtable's functions only read the data as an integer; they never dereference it,
    // so every contract of `RawWaker` holds trivially (and it is fine to call them from anywhere).
    unsafe { Waker::from_raw(raw_waker(task)) }
}

/// Runs until no task is ready and no timer is set; returns the polls made.
fn run() -> usize {
    let mut polls = 0;
    loop {
        for task in SPAWNED.0.borrow_mut().drain(..) {
            let mut tasks = TASKS.0.borrow_mut();
            tasks.push(Some(task));
            READY.0.borrow_mut().push_back(tasks.len() - 1);
        }
        let next = READY.0.borrow_mut().pop_front();
        if let Some(id) = next {
            // Take the task out while it runs, so it may spawn and wake freely.
            let Some(mut task) = TASKS.0.borrow_mut()[id].take() else {
                continue; // finished, or a duplicate wake
            };
            polls += 1;
            if task
                .as_mut()
                .poll(&mut Context::from_waker(&waker(id)))
                .is_pending()
            {
                TASKS.0.borrow_mut()[id] = Some(task);
            }
            continue;
        }
        if !SPAWNED.0.borrow().is_empty() {
            continue;
        }
        // Everyone waits: jump the clock to the next timer.
        let mut timers = TIMERS.0.borrow_mut();
        let Some(next) = timers.iter().map(|&(at, _)| at).min() else {
            return polls;
        };
        NOW_MS.store(next, Ordering::Relaxed);
        let (due, later): (Vec<_>, Vec<_>) = timers.drain(..).partition(|&(at, _)| at <= next);
        *timers = later;
        drop(timers);
        for (_, waker) in due {
            waker.wake();
        }
    }
}

/// The executor seam for ACE's control loop: a virtual clock and this executor's spawn.
#[derive(Clone, Copy, Debug)]
struct VirtualRuntime;

struct Sleep {
    until: u64,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if NOW_MS.load(Ordering::Relaxed) >= self.until {
            return Poll::Ready(());
        }
        TIMERS.0.borrow_mut().push((self.until, cx.waker().clone()));
        Poll::Pending
    }
}

impl Runtime for VirtualRuntime {
    type Sleep = Sleep;

    fn now(&self) -> Duration {
        Duration::from_millis(NOW_MS.load(Ordering::Relaxed))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Sleep {
            until: NOW_MS.load(Ordering::Relaxed).saturating_add(ms),
        }
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn(future);
    }
}

// ---------------------------------------------------------------------------------------------
// The program: workers contend for the semaphore the control loop drives.

const WORKERS: usize = 6;
const JOBS: usize = 25;
const MAX_LIMIT: usize = 8;

static SEM: Semaphore = Semaphore::new(0);
/// Permits held right now, by the workers' own count.
static HOLDING: AtomicUsize = AtomicUsize::new(0);
/// What was in flight at the last shrink: until it drains, that many may still run.
static AT_LAST_SHRINK: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static OVER_LIMIT: AtomicBool = AtomicBool::new(false);
static FINISHED: AtomicUsize = AtomicUsize::new(0);

async fn worker(id: usize, shutdown: Shutdown) {
    let mut seed = 0x2545_f491_u64.wrapping_mul(id as u64 + 1);
    for _ in 0..JOBS {
        let permit = SEM.acquire().await.expect("the semaphore is never closed");
        let holding = HOLDING.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK.fetch_max(holding, Ordering::Relaxed);
        let allowed = SEM.limit().max(AT_LAST_SHRINK.load(Ordering::Relaxed));
        if holding > allowed {
            println!("worker {id}: {holding} in flight, but only {allowed} allowed");
            OVER_LIMIT.store(true, Ordering::Relaxed);
        }
        // A job takes 20 to 79 virtual milliseconds.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        VirtualRuntime
            .sleep(Duration::from_millis(20 + seed % 60))
            .await;
        HOLDING.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    }
    if FINISHED.fetch_add(1, Ordering::Relaxed) + 1 == WORKERS {
        shutdown.trigger();
    }
}

fn report(decision: &Decision) {
    if decision.new_limit < decision.previous_limit {
        AT_LAST_SHRINK.store(HOLDING.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let cpu = decision.signals.cpu_percent.unwrap_or(0.0);
    // Whole percent is plenty, and integer formatting keeps float printing out of the binary.
    let cpu = cpu as u32;
    println!(
        "t={:>5} ms  cpu={cpu:>3}%  {}  [{}; debt now {}]",
        decision.at.as_millis(),
        decision,
        decision.usage,
        SEM.debt()
    );
}

#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let config = AimdConfig {
        min_limit: 1,
        max_limit: MAX_LIMIT,
        initial_limit: 4,
        increase_step: 1,
        cooldown: Duration::from_millis(200),
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    };
    let controller = match Controller::new(config) {
        Ok(controller) => controller,
        Err(error) => {
            println!("bad config: {error}");
            return 1;
        }
    };
    // A simulated CPU gauge: every job in flight costs 15 %.
    let source = source_fn(|| {
        let holding = HOLDING.load(Ordering::Relaxed);
        Ok(Signals {
            cpu_percent: Some(10.0 + 15.0 * holding as f64),
            ..Signals::default()
        })
    });
    let shutdown = Shutdown::new();
    for id in 0..WORKERS {
        spawn(worker(id, shutdown.clone()));
    }
    let control = ControlLoop::new(VirtualRuntime, controller, source, &SEM, report);
    spawn(async move {
        let control = control.run(shutdown).await;
        println!(
            "control loop stopped at limit {}",
            control.controller().limit()
        );
    });

    println!("{WORKERS} workers x {JOBS} jobs, limit driven by AIMD within 1..={MAX_LIMIT}");
    let polls = run();
    let peak = PEAK.load(Ordering::Relaxed);
    println!(
        "done at t={} ms after {polls} polls: peak {peak} in flight, {:?}",
        NOW_MS.load(Ordering::Relaxed),
        SEM
    );
    let finished = FINISHED.load(Ordering::Relaxed) == WORKERS;
    let settled = SEM.in_use() == 0 && SEM.waiting() == 0;
    if OVER_LIMIT.load(Ordering::Relaxed) || peak > MAX_LIMIT || !finished || !settled {
        println!("FAILED: concurrency went past the limit, or work was left over");
        return 1;
    }
    println!("ok: concurrency never exceeded the limit");
    0
}
