//! The seed README's quick start on each runtime: 100 submits, 100 results, in order, never
//! more than the limit at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::AimdConfig;

fn config() -> AimdConfig {
    AimdConfig {
        min_limit: 5,
        max_limit: 50,
        initial_limit: 10,
        ..Default::default()
    }
}

/// Counts tasks running at once and remembers the most.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn work<S: std::future::Future<Output = ()>>(i: usize, gauge: Arc<Gauge>, sleep: S) -> usize {
    gauge.enter();
    sleep.await;
    gauge.exit();
    i * 2
}

fn check(results: Vec<Result<usize, ace_std::SubmitError>>, gauge: &Gauge) {
    let results: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(
        (1..=10).contains(&max),
        "at most the limit at once, saw {max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_on_tokio() {
    let manager = ace_std::tokio::Manager::new(config()).unwrap();
    let gauge = Arc::new(Gauge::default());
    let results = futures::future::join_all((0..100).map(|i| {
        let sleep = tokio::time::sleep(Duration::from_millis(2));
        manager.submit(work(i, gauge.clone(), sleep))
    }))
    .await;
    check(results, &gauge);
    let stats = manager.stats();
    assert_eq!((stats.completed, stats.failed), (100, 0));
    assert_eq!((stats.in_flight, stats.waiting), (0, 0));
    tokio::time::timeout(Duration::from_secs(5), manager.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn quick_start_on_tokio_current_thread() {
    let manager = ace_std::tokio::Manager::new(config()).unwrap();
    let gauge = Arc::new(Gauge::default());
    let results = futures::future::join_all((0..100).map(|i| {
        let sleep = tokio::time::sleep(Duration::from_millis(2));
        manager.submit(work(i, gauge.clone(), sleep))
    }))
    .await;
    check(results, &gauge);
    manager.shutdown().await;
}

#[test]
fn quick_start_on_smol() {
    smol::block_on(async {
        let manager = ace_std::smol::Manager::new(config()).unwrap();
        let gauge = Arc::new(Gauge::default());
        let results = futures::future::join_all((0..100).map(|i| {
            let sleep = async {
                smol::Timer::after(Duration::from_millis(2)).await;
            };
            manager.submit(work(i, gauge.clone(), sleep))
        }))
        .await;
        check(results, &gauge);
        manager.shutdown().await;
    });
}

#[test]
fn quick_start_on_async_std() {
    async_std::task::block_on(async {
        let manager = ace_std::async_std::Manager::new(config()).unwrap();
        let gauge = Arc::new(Gauge::default());
        let results = futures::future::join_all((0..100).map(|i| {
            let sleep = async_std::task::sleep(Duration::from_millis(2));
            manager.submit(work(i, gauge.clone(), sleep))
        }))
        .await;
        check(results, &gauge);
        manager.shutdown().await;
    });
}

#[test]
fn spawned_tasks_run_on_each_executor() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = ace_std::tokio::Manager::new(config()).unwrap();
        let handles: Vec<_> = (0..20u32).map(|i| m.spawn(async move { i + 1 })).collect();
        let sum: u32 = futures::future::join_all(handles)
            .await
            .into_iter()
            .map(Result::unwrap)
            .sum();
        assert_eq!(sum, 210);
        m.shutdown().await;
    });
    smol::block_on(async {
        let m = ace_std::smol::Manager::new(config()).unwrap();
        assert_eq!(m.spawn(async { 5 }).await.unwrap(), 5);
        m.shutdown().await;
    });
    async_std::task::block_on(async {
        let m = ace_std::async_std::Manager::new(config()).unwrap();
        assert_eq!(m.spawn(async { 6 }).await.unwrap(), 6);
        m.shutdown().await;
    });
}

#[test]
fn an_invalid_config_is_an_error_not_a_panic() {
    let bad = AimdConfig {
        min_limit: 0,
        ..config()
    };
    smol::block_on(async {
        let err = ace_std::smol::Manager::new(bad).unwrap_err();
        assert_eq!(err.field(), "min_limit");
    });
}
