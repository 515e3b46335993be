//! What the load tests over loopback share: the paused-clock runner with its real-time
//! watchdog, the quantile they read latencies with, and a manager that reads only its tasks.

use std::sync::mpsc;
use std::time::Duration;

use ace_std::AimdConfig;

/// Runs `test` on a current-thread runtime with tokio's clock paused: it jumps to the next timer
/// whenever every task waits, so a modelled downstream's latencies are the model's own, not the
/// machine's (on a busy machine HTTP's own work would add tens of milliseconds to a 50 ms
/// request and read as a knee). A busy machine slows the run, not its figures. `limit` is of
/// real time (the paused clock cannot time a hang out).
pub(crate) fn on_paused_clock<F>(limit: Duration, test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, finished) = mpsc::channel();
    let body = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
            .block_on(test());
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(body.join().expect_err("the test body panicked"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test hung"),
    }
}

/// The `q` quantile (0..=1) of `xs`, by the nearest rank; zero if there are none.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "sample counts are far below 2^52"
)]
pub(crate) fn quantile(mut xs: Vec<Duration>, q: f64) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort_unstable();
    let rank = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// A tokio manager's builder on `config` that reads only the latency of its tasks, with no log.
pub(crate) fn quiet(config: AimdConfig) -> ace_std::tokio::Builder {
    ace_std::tokio::Manager::builder(config)
        .default_signals(false)
        .tracing(false)
        .metrics(false)
}
