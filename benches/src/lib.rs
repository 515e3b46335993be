//! Criterion benchmarks: see `benches/benches/*.rs` and BENCHMARKS.md. This library holds what
//! several of them share.

use std::hint::black_box;
use std::sync::{Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ace_std::AimdConfig;

/// The managers' control loops run here, not on the runtime being measured: a pending timer on
/// a current-thread runtime makes every park read the clock, which would charge the loop's
/// existence to each task (perf showed `clock_gettime` from tokio's time driver).
pub fn control_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Median of `rounds` interleaved A/B timings: each round times the peer (`bare`), then ACE
/// (`ace`), on the same runtime, so a machine whose load drifts (2 shared cores) skews both
/// alike. Prints the median ratio `ace / bare` and its range.
pub fn interleaved_ratio(
    name: &str,
    rounds: usize,
    mut bare: impl FnMut() -> Duration,
    mut ace: impl FnMut() -> Duration,
) {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let b = bare();
            let a = ace();
            a.as_secs_f64() / b.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio {name}: median {:.3} (min {:.3}, max {:.3}, {rounds} interleaved rounds)",
        ratios[rounds / 2],
        ratios[0],
        ratios[rounds - 1]
    );
}

/// A manager on the [`control_runtime`] with the limit `limit` (and room to grow to 200), no
/// signal sources and no log; `timed`: whether it times its tasks.
pub fn manager(limit: usize, timed: bool) -> ace_std::tokio::Manager {
    let config = AimdConfig {
        min_limit: 1,
        initial_limit: limit,
        max_limit: limit.max(200),
        // A short interval so the latency sampling settles within the warm-up.
        adjustment_interval: Duration::from_millis(200),
        cooldown: Duration::from_millis(200),
        ..AimdConfig::default()
    };
    // No signal sources and no log: the bench measures the per-task path, which never touches
    // them (the control loop runs once per adjustment interval).
    let control = ace_std::tokio::TokioRuntime::from_handle(control_runtime().handle().clone());
    ace_std::tokio::Manager::builder_with_runtime(control, config)
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .time_tasks(timed)
        .build()
        .unwrap()
}

/// The runtime being measured: tokio, current thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The tower benches' in-memory service: ready at once, answers at once.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl tower::Service<u64> for Echo {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u64, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(std::hint::black_box(req)))
    }
}

/// `n` calls one after another: `ready()`, `call`, await the response.
pub async fn calls<S>(svc: &mut S, n: u64)
where
    S: tower::Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    for i in 0..n {
        let out = svc.ready().await.unwrap().call(i).await.unwrap();
        std::hint::black_box(out);
    }
}

/// The textbook blocking semaphore, as a peer: a count under a mutex and a condvar. With
/// `tuned`, it keeps a waiter count and signals only when someone waits (sparing the syscall of
/// `notify_one` otherwise); without, it signals on every release.
#[derive(Debug)]
pub struct CondvarSemaphore {
    state: Mutex<(usize, usize)>,
    freed: Condvar,
    tuned: bool,
}

impl CondvarSemaphore {
    /// `permits` permits; `tuned`: signal only when someone waits.
    pub fn new(permits: usize, tuned: bool) -> Self {
        Self {
            state: Mutex::new((permits, 0)),
            freed: Condvar::new(),
            tuned,
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) {
        let mut state = self.state.lock().unwrap();
        while state.0 == 0 {
            state.1 += 1;
            state = self.freed.wait(state).unwrap();
            state.1 -= 1;
        }
        state.0 -= 1;
    }

    /// Returns a permit.
    pub fn release(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        let waiting = state.1 > 0;
        drop(state);
        if waiting || !self.tuned {
            self.freed.notify_one();
        }
    }
}

/// A short critical section (~100 ns), so the threads really contend for the permits.
pub fn work() {
    for i in 0..64_u32 {
        black_box(i);
    }
}

/// `threads` threads each do `ops` × (acquire → work → release); returns the time taken.
pub fn blocking_round(
    threads: usize,
    ops: usize,
    acquire_release: &(impl Fn() + Sync),
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..ops {
                        acquire_release();
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for t in handles {
            t.join().unwrap();
        }
        start.elapsed()
    })
}
