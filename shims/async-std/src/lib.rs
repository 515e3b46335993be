//! [`AsyncStdRuntime`]: ACE's [`Runtime`] for async-std, and nothing else.
//!
//! **Legacy.** async-std is discontinued upstream in favour of smol; this shim is kept working
//! for programs that still run on it. New code should use `ace-smol`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

use core::future::Future;
use core::pin::Pin;
use core::time::Duration;
use std::time::Instant;

use ace_core::Runtime;

/// ACE's [`Runtime`] on async-std (legacy; see the crate docs).
#[derive(Debug, Clone)]
pub struct AsyncStdRuntime {
    origin: Instant,
}

impl Default for AsyncStdRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncStdRuntime {
    /// The async-std global runtime.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Runtime for AsyncStdRuntime {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        Box::pin(async_std::task::sleep(duration))
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(async_std::task::spawn(future));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[async_std::test]
    async fn sleeps_and_spawns() {
        let rt = AsyncStdRuntime::new();
        let t0 = rt.now();
        rt.sleep(Duration::from_millis(10)).await;
        assert!(rt.now() - t0 >= Duration::from_millis(10));
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            tx.send(3).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), 3);
    }
}
