//! [`AdaptiveStreamExt`]: process a stream with the concurrency a [`Manager`] sets.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ace_core::{Runtime, TryAcquireError};
use futures_lite::Stream;
use futures_util::stream::FuturesUnordered;

use crate::manager::{Manager, SubmitError, TaskPermit};

/// The adaptive counterparts of `buffer_unordered` and `for_each_concurrent`: each item's
/// future runs once it has a slot of the manager, as many at once as its limit allows, and the
/// outputs come out as they finish.
///
/// Each running future holds a slot (it counts as in flight) and is timed into the manager's
/// latency signal. An item is pulled from the stream only when a slot is free, so a slow
/// downstream slows the reading too, and no slot is held while the stream has no item (other
/// users of the manager keep it). If another user takes the free slot between the pull and the
/// start, that one item waits for the next slot: the look-ahead is at most one item. Once the
/// manager is shut down no new item starts: the stream ends when the running ones have finished.
///
/// # Cancel safety
///
/// Dropping the stream (or the `for_each_adaptive` future) drops the running futures and
/// releases their slots; an item pulled but not started is dropped with them.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ace_std::ConfigError> {
/// use ace_std::tower::AdaptiveStreamExt;
/// use ace_std::AimdConfig;
/// use futures::StreamExt;
///
/// let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
///     .default_signals(false)
///     .build()?;
/// let mut squares: Vec<u64> = futures::stream::iter(1..=10u64)
///     .adaptive_map(&manager, |i| async move { i * i })
///     .collect()
///     .await;
/// squares.sort_unstable();
/// assert_eq!(squares.iter().sum::<u64>(), 385);
/// assert_eq!(manager.stats().in_flight, 0);
/// # manager.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait AdaptiveStreamExt: Stream + Sized {
    /// Runs `f(item)` for each item under `manager`'s limit; yields the outputs as they finish.
    /// Every output counts as a success for the latency signal.
    fn adaptive_map<R, F, Fut>(self, manager: &Manager<R>, f: F) -> AdaptiveMap<Self, F, Fut, R>
    where
        R: Runtime,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future,
    {
        AdaptiveMap::new(self, manager, f, |_| true)
    }

    /// [`adaptive_map`](Self::adaptive_map) for fallible work: an `Err` output counts as a
    /// failed task (back-pressure) in the latency signal.
    fn adaptive_map_result<R, F, Fut, T, E>(
        self,
        manager: &Manager<R>,
        f: F,
    ) -> AdaptiveMap<Self, F, Fut, R>
    where
        R: Runtime,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        AdaptiveMap::new(self, manager, f, Result::is_ok)
    }

    /// Runs `f(item)` for each item under `manager`'s limit, to the end of the stream.
    fn for_each_adaptive<R, F, Fut>(
        self,
        manager: &Manager<R>,
        f: F,
    ) -> ForEachAdaptive<Self, F, Fut, R>
    where
        R: Runtime,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future<Output = ()>,
    {
        ForEachAdaptive {
            map: self.adaptive_map(manager, f),
        }
    }
}

impl<S: Stream> AdaptiveStreamExt for S {}

pin_project_lite::pin_project! {
    /// One item's future and its slot.
    struct Task<Fut: Future, R: Runtime> {
        #[pin]
        future: Fut,
        permit: Option<TaskPermit<R>>,
        ok: fn(&Fut::Output) -> bool,
    }
}

impl<Fut: Future, R: Runtime> Future for Task<Fut, R> {
    type Output = Fut::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.future.poll(cx));
        if let Some(permit) = this.permit.take() {
            if (this.ok)(&out) {
                permit.success();
            } else {
                permit.failure();
            }
        }
        Poll::Ready(out)
    }
}

type Acquire<R> = Pin<Box<dyn Future<Output = Result<TaskPermit<R>, SubmitError>> + Send>>;

pin_project_lite::pin_project! {
    /// The stream of [`AdaptiveStreamExt::adaptive_map`].
    #[must_use = "streams do nothing unless polled"]
    pub struct AdaptiveMap<St: Stream, F, Fut: Future, R: Runtime> {
        #[pin]
        stream: St,
        f: F,
        manager: Manager<R>,
        ok: fn(&Fut::Output) -> bool,
        // An item pulled when a slot was free, whose slot another user took first.
        next: Option<St::Item>,
        acquire: Option<Acquire<R>>,
        // The stream has ended, or the manager is shut down: pull no more.
        done: bool,
        running: FuturesUnordered<Task<Fut, R>>,
    }
}

impl<St: Stream, F, Fut: Future, R: Runtime> AdaptiveMap<St, F, Fut, R> {
    fn new(stream: St, manager: &Manager<R>, f: F, ok: fn(&Fut::Output) -> bool) -> Self {
        Self {
            stream,
            f,
            manager: manager.clone(),
            ok,
            next: None,
            acquire: None,
            done: false,
            running: FuturesUnordered::new(),
        }
    }
}

/// Waits for a slot of `manager`.
fn acquire<R: Runtime>(manager: &Manager<R>) -> Acquire<R> {
    let manager = manager.clone();
    Box::pin(async move { manager.acquire().await })
}

impl<St: Stream, F, Fut: Future, R: Runtime> fmt::Debug for AdaptiveMap<St, F, Fut, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveMap")
            .field("running", &self.running.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<St, F, Fut, R> Stream for AdaptiveMap<St, F, Fut, R>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future,
    R: Runtime,
{
    type Item = Fut::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // Start items while there are items and slots: a slot first (held, or seen free), then
        // the item, so no item is pulled to wait for a slot. Each wait registers this waker.
        while !*this.done {
            if this.manager.is_shut_down() {
                // No new item starts; one pulled in a race and still waiting is dropped.
                *this.next = None;
                *this.acquire = None;
                *this.done = true;
                break;
            }
            let mut permit = None;
            if let Some(acquire) = this.acquire.as_mut() {
                let Poll::Ready(acquired) = acquire.as_mut().poll(cx) else {
                    break;
                };
                *this.acquire = None;
                let Ok(acquired) = acquired else {
                    // Shut down: no more items (one waiting for this slot is dropped).
                    *this.next = None;
                    *this.done = true;
                    break;
                };
                permit = Some(acquired);
            } else if this.next.is_none() && !this.manager.has_free_slot() {
                *this.acquire = Some(acquire(this.manager));
                continue;
            }
            let item = match this.next.take() {
                Some(item) => item,
                None => match this.stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => item,
                    end_or_pending => {
                        // A slot taken for no item goes back untouched: the stream is not
                        // the downstream, and holding it would starve the manager's other users.
                        if let Some(permit) = permit {
                            permit.release();
                        }
                        *this.done = end_or_pending.is_ready();
                        break;
                    }
                },
            };
            let permit = match permit {
                Some(permit) => permit,
                None => match this.manager.try_acquire() {
                    Ok(permit) => permit,
                    Err(TryAcquireError::Closed) => {
                        // Shut down: the item is dropped, and no more are pulled.
                        *this.done = true;
                        break;
                    }
                    // Another user of the manager took the free slot first: this one item
                    // waits for the next.
                    Err(_) => {
                        *this.next = Some(item);
                        *this.acquire = Some(acquire(this.manager));
                        continue;
                    }
                },
            };
            this.running.push(Task {
                future: (this.f)(item),
                permit: Some(permit),
                ok: *this.ok,
            });
        }
        match Pin::new(&mut *this.running).poll_next(cx) {
            Poll::Ready(Some(out)) => Poll::Ready(Some(out)),
            // Nothing running: the end if nothing more will start, else the stream or the
            // acquire above has registered the waker.
            Poll::Ready(None) if *this.done => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Outputs still to come: the running, the waiting item, and the stream's rest.
        let queued = self.running.len() + usize::from(self.next.is_some());
        if self.done {
            return (queued, Some(queued));
        }
        let (low, high) = self.stream.size_hint();
        (
            low.saturating_add(queued),
            high.and_then(|h| h.checked_add(queued)),
        )
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AdaptiveStreamExt::for_each_adaptive`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ForEachAdaptive<St: Stream, F, Fut: Future, R: Runtime> {
        #[pin]
        map: AdaptiveMap<St, F, Fut, R>,
    }
}

impl<St: Stream, F, Fut: Future, R: Runtime> fmt::Debug for ForEachAdaptive<St, F, Fut, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForEachAdaptive")
            .field("map", &self.map)
            .finish()
    }
}

impl<St, F, Fut, R> Future for ForEachAdaptive<St, F, Fut, R>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future<Output = ()>,
    R: Runtime,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut map = self.project().map;
        while std::task::ready!(map.as_mut().poll_next(cx)).is_some() {}
        Poll::Ready(())
    }
}
