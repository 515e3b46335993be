//! The managers can be used from code that catches panics (`std::panic::catch_unwind`), as tokio's
//! semaphore and std's `Mutex` can: a compile-time check.
#![allow(
    dead_code,
    reason = "the functions exist only to be type-checked, they assert at compile time"
)]

use std::panic::{RefUnwindSafe, UnwindSafe};

fn assert_unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}

#[cfg(feature = "tokio")]
#[test]
fn the_tokio_manager_is_unwind_safe() {
    assert_unwind_safe::<ace_std::tokio::Manager>();
}

#[cfg(feature = "smol")]
#[test]
fn the_smol_manager_is_unwind_safe() {
    assert_unwind_safe::<ace_std::smol::Manager>();
}

#[cfg(feature = "threadpool")]
#[test]
fn the_thread_pool_is_unwind_safe() {
    assert_unwind_safe::<ace_std::threadpool::ThreadPoolManager>();
}
