//! A call's admission under the layer's [`Admission`]: at once, refused, or a wait in the
//! layer's queue (shed by the adaptive queue, refused when its deadline cannot be met).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ace_core::{Priority, Runtime, TryAcquireError};

use super::layer::Admission;
use super::queue::{Adaptive, Join, Ticket, WaitQueue};
use super::{BoxError, Overloaded};
use crate::manager::{Manager, SubmitError, TaskPermit};

pub(super) type Acquire<R> = Pin<Box<dyn Future<Output = Result<TaskPermit<R>, Refusal>> + Send>>;

/// Why a call got no slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    Overloaded,
    Shutdown,
}

impl Refusal {
    pub(super) fn into_error(self) -> BoxError {
        match self {
            Self::Overloaded => Box::new(Overloaded::new()),
            Self::Shutdown => Box::new(SubmitError::Shutdown),
        }
    }
}

/// How a call's admission settled at once, or the wait for it.
pub(super) enum Admit<R: Runtime> {
    Now(TaskPermit<R>),
    Refused(Refusal),
    Later(Acquire<R>),
}

/// Decides a call's admission in class `priority` with `deadline` left, under `admission`.
#[inline]
pub(super) fn admit<R: Runtime>(
    manager: &Manager<R>,
    admission: &Admission,
    queue: &Arc<WaitQueue>,
    priority: Priority,
    deadline: Option<Duration>,
) -> Admit<R> {
    match manager.try_admit(priority) {
        Ok(permit) => Admit::Now(permit),
        Err(TryAcquireError::Closed) => Admit::Refused(Refusal::Shutdown),
        Err(_) => wait_or_refuse(manager, admission, queue, priority, deadline),
    }
}

/// [`admit`] once no slot was free: a wait, or a refusal. Out of line, so that the fast path
/// (inlined into `poll_ready` and `call`) carries none of its frame.
#[inline(never)]
pub(super) fn wait_or_refuse<R: Runtime>(
    manager: &Manager<R>,
    admission: &Admission,
    queue: &Arc<WaitQueue>,
    priority: Priority,
    deadline: Option<Duration>,
) -> Admit<R> {
    let admission = *admission;
    let refuse = || {
        manager.note_refused(priority);
        Admit::Refused(Refusal::Overloaded)
    };
    // A deadline that the wait (the calls ahead, served `limit` at a time) plus the call itself
    // would overrun: refused now rather than timing out in the queue.
    let mut budget = None;
    if let Some(left) = deadline {
        let service = queue.service_time();
        let ahead = u32::try_from(manager.waiting_ahead_of(priority)).unwrap_or(u32::MAX);
        let slots = u32::try_from(manager.limit().max(1)).unwrap_or(u32::MAX);
        let wait = (service * ahead.saturating_add(1)) / slots;
        if wait + service > left {
            return refuse();
        }
        budget = Some(left - service);
    }
    let manager = manager.clone();
    let (max_waiting, timeout) = match admission {
        Admission::Shed => return refuse(),
        Admission::Wait => {
            let Some(budget) = budget else {
                return Admit::Later(Box::pin(async move {
                    manager
                        .acquire_in(priority, false)
                        .await
                        .map_err(|_| Refusal::Shutdown)
                }));
            };
            (usize::MAX, budget)
        }
        Admission::Queue {
            max_waiting,
            timeout,
        } => (max_waiting, timeout),
        Admission::AdaptiveQueue {
            max_waiting,
            timeout,
            ..
        } => (max_waiting, timeout),
    };
    let timeout = budget.map_or(timeout, |budget| budget.min(timeout));
    let adaptive = admission.adaptive();
    let (join, shed) = queue.join(
        priority,
        manager.under_shares(),
        manager.runtime().now(),
        max_waiting,
        adaptive,
    );
    for class in shed {
        manager.note_refused(class);
    }
    let (ticket, newest_first, timeout) = match join {
        Join::Full => return refuse(),
        Join::Queued {
            ticket,
            newest_first,
            max_wait,
        } => (
            ticket,
            newest_first,
            max_wait.map_or(timeout, |w| w.min(timeout)),
        ),
    };
    let sleep = manager.runtime().sleep(timeout);
    let waiter = Waiter {
        manager,
        queue: Arc::clone(queue),
        ticket,
        adaptive,
        admitted: false,
    };
    Admit::Later(Box::pin(async move {
        let result = {
            let acquire = async {
                waiter
                    .manager
                    .acquire_in(priority, newest_first)
                    .await
                    .map_err(|_| Refusal::Shutdown)
            };
            let refused = async {
                let timeout = async {
                    sleep.await;
                    Refusal::Overloaded
                };
                Err(futures_lite::future::or(ShedSignal(&waiter.ticket), timeout).await)
            };
            futures_lite::future::or(acquire, refused).await
        };
        match &result {
            Ok(_) => waiter.admit(),
            // Pushed out: counted by whoever pushed it.
            Err(Refusal::Overloaded) if !waiter.ticket.is_shed() => {
                waiter.manager.note_refused(priority);
            }
            Err(_) => {}
        }
        result
    }))
}

/// Ready (with a refusal) once the queue pushed this call out.
pub(super) struct ShedSignal<'a>(&'a Ticket);

impl Future for ShedSignal<'_> {
    type Output = Refusal;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.waker.register(cx.waker());
        if self.0.is_shed() {
            Poll::Ready(Refusal::Overloaded)
        } else {
            Poll::Pending
        }
    }
}

/// One call in a layer's queue: leaves it when dropped (admitted, refused or cancelled).
pub(super) struct Waiter<R: Runtime> {
    manager: Manager<R>,
    queue: Arc<WaitQueue>,
    ticket: Arc<Ticket>,
    adaptive: Option<Adaptive>,
    admitted: bool,
}

impl<R: Runtime> Waiter<R> {
    /// Leaves the queue admitted: its wait is a CoDel sample.
    fn admit(mut self) {
        self.admitted = true;
    }
}

impl<R: Runtime> Drop for Waiter<R> {
    fn drop(&mut self) {
        let now = self.manager.runtime().now();
        let shed = self.queue.leave(
            &self.ticket,
            self.manager.under_shares(),
            now,
            self.admitted,
            self.adaptive,
        );
        for class in shed {
            self.manager.note_refused(class);
        }
    }
}
