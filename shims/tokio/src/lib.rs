//! [`TokioRuntime`]: ACE's [`Runtime`] for tokio, and nothing else.
//!
//! This crate is the template for embedding ACE in another executor: implement
//! [`Runtime`]'s three methods (spawn, sleep, now) and the core's control loop runs on it.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

use core::future::Future;
use core::time::Duration;

use ace_core::Runtime;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// ACE's [`Runtime`] on a tokio runtime.
///
/// Time is tokio's [`Instant`], so a paused test clock (`tokio::time::pause`) drives the control
/// loop deterministically.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
    origin: Instant,
}

impl TokioRuntime {
    /// The runtime of the calling context.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`Handle::current`] does.
    #[track_caller]
    pub fn current() -> Self {
        Self::from_handle(Handle::current())
    }

    /// The runtime behind `handle`.
    pub fn from_handle(handle: Handle) -> Self {
        let _guard = handle.enter();
        Self {
            handle,
            origin: Instant::now(),
        }
    }

    /// The tokio handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Runtime for TokioRuntime {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        let _guard = self.handle.enter();
        tokio::time::sleep(duration)
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn clock_follows_paused_time() {
        let rt = TokioRuntime::current();
        let t0 = rt.now();
        rt.sleep(Duration::from_secs(2)).await;
        assert_eq!(rt.now() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_runs_the_task() {
        let rt = TokioRuntime::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            tx.send(7).unwrap();
        });
        assert_eq!(rx.await.unwrap(), 7);
    }
}
