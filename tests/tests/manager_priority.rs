//! Priorities through a `Manager`: the most important class waiting is served first, shares
//! keep a class going under a flood of a higher one, and `stats()` reports each class.

#[path = "common/log_buf.rs"]
mod log_buf;
#[path = "common/quiet.rs"]
mod quiet;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_std::{AimdConfig, Priority, Shares};
use log_buf::LogBuf;
use quiet::quiet;

/// A manager whose limit stays at `limit`.
fn fixed(limit: usize) -> ace_std::tokio::Builder {
    quiet(AimdConfig::fixed(limit))
}

/// Waits (bounded) until `n` tasks are queued.
async fn until_waiting(m: &ace_std::tokio::Manager, n: usize) {
    for _ in 0..1000 {
        if m.stats().waiting == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never saw {n} waiting: {}", m.stats());
}

#[tokio::test]
async fn should_serve_the_most_important_class_first_and_report_each() {
    let watchdog = tokio::time::timeout(Duration::from_secs(20), async {
        let m = fixed(1).build().unwrap();
        let held = m.acquire().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for (i, priority) in [
            Priority::Sheddable,
            Priority::Normal,
            Priority::Sheddable,
            Priority::Critical,
        ]
        .into_iter()
        .enumerate()
        {
            let order = Arc::clone(&order);
            handles.push(m.spawn_with(priority, async move {
                order.lock().unwrap().push((priority, i));
            }));
            until_waiting(&m, i + 1).await;
        }
        let stats = m.stats();
        let waiting: Vec<_> = stats.priorities.iter().map(|p| p.waiting).collect();
        assert_eq!(waiting, [1, 1, 2]);
        assert!(m.try_acquire_with(Priority::Critical).is_err());
        drop(held);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [
                (Priority::Critical, 3),
                (Priority::Normal, 1),
                (Priority::Sheddable, 0),
                (Priority::Sheddable, 2)
            ]
        );
        let stats = m.stats();
        let admitted: Vec<_> = stats.priorities.iter().map(|p| p.admitted).collect();
        assert_eq!(admitted, [1, 2, 2], "{stats:?}");
        let critical = &stats.priorities[Priority::Critical.rank()];
        assert_eq!((critical.refused, critical.queued), (1, 1));
        assert!(critical.waited_p99 >= critical.waited_p50);
        assert!(critical.waited_p50 > Duration::ZERO);
        m.shutdown().await;
    });
    watchdog.await.expect("watchdog");
}

#[tokio::test]
async fn should_keep_a_share_for_normal_under_a_critical_flood() {
    let watchdog = tokio::time::timeout(Duration::from_secs(20), async {
        let m = fixed(4)
            .shares(Shares::new().with(Priority::Normal, 25))
            .build()
            .unwrap();
        let flood: Vec<_> = (0..4)
            .map(|_| m.try_acquire_with(Priority::Critical).unwrap())
            .collect();
        let more: Vec<_> = (0..6)
            .map(|_| m.spawn_with(Priority::Critical, async {}))
            .collect();
        until_waiting(&m, 6).await;
        let seen = m.clone();
        // What Normal sees when it runs: every Critical waiter still queued.
        let normal = m.spawn_with(Priority::Normal, async move {
            seen.stats().priorities[Priority::Critical.rank()].waiting
        });
        until_waiting(&m, 7).await;
        // One slot frees: Normal is under its share (1 of 4), so it goes first.
        let mut flood = flood.into_iter();
        drop(flood.next());
        assert_eq!(normal.await.unwrap(), 6);
        drop(flood);
        for h in more {
            h.await.unwrap();
        }
        m.shutdown().await;
    });
    watchdog.await.expect("watchdog");
}

#[tokio::test]
async fn should_report_each_class_in_the_decision_log_and_the_metrics() {
    let watchdog = tokio::time::timeout(Duration::from_secs(20), async {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary");
        let lines = LogBuf::default();
        let m = ace_std::tokio::Manager::builder(AimdConfig {
            adjustment_interval: Duration::from_millis(20),
            ..AimdConfig::fixed(1)
        })
        .default_signals(false)
        .tracing(false)
        .name("classes")
        .log_holds(ace_std::log::HoldLogging::Always)
        .log_writer(lines.clone())
        .build()
        .unwrap();
        m.submit_with(Priority::Critical, async {}).await.unwrap();
        let held = m.acquire_with(Priority::Critical).await.unwrap();
        assert!(m.try_acquire_with(Priority::Sheddable).is_err());
        drop(held);
        // Bounded: the loop writes a hold every 20 ms.
        let mut record = None;
        for _ in 0..500 {
            record = lines
                .text()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .rfind(|r| r["priorities"]["critical"]["admitted"] == 2);
            if record.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let record = record.expect("a record with both Critical admissions");
        // The seed's keys are all still there, with `priorities` beside them.
        for key in [
            "timestamp",
            "event_type",
            "concurrency",
            "decision",
            "reason",
            "reason_code",
        ] {
            assert!(record.get(key).is_some(), "{key} missing: {record}");
        }
        let p = &record["priorities"];
        assert_eq!(p["sheddable"]["refused"], 1, "{record}");
        assert_eq!(p["normal"]["admitted"], 0, "{record}");
        assert!(p["critical"]["waited_p99_ms"].is_number(), "{record}");
        let text = prometheus.render();
        assert!(
            text.lines().any(|l| l.starts_with("ace_admitted_total")
                && l.contains("name=\"classes\"")
                && l.contains("priority=\"critical\"")
                && l.ends_with(" 2")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("ace_refused_total")
                && l.contains("priority=\"sheddable\"")
                && l.ends_with(" 1")),
            "{text}"
        );
        m.shutdown().await;
    });
    watchdog.await.expect("watchdog");
}
