//! Scale: 1,000 members (simulated in this process, each with its own id and lease) renew once
//! per cycle on one local Redis. One round trip per member per cycle (counted by Redis's
//! `INFO commandstats`), the sum of grants ≤ C in every answer and every snapshot; prints the
//! renewal latency (p50, p99) and Redis's CPU (from `INFO cpu`), quoted in BENCHMARKS.md.
#![allow(missing_docs, reason = "integration tests")]

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_std::fleet::{FleetClient, FleetConfig};
use redis_server::RedisServer;

const MEMBERS: usize = 1000;
const C: usize = 40;
const CYCLE: Duration = Duration::from_millis(1000);
const CYCLES: u32 = 4;

/// `key:value` from an `INFO` text.
fn field(info: &str, key: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in INFO"))
}

/// `calls=N` of `cmdstat_<cmd>` from `INFO commandstats`.
fn calls(info: &str, cmd: &str) -> u64 {
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_renew_once_per_cycle_and_never_exceed_c() {
    let server = RedisServer::start();
    let client = FleetClient::connect(&FleetConfig {
        url: server.url(),
        prefix: "scale".into(),
        capacity: C,
        renew_interval: CYCLE,
        lease: CYCLE * 3,
        safety_margin: Duration::from_millis(200),
        // Generous: a shared 2-core test machine schedules 1,000 tasks late; the figures matter.
        timeout: Duration::from_secs(1),
        ..FleetConfig::default()
    })
    .await
    .unwrap();
    // Warm the snapshot script so that its first NOSCRIPT does not blur the count.
    client.snapshot().await.unwrap();
    let stats_before = client.info("commandstats").await.unwrap();
    let cpu_before = client.info("cpu").await.unwrap();
    let started = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(MEMBERS * CYCLES as usize)));
    let run = async {
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let (client, latencies) = (client.clone(), Arc::clone(&latencies));
            members.push(tokio::spawn(async move {
                // Members renew spread over the cycle, as real ones do (each on its own clock).
                let offset = CYCLE * u32::try_from(i).unwrap() / u32::try_from(MEMBERS).unwrap();
                let id = format!("member-{i:04}");
                let want = 1 + i % 5;
                let mut grant = 0;
                for cycle in 0..CYCLES {
                    tokio::time::sleep_until((started + CYCLE * cycle + offset).into()).await;
                    let t = Instant::now();
                    let r = client.renew(&id, want, grant.min(want)).await.unwrap();
                    latencies.lock().unwrap().push(t.elapsed());
                    assert!(r.total_held <= C, "{r:?}");
                    grant = r.grant;
                }
            }));
        }
        // Snapshots alongside: the sum of the live members' grants, by Redis's clock.
        let mut snapshots = 0u64;
        while started.elapsed() < CYCLE * CYCLES {
            let snap = client.snapshot().await.unwrap();
            assert!(snap.total_held() <= C, "{}", snap.total_held());
            snapshots += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for m in members {
            m.await.unwrap();
        }
        snapshots
    };
    let snapshots = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the scale run did not finish in 60 s");
    let wall = started.elapsed();
    let stats_after = client.info("commandstats").await.unwrap();
    let cpu_after = client.info("cpu").await.unwrap();

    let renewals = calls(&stats_after, "evalsha") - calls(&stats_before, "evalsha") - snapshots;
    let expected = u64::try_from(MEMBERS).unwrap() * u64::from(CYCLES);
    assert_eq!(renewals, expected, "round trips per member per cycle");
    assert_eq!(calls(&stats_after, "eval"), calls(&stats_before, "eval"));

    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pick = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into 6,000 samples"
        )]
        let i = ((l.len() - 1) as f64 * q).round() as usize;
        l[i]
    };
    let cpu = |info: &str| field(info, "used_cpu_user") + field(info, "used_cpu_sys");
    let busy = (cpu(&cpu_after) - cpu(&cpu_before)) / wall.as_secs_f64();
    // Redis's own time per renewal script, without the client's scheduling.
    let usec = |info: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    #[allow(clippy::cast_precision_loss, reason = "a few thousand calls")]
    let per_call = (usec(&stats_after) - usec(&stats_before)) / (renewals + snapshots) as f64;
    println!(
        "fleet scale: {MEMBERS} members, {CYCLES} cycles of {CYCLE:?}, C = {C}: {renewals} \
         renewals ({} per member per cycle), renewal latency p50 {:.2?} p99 {:.2?} max {:.2?}, \
         Redis CPU {:.1} % of one core, {per_call:.0} µs of Redis time per script call, \
         {snapshots} snapshots with sum <= C",
        renewals / expected,
        pick(0.5),
        pick(0.99),
        pick(1.0),
        busy * 100.0,
    );
    assert!(pick(0.99) < Duration::from_secs(1));
}
