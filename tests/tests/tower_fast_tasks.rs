//! The tower layer in front of a service that answers at once, the tower bench's shape: 64
//! callers on a 2-worker runtime, each call tens of nanoseconds. On the real clock, whatever the
//! machine runs besides: the cores' jitter (and a caller preempted now and then) moves an
//! epoch's mean by nanoseconds to microseconds, which the relative latency rules alone read as a
//! queue and cut the limit to 1–3. Bounded in time and calls, with a watchdog.
#![allow(missing_docs, reason = "integration tests")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::{DecisionSink, Stress};
use ace_std::tower::AdaptiveConcurrencyLayer;
use ace_std::{AimdConfig, Decision, Reason};
use tower::{Layer, Service, ServiceExt};

/// Keeps every decision of the control loop.
struct Keep(Arc<Mutex<Vec<Decision>>>);

impl DecisionSink for Keep {
    fn decision(&mut self, decision: &Decision) {
        self.0.lock().unwrap().push(decision.clone());
    }
}

/// How far a latency stress says latency rose over its reference, if it is one.
fn rise(reason: &Reason) -> Option<Duration> {
    let Reason::Stressed(stress) = reason else {
        return None;
    };
    Some(match *stress {
        Stress::Latency {
            latency, baseline, ..
        } => latency.saturating_sub(baseline),
        Stress::Queued { latency, floor, .. } => latency.saturating_sub(floor),
        Stress::Rising {
            latency, average, ..
        } => latency.saturating_sub(average),
        Stress::Queueing { implied, average } => implied.saturating_sub(average),
        _ => return None,
    })
}

#[test]
fn a_service_that_answers_at_once_is_not_cut_for_the_cores_jitter() {
    const CALLERS: usize = 64;
    const RUN: Duration = Duration::from_millis(1500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The bench's manager (free to go down to 1, a short interval), but from 2: the 64 callers
    // reach that limit, and slow start's doublings show that the epochs judge the latency (a
    // hold is not reported to the sinks).
    let config = AimdConfig {
        min_limit: 1,
        initial_limit: 2,
        adjustment_interval: Duration::from_millis(200),
        cooldown: Duration::from_millis(200),
        ..AimdConfig::default()
    };
    let min_rise = config.latency_min_rise;
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let calls = rt.block_on(async {
        // As in the bench, the control loop runs on a runtime of its own: the callers never
        // yield (every call is ready at once), and would starve it on theirs.
        let control = ace_std::tokio::TokioRuntime::from_handle(control.handle().clone());
        let manager = ace_std::tokio::Manager::builder_with_runtime(control, config)
            .default_signals(false)
            .tracing(false)
            .metrics(false)
            .sink(Keep(Arc::clone(&decisions)))
            .build()
            .unwrap();
        let svc = AdaptiveConcurrencyLayer::new(manager.clone()).layer(tower::service_fn(
            |x: u64| async move { Ok::<_, Infallible>(x) },
        ));
        let end = Instant::now() + RUN;
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    let mut calls = 0u64;
                    // At most 2^22 calls each, and no longer than RUN.
                    while Instant::now() < end && calls < 1 << 22 {
                        for _ in 0..256 {
                            let out = svc.ready().await.unwrap().call(calls).await.unwrap();
                            std::hint::black_box(out);
                            calls += 1;
                        }
                    }
                    calls
                })
            })
            .collect();
        let all = async {
            let mut total = 0;
            for caller in callers {
                total += caller.await.unwrap();
            }
            total
        };
        let total = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the callers finished within 60 s");
        eprintln!("{total} calls; {:?}", manager.stats());
        manager.shutdown().await;
        total
    });
    assert!(calls > 0);
    let decisions = decisions.lock().unwrap();
    for d in decisions
        .iter()
        .filter(|d| d.action != ace_std::Action::Hold)
    {
        eprintln!("{d}");
    }
    let grown = decisions
        .iter()
        .any(|d| matches!(d.reason, Reason::SlowStart { .. }) && d.new_limit > 2);
    assert!(grown, "no latency epoch grew the limit");
    // A latency cut needs a rise of `latency_min_rise` (20 µs): a task of nanoseconds never
    // shows one unless something real slowed it.
    for d in decisions.iter() {
        if let Some(rise) = rise(&d.reason) {
            assert!(rise >= min_rise, "a rise of {rise:?} read as stress: {d}");
        }
    }
}
