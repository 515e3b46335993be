//! The fleet budget's promises under faults, against a real Redis: Σ of the members' limits ≤ C
//! through a `FLUSHALL` and a RESP3 restart, a dead member's share never lost after a leave,
//! a newcomer's fair share within three renewals, a join during an outage (its documented
//! bound), and a password sent to a server without one.
//!
//! Each test starts its own `redis-server` on a free loopback port (see `common/redis.rs`);
//! the members are `tokio::Manager`s with `.fleet(budget)`, each with its own renewal thread,
//! as in separate processes.
#![allow(missing_docs, reason = "integration tests")]

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_std::core::source_fn;
use ace_std::core::{LimitTarget, Usage};
use ace_std::fleet::{
    FleetBudget, FleetClient, FleetConfig, FleetError, FleetMode, FleetState, FleetTarget,
};
use ace_std::{AimdConfig, Signals};
use redis_server::RedisServer;

const RENEW: Duration = Duration::from_millis(100);

fn config(url: String, prefix: &str, capacity: usize, id: &str) -> FleetConfig {
    FleetConfig {
        url,
        prefix: prefix.to_owned(),
        capacity,
        member_id: Some(id.to_owned()),
        renew_interval: RENEW,
        lease: Duration::from_millis(400),
        safety_margin: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..FleetConfig::default()
    }
}

/// Fails the test instead of hanging.
async fn bounded<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

/// One busy member: a manager on the budget, with `workers` closed-loop tasks of 20 ms each.
struct Member {
    budget: FleetBudget,
    manager: ace_std::tokio::Manager,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    fn start(budget: FleetBudget, initial: usize, adjust: Duration, workers: usize) -> Self {
        let manager = ace_std::tokio::Manager::builder(AimdConfig {
            min_limit: 1,
            max_limit: 100,
            initial_limit: initial,
            // Large steps, so that a larger grant is taken up within one adjustment: a window
            // in which the sum could go over C shows at once.
            increase_step: 20,
            cooldown: Duration::ZERO,
            adjustment_interval: adjust,
            // Only the fleet moves these limits: a steady machine, no latency rule (the jitter
            // of a shared test machine is not what these tests are about).
            latency_tolerance: None,
            ..AimdConfig::default()
        })
        .default_signals(false)
        .source(
            "steady",
            source_fn(|| {
                Ok(Signals {
                    cpu_percent: Some(50.0),
                    memory_percent: Some(50.0),
                    ..Signals::default()
                })
            }),
        )
        .fleet(budget.clone())
        .metrics(false)
        .tracing(false)
        .build()
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (m, stop) = (manager.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    // Bounded: at most 60 s of 20 ms tasks.
                    for _ in 0..3000 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let task = tokio::time::sleep(Duration::from_millis(20));
                        if m.submit(task).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            budget,
            manager,
            stop,
            workers,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        self.manager.shutdown().await;
        self.budget.leave().await.unwrap();
    }
}

/// The sum of the members' limits in force, sampled every 10 ms for `span`: the most seen.
async fn sample_sum(members: &[&FleetBudget], span: Duration, capacity: usize) -> usize {
    let end = Instant::now() + span;
    let mut most = 0;
    while Instant::now() < end {
        let states: Vec<_> = members.iter().map(|b| b.state()).collect();
        let sum: usize = states.iter().map(|s| s.limit).sum();
        assert!(
            sum <= capacity,
            "the members' limits sum to {sum} > C = {capacity}: {states:#?}"
        );
        most = most.max(sum);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    most
}

/// Waits until every member's grant is `share` (the fleet has settled).
async fn settle(members: &[&FleetBudget], share: usize) {
    bounded("settling on equal shares", 20, async {
        while !members.iter().all(|b| b.state().grant == share) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A limit of the user's own behind a fleet target: always busy (every permit in use and 20
/// more waiting), with a local limit of 30 that no controller moves, so that the limit in force
/// is the grant and any window in which the grants sum over C shows in the limits.
#[derive(Default)]
struct BusyLimit(std::sync::atomic::AtomicUsize);

impl LimitTarget for BusyLimit {
    fn set_limit(&self, limit: usize) {
        self.0.store(limit, Ordering::SeqCst);
    }
    fn usage(&self) -> Usage {
        let limit = self.0.load(Ordering::SeqCst);
        Usage {
            limit,
            in_flight: limit,
            waiting: 20,
        }
    }
}

/// Two busy members of C = 20 with a lease of 1 s; `b` renews every 600 ms, `a` every 100 ms,
/// so that after a fault `a` renews several times before `b` does.
async fn two_busy_members(url: &str, prefix: &str) -> [(FleetBudget, FleetTarget); 2] {
    let mut members = Vec::new();
    for id in ["a", "b"] {
        let mut cfg = config(url.to_owned(), prefix, 20, id);
        cfg.lease = Duration::from_secs(1);
        if id == "b" {
            cfg.renew_interval = Duration::from_millis(600);
        }
        let budget = FleetBudget::connect(cfg).await.unwrap();
        let target = budget.target(Arc::new(BusyLimit::default()));
        target.set_limit(30);
        members.push((budget, target));
    }
    members.try_into().ok().unwrap()
}

/// Item 1 of issue 21: Redis loses its keys without an error (`FLUSHALL`, a failover to a
/// replica that lags, eviction). Each member still holds its 10 of C = 20; one that finds
/// itself unknown rejoins with at most what it held, so the limits never sum over C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_never_lets_the_limits_sum_over_c() {
    let server = RedisServer::start();
    let [(a, _ta), (b, _tb)] = two_busy_members(&server.url(), "flush").await;
    let members = [&a, &b];
    settle(&members, 10).await;
    for _ in 0..2 {
        assert_eq!(server.command(&["FLUSHALL"]), "+OK");
        let most = sample_sum(&members, Duration::from_millis(1500), 20).await;
        assert!(most >= 16, "the members stopped working: {most}");
    }
    // Both came back into Redis with their shares.
    let watcher = FleetClient::connect(&config(server.url(), "flush", 20, "w"))
        .await
        .unwrap();
    let snap = watcher.snapshot().await.unwrap();
    assert_eq!(snap.members.len(), 2, "{snap:?}");
    assert!(snap.total_held() <= 20, "{snap:?}");
}

/// Item 1 with RESP3 and a plain restart (no persistence): the redis crate's connection
/// manager reconnects by itself, perhaps without a failed renewal; the sum stays ≤ C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp3_restart_never_lets_the_limits_sum_over_c() {
    let mut server = RedisServer::start();
    let url = format!("{}/?protocol=resp3", server.url());
    let [(a, _ta), (b, _tb)] = two_busy_members(&url, "resp3").await;
    let members = [&a, &b];
    settle(&members, 10).await;
    for _ in 0..2 {
        server.restart();
        let most = sample_sum(&members, Duration::from_millis(1500), 20).await;
        assert!(most >= 16, "the members stopped working: {most}");
    }
    assert!(
        members.iter().all(|m| m.state().mode == FleetMode::Leased),
        "{:?}",
        members.map(FleetBudget::state)
    );
}

/// Item 2: a member leaves, then the last holders die without leaving. Their share must not
/// stay counted once their keys are gone: a member that joins alone later gets all of C.
#[tokio::test]
async fn a_dead_members_share_comes_back_after_another_member_left() {
    let server = RedisServer::start();
    let cfg = config(server.url(), "leave-die", 40, "w");
    let client = FleetClient::connect(&cfg).await.unwrap();
    bounded("renewals", 10, async {
        for _ in 0..3 {
            for id in ["a", "b", "c"] {
                client.renew(id, 40, 13).await.unwrap();
            }
        }
        client.leave("a").await.unwrap();
        // The total keeps a time to live after the leave (a SET clears it).
        let ttl: i64 = server.command(&["PTTL", "leave-die:total"])[1..]
            .parse()
            .unwrap();
        assert!(ttl > 0, "the total has no expiry after a leave: PTTL {ttl}");
        // b and c die; their keys expire (4 leases), and more.
        tokio::time::sleep(cfg.lease * 5).await;
        let r = client.renew("d", 40, 0).await.unwrap();
        assert_eq!((r.grant, r.members, r.total_held), (40, 1, 40), "{r:?}");
    })
    .await;
}

/// Item 2, the script's own bookkeeping: once no live member is left, nothing stays counted,
/// even if the total key was left behind without an expiry (as the old leave path did).
#[tokio::test]
async fn a_total_left_behind_without_members_is_reset() {
    let server = RedisServer::start();
    let client = FleetClient::connect(&config(server.url(), "stale", 40, "w"))
        .await
        .unwrap();
    bounded("renewals", 10, async {
        assert_eq!(server.command(&["SET", "stale:total", "30"]), "+OK");
        let r = client.renew("d", 40, 0).await.unwrap();
        assert_eq!(r.grant, 40, "{r:?}");
    })
    .await;
}

/// Item 4: with the default renewal period (1 s), three busy members share C = 40; a fourth
/// joins. Its grant is 0 at first, a wait: its limit does not collapse, it asks for its
/// demand, three renewals after the join it is within one of the fair 10 and nobody holds more,
/// and one renewal later every member is within one of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_its_fair_share_within_three_renewals() {
    let server = RedisServer::start();
    let cfg = |id: &str| FleetConfig {
        url: server.url(),
        prefix: "join".to_owned(),
        capacity: 40,
        member_id: Some(id.to_owned()),
        ..FleetConfig::default()
    };
    let every = cfg("x").renew_interval;
    assert_eq!(every, Duration::from_secs(1));
    let adjust = Duration::from_millis(200);
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        let budget = FleetBudget::connect(cfg(id)).await.unwrap();
        members.push(Member::start(budget, 10, adjust, 20));
    }
    bounded("the incumbents taking all of C", 20, async {
        while members
            .iter()
            .map(|m| m.budget.state().grant)
            .sum::<usize>()
            < 39
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let joined = Instant::now();
    let newcomer = FleetBudget::connect(cfg("new")).await.unwrap();
    // Renewals so far: the join. Then one at once (the manager attaches its limit), then one
    // per second: three renewals after the join is `join + 4`, counted rather than timed, so
    // that a busy machine's late timers do not fail the test.
    let three_after = newcomer.state().renewals + 4;
    members.push(Member::start(newcomer.clone(), 10, adjust, 20));
    let watcher = FleetClient::connect(&cfg("w")).await.unwrap();
    // Until then: the newcomer's local limit never collapses, and it asks Redis for at least
    // its fair share.
    let mut asked = 0;
    while newcomer.state().renewals < three_after {
        assert!(
            joined.elapsed() < every * 10,
            "the newcomer stopped renewing"
        );
        let s = newcomer.state();
        assert!(s.local_limit >= 10, "the newcomer's limit collapsed: {s:?}");
        if let Ok(snap) = watcher.snapshot().await {
            assert!(snap.total_held() <= 40, "{snap:?}");
            if let Some(m) = snap.members.iter().find(|m| m.id == "new") {
                asked = asked.max(m.want);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(asked >= 10, "the newcomer asked for {asked} at most");
    let fair = |s: &FleetState| s.grant.abs_diff(10) <= 1 && s.limit.abs_diff(10) <= 1;
    let states: Vec<_> = members.iter().map(|m| m.budget.state()).collect();
    assert!(
        fair(&newcomer.state()),
        "the newcomer is not within one of the fair 10 three renewals after the join: {states:#?}"
    );
    for s in &states {
        assert!(
            s.grant <= 11,
            "a member holds over its fair share: {states:#?}"
        );
    }
    // An incumbent that renewed first in the last round got only what the others had not yet
    // given back (Σ ≤ C comes first): it takes its share at its next renewal, so every member
    // is within one of the fair 10 by one renewal period later.
    let settle = Instant::now();
    loop {
        let states: Vec<_> = members.iter().map(|m| m.budget.state()).collect();
        if states.iter().all(fair) {
            break;
        }
        assert!(
            settle.elapsed() < every * 2,
            "not within one of the fair 10 four renewals after the join: {states:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in members {
        m.stop().await;
    }
}

/// Item 3 through the public API: `leave()` is awaitable and idempotent; the others see the
/// share at their next renewal, and the member's own limit is 0 from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_returns_the_share_at_once_and_twice_is_harmless() {
    let server = RedisServer::start();
    // A long lease (2 s), so that a share that came back by expiry cannot pass for a leave.
    let cfg = |id| FleetConfig {
        lease: Duration::from_secs(2),
        ..config(server.url(), "leave", 20, id)
    };
    let a = FleetBudget::connect(cfg("a")).await.unwrap();
    let b = FleetBudget::connect(cfg("b")).await.unwrap();
    let (a, b) = (
        Member::start(a, 10, RENEW, 30),
        Member::start(b, 10, RENEW, 30),
    );
    settle(&[&a.budget, &b.budget], 10).await;
    let (survivor, leaver) = (b.budget.clone(), a.budget.clone());
    a.stop().await;
    let left = Instant::now();
    // `stop` left once; again, from a clone, is harmless and says the same.
    leaver.leave().await.unwrap();
    assert_eq!(
        (leaver.state().mode, leaver.state().limit),
        (FleetMode::Left, 0)
    );
    assert_eq!(survivor.state().mode, FleetMode::Leased);
    bounded("the survivor taking the share", 5, async {
        while survivor.state().grant < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // One renewal (plus its round trip and the scheduling of a busy machine), not a lease.
    assert!(
        left.elapsed() < RENEW * 2 + Duration::from_millis(400),
        "{:?}",
        left.elapsed()
    );
    b.stop().await;
    survivor.leave().await.unwrap();
    assert_eq!(survivor.state().mode, FleetMode::Left);
    assert_eq!(survivor.state().limit, 0);
}

/// Item 7: a password given to a server that has none is a credentials error, not `Connect`.
#[tokio::test]
async fn a_password_to_a_server_without_one_is_an_auth_error() {
    let server = RedisServer::start();
    let mut cfg = config(server.url(), "nopass", 20, "a");
    cfg.url = format!("redis://:s3cret@127.0.0.1:{}", server.port());
    let err = bounded("connect", 10, FleetBudget::connect(cfg))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("server that has none"), "{err}");
}

/// Item 5: a member that joins while Redis is down (it connects as soon as Redis is back) may
/// be granted what nobody has re-registered yet, while the returning members still use their
/// fallback limits. The documented bound: Σ ≤ C + what such newcomers were granted, and only
/// until every returning member has renewed once after Redis answers again (at most two
/// renewal intervals plus a timeout: the first try may find the connection still down); each
/// returning member is then granted at most what is left, and Σ ≤ C again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_during_an_outage_stays_within_its_documented_bound() {
    let mut server = RedisServer::start();
    let url = server.url();
    let [(a, _ta), (b, _tb)] = two_busy_members(&url, "outage").await;
    settle(&[&a, &b], 10).await;
    server.stop();
    // Longer than the lease: both fall back (C / 2 = 10 each).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!([&a, &b]
        .iter()
        .all(|m| m.state().mode == FleetMode::Fallback));
    let renewals = |m: &FleetBudget| m.state().renewals;
    let before = (renewals(&a), renewals(&b));
    // The newcomer tries to join every 20 ms; Redis comes back.
    let joiner = tokio::spawn({
        let url = url.clone();
        async move {
            loop {
                let cfg = config(url.clone(), "outage", 20, "new");
                if let Ok(budget) = FleetBudget::connect(cfg).await {
                    let target = budget.target(Arc::new(BusyLimit::default()));
                    target.set_limit(30);
                    return (budget, target);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    server.restart();
    let back = Instant::now();
    let (newcomer, _tn) = bounded("the newcomer joining", 10, joiner).await.unwrap();
    let (mut over_until, mut most_over, mut newcomer_most) = (None, 0, 0);
    let (mut a_back, mut b_back) = (None, None);
    while back.elapsed() < Duration::from_secs(2) {
        let (sa, sb, sn) = (a.state(), b.state(), newcomer.state());
        let t = back.elapsed();
        if a_back.is_none() && sa.renewals > before.0 {
            a_back = Some(t);
        }
        if b_back.is_none() && sb.renewals > before.1 {
            b_back = Some(t);
        }
        newcomer_most = newcomer_most.max(sn.limit);
        let sum = sa.limit + sb.limit + sn.limit;
        if sum > 20 {
            over_until = Some(t);
            most_over = most_over.max(sum - 20);
            assert!(
                sum <= 20 + sn.limit,
                "over C by more than the newcomer's grant: {sa:?} {sb:?} {sn:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (a_back, b_back) = (a_back.unwrap(), b_back.unwrap());
    let returned = a_back.max(b_back);
    println!(
        "join during an outage: over C by at most {most_over} (the newcomer's grant reached \
         {newcomer_most}) until {over_until:?}; the returning members renewed at {a_back:?} and \
         {b_back:?} after Redis answered"
    );
    // Every returning member renewed within two of its renewal intervals (b's is 600 ms) and a
    // timeout, with slack for a busy machine; the excess ended when the last of them had.
    let slowest = Duration::from_millis(600);
    assert!(
        returned <= slowest * 2 + Duration::from_millis(100) + Duration::from_millis(150),
        "{returned:?}"
    );
    if let Some(t) = over_until {
        assert!(
            t <= returned + Duration::from_millis(10),
            "{t:?} > {returned:?}"
        );
    }
}
