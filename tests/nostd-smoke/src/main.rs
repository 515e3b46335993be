//! A `#![no_std]`, `#![no_main]` program that links `ace-core` and runs a few decisions.
//!
//! It brings its own panic handler and allocator. If anything under `ace-core` pulls in `std`, the
//! link fails with a duplicate `panic_impl` lang item: a check that can fail, unlike
//! `cargo check --no-default-features`.
//!
//! Run: `cargo run --release --manifest-path tests/nostd-smoke/Cargo.toml` (exit code 0 = pass).
#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use ace_core::{Action, AimdConfig, Controller, Signals, Usage};

/// A bump allocator over a static arena: enough for a few decisions, never frees.
struct Bump {
    arena: UnsafeCell<[u8; 64 * 1024]>,
    next: AtomicUsize,
}

// Safety: `next` is advanced atomically, so no two allocations overlap.
unsafe impl Sync for Bump {}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.arena.get() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + cur).next_multiple_of(layout.align()) - base;
            let end = start + layout.size();
            if end > 64 * 1024 {
                return core::ptr::null_mut();
            }
            match self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                // Safety: `start..end` lies inside the arena and was handed out to no one else.
                Ok(_) => return unsafe { (base as *mut u8).add(start) },
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOC: Bump = Bump {
    arena: UnsafeCell::new([0; 64 * 1024]),
    next: AtomicUsize::new(0),
};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    say(b"nostd-smoke: panic\n");
    // Safety: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

// The prebuilt `core`/`alloc` were compiled with unwinding and name these two symbols; with
// `panic = "abort"` nothing ever calls them, but the linker wants them defined.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    // Safety: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

fn say(msg: &[u8]) {
    // Safety: writing a valid buffer to stdout.
    unsafe {
        libc::write(1, msg.as_ptr().cast(), msg.len());
    }
}

fn check(ok: bool, what: &[u8]) -> bool {
    if !ok {
        say(b"nostd-smoke: FAILED: ");
        say(what);
        say(b"\n");
    }
    ok
}

/// The C runtime calls this; no std `main` exists.
#[no_mangle]
pub extern "C" fn main(_argc: isize, _argv: *const *const u8) -> isize {
    // The seed's rules (no slow start, no latency): each step below is one plain AIMD rule.
    let config = AimdConfig {
        cooldown: Duration::ZERO,
        ..AimdConfig::default().seed_rules()
    };
    let Ok(mut c) = Controller::new(config) else {
        say(b"nostd-smoke: config rejected\n");
        return 1;
    };
    let busy = Usage {
        limit: 20,
        in_flight: 20,
        waiting: 4,
    };
    let hot = Signals {
        cpu_percent: Some(95.0),
        ..Signals::default()
    };
    let calm = Signals {
        cpu_percent: Some(20.0),
        memory_percent: Some(30.0),
        ..Signals::default()
    };
    let d1 = c.decide(Duration::from_secs(2), &hot, busy);
    let d2 = c.decide(Duration::from_secs(4), &calm, busy);
    let d3 = c.decide(Duration::from_secs(6), &Signals::default(), busy);
    // A Display impl through alloc: proves alloc works here too.
    let text = alloc::format!("{}", d1.reason);
    let ok = check(d1.action == Action::Decrease && d1.new_limit == 10, b"decrease")
        & check(d2.action == Action::Increase && d2.new_limit == 14, b"increase")
        & check(d3.action == Action::Hold, b"hold")
        & check(text == "cpu 95.0% is over the 80.0% threshold", b"reason text")
        & check(AimdConfig { min_limit: 0, ..AimdConfig::default() }.validate().is_err(), b"validate");
    if ok {
        say(b"nostd-smoke: ok (ace-core linked without std; 3 decisions checked)\n");
        0
    } else {
        1
    }
}

extern crate alloc;
