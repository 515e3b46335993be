//! A manager with a fleet budget leaves the fleet in `shutdown` and waits until Redis was told,
//! so a process that returns from `main` right after it leaves no lease behind (issue 21,
//! item 3). Against a real `redis-server` on a free loopback port (see `common/redis.rs`).
#![allow(missing_docs, reason = "integration tests")]

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use ace_std::fleet::{FleetBudget, FleetClient, FleetConfig, FleetMode};
use ace_std::AimdConfig;
use redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_the_fleet_before_it_returns() {
    let server = RedisServer::start();
    let config = FleetConfig {
        url: server.url(),
        prefix: "manager-leave".to_owned(),
        capacity: 20,
        renew_interval: Duration::from_millis(100),
        lease: Duration::from_secs(30),
        safety_margin: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..FleetConfig::default()
    };
    let budget = FleetBudget::connect(config).await.unwrap();
    let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .fleet(budget.clone())
        .build()
        .unwrap();
    let run = async {
        for i in 0..50_u32 {
            assert_eq!(manager.submit(async move { i + 1 }).await, Ok(i + 1));
        }
        manager.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the work and the shutdown finished within 20 s");
    // Left already: not in a background task that a returning `main` would cut short (the
    // lease is 30 s, so an expiry cannot pass for a leave here).
    assert_eq!(budget.state().mode, FleetMode::Left, "{:?}", budget.state());
}

/// A limit set by hand goes through the fleet's grant: `set_limit` never lifts a manager (or a
/// pool) past what the fleet granted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_by_hand_stays_within_the_grant() {
    let server = RedisServer::start();
    let config = FleetConfig {
        url: server.url(),
        prefix: "manager-set-limit".to_owned(),
        capacity: 40,
        renew_interval: Duration::from_millis(100),
        lease: Duration::from_secs(30),
        safety_margin: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..FleetConfig::default()
    };
    // Another member holds 30 of the 40 (its lease is 30 s: it outlives the test).
    let other = FleetClient::connect(&config).await.unwrap();
    assert_eq!(other.renew("other", 30, 30).await.unwrap().grant, 30);
    let run = async {
        let budget = FleetBudget::connect(config.clone()).await.unwrap();
        let manager = ace_std::tokio::Manager::builder(AimdConfig {
            max_limit: 100,
            ..AimdConfig::fixed(20)
        })
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .fleet(budget.clone())
        .build()
        .unwrap();
        assert_eq!(manager.set_limit(100), 100);
        assert!(
            manager.limit() <= 10,
            "{} {:?}",
            manager.limit(),
            budget.state()
        );
        manager.shutdown().await;

        let budget = FleetBudget::connect(config).await.unwrap();
        let pool = ace_std::threadpool::ThreadPoolManager::builder(AimdConfig {
            max_limit: 100,
            ..AimdConfig::fixed(20)
        })
        .default_signals(false)
        .tracing(false)
        .metrics(false)
        .fleet(budget.clone())
        .build()
        .unwrap();
        pool.set_limit(100);
        assert!(pool.limit() <= 10, "{} {:?}", pool.limit(), budget.state());
        tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("within 20 s");
}
