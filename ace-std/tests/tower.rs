//! The tower layer and the stream adapter on in-memory services: where the slot is taken and
//! released, the three admission modes, classification, shutdown, and cancellation.
#![cfg(all(feature = "tower", feature = "tokio", not(loom)))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, AdaptiveStreamExt, BoxError, Outcome, Overloaded};
use ace_std::{AimdConfig, SubmitError};
use futures::channel::oneshot;
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

type Manager = ace_std::tokio::Manager;

/// A manager whose limit stays at `limit` (min = max), reading no machine signals.
fn fixed(limit: usize) -> Manager {
    Manager::builder(AimdConfig {
        min_limit: limit,
        max_limit: limit,
        initial_limit: limit,
        ..AimdConfig::default()
    })
    .default_signals(false)
    .tracing(false)
    .metrics(false)
    .build()
    .expect("a valid config")
}

/// A service whose calls end when the test sends on the channel they carry; counts its calls.
#[derive(Clone, Default)]
struct Gated(Arc<AtomicUsize>);

type Gate = oneshot::Receiver<Result<u32, &'static str>>;

impl Service<Gate> for Gated {
    type Response = u32;
    type Error = &'static str;
    type Future = futures::future::BoxFuture<'static, Result<u32, &'static str>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, rx: Gate) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { rx.await.unwrap_or(Err("sender dropped")) })
    }
}

fn gated(calls: Arc<AtomicUsize>) -> Gated {
    Gated(calls)
}

fn in_flight(m: &Manager) -> usize {
    m.stats().in_flight
}

/// Fails the test instead of hanging it.
async fn watchdog<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the test hung")
}

#[tokio::test]
async fn should_hold_the_slot_from_poll_ready_to_the_end_of_the_response() {
    watchdog(async {
        let m = fixed(2);
        let mut svc = AdaptiveConcurrencyLayer::new(m.clone()).layer(gated(Arc::default()));
        svc.ready().await.unwrap();
        assert_eq!(in_flight(&m), 1, "poll_ready takes the slot");
        let (tx, rx) = oneshot::channel();
        let call = svc.call(rx);
        assert_eq!(in_flight(&m), 1, "the response future holds it");
        tx.send(Ok(7)).unwrap();
        assert_eq!(call.await.unwrap(), 7);
        assert_eq!(in_flight(&m), 0, "released on completion");
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_wait_at_the_limit_and_be_ready_when_a_slot_frees() {
    watchdog(async {
        let m = fixed(1);
        let svc = AdaptiveConcurrencyLayer::new(m.clone()).layer(gated(Arc::default()));
        let (mut a, mut b) = (svc.clone(), svc);
        let (tx, rx) = oneshot::channel();
        let first = a.ready().await.unwrap().call(rx);
        assert!(b.ready().now_or_never().is_none(), "no slot: pending");
        assert_eq!(m.stats().waiting, 1);
        tx.send(Ok(1)).unwrap();
        first.await.unwrap();
        b.ready().await.unwrap();
        assert_eq!(in_flight(&m), 1);
        // A ready service holds its slot until it is called or dropped.
        drop(b);
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_release_the_slot_when_the_response_future_is_dropped() {
    watchdog(async {
        let m = fixed(1);
        let mut svc = AdaptiveConcurrencyLayer::new(m.clone()).layer(gated(Arc::default()));
        let (_tx, rx) = oneshot::channel();
        let call = svc.ready().await.unwrap().call(rx);
        assert_eq!(in_flight(&m), 1);
        drop(call);
        assert_eq!(in_flight(&m), 0);
        // A service dropped while it waits for a slot leaves no waiter behind.
        let (_tx, rx) = oneshot::channel();
        let held = svc.ready().await.unwrap().call(rx);
        let mut other = svc.clone();
        assert!(other.ready().now_or_never().is_none());
        assert_eq!(m.stats().waiting, 1);
        drop(other);
        assert_eq!(m.stats().waiting, 0);
        drop(held);
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_release_a_slot_reserved_by_poll_ready_quietly_when_never_called() {
    watchdog(async {
        let m = fixed(2);
        let layer = AdaptiveConcurrencyLayer::new(m.clone());
        // Readiness a caller did not use (it picked another replica, or gave up): as with
        // tower's `ConcurrencyLimit`, the slot goes back with no verdict on the downstream.
        for _ in 0..3 {
            let mut svc = layer.layer(gated(Arc::default()));
            svc.ready().await.unwrap();
            assert_eq!(in_flight(&m), 1);
            drop(svc);
            assert_eq!(in_flight(&m), 0);
        }
        // One real call: the only task the manager counts.
        let mut svc = layer.layer(gated(Arc::default()));
        let (tx, rx) = oneshot::channel();
        let call = svc.ready().await.unwrap().call(rx);
        tx.send(Ok(1)).unwrap();
        assert_eq!(call.await.unwrap(), 1);
        let stats = m.stats();
        assert_eq!(
            (stats.completed, stats.failed),
            (1, 0),
            "unused readiness is neither a task nor back-pressure"
        );
        // A shutdown waiting for a reserved slot ends when the service is dropped.
        svc.ready().await.unwrap();
        let shutdown = m.shutdown();
        futures::pin_mut!(shutdown);
        assert!(futures::poll!(shutdown.as_mut()).is_pending());
        drop(svc);
        shutdown.await;
        assert_eq!(m.stats().failed, 0);
    })
    .await;
}

#[tokio::test]
async fn should_shed_at_once_with_overloaded_without_calling_the_inner_service() {
    watchdog(async {
        let m = fixed(1);
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = AdaptiveConcurrencyLayer::new(m.clone())
            .shed()
            .layer(gated(Arc::clone(&calls)));
        let (mut a, mut b) = (svc.clone(), svc);
        let (tx, rx) = oneshot::channel();
        let first = a.ready().await.unwrap().call(rx);
        let (_tx2, rx2) = oneshot::channel();
        let err = b.ready().await.unwrap().call(rx2).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the shed call never reached it"
        );
        tx.send(Ok(1)).unwrap();
        first.await.unwrap();
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn should_bound_the_queue_and_time_out_its_waiters() {
    watchdog(async {
        let m = fixed(1);
        let layer = AdaptiveConcurrencyLayer::new(m.clone()).queue(1, Duration::from_millis(50));
        let svc = layer.layer(gated(Arc::default()));
        let (mut a, mut b, mut c) = (svc.clone(), svc.clone(), svc);
        let (_tx, rx) = oneshot::channel();
        let held = a.ready().await.unwrap().call(rx);
        // b queues; c finds the queue full and is refused at once.
        let b_wait = tokio::spawn(async move {
            let (_tx, rx) = oneshot::channel();
            b.ready().await.unwrap().call(rx).await
        });
        tokio::task::yield_now().await;
        assert_eq!(m.stats().waiting, 1);
        let (_tx3, rx3) = oneshot::channel();
        let err = c.ready().await.unwrap().call(rx3).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        // b's wait times out after 50 ms (paused clock) with Overloaded, and leaves no waiter.
        let err = b_wait.await.unwrap().unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        assert_eq!(m.stats().waiting, 0);
        drop(held);
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_share_one_limit_between_services_of_several_layers() {
    watchdog(async {
        let m = fixed(2);
        let one = AdaptiveConcurrencyLayer::new(m.clone()).shed();
        let two = AdaptiveConcurrencyLayer::new(m.clone()).shed();
        let mut a = one.layer(gated(Arc::default()));
        let mut b = two.layer(gated(Arc::default()));
        let mut c = one.layer(gated(Arc::default()));
        let (_t1, r1) = oneshot::channel();
        let (_t2, r2) = oneshot::channel();
        let (_t3, r3) = oneshot::channel();
        let x = a.ready().await.unwrap().call(r1);
        let y = b.ready().await.unwrap().call(r2);
        assert_eq!(in_flight(&m), 2);
        let err = c.ready().await.unwrap().call(r3).await.unwrap_err();
        assert!(err.is::<Overloaded>());
        drop((x, y));
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_refuse_with_shutdown_once_the_manager_is_shut_down() {
    watchdog(async {
        let m = fixed(2);
        let mut svc = AdaptiveConcurrencyLayer::new(m.clone()).layer(gated(Arc::default()));
        m.shutdown().await;
        let (_tx, rx) = oneshot::channel();
        let err = svc.ready().await.unwrap().call(rx).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<SubmitError>(),
            Some(&SubmitError::Shutdown)
        );
    })
    .await;
}

#[tokio::test]
async fn should_pass_the_inner_error_through_and_classify_with_the_users_rule() {
    watchdog(async {
        let m = fixed(2);
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&seen);
        let classify = move |r: &Result<u32, &'static str>| {
            counted.fetch_add(1, Ordering::SeqCst);
            match r {
                Err("busy") => Outcome::BackPressure,
                _ => Outcome::Success,
            }
        };
        let mut svc = AdaptiveConcurrencyLayer::new(m.clone())
            .classifier(classify)
            .layer(gated(Arc::default()));
        let (tx, rx) = oneshot::channel();
        let call = svc.ready().await.unwrap().call(rx);
        tx.send(Err("busy")).unwrap();
        let err: BoxError = call.await.unwrap_err();
        assert_eq!(err.to_string(), "busy");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_run_at_most_the_limit_and_yield_outputs_as_they_finish() {
    watchdog(async {
        let m = fixed(3);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..6).map(|_| oneshot::channel::<u32>()).unzip();
        let running = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&running);
        let mut out =
            futures::stream::iter(rxs.into_iter().enumerate()).adaptive_map(&m, move |(i, rx)| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { rx.await.map(|v| (i, v)) }
            });
        assert!(out.next().now_or_never().is_none());
        assert_eq!(
            running.load(Ordering::SeqCst),
            3,
            "three started: the limit"
        );
        assert_eq!(in_flight(&m), 3);
        let mut txs: Vec<_> = txs.into_iter().map(Some).collect();
        // The third finishes first and comes out first.
        txs[2].take().unwrap().send(30).unwrap();
        assert_eq!(out.next().await, Some(Ok((2, 30))));
        assert!(out.next().now_or_never().is_none());
        assert_eq!(
            running.load(Ordering::SeqCst),
            4,
            "its slot went to the fourth"
        );
        for (i, tx) in txs.iter_mut().enumerate() {
            if let Some(tx) = tx.take() {
                tx.send(i as u32).unwrap();
            }
        }
        let rest: Vec<_> = out.collect().await;
        assert_eq!(rest.len(), 5);
        assert_eq!(in_flight(&m), 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_pull_an_item_only_when_a_slot_is_free() {
    watchdog(async {
        let m = fixed(2);
        let pulled = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&pulled);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| oneshot::channel::<u32>()).unzip();
        let mut out = futures::stream::iter(rxs)
            .inspect(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            })
            .adaptive_map(&m, |rx| rx);
        assert!(out.next().now_or_never().is_none());
        assert_eq!(
            pulled.load(Ordering::SeqCst),
            2,
            "both slots busy: the third item stays in the stream"
        );
        let mut txs = txs.into_iter();
        txs.next().unwrap().send(1).unwrap();
        assert_eq!(out.next().await, Some(Ok(1)));
        assert!(out.next().now_or_never().is_none());
        assert_eq!(
            pulled.load(Ordering::SeqCst),
            3,
            "one slot freed, one item pulled"
        );
        for (i, tx) in txs.enumerate() {
            tx.send(i as u32).unwrap();
        }
        assert_eq!(out.count().await, 3);
        assert_eq!(pulled.load(Ordering::SeqCst), 4);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_hold_no_slot_while_the_stream_has_no_item() {
    watchdog(async {
        let m = fixed(1);
        let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
        let pulled = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&pulled);
        let mut out = rx
            .inspect(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            })
            .adaptive_map(&m, |i| async move { i });
        // The only slot is held elsewhere: an item sent now stays in the channel.
        let held = m.acquire().await.unwrap();
        tx.unbounded_send(7).unwrap();
        assert!(out.next().now_or_never().is_none());
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "no slot: nothing pulled");
        held.success();
        assert_eq!(out.next().await, Some(7));
        // An empty stream: no slot is kept for its next item, so others get it.
        assert!(out.next().now_or_never().is_none());
        assert_eq!(in_flight(&m), 0);
        let other = m
            .try_acquire()
            .expect("the stream holds no slot while it waits");
        // The stream waits for that slot; when it has it and still no item, it gives it back.
        assert!(out.next().now_or_never().is_none());
        assert_eq!(m.stats().waiting, 1);
        other.success();
        assert!(out.next().now_or_never().is_none());
        assert_eq!((in_flight(&m), m.stats().waiting), (0, 0));
        drop(tx);
        assert_eq!(out.next().await, None);
        let stats = m.stats();
        assert_eq!(
            (stats.completed, stats.failed),
            (3, 0),
            "the item and the two held slots are the only tasks; a slot given back is none"
        );
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_release_every_slot_when_the_stream_is_dropped_mid_way() {
    watchdog(async {
        let m = fixed(4);
        let mut out =
            futures::stream::iter(0..100).adaptive_map(&m, |_| futures::future::pending::<()>());
        assert!(out.next().now_or_never().is_none());
        assert_eq!(in_flight(&m), 4);
        drop(out);
        assert_eq!(in_flight(&m), 0);
        assert_eq!(m.stats().waiting, 0);
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_end_the_stream_after_shutdown() {
    watchdog(async {
        let m = fixed(2);
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        m.shutdown().await;
        futures::stream::iter(0..10)
            .for_each_adaptive(&m, move |_| {
                d.fetch_add(1, Ordering::SeqCst);
                async {}
            })
            .await;
        assert_eq!(done.load(Ordering::SeqCst), 0);
    })
    .await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Several streams share one manager: together they never run more than its limit, and every
    /// item comes out once.
    #[test]
    fn streams_sharing_a_manager_never_exceed_its_limit(
        limit in 1usize..6,
        delays in proptest::collection::vec(proptest::collection::vec(0u64..20, 0..30), 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let m = fixed(limit);
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let writers = delays.iter().cloned().map(|ds| {
                let (m, running, peak) = (m.clone(), Arc::clone(&running), Arc::clone(&peak));
                tokio::spawn(async move {
                    let n = ds.len();
                    let out: Vec<u64> = futures::stream::iter(ds)
                        .adaptive_map(&m, move |d| {
                            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                            async move {
                                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(d)).await;
                                running.fetch_sub(1, Ordering::SeqCst);
                                d
                            }
                        })
                        .collect()
                        .await;
                    assert_eq!(out.len(), n);
                })
            });
            for w in futures::future::join_all(writers).await {
                w.unwrap();
            }
            assert!(peak.load(Ordering::SeqCst) <= limit);
            assert_eq!(m.stats().in_flight, 0);
            m.shutdown().await;
        });
    }
}

/// Adds up the latency signal's samples and errors over every decision.
#[derive(Clone, Default)]
struct Tally(Arc<std::sync::Mutex<(u64, u64)>>);

impl ace_std::core::DecisionSink for Tally {
    fn decision(&mut self, d: &ace_std::Decision) {
        if let Some(l) = d.signals.latency {
            let mut t = self.0.lock().unwrap();
            t.0 += u64::from(l.samples);
            t.1 += u64::from(l.errors);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn should_feed_successes_as_samples_and_back_pressure_and_drops_as_failures() {
    watchdog(async {
        let tally = Tally::default();
        let m = Manager::builder(AimdConfig {
            adjustment_interval: Duration::from_millis(100),
            // The latency epochs carry a short epoch over (7 tasks < 10) and the loop logs only
            // changes: let the first epoch decide, so its summary reaches the sink (a cut).
            latency_min_samples: 1,
            ..AimdConfig::default()
        })
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .sink(tally.clone())
        .build()
        .unwrap();
        let busy_only = |r: &Result<u32, &'static str>| match r {
            Err("busy") => Outcome::BackPressure,
            _ => Outcome::Success,
        };
        let mut svc = AdaptiveConcurrencyLayer::new(m.clone())
            .classifier(busy_only)
            .layer(gated(Arc::default()));
        let answers = [
            Err("busy"),
            Err("busy"),
            Err("busy"),
            Ok(1),
            Ok(2),
            Err("not found"),
        ];
        for answer in answers {
            let (tx, rx) = oneshot::channel();
            let call = svc.ready().await.unwrap().call(rx);
            tx.send(answer).unwrap();
            let _ = call.await;
        }
        // A call dropped before its answer: most likely a timeout, so a failure too.
        let (_tx, rx) = oneshot::channel();
        drop(svc.ready().await.unwrap().call(rx));
        // Two cycles of the paused clock: the control loop reads the recorder.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(*tally.0.lock().unwrap(), (3, 4), "(samples, failures)");
        let stats = m.stats();
        assert_eq!((stats.completed, stats.failed), (7, 4));
        m.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn should_compose_with_tower_load_shed_in_wait_mode() {
    watchdog(async {
        let m = fixed(1);
        let svc = tower::ServiceBuilder::new()
            .load_shed()
            .layer(AdaptiveConcurrencyLayer::new(m.clone()))
            .service(gated(Arc::default()));
        let (mut a, mut b) = (svc.clone(), svc);
        let (tx, rx) = oneshot::channel();
        let first = a.ready().await.unwrap().call(rx);
        // No slot: load_shed turns the pending poll_ready into its own Overloaded, at once.
        let (_tx2, rx2) = oneshot::channel();
        let err = b.ready().await.unwrap().call(rx2).await.unwrap_err();
        assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
        tx.send(Ok(1)).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        drop((a, b));
        assert_eq!((m.stats().in_flight, m.stats().waiting), (0, 0));
        m.shutdown().await;
    })
    .await;
}

/// An in-memory service that takes `delay` ms of the paused clock per call and tracks how many
/// calls run at once.
#[derive(Clone)]
struct Timed {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Service<u64> for Timed {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<u64, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, delay: u64) -> Self::Future {
        let (running, peak) = (Arc::clone(&self.running), Arc::clone(&self.peak));
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(delay)
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Several callers share one layer in each admission mode: the inner service never runs more
    /// than the limit at once, a queue never holds more than its bound, only shedding and queue
    /// modes refuse (with `Overloaded`), and every slot comes back.
    #[test]
    fn callers_sharing_a_layer_keep_its_bounds(
        limit in 1usize..5,
        mode in 0u8..3,
        max_waiting in 0usize..4,
        callers in proptest::collection::vec(proptest::collection::vec(0u64..20, 1..12), 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let m = fixed(limit);
            let layer = AdaptiveConcurrencyLayer::new(m.clone());
            let layer = match mode {
                0 => layer,
                1 => layer.shed(),
                _ => layer.queue(max_waiting, Duration::from_millis(15)),
            };
            let inner = Timed { running: Arc::default(), peak: Arc::default() };
            let peak = Arc::clone(&inner.peak);
            let svc = layer.layer(inner);
            let waiting_peak = Arc::new(AtomicUsize::new(0));
            let writers = callers.into_iter().map(|delays| {
                let (mut svc, m, waiting_peak) = (svc.clone(), m.clone(), Arc::clone(&waiting_peak));
                tokio::spawn(async move {
                    let mut refused = 0;
                    for d in delays {
                        waiting_peak.fetch_max(m.stats().waiting, Ordering::SeqCst);
                        match svc.ready().await.unwrap().call(d).await {
                            Ok(v) => assert_eq!(v, d),
                            Err(e) => {
                                assert!(e.is::<Overloaded>(), "{e}");
                                refused += 1;
                            }
                        }
                    }
                    refused
                })
            });
            let refused: usize = futures::future::join_all(writers)
                .await
                .into_iter()
                .map(Result::unwrap)
                .sum();
            assert!(peak.load(Ordering::SeqCst) <= limit);
            match mode {
                0 => assert_eq!(refused, 0, "waiting callers are never refused"),
                1 => assert_eq!(waiting_peak.load(Ordering::SeqCst), 0, "shedding never queues"),
                _ => assert!(waiting_peak.load(Ordering::SeqCst) <= max_waiting),
            }
            drop(svc);
            assert_eq!((m.stats().in_flight, m.stats().waiting), (0, 0));
            m.shutdown().await;
        });
    }
}
