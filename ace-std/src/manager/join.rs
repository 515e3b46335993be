//! [`JoinHandle`] and [`JoinError`]: a task started with
//! [`Manager::spawn`](super::Manager::spawn).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::util::panic_message;

/// A task started with [`Manager::spawn`](super::Manager::spawn) did not return a value.
pub struct JoinError {
    pub(super) repr: JoinRepr,
}

pub(super) enum JoinRepr {
    Panic(Box<dyn Any + Send + 'static>),
    Shutdown,
    Cancelled,
}

impl JoinError {
    /// True if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, JoinRepr::Panic(_))
    }

    /// True if the manager was shut down before the task got a slot.
    pub fn is_shut_down(&self) -> bool {
        matches!(self.repr, JoinRepr::Shutdown)
    }

    /// True if the executor dropped the task before it finished (it was shutting down).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, JoinRepr::Cancelled)
    }

    /// The panic payload, if the task panicked; the error back otherwise.
    ///
    /// # Errors
    ///
    /// `self`, if the task did not panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, Self> {
        match self.repr {
            JoinRepr::Panic(p) => Ok(p),
            repr => Err(Self { repr }),
        }
    }

    fn panic_message(&self) -> Option<String> {
        match &self.repr {
            JoinRepr::Panic(p) => Some(panic_message(&**p)),
            _ => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Panic(_) => f
                .debug_tuple("Panic")
                .field(&self.panic_message().unwrap_or_default())
                .finish(),
            JoinRepr::Shutdown => f.write_str("Shutdown"),
            JoinRepr::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Panic(_) => {
                write!(
                    f,
                    "task panicked: {}",
                    self.panic_message().unwrap_or_default()
                )
            }
            JoinRepr::Shutdown => f.write_str(crate::util::SHUT_DOWN),
            JoinRepr::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The handle of a task started with [`Manager::spawn`](super::Manager::spawn): a future of its output.
///
/// Dropping it detaches the task (it still runs).
#[must_use = "dropping a JoinHandle detaches the task"]
pub struct JoinHandle<T> {
    pub(super) rx: futures_channel::oneshot::Receiver<Result<T, JoinError>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or(Err(JoinError {
                repr: JoinRepr::Cancelled,
            }))
        })
    }
}
