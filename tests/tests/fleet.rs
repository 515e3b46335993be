//! The fleet budget against a real Redis: the lease script's invariants with several writers,
//! fair shares, expiry, the errors at construction, and a manager taking its grant.
//!
//! Each test starts its own `redis-server` on a free loopback port (see `common/redis.rs`).
#![allow(missing_docs, reason = "integration tests")]

#[path = "common/log_buf.rs"]
mod log_buf;
#[path = "common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::fleet::{FleetBudget, FleetClient, FleetConfig, FleetError, FleetMode};
use ace_std::AimdConfig;
use log_buf::LogBuf;
use redis_server::RedisServer;

const C: usize = 40;

fn config(server: &RedisServer, prefix: &str) -> FleetConfig {
    FleetConfig {
        url: server.url(),
        prefix: prefix.to_owned(),
        capacity: C,
        renew_interval: Duration::from_millis(100),
        lease: Duration::from_millis(400),
        safety_margin: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..FleetConfig::default()
    }
}

/// Jain's fairness index: 1 when all equal, 1/n when one has everything.
fn jain(xs: &[usize]) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let (sum, sq, n) = xs
        .iter()
        .fold((0.0, 0.0, xs.len() as f64), |(s, q, n), &x| {
            (s + x as f64, q + (x as f64) * (x as f64), n)
        });
    if sq == 0.0 {
        return 1.0;
    }
    sum * sum / (n * sq)
}

/// Fails the test instead of hanging.
async fn bounded<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_script_keeps_the_sum_of_grants_under_capacity_with_many_writers() {
    let server = RedisServer::start();
    let client = FleetClient::connect(&config(&server, "inv")).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    bounded("the writers", 30, async {
        let mut writers = Vec::new();
        // 12 members with changing wants; some join late, some leave, some "die" (stop renewing
        // and let their lease expire), some come back.
        for w in 0..12u64 {
            let (client, stop, worst) = (client.clone(), Arc::clone(&stop), Arc::clone(&worst));
            writers.push(tokio::spawn(async move {
                let mut rng = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let id = format!("m{w}");
                let mut in_use = 0;
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) {
                    rounds += 1;
                    #[allow(clippy::cast_possible_truncation, reason = "small values")]
                    let want = (next() % 30) as usize;
                    match next() % 20 {
                        0 => client.leave(&id).await.unwrap(),
                        1 => tokio::time::sleep(Duration::from_millis(450)).await,
                        _ => {
                            let r = client.renew(&id, want, in_use).await.unwrap();
                            assert!(r.grant <= r.held && r.held <= C, "{r:?}");
                            assert!(r.total_held <= C, "sum of grants {r:?}");
                            worst.fetch_max(r.total_held, Ordering::Relaxed);
                            #[allow(clippy::cast_possible_truncation, reason = "small values")]
                            let used = (next() % (r.grant as u64 + 1)) as usize;
                            in_use = used;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(next() % 15)).await;
                }
                rounds
            }));
        }
        let mut samples = 0;
        for _ in 0..150 {
            let snap = client.snapshot().await.unwrap();
            assert!(snap.total_held() <= C, "{snap:?}");
            samples += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut rounds = 0;
        for w in writers {
            rounds += w.await.unwrap();
        }
        assert!(samples == 150 && rounds > 200, "{rounds} rounds");
    })
    .await;
    // The budget was contended: the sum came close to C, and never over it.
    let worst = worst.load(Ordering::Relaxed);
    assert!((C - 10..=C).contains(&worst), "highest sum {worst}");
}

#[tokio::test]
async fn equal_wants_get_equal_shares_and_an_idle_members_share_moves() {
    let server = RedisServer::start();
    let client = FleetClient::connect(&config(&server, "fair"))
        .await
        .unwrap();
    let ids = ["a", "b", "c", "d"];
    let mut grants = [0usize; 4];
    bounded("renewals", 10, async {
        // Rounds of renewals, each member reporting the grant it got as in use.
        for _ in 0..4 {
            for (i, id) in ids.iter().enumerate() {
                grants[i] = client.renew(id, C, grants[i]).await.unwrap().grant;
            }
        }
        assert_eq!(grants, [10; 4]);
        assert!(jain(&grants) >= 0.99);
        // b, c, d go idle (they want 1): a gets what they return within two rounds.
        for _ in 0..2 {
            for (i, id) in ids.iter().enumerate() {
                let want = if i == 0 { C } else { 1 };
                let used = if i == 0 { grants[i] } else { 1 };
                grants[i] = client.renew(id, want, used).await.unwrap().grant;
            }
        }
        assert_eq!(grants, [37, 1, 1, 1]);
    })
    .await;
}

#[tokio::test]
async fn a_dead_members_share_is_reused_only_after_its_lease_expired() {
    let server = RedisServer::start();
    let cfg = config(&server, "dead");
    let client = FleetClient::connect(&cfg).await.unwrap();
    bounded("renewals", 10, async {
        let a = client.renew("a", C, 0).await.unwrap();
        assert_eq!(a.grant, C);
        // a is busy with its 40, then dies. b asks for everything.
        client.renew("a", C, C).await.unwrap();
        let mut before_expiry = 0;
        loop {
            let snap = client.snapshot().await.unwrap();
            let b = client.renew("b", C, 0).await.unwrap();
            let a_alive = snap.members.iter().any(|m| m.id == "a");
            if a_alive
                && snap
                    .members
                    .iter()
                    .any(|m| m.id == "a" && m.expires_in > Duration::from_millis(20))
            {
                assert_eq!(b.grant, 0, "a's share taken before its lease expired");
                before_expiry += 1;
            } else if !a_alive {
                // Expired: the next renewal takes the share.
                assert_eq!(b.grant, C);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(before_expiry >= 4, "{before_expiry}");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_at_construction() {
    let server = RedisServer::start_with(Some("s3cret"));
    let mut cfg = config(&server, "auth");
    cfg.url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = bounded("connect", 10, FleetBudget::connect(cfg.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("wrong password"), "{err}");
    // No password at all: the same, on the first command.
    cfg.url = format!("redis://127.0.0.1:{}", server.port());
    let err = bounded("connect", 10, FleetBudget::connect(cfg.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Auth(_)), "{err:?}");
    // The right one works.
    cfg.url = server.url();
    let budget = bounded("connect", 10, FleetBudget::connect(cfg))
        .await
        .unwrap();
    assert_eq!(budget.state().mode, FleetMode::Leased);
}

#[tokio::test]
async fn a_tls_url_against_a_plain_server_is_a_clear_error() {
    let server = RedisServer::start();
    let mut cfg = config(&server, "tls");
    cfg.url = format!("rediss://127.0.0.1:{}", server.port());
    let err = bounded("connect", 10, FleetBudget::connect(cfg))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("serves TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_never_runs_more_than_its_grant_and_the_log_says_fleet_cap() {
    let server = RedisServer::start();
    let cfg = config(&server, "mgr");
    // Another member holds 30 of the 40.
    let other = FleetClient::connect(&cfg).await.unwrap();
    assert_eq!(other.renew("other", 30, 30).await.unwrap().grant, 30);
    let keep = tokio::spawn({
        let other = other.clone();
        async move {
            loop {
                other.renew("other", 30, 30).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let budget = FleetBudget::connect(cfg).await.unwrap();
    let log = LogBuf::default();
    let manager = ace_std::tokio::Manager::builder(AimdConfig {
        min_limit: 1,
        max_limit: 100,
        initial_limit: 20,
        cooldown: Duration::ZERO,
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    })
    .default_signals(false)
    .fleet(budget.clone())
    .log_writer(log.clone())
    .metrics(false)
    .build()
    .unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let now = Arc::new(AtomicUsize::new(0));
    bounded("the load", 20, async {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (m, peak, now) = (manager.clone(), Arc::clone(&peak), Arc::clone(&now));
            tasks.push(tokio::spawn(async move {
                for _ in 0..60 {
                    m.submit(async {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        let mut most = 0;
        for t in tasks {
            most = most.max(budget.state().grant);
            t.await.unwrap();
        }
        // Never granted more than the 10 the other member leaves.
        assert!((1..=10).contains(&most), "{most} {:?}", budget.state());
    })
    .await;
    keep.abort();
    assert!(
        peak.load(Ordering::SeqCst) <= 10,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    manager.shutdown().await;
    let text = log.text();
    assert!(
        text.contains(r#""reason_code":"fleet_cap""#) && text.contains("of a budget shared by 2"),
        "{text}"
    );
}

#[test]
fn a_thread_pool_never_runs_more_than_its_grant() {
    let server = RedisServer::start();
    let cfg = config(&server, "pool");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Another member holds 30 of the 40, renewing on its own.
    let other = rt.block_on(FleetClient::connect(&cfg)).unwrap();
    let keep = rt.spawn(async move {
        loop {
            other.renew("other", 30, 30).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let budget = FleetBudget::connect_blocking(cfg).unwrap();
    let pool = ace_std::threadpool::ThreadPoolManager::builder(AimdConfig {
        min_limit: 1,
        max_limit: 64,
        initial_limit: 32,
        adjustment_interval: Duration::from_millis(100),
        ..AimdConfig::default()
    })
    .default_signals(false)
    .source(
        "steady",
        ace_std::core::source_fn(|| {
            Ok(ace_std::Signals {
                cpu_percent: Some(50.0),
                memory_percent: Some(50.0),
                ..ace_std::Signals::default()
            })
        }),
    )
    .fleet(budget.clone())
    .build()
    .unwrap();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handles: Vec<_> = (0..400)
        .map(|_| {
            let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
            pool.submit(move || {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                now.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    // The most it was granted while busy: the 10 the other member leaves.
    let mut most = 0;
    for h in handles {
        most = most.max(budget.state().grant);
        h.join().unwrap();
    }
    keep.abort();
    assert_eq!(most, 10, "{:?}", budget.state());
    assert!(
        peak.load(Ordering::SeqCst) <= 10,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    pool.shutdown();
}
