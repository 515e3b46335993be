//! A fleet budget: several members share C = 12 on one Redis, each with its own AIMD limit.
//!
//! Start a Redis first (any version from 6 on), then run the example:
//!
//! ```text
//! redis-server --port 6379 --save '' --appendonly no &
//! cargo run -p ace-examples --features redis --example fleet -- [redis-url] [members] [seconds]
//! ```
//!
//! Each member is a `Manager` with `.fleet(budget)` in this one process, for the show; in
//! production each instance of a service is one member. Every second it prints each member's
//! grant and limit: the grants add up to at most 12, and move to member 0 while the others idle
//! (from second 6 to 11). Stop Redis while it runs to see the members hold their grants, fall
//! back to a local limit once their lease expires, and rejoin when it is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_std::core::source_fn;
use ace_std::fleet::{FleetBudget, FleetConfig};
use ace_std::{AimdConfig, Signals};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let members: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(16), |a| a.parse())?;
    let started = Instant::now();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..members {
        let budget = FleetBudget::connect(FleetConfig {
            url: url.clone(),
            prefix: "ace:example".into(),
            capacity: 12,
            member_id: Some(format!("member-{i}")),
            ..FleetConfig::default()
        })
        .await?;
        let manager = ace_std::tokio::Manager::builder(AimdConfig {
            min_limit: 1,
            initial_limit: 2,
            increase_step: 2,
            cooldown: Duration::ZERO,
            ..AimdConfig::default()
        })
        // A steady machine reading: the example's load is the downstream's, not the CPU's.
        .default_signals(false)
        .source(
            "steady",
            source_fn(|| {
                Ok(Signals {
                    cpu_percent: Some(40.0),
                    memory_percent: Some(40.0),
                    ..Signals::default()
                })
            }),
        )
        .fleet(budget.clone())
        .metrics(false)
        .tracing(false)
        .build()?;
        // 20 workers per member calling a downstream that takes 50 ms.
        for _ in 0..20 {
            let (m, n) = (manager.clone(), Arc::clone(&in_flight));
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(seconds) {
                    let t = started.elapsed().as_secs();
                    if i > 0 && (6..11).contains(&t) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let call = m.submit(async {
                        n.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                    });
                    if call.await.is_err() {
                        return;
                    }
                }
            });
        }
        handles.push((budget, manager));
    }
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line: Vec<String> = handles
            .iter()
            .map(|(b, _)| {
                let s = b.state();
                format!(
                    "{} grant {:2} limit {:2} ({})",
                    s.member_id,
                    s.grant,
                    s.limit,
                    s.mode.as_str()
                )
            })
            .collect();
        println!(
            "{:>2}s  in flight {:2}  |  {}",
            started.elapsed().as_secs(),
            in_flight.load(Ordering::SeqCst),
            line.join("  |  ")
        );
    }
    // Stop the work, then give each share back at once (not a lease later).
    for (b, m) in &handles {
        m.shutdown().await;
        b.leave().await?;
    }
    Ok(())
}
