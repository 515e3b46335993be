//! A fixed number of calls of one path, for instruction counts under callgrind (which, unlike
//! wall-clock time, do not move with the machine's load):
//!
//! ```text
//! cargo build --release -p ace-benches --bin icount
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
//!     target/release/icount <path> <calls>
//! ```
//!
//! Run it twice (e.g. 2 048 and 22 528 calls: multiples of 64 for the contended paths) and
//! divide the difference of the main thread's instruction counts by the difference of the
//! calls: the per-call cost without the setup.
//! Paths: `tower_limit`, `ace_layer`, `ace_layer_untimed`, `submit` and `acquire` (untimed),
//! `tokio_semaphore`, `ace_semaphore`; and, contended on one thread (64 tasks share 8 permits,
//! each looping acquire → yield → release; `<calls>` operations in all), `ace_contended`,
//! `tokio_contended` and their floor `two_yields` (the same tasks yielding twice, no semaphore);
//! the same three on a 2-worker multi-thread runtime, `ace_contended_mt`, `tokio_contended_mt`
//! and `two_yields_mt` (count every thread's instructions: `benches/icount.sh` does for `*_mt`);
//! and blocking, 8 threads sharing 2 permits, each looping acquire → ~100 ns of work → release,
//! `ace_blocking` and `condvar_blocking` (the tuned Mutex+Condvar peer of the semaphore bench).
//! Their instruction counts leave out what the threads lose to waking and sleeping: for those,
//! time the binary itself (`time icount ace_blocking 1000000`), interleaved with its peer.

use std::hint::black_box;
use std::sync::Arc;

use ace_benches::{blocking_round, calls, manager, runtime, work, CondvarSemaphore, Echo};
use ace_std::tower::AdaptiveConcurrencyLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::Layer;

/// The contended paths: tasks, and the permits they share (as in the semaphore bench).
const TASKS: u64 = 64;
const PERMITS: usize = 8;
/// The blocking paths: threads, and the permits they share (as in the semaphore bench).
const THREADS: u64 = 8;
const THREAD_PERMITS: usize = 2;

/// `n` operations spread over [`TASKS`] tasks on the current runtime, each operation one
/// `op()` awaited.
async fn contended<F, Fut>(n: u64, op: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = n / TASKS;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    op().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// One contended loop of `n` operations: acquire → yield → release.
macro_rules! contended_loop {
    ($rt:expr, $n:expr, $sem:expr) => {{
        let sem = Arc::new($sem);
        $rt.block_on(contended($n, move || {
            let sem = Arc::clone(&sem);
            async move {
                let permit = sem.acquire().await.unwrap();
                tokio::task::yield_now().await;
                drop(permit);
            }
        }));
    }};
}

fn two_yields(rt: &tokio::runtime::Runtime, n: u64) {
    rt.block_on(contended(n, || async {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }));
}

/// `n` operations (acquire → work → release) over [`THREADS`] threads.
fn blocking(n: u64, acquire_release: &(impl Fn() + Sync)) {
    let per = usize::try_from(n / THREADS).expect("calls");
    black_box(blocking_round(THREADS as usize, per, acquire_release));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: icount <path> <calls>");
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("calls"));
    let rt = if path.ends_with("_mt") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    } else {
        runtime()
    };
    match path.as_str() {
        "tower_limit" => {
            let mut svc = ConcurrencyLimitLayer::new(64).layer(Echo);
            rt.block_on(calls(&mut svc, n));
        }
        "ace_layer" | "ace_layer_untimed" => {
            let m = manager(64, path == "ace_layer");
            let mut svc = AdaptiveConcurrencyLayer::new(m).layer(Echo);
            rt.block_on(calls(&mut svc, n));
        }
        // Untimed, as the sampled clock reads depend on the control loop's timing (the
        // `ace_layer` / `ace_layer_untimed` pair shows what timing costs).
        "submit" => {
            let m = manager(64, false);
            rt.block_on(async {
                for i in 0..n {
                    black_box(m.submit(async { black_box(i) }).await.unwrap());
                }
            });
        }
        "acquire" => {
            let m = manager(64, false);
            rt.block_on(async {
                for _ in 0..n {
                    m.acquire().await.unwrap().success();
                }
            });
        }
        "tokio_semaphore" => {
            let sem = Arc::new(tokio::sync::Semaphore::new(64));
            rt.block_on(async {
                for _ in 0..n {
                    drop(black_box(Arc::clone(&sem).acquire_owned().await.unwrap()));
                }
            });
        }
        "ace_semaphore" => {
            let sem = Arc::new(ace_core::Semaphore::new(64));
            rt.block_on(async {
                for _ in 0..n {
                    drop(black_box(Arc::clone(&sem).acquire_owned().await.unwrap()));
                }
            });
        }
        "ace_contended" | "ace_contended_mt" => {
            contended_loop!(rt, n, ace_core::Semaphore::new(PERMITS));
        }
        "tokio_contended" | "tokio_contended_mt" => {
            contended_loop!(rt, n, tokio::sync::Semaphore::new(PERMITS));
        }
        "two_yields" | "two_yields_mt" => two_yields(&rt, n),
        "ace_blocking" => {
            let sem = ace_core::Semaphore::new(THREAD_PERMITS);
            blocking(n, &|| {
                let permit = sem.blocking_acquire().unwrap();
                work();
                drop(permit);
            });
        }
        "condvar_blocking" => {
            let sem = CondvarSemaphore::new(THREAD_PERMITS, true);
            blocking(n, &|| {
                sem.acquire();
                work();
                sem.release();
            });
        }
        other => panic!("unknown path {other}"),
    }
}
