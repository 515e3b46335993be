//! [`AdaptiveConcurrencyLayer`] and its [`AdaptiveConcurrency`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ace_core::{Runtime, TryAcquireError};
use tower_layer::Layer;
use tower_service::Service;

use super::classify::{Classify, ErrorIsBackPressure, Outcome};
use super::{BoxError, Overloaded};
use crate::manager::{Manager, SubmitError, TaskPermit};

/// What a call does when the limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Wait for a slot (`poll_ready` is pending until one is free): for clients protecting a
    /// downstream. The default. Composes with `tower::load_shed`, which turns the wait into an
    /// immediate `Overloaded` error of its own.
    Wait,
    /// Refuse at once: the call fails with [`Overloaded`] without reaching the inner service.
    /// For servers protecting themselves (answer with a 503 through axum's `HandleErrorLayer`).
    Shed,
    /// Wait for a slot, but with at most `max_waiting` calls of this layer waiting and for at
    /// most `timeout` each; past either bound the call fails with [`Overloaded`].
    Queue {
        /// Calls of this layer (all its services together) that may wait at once.
        max_waiting: usize,
        /// The longest one call waits for a slot.
        timeout: Duration,
    },
}

/// A tower [`Layer`] that puts a service under a [`Manager`]'s adaptive limit.
///
/// Each call takes a slot of the manager in `poll_ready` and holds it until its response future
/// completes, fails or is dropped (as tower's `ConcurrencyLimit` does with its semaphore). On
/// completion the [classifier](Classify) decides whether the call was a success (its time feeds
/// the latency signal) or back-pressure (a failed task); a response future dropped before it
/// completes counts as failed too (most likely a timeout). A service dropped after `poll_ready`
/// but before `call` gives its slot back quietly: no task, no sample, no failure.
///
/// The manager is a shared handle: build one and give clones of it to several layers to put
/// several services (or a client and a server) under one limit, with one decision log (the
/// manager builder's [`log_writer`](crate::Builder::log_writer)). To count a slow call as
/// back-pressure, put `tower::timeout` inside this layer: its `Elapsed` error is an `Err` to the
/// classifier, and the slot is released at the deadline. Errors are boxed
/// ([`BoxError`]), as with tower's `load_shed` and `timeout`: [`Overloaded`] when the call was
/// refused, [`SubmitError::Shutdown`] once the manager is shut down, and the inner service's
/// errors.
///
/// # Examples
///
/// A client that waits for a slot, HTTP 429/503 counting as back-pressure:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ace_std::tower::BoxError> {
/// use ace_std::tower::{AdaptiveConcurrencyLayer, HttpStatusClassifier};
/// use ace_std::AimdConfig;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
///     .default_signals(false)
///     .build()?;
/// let downstream = tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new("hello"))
/// });
/// let mut client = ServiceBuilder::new()
///     .layer(AdaptiveConcurrencyLayer::new(manager.clone()).classifier(HttpStatusClassifier))
///     .service(downstream);
/// let response = client.ready().await?.call(http::Request::new(())).await?;
/// assert_eq!(*response.body(), "hello");
/// assert_eq!(manager.stats().in_flight, 0);
/// # manager.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct AdaptiveConcurrencyLayer<R: Runtime, C = ErrorIsBackPressure> {
    manager: Manager<R>,
    admission: Admission,
    classifier: C,
    queued: Arc<AtomicUsize>,
}

impl<R: Runtime> AdaptiveConcurrencyLayer<R> {
    /// A layer under `manager`'s limit that waits for a slot ([`Admission::Wait`]) and counts
    /// an `Err` as back-pressure ([`ErrorIsBackPressure`]).
    pub fn new(manager: Manager<R>) -> Self {
        Self {
            manager,
            admission: Admission::Wait,
            classifier: ErrorIsBackPressure,
            queued: Arc::default(),
        }
    }
}

impl<R: Runtime, C> AdaptiveConcurrencyLayer<R, C> {
    /// What a call does when the limit is reached (default [`Admission::Wait`]).
    #[must_use]
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Shorthand for [`Admission::Shed`]: refuse at once with [`Overloaded`].
    #[must_use]
    pub fn shed(self) -> Self {
        self.admission(Admission::Shed)
    }

    /// Shorthand for [`Admission::Queue`]: wait, with at most `max_waiting` calls waiting and
    /// for at most `timeout` each.
    #[must_use]
    pub fn queue(self, max_waiting: usize, timeout: Duration) -> Self {
        self.admission(Admission::Queue {
            max_waiting,
            timeout,
        })
    }

    /// Decides which results are back-pressure: a [`Classify`], e.g. [`HttpStatusClassifier`]
    /// or a closure `Fn(&Result<T, E>) -> Outcome`. Default [`ErrorIsBackPressure`].
    ///
    /// [`HttpStatusClassifier`]: super::HttpStatusClassifier
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveConcurrencyLayer<R, C2> {
        AdaptiveConcurrencyLayer {
            manager: self.manager,
            admission: self.admission,
            classifier,
            queued: self.queued,
        }
    }

    /// The manager whose limit the layer enforces.
    pub fn manager(&self) -> &Manager<R> {
        &self.manager
    }
}

impl<R: Runtime, C: Clone> Clone for AdaptiveConcurrencyLayer<R, C> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            queued: Arc::clone(&self.queued),
        }
    }
}

impl<R: Runtime, C> fmt::Debug for AdaptiveConcurrencyLayer<R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("manager", &self.manager)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl<S, R: Runtime, C: Clone> Layer<S> for AdaptiveConcurrencyLayer<R, C> {
    type Service = AdaptiveConcurrency<S, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency {
            inner,
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            queued: Arc::clone(&self.queued),
            state: State::Idle,
        }
    }
}

type Acquire<R> = Pin<Box<dyn Future<Output = Result<TaskPermit<R>, Refusal>> + Send>>;

/// Why a call got no slot.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Overloaded,
    Shutdown,
}

impl Refusal {
    fn into_error(self) -> BoxError {
        match self {
            Self::Overloaded => Box::new(Overloaded::new()),
            Self::Shutdown => Box::new(SubmitError::Shutdown),
        }
    }
}

/// One waiter of a [`Admission::Queue`] layer: counted until dropped.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum State<R: Runtime> {
    /// `poll_ready` has not started.
    Idle,
    /// Waiting for a slot. In a `Mutex` only to make the service `Sync` (axum asks for it):
    /// it is reached through `&mut self` and `get_mut`, never locked.
    Acquiring(Mutex<Acquire<R>>),
    /// A slot is held for the next `call`.
    Ready(TaskPermit<R>),
    /// The next `call` fails without reaching the inner service.
    Refused(Refusal),
}

/// The [`Service`] of an [`AdaptiveConcurrencyLayer`].
///
/// A clone starts without a slot of its own (as a clone of tower's `ConcurrencyLimit` does).
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` before it (tower's contract).
pub struct AdaptiveConcurrency<S, R: Runtime, C = ErrorIsBackPressure> {
    inner: S,
    manager: Manager<R>,
    admission: Admission,
    classifier: C,
    queued: Arc<AtomicUsize>,
    state: State<R>,
}

impl<S, R: Runtime, C> AdaptiveConcurrency<S, R, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The manager whose limit the service enforces.
    pub fn manager(&self) -> &Manager<R> {
        &self.manager
    }

    /// Starts waiting for a slot, or settles at once (shed, queue full, shut down).
    fn start(&mut self) -> State<R> {
        match self.manager.try_acquire() {
            Ok(permit) => return State::Ready(permit),
            Err(TryAcquireError::Closed) => return State::Refused(Refusal::Shutdown),
            Err(_) => {}
        }
        let manager = self.manager.clone();
        match self.admission {
            Admission::Shed => {
                self.manager.note_refused(ace_core::Priority::Normal);
                State::Refused(Refusal::Overloaded)
            }
            Admission::Wait => State::Acquiring(Mutex::new(Box::pin(async move {
                manager.acquire().await.map_err(|_| Refusal::Shutdown)
            }))),
            Admission::Queue {
                max_waiting,
                timeout,
            } => {
                if self.queued.fetch_add(1, Ordering::Relaxed) >= max_waiting {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    self.manager.note_refused(ace_core::Priority::Normal);
                    return State::Refused(Refusal::Overloaded);
                }
                let queued = Queued(Arc::clone(&self.queued));
                let sleep = manager.runtime().sleep(timeout);
                State::Acquiring(Mutex::new(Box::pin(async move {
                    let _queued = queued;
                    let acquire = async { manager.acquire().await.map_err(|_| Refusal::Shutdown) };
                    let timeout = async {
                        sleep.await;
                        Err(Refusal::Overloaded)
                    };
                    futures_lite::future::or(acquire, timeout).await
                })))
            }
        }
    }
}

impl<S, R: Runtime, C> Drop for AdaptiveConcurrency<S, R, C> {
    fn drop(&mut self) {
        // A slot reserved by `poll_ready` and never called: readiness not used is no verdict on
        // the downstream, so it goes back quietly (a failure here would read as back-pressure).
        if let State::Ready(permit) = std::mem::replace(&mut self.state, State::Idle) {
            permit.release();
        }
    }
}

impl<S: Clone, R: Runtime, C: Clone> Clone for AdaptiveConcurrency<S, R, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            queued: Arc::clone(&self.queued),
            state: State::Idle,
        }
    }
}

impl<S: fmt::Debug, R: Runtime, C> fmt::Debug for AdaptiveConcurrency<S, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Acquiring(_) => "acquiring",
            State::Ready(_) => "ready",
            State::Refused(_) => "refused",
        };
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("admission", &self.admission)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, R, C, Req> Service<Req> for AdaptiveConcurrency<S, R, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: Runtime,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.state {
                State::Idle => self.state = self.start(),
                State::Acquiring(acquire) => {
                    let acquire = acquire.get_mut().unwrap_or_else(PoisonError::into_inner);
                    self.state = match ready!(acquire.as_mut().poll(cx)) {
                        Ok(permit) => State::Ready(permit),
                        Err(refusal) => State::Refused(refusal),
                    };
                }
                // The slot is held while the inner service gets ready: that wait is part of
                // the load the limit bounds.
                State::Ready(_) => return self.inner.poll_ready(cx).map_err(Into::into),
                State::Refused(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(permit) => ResponseFuture {
                state: Response::Running {
                    future: self.inner.call(req),
                    permit: Some(permit),
                    classifier: self.classifier.clone(),
                },
            },
            State::Refused(refusal) => ResponseFuture {
                state: Response::Refused {
                    error: Some(refusal.into_error()),
                },
            },
            State::Idle | State::Acquiring(_) => {
                panic!("AdaptiveConcurrency::call before poll_ready returned Ready(Ok(()))")
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AdaptiveConcurrency`]: holds the call's slot until it ends.
    pub struct ResponseFuture<F, C, R: Runtime> {
        #[pin]
        state: Response<F, C, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = ResponseProj]
    enum Response<F, C, R: Runtime> {
        Running {
            #[pin]
            future: F,
            permit: Option<TaskPermit<R>>,
            classifier: C,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<F, C, R: Runtime> fmt::Debug for ResponseFuture<F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refused = matches!(self.state, Response::Refused { .. });
        f.debug_struct("ResponseFuture")
            .field("refused", &refused)
            .finish_non_exhaustive()
    }
}

impl<F, C, R, T, E> Future for ResponseFuture<F, C, R>
where
    R: Runtime,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ResponseProj::Running {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    match classifier.classify(&result) {
                        Outcome::Success => permit.success(),
                        Outcome::BackPressure => permit.failure(),
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            ResponseProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
