//! The adaptive thread pool under CPU-bound load, with the real CPU reading.
//!
//! A producer keeps the pool's (bounded) queue full of jobs that each spin a core for 20 ms.
//! With every core busy, the CPU reading goes over `cpu_threshold` and the control loop cuts the
//! limit to `min_limit`; the table shows the limit, the jobs running and the CPU reading over
//! time. Run it with
//!
//! ```text
//! cargo run -p ace-examples --example threadpool --release -- 8
//! ```
//!
//! (the argument is the run time in seconds, default 8).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ace_std::threadpool::ThreadPoolManager;
use ace_std::{AimdConfig, Decision};

/// Spins the current core for `work`, and returns something so it is not optimised away.
fn burn(work: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while start.elapsed() < work {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491));
        }
    }
    x
}

fn main() -> Result<(), ace_std::ConfigError> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let config = AimdConfig {
        min_limit: 2,
        max_limit: 32,
        initial_limit: 16,
        cooldown: Duration::from_secs(1),
        adjustment_interval: Duration::from_millis(500),
        ..AimdConfig::default()
    };
    // The last decision, for the table; the pool's default signals are the real CPU and memory
    // readings.
    let last: Arc<Mutex<Option<Decision>>> = Arc::default();
    let record = Arc::clone(&last);
    let pool = Arc::new(
        ThreadPoolManager::builder(config)
            .queue_capacity(64)
            .sink(move |d: &Decision| {
                *record.lock().unwrap() = Some(d.clone());
            })
            .build()?,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Blocks while the queue is full: back-pressure.
                pool.execute(|| {
                    burn(Duration::from_millis(20));
                });
            }
        })
    };

    println!(
        "{:>5}  {:>5}  {:>7}  {:>6}  {:>7}  last decision",
        "t(s)", "limit", "running", "queued", "cpu%"
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(500));
        let stats = pool.stats();
        let decision = last.lock().unwrap().clone();
        let cpu = decision
            .as_ref()
            .and_then(|d| d.signals.cpu_percent)
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        let reason = decision.map_or_else(String::new, |d| {
            format!(
                "{} {}→{}: {}",
                d.action, d.previous_limit, d.new_limit, d.reason
            )
        });
        println!(
            "{:>5.1}  {:>5}  {:>7}  {:>6}  {:>7}  {reason}",
            start.elapsed().as_secs_f64(),
            stats.core.limit,
            stats.core.in_flight,
            stats.core.waiting,
            cpu
        );
    }

    stop.store(true, Ordering::Relaxed);
    // Stop now: the running jobs finish, the queued ones come back (dropped here, on purpose).
    let unstarted = pool.shutdown_now();
    producer.join().expect("producer");
    println!(
        "stopped: {} · {} queued jobs handed back",
        pool.stats(),
        unstarted.len()
    );
    Ok(())
}
