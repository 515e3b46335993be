//! Loom models of the thread pool's ordering protocol (`ace-std/src/threadpool/shared.rs`,
//! `Shared::sync`): each party does one SeqCst read-modify-write on the shared `state` word right
//! after its own step, and whoever does it later sees the other's step. These model the protocol
//! with loom atomics (the pool's crossbeam queue does not run under loom); the queue is one
//! atomic written with `Release`, as a channel push publishes its message.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p ace-std --release --test loom_threadpool --features threadpool,ace-core/loom --target-dir target/loom`
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Submit (push, sync, read `alive`) against a worker retiring (leave `alive`, sync, look at the
/// queue): the job never ends up with no thread, i.e. either the submitter sees the worker gone
/// (and spawns) or the worker sees the job (and stays).
#[test]
fn submit_and_retirement_never_both_miss() {
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(1));
        let state = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let (queue, alive, state) = (queue.clone(), alive.clone(), state.clone());
            thread::spawn(move || {
                queue.store(1, Ordering::Release);
                state.fetch_or(0, Ordering::SeqCst);
                alive.load(Ordering::SeqCst) == 0 // true: spawns a thread
            })
        };
        alive.fetch_sub(1, Ordering::SeqCst);
        state.fetch_or(0, Ordering::SeqCst);
        let worker_saw_job = queue.load(Ordering::Acquire) == 1;
        let submitter_spawned = submitter.join().unwrap();
        assert!(
            submitter_spawned || worker_saw_job,
            "a job was left with no thread"
        );
    });
}

/// Submit against a worker between taking a job and its permit (admission, sync, look at the
/// queue): either the submitter sees the admission (and counts the worker busy) or the worker sees
/// the new job (and looks for threads itself).
#[test]
fn submit_and_admission_never_both_miss() {
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let in_use = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let (queue, in_use, state) = (queue.clone(), in_use.clone(), state.clone());
            thread::spawn(move || {
                queue.store(1, Ordering::Release);
                state.fetch_or(0, Ordering::SeqCst);
                in_use.load(Ordering::Acquire) == 1
            })
        };
        // The semaphore's CAS is Acquire on success; model the admission as a release-store.
        in_use.store(1, Ordering::Release);
        state.fetch_or(0, Ordering::SeqCst);
        let worker_saw_job = queue.load(Ordering::Acquire) == 1;
        let submitter_saw_admission = submitter.join().unwrap();
        assert!(submitter_saw_admission || worker_saw_job);
    });
}

/// Submit against shutdown setting `CLOSED` with a read-modify-write: a submitter that did not see
/// `CLOSED` had its job published to the shutdown (which then drains or hands it back).
#[test]
fn submit_and_close_never_both_miss() {
    const CLOSED: usize = 1;
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let (queue, state) = (queue.clone(), state.clone());
            thread::spawn(move || {
                queue.store(1, Ordering::Release);
                state.fetch_or(0, Ordering::SeqCst) & CLOSED != 0 // true: settles its own job
            })
        };
        state.fetch_or(CLOSED, Ordering::SeqCst);
        let shutdown_saw_job = queue.load(Ordering::Acquire) == 1;
        let submitter_saw_closed = submitter.join().unwrap();
        assert!(submitter_saw_closed || shutdown_saw_job);
    });
}

/// The control: without the read-modify-writes (plain loads after the steps), loom finds the
/// interleaving where both miss. Shows the models above can fail.
#[test]
#[should_panic(expected = "a job was left with no thread")]
fn without_the_sync_both_can_miss() {
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(1));
        let submitter = {
            let (queue, alive) = (queue.clone(), alive.clone());
            thread::spawn(move || {
                queue.store(1, Ordering::Release);
                alive.load(Ordering::Acquire) == 0
            })
        };
        alive.fetch_sub(1, Ordering::AcqRel);
        let worker_saw_job = queue.load(Ordering::Acquire) == 1;
        let submitter_spawned = submitter.join().unwrap();
        assert!(
            submitter_spawned || worker_saw_job,
            "a job was left with no thread"
        );
    });
}

/// A limit set by hand against the control thread starting its next run (`control.rs`): the
/// setter stores the limit, then triggers the current run's wake; the loop installs a new wake,
/// then takes the limit. Either the loop took the limit, or the wake it now runs with is
/// triggered (so that run ends at once and the next one takes it): never a limit left waiting
/// behind a run that will not end.
#[test]
fn a_limit_set_by_hand_is_never_lost_across_a_restart() {
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Mutex;
    loom::model(|| {
        let manual = Arc::new(Mutex::new(None::<usize>));
        let wake = Arc::new(Mutex::new(Arc::new(AtomicBool::new(false))));
        let setter = {
            let (manual, wake) = (manual.clone(), wake.clone());
            thread::spawn(move || {
                *manual.lock().unwrap() = Some(7);
                wake.lock().unwrap().store(true, Ordering::SeqCst);
            })
        };
        let run_wake = Arc::new(AtomicBool::new(false));
        *wake.lock().unwrap() = run_wake.clone();
        let took = manual.lock().unwrap().take();
        setter.join().unwrap();
        assert!(
            took == Some(7) || run_wake.load(Ordering::SeqCst),
            "the limit was set, not taken, and the run goes on"
        );
    });
}
