//! The semaphore the managers enforce their limit with.
//!
//! TEMPORARY (issue 7): `ace_core::Semaphore` is being written on branch `sem` and has not
//! reached main yet. Until it does, this is a small mutex-based stand-in with the same names
//! (`new`, `acquire`, `set_limit`, `limit`, `in_use`, `waiting`, `close`, `LimitTarget`), so
//! the swap is one line: `pub(crate) use ace_core::{AcquireError, Permit, Semaphore};`.

use std::sync::Mutex;

use ace_core::{LimitTarget, Usage};
use event_listener::Event;

#[derive(Debug)]
struct State {
    limit: usize,
    in_use: usize,
    waiting: usize,
    closed: bool,
}

/// An adjustable, closable counting semaphore (not fair: a woken waiter may lose its slot
/// to a newcomer).
#[derive(Debug)]
pub(crate) struct Semaphore {
    state: Mutex<State>,
    event: Event,
}

/// The semaphore was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcquireError;

/// A slot, released on drop.
#[must_use]
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.sem.lock().in_use -= 1;
        self.sem.event.notify(1);
    }
}

/// Counts a waiter while it waits, cancel-safely.
struct Waiting<'a>(&'a Semaphore);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl Semaphore {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                limit,
                in_use: 0,
                waiting: 0,
                closed: false,
            }),
            event: Event::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_take(&self) -> Option<Result<Permit<'_>, AcquireError>> {
        let mut s = self.lock();
        if s.closed {
            return Some(Err(AcquireError));
        }
        if s.in_use < s.limit {
            s.in_use += 1;
            return Some(Ok(Permit { sem: self }));
        }
        None
    }

    pub(crate) async fn acquire(&self) -> Result<Permit<'_>, AcquireError> {
        if let Some(r) = self.try_take() {
            return r;
        }
        self.lock().waiting += 1;
        let _waiting = Waiting(self);
        loop {
            let listener = self.event.listen();
            if let Some(r) = self.try_take() {
                return r;
            }
            listener.await;
            if let Some(r) = self.try_take() {
                return r;
            }
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.lock().limit
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.event.notify(usize::MAX);
    }
}

impl LimitTarget for Semaphore {
    fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
        self.event.notify(usize::MAX);
    }

    fn usage(&self) -> Usage {
        let s = self.lock();
        Usage {
            limit: s.limit,
            in_flight: s.in_use,
            waiting: s.waiting,
        }
    }
}
