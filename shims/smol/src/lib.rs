//! [`SmolRuntime`]: ACE's [`Runtime`] for smol (async-executor + async-io), and nothing else.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use ace_core::Runtime;
use async_executor::Executor;

/// ACE's [`Runtime`] on smol.
///
/// Spawns onto a given [`Executor`], or, by default, onto smol's global executor
/// (`smol::spawn`); sleeps with `async_io::Timer`.
#[derive(Clone)]
pub struct SmolRuntime {
    executor: Option<Arc<Executor<'static>>>,
    origin: Instant,
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolRuntime")
            .field("own_executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for SmolRuntime {
    fn default() -> Self {
        Self::global()
    }
}

impl SmolRuntime {
    /// Tasks go to smol's global executor (the one behind `smol::spawn`).
    pub fn global() -> Self {
        Self {
            executor: None,
            origin: Instant::now(),
        }
    }

    /// Tasks go to `executor`, which the caller must keep running.
    pub fn with_executor(executor: Arc<Executor<'static>>) -> Self {
        Self {
            executor: Some(executor),
            origin: Instant::now(),
        }
    }
}

/// The sleep future of [`SmolRuntime`]: an `async_io::Timer` that yields `()`.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Runtime for SmolRuntime {
    type Sleep = Sleep;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        Sleep(async_io::Timer::after(duration))
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.executor {
            Some(ex) => ex.spawn(future).detach(),
            None => spawn_global(future),
        }
    }
}

/// smol's global executor, as `smol::spawn` uses it, without depending on all of smol.
fn spawn_global<F: Future<Output = ()> + Send + 'static>(future: F) {
    use std::sync::OnceLock;
    static GLOBAL: OnceLock<Arc<Executor<'static>>> = OnceLock::new();
    let ex = GLOBAL.get_or_init(|| {
        let ex = Arc::new(Executor::new());
        let runner = Arc::clone(&ex);
        std::thread::Builder::new()
            .name("ace-smol".into())
            .spawn(move || {
                async_io::block_on(runner.run(core::future::pending::<()>()));
            })
            .expect("cannot spawn the ace-smol executor thread");
        ex
    });
    ex.spawn(future).detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_and_spawns() {
        let rt = SmolRuntime::global();
        smol::block_on(async {
            let t0 = rt.now();
            rt.sleep(Duration::from_millis(10)).await;
            assert!(rt.now() - t0 >= Duration::from_millis(10));
            let (tx, rx) = smol::channel::bounded(1);
            rt.spawn(async move {
                tx.send(5).await.unwrap();
            });
            assert_eq!(rx.recv().await.unwrap(), 5);
        });
    }
}
