//! [`AdaptiveConcurrencyLayer`] and its [`AdaptiveConcurrency`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ace_core::{Priority, Runtime, TryAcquireError};
use tower_layer::Layer;
use tower_service::Service;

use super::admit::{admit, wait_or_refuse, Acquire, Admit, Refusal};
use super::classify::{Classify, ErrorIsBackPressure, Outcome};
use super::priority::{NoPriority, Prioritize};
use super::queue::{Adaptive, WaitQueue};
use super::BoxError;
use crate::manager::{Manager, Reserved, TaskPermit};

/// What a call does when the limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Wait for a slot (`poll_ready` is pending until one is free): for clients protecting a
    /// downstream. The default. Composes with `tower::load_shed`, which turns the wait into an
    /// immediate `Overloaded` error of its own.
    Wait,
    /// Refuse at once: the call fails with [`Overloaded`](super::Overloaded) without reaching
    /// the inner service. For servers protecting themselves (answer with a 503 through axum's
    /// `HandleErrorLayer`).
    Shed,
    /// Wait for a slot, but with at most `max_waiting` calls of this layer waiting and for at
    /// most `timeout` each; past either bound the call fails with
    /// [`Overloaded`](super::Overloaded).
    Queue {
        /// Calls of this layer (all its services together) that may wait at once.
        max_waiting: usize,
        /// The longest one call waits for a slot.
        timeout: Duration,
    },
    /// [`Queue`](Self::Queue), adaptive (CoDel, per class): first in, first out while a class's
    /// queue drains; once even the shortest wait of a class over an `interval` was above
    /// `target`, its new calls join the front of the class (last in, first out), its calls that
    /// have waited longer than `target` are refused. A call of a lower class behind more
    /// important calls or in a standing queue waits at most `target` (the class below the most
    /// important; each class below it a quarter of the one above), and the least important
    /// class is refused at once behind more important calls or while a more important class's
    /// queue stands (it still takes a slot free at its arrival): under overload the fresh calls,
    /// still worth answering, are served, the more important of the lower classes first, and
    /// the refused ones hear so within `target`. The most important class (and a class under its
    /// guaranteed share) is never refused for a standing queue, only after `timeout`.
    AdaptiveQueue {
        /// Calls of this layer that may wait at once.
        max_waiting: usize,
        /// The longest one call waits for a slot.
        timeout: Duration,
        /// The wait above which a queue counts as standing (CoDel's target, e.g. 5 ms).
        target: Duration,
        /// How long the shortest wait must stay above `target` (CoDel's interval, e.g. 50 ms).
        interval: Duration,
    },
}

impl Admission {
    pub(super) fn adaptive(self) -> Option<Adaptive> {
        match self {
            Self::AdaptiveQueue {
                target, interval, ..
            } => Some(Adaptive { target, interval }),
            _ => None,
        }
    }
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
/// With [`priority`](Self::priority), the slot is taken once the request is seen: `call` reads
/// its [`Priority`] (and deadline), and the response future waits for the slot in that class
/// before it first polls the inner future (so the inner future must not start work before it
/// is polled, as no `async fn` does). A full queue pushes out its least important waiter first;
/// a call whose deadline could not be met is refused at once.
///
/// The manager is a shared handle: build one and give clones of it to several layers to put
/// several services (or a client and a server) under one limit, with one decision log (the
/// manager builder's [`log_writer`](crate::Builder::log_writer)). To count a slow call as
/// back-pressure, put `tower::timeout` inside this layer: its `Elapsed` error is an `Err` to the
/// classifier, and the slot is released at the deadline. Errors are boxed
/// ([`BoxError`]), as with tower's `load_shed` and `timeout`: [`Overloaded`](super::Overloaded)
/// when the call was refused, [`SubmitError::Shutdown`](crate::SubmitError::Shutdown) once the
/// manager is shut down, and the inner service's errors.
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
pub struct AdaptiveConcurrencyLayer<R: Runtime, C = ErrorIsBackPressure, P = NoPriority> {
    manager: Manager<R>,
    admission: Admission,
    classifier: C,
    prioritize: P,
    queue: Arc<WaitQueue>,
}

impl<R: Runtime> AdaptiveConcurrencyLayer<R> {
    /// A layer under `manager`'s limit that waits for a slot ([`Admission::Wait`]) and counts
    /// an `Err` as back-pressure ([`ErrorIsBackPressure`]).
    pub fn new(manager: Manager<R>) -> Self {
        Self {
            manager,
            admission: Admission::Wait,
            classifier: ErrorIsBackPressure,
            prioritize: NoPriority,
            queue: Arc::default(),
        }
    }
}

impl<R: Runtime, C, P> AdaptiveConcurrencyLayer<R, C, P> {
    /// What a call does when the limit is reached (default [`Admission::Wait`]).
    #[must_use]
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Shorthand for [`Admission::Shed`]: refuse at once with [`Overloaded`](super::Overloaded).
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

    /// Shorthand for [`Admission::AdaptiveQueue`]: wait, at most `max_waiting` calls for at most
    /// `timeout` each, first in, first out until a class's waits stay above `target` for an
    /// `interval`, then newest first and stale calls refused.
    #[must_use]
    pub fn adaptive_queue(
        self,
        max_waiting: usize,
        timeout: Duration,
        target: Duration,
        interval: Duration,
    ) -> Self {
        self.admission(Admission::AdaptiveQueue {
            max_waiting,
            timeout,
            target,
            interval,
        })
    }

    /// Gives each request a [`Priority`] (and a deadline) with `prioritize`: a closure
    /// `Fn(&Req) -> Priority`, or [`HttpPriority`](super::HttpPriority) (the `x-priority`
    /// header, deadlines from a [`Deadline`](super::Deadline) extension or `grpc-timeout`).
    ///
    /// The slot is then taken in the response future, in the request's class: a freed slot goes
    /// to the most important class waiting, a full queue refuses the least important waiter
    /// first, and a request that could not get a slot before its deadline is refused at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ace_std::tower::BoxError> {
    /// use std::time::Duration;
    /// use ace_std::tower::{AdaptiveConcurrencyLayer, HttpPriority};
    /// use ace_std::{AimdConfig, Priority};
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
    ///     .default_signals(false)
    ///     .build()?;
    /// let layer = AdaptiveConcurrencyLayer::new(manager.clone())
    ///     .adaptive_queue(64, Duration::from_millis(200), Duration::from_millis(5), Duration::from_millis(50))
    ///     .priority(HttpPriority::new());
    /// let mut svc = ServiceBuilder::new().layer(layer).service(tower::service_fn(
    ///     |_req: http::Request<()>| async { Ok::<_, std::convert::Infallible>("ok") },
    /// ));
    /// let req = http::Request::builder().header("x-priority", "critical").body(())?;
    /// assert_eq!(svc.ready().await?.call(req).await?, "ok");
    /// assert_eq!(manager.stats().priorities[Priority::Critical.rank()].admitted, 1);
    /// # manager.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn priority<P2>(self, prioritize: P2) -> AdaptiveConcurrencyLayer<R, C, P2> {
        AdaptiveConcurrencyLayer {
            manager: self.manager,
            admission: self.admission,
            classifier: self.classifier,
            prioritize,
            queue: self.queue,
        }
    }

    /// Decides which results are back-pressure: a [`Classify`], e.g. [`HttpStatusClassifier`]
    /// or a closure `Fn(&Result<T, E>) -> Outcome`. Default [`ErrorIsBackPressure`].
    ///
    /// [`HttpStatusClassifier`]: super::HttpStatusClassifier
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveConcurrencyLayer<R, C2, P> {
        AdaptiveConcurrencyLayer {
            manager: self.manager,
            admission: self.admission,
            classifier,
            prioritize: self.prioritize,
            queue: self.queue,
        }
    }

    /// The manager whose limit the layer enforces.
    pub fn manager(&self) -> &Manager<R> {
        &self.manager
    }
}

impl<R: Runtime, C: Clone, P: Clone> Clone for AdaptiveConcurrencyLayer<R, C, P> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            prioritize: self.prioritize.clone(),
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<R: Runtime, C, P> fmt::Debug for AdaptiveConcurrencyLayer<R, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("manager", &self.manager)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl<S, R: Runtime, C: Clone, P: Clone> Layer<S> for AdaptiveConcurrencyLayer<R, C, P> {
    type Service = AdaptiveConcurrency<S, R, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency {
            inner,
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            prioritize: self.prioritize.clone(),
            queue: Arc::clone(&self.queue),
            slot: None,
            state: State::Idle,
        }
    }
}

/// How `poll_ready` stands while no slot is held.
enum State<R: Runtime> {
    /// `poll_ready` has not started.
    Idle,
    /// Waiting for a slot. In a `Mutex` only to make the service `Sync` (axum asks for it):
    /// it is reached through `&mut self` and `get_mut`, never locked.
    Acquiring(Mutex<Acquire<R>>),
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
pub struct AdaptiveConcurrency<S, R: Runtime, C = ErrorIsBackPressure, P = NoPriority> {
    inner: S,
    manager: Manager<R>,
    admission: Admission,
    classifier: C,
    prioritize: P,
    queue: Arc<WaitQueue>,
    // The slot held for the next `call`. Apart from `state` so that the fast path writes an
    // empty `Option` (no old state to drop) and `call` takes it with one test; not yet bound
    // to a task (two words, no `Arc`: `call` binds it).
    slot: Option<Reserved>,
    state: State<R>,
}

impl<S, R: Runtime, C, P> AdaptiveConcurrency<S, R, C, P> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The manager whose limit the service enforces.
    pub fn manager(&self) -> &Manager<R> {
        &self.manager
    }

    /// Takes a slot now, or starts waiting for one, or settles the refusal (shed, queue full,
    /// shut down).
    #[inline(always)]
    fn start(&mut self) {
        // The fast path on its own: a slot now goes straight into `slot`.
        match self.manager.try_reserve(Priority::Normal) {
            Ok(slot) => {
                // `slot` is empty here: `get_or_insert` writes it without dropping an old one.
                self.slot.get_or_insert(slot);
            }
            Err(TryAcquireError::Closed) => self.state = State::Refused(Refusal::Shutdown),
            Err(_) => self.start_waiting(),
        }
    }

    /// [`start`](Self::start) once no slot was free: a wait, or a refusal.
    fn start_waiting(&mut self) {
        match wait_or_refuse(
            &self.manager,
            &self.admission,
            &self.queue,
            Priority::Normal,
            None,
        ) {
            Admit::Now(permit) => self.slot = permit.into_reserved(),
            Admit::Refused(refusal) => self.state = State::Refused(refusal),
            Admit::Later(acquire) => self.state = State::Acquiring(Mutex::new(acquire)),
        }
    }
}

impl<S, R: Runtime, C, P> Drop for AdaptiveConcurrency<S, R, C, P> {
    fn drop(&mut self) {
        // A slot reserved by `poll_ready` and never called: readiness not used is no verdict on
        // the downstream, so it goes back quietly (a failure here would read as back-pressure).
        if let Some(slot) = self.slot.take() {
            self.manager.give_back(slot);
        }
    }
}

impl<S: Clone, R: Runtime, C: Clone, P: Clone> Clone for AdaptiveConcurrency<S, R, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            manager: self.manager.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            prioritize: self.prioritize.clone(),
            queue: Arc::clone(&self.queue),
            slot: None,
            state: State::Idle,
        }
    }
}

impl<S: fmt::Debug, R: Runtime, C, P> fmt::Debug for AdaptiveConcurrency<S, R, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.slot, &self.state) {
            (Some(_), _) => "ready",
            (None, State::Idle) => "idle",
            (None, State::Acquiring(_)) => "acquiring",
            (None, State::Refused(_)) => "refused",
        };
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("admission", &self.admission)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, R, C, P, Req> Service<Req> for AdaptiveConcurrency<S, R, C, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: Runtime,
    C: Classify<S::Response, S::Error> + Clone,
    P: Prioritize<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.prioritize.before_call() {
            // The slot is taken once the request's class is known, in the response future.
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        loop {
            // The slot is held while the inner service gets ready: that wait is part of the load
            // the limit bounds.
            if self.slot.is_some() {
                return self.inner.poll_ready(cx).map_err(Into::into);
            }
            match &mut self.state {
                State::Idle => self.start(),
                State::Acquiring(acquire) => {
                    let acquire = acquire.get_mut().unwrap_or_else(PoisonError::into_inner);
                    match ready!(acquire.as_mut().poll(cx)) {
                        Ok(permit) => {
                            self.state = State::Idle;
                            self.slot = permit.into_reserved();
                        }
                        Err(refusal) => self.state = State::Refused(refusal),
                    }
                }
                State::Refused(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.prioritize.before_call() {
            return self.call_prioritized(req);
        }
        if let Some(slot) = self.slot.take() {
            return ResponseFuture {
                state: Response::Running {
                    future: self.inner.call(req),
                    permit: self.manager.bind(slot),
                    classifier: self.classifier.clone(),
                },
            };
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Refused(refusal) => ResponseFuture::refused(refusal),
            State::Idle | State::Acquiring(_) => {
                panic!("AdaptiveConcurrency::call before poll_ready returned Ready(Ok(()))")
            }
        }
    }
}

impl<S, R: Runtime, C: Clone, P> AdaptiveConcurrency<S, R, C, P> {
    /// `call` with a priority: the slot is taken in the request's class, now or in the
    /// response future.
    fn call_prioritized<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, C, R>
    where
        S: Service<Req>,
        P: Prioritize<Req>,
    {
        let priority = self.prioritize.priority(&req);
        let deadline = self.prioritize.deadline(&req);
        let (permit, admit, started) = match admit(
            &self.manager,
            &self.admission,
            &self.queue,
            priority,
            deadline,
        ) {
            Admit::Now(permit) => {
                let started = permit.now();
                (Some(permit), None, Some(started))
            }
            Admit::Later(acquire) => (None, Some(acquire), None),
            Admit::Refused(refusal) => return ResponseFuture::refused(refusal),
        };
        ResponseFuture {
            state: Response::Prioritized {
                future: self.inner.call(req),
                admit,
                permit,
                classifier: self.classifier.clone(),
                queue: Arc::clone(&self.queue),
                started,
            },
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

impl<F, C, R: Runtime> ResponseFuture<F, C, R> {
    fn refused(refusal: Refusal) -> Self {
        Self {
            state: Response::Refused {
                error: Some(refusal.into_error()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = ResponseProj]
    enum Response<F, C, R: Runtime> {
        // The slot was taken in `poll_ready`: the plain path, which carries nothing the
        // priority path needs.
        Running {
            #[pin]
            future: F,
            // Ended in place when the call completes (dropped unended: a failure).
            permit: TaskPermit<R>,
            classifier: C,
        },
        // With a priority: the slot is taken here, and the call's service time feeds the
        // queue's estimate (for deadlines).
        Prioritized {
            #[pin]
            future: F,
            // The wait for the slot; the inner future is not polled before it ends.
            admit: Option<Acquire<R>>,
            permit: Option<TaskPermit<R>>,
            classifier: C,
            queue: Arc<WaitQueue>,
            // When the slot was taken.
            started: Option<Duration>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

/// Ends the call's task as the classifier decides.
#[inline]
fn settle<R: Runtime, C: Classify<T, E>, T, E>(
    permit: &mut TaskPermit<R>,
    classifier: &C,
    result: &Result<T, E>,
) {
    permit.end(match classifier.classify(result) {
        Outcome::Success => true,
        Outcome::BackPressure => false,
    });
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
                settle(permit, classifier, &result);
                Poll::Ready(result.map_err(Into::into))
            }
            ResponseProj::Prioritized {
                future,
                admit,
                permit,
                classifier,
                queue,
                started,
            } => {
                if let Some(acquire) = admit {
                    match ready!(acquire.as_mut().poll(cx)) {
                        Ok(slot) => {
                            *started = Some(slot.now());
                            *permit = Some(slot);
                            *admit = None;
                        }
                        Err(refusal) => {
                            *admit = None;
                            return Poll::Ready(Err(refusal.into_error()));
                        }
                    }
                }
                let result = ready!(future.poll(cx));
                if let (Some(slot), Some(started), Ok(_)) = (permit.as_ref(), *started, &result) {
                    queue.record_service(slot.now().saturating_sub(started));
                }
                if let Some(permit) = permit {
                    settle(permit, classifier, &result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            ResponseProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
