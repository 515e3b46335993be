//! Waiting for a condition in integration tests, with a deadline that fails the test.

use std::time::{Duration, Instant};

/// Polls `done` every 20 ms until it holds; fails the test after `timeout`.
pub(crate) async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
