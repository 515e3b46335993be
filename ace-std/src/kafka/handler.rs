//! The user's handler, two ways: a typed first attempt polled once in place, with no allocation
//! when it completes at once, and a boxed one for retries.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_lite::future::Boxed;

use super::error::BoxError;
use super::KafkaMessage;

/// The outcome of one attempt: the handler's result, or its panic.
pub(crate) type Attempt = Result<Result<(), BoxError>, Box<dyn Any + Send>>;

/// The handler for retries: one boxed future per attempt.
pub(crate) type HandlerFn = Arc<dyn Fn(KafkaMessage) -> Boxed<Result<(), BoxError>> + Send + Sync>;

/// What a first attempt did on its first poll.
pub(crate) enum First {
    /// It completed (or panicked).
    Ready(Attempt),
    /// It is still running: poll this (from a task, which registers a real waker) to finish it.
    Pending(Boxed<Attempt>),
}

/// Starts a message's first attempt and polls it once, on the consumer task.
pub(crate) trait FirstAttempt: Send {
    fn start(&mut self, message: KafkaMessage) -> First;
}

/// Both forms of one handler: from [`handler`](super::Builder::handler).
pub(crate) struct Handler {
    pub(crate) first: Box<dyn FirstAttempt>,
    pub(crate) retry: HandlerFn,
}

impl Handler {
    pub(crate) fn new<F, Fut, E>(handler: F) -> Self
    where
        F: Fn(KafkaMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handler = Arc::new(handler);
        let retry: HandlerFn = {
            let handler = Arc::clone(&handler);
            Arc::new(move |msg| {
                let fut = handler(msg);
                Box::pin(async move { fut.await.map_err(Into::into) })
            })
        };
        Self {
            first: Box::new(Typed {
                handler,
                spare: None,
            }),
            retry,
        }
    }
}

/// The first attempt, knowing the handler's future type: the future is polled in a box kept
/// from one message to the next, so a handler that completes on its first poll costs no
/// allocation. A pending one keeps the box and continues elsewhere.
struct Typed<F, Fut> {
    handler: Arc<F>,
    /// An empty box, pinned, for the next future.
    spare: Option<Pin<Box<Option<Fut>>>>,
}

impl<F, Fut, E> FirstAttempt for Typed<F, Fut>
where
    F: Fn(KafkaMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn start(&mut self, message: KafkaMessage) -> First {
        let handler = &*self.handler;
        let slot = self.spare.get_or_insert_with(|| Box::pin(None));
        // One `catch_unwind` for the call and the first poll; the future is built in its box.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            slot.set(Some(handler(message)));
            let Some(fut) = slot.as_mut().as_pin_mut() else {
                unreachable!("just set")
            };
            // Polled again at once by its task if pending, which registers the real waker.
            fut.poll(&mut Context::from_waker(Waker::noop()))
        }));
        match polled {
            Ok(Poll::Ready(result)) => {
                slot.set(None);
                First::Ready(Ok(result.map_err(Into::into)))
            }
            Ok(Poll::Pending) => match self.spare.take() {
                Some(slot) => First::Pending(Box::pin(Resume(slot))),
                None => unreachable!("the slot was just used"),
            },
            Err(panic) => {
                // A future that panicked is dropped with its box, not reused.
                self.spare = None;
                First::Ready(Err(panic))
            }
        }
    }
}

/// Polls the future in `slot`, catching a panic.
fn poll_slot<Fut, E>(slot: Pin<&mut Option<Fut>>, cx: &mut Context<'_>) -> Poll<Attempt>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let Some(fut) = slot.as_pin_mut() else {
        unreachable!("the slot holds a future until it completes")
    };
    match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(result)) => Poll::Ready(Ok(result.map_err(Into::into))),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// A first attempt that did not complete on its first poll.
struct Resume<Fut>(Pin<Box<Option<Fut>>>);

impl<Fut, E> Future for Resume<Fut>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    type Output = Attempt;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Attempt> {
        let outcome = std::task::ready!(poll_slot(self.0.as_mut(), cx));
        // Drop the finished future now, not when the task ends.
        self.0.set(None);
        Poll::Ready(outcome)
    }
}

/// Catches a panic while polling the inner future, so a panicking handler becomes an error.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> KafkaMessage {
        KafkaMessage::for_test(5)
    }

    #[test]
    fn reuses_the_box_when_the_handler_completes_at_once() {
        let mut h = Handler::new(|_m| async { Ok::<(), std::io::Error>(()) });
        assert!(matches!(h.first.start(msg()), First::Ready(Ok(Ok(())))));
        assert!(matches!(h.first.start(msg()), First::Ready(Ok(Ok(())))));
    }

    #[test]
    fn reports_errors_and_panics_of_the_first_poll() {
        let mut h = Handler::new(|_m| async { Err::<(), _>(std::io::Error::other("no")) });
        assert!(matches!(h.first.start(msg()), First::Ready(Ok(Err(_)))));
        let mut h = Handler::new(|_m| async {
            panic!("boom");
            #[allow(unreachable_code, reason = "the future's type")]
            Ok::<(), std::io::Error>(())
        });
        assert!(matches!(h.first.start(msg()), First::Ready(Err(_))));
        let mut h = Handler::new(|_m| -> std::future::Ready<Result<(), std::io::Error>> {
            panic!("before the future")
        });
        assert!(matches!(h.first.start(msg()), First::Ready(Err(_))));
    }

    #[tokio::test]
    async fn finishes_a_pending_first_attempt_elsewhere() {
        let mut h = Handler::new(|_m| async {
            tokio::task::yield_now().await;
            Ok::<(), std::io::Error>(())
        });
        let First::Pending(rest) = h.first.start(msg()) else {
            panic!("a yielding handler completes on its second poll")
        };
        assert!(matches!(tokio::spawn(rest).await.unwrap(), Ok(Ok(()))));
        assert!(matches!(h.first.start(msg()), First::Pending(_)));
    }
}
