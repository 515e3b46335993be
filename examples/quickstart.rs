//! The seed README's quick start in Rust: 100 tasks through an adaptive limit on tokio, with the
//! decision log as JSON lines on stderr.
//!
//! `cargo run -p ace-examples --example quickstart`

use std::time::Duration;

use ace_std::log::HoldLogging;
use ace_std::AimdConfig;

async fn work(item: u64) -> u64 {
    // Your async work: a call to a downstream service, say.
    tokio::time::sleep(Duration::from_millis(20)).await;
    item * item
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = AimdConfig {
        min_limit: 5,
        max_limit: 50,
        initial_limit: 10,
        adjustment_interval: Duration::from_millis(500),
        cooldown: Duration::from_secs(1),
        ..Default::default()
    };

    // The one-liner: `ace_std::tokio::Manager::new(config)?` (signals: CPU, memory, executor
    // lag; log: tracing events and metrics). Here the builder adds JSON lines on stderr.
    let manager = ace_std::tokio::Manager::builder(config)
        .log_writer(std::io::stderr())
        .log_holds(HoldLogging::OnChange)
        .build()?;

    let results = futures::future::join_all((0..100).map(|i| manager.submit(work(i)))).await;
    let sum: u64 = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    println!("sum of squares 0..100 = {sum}");

    // A bigger burst, long enough for a few control cycles.
    let results = futures::future::join_all((0..2_000).map(|i| manager.submit(work(i)))).await;
    println!("{} more tasks done", results.len());

    let stats = manager.stats();
    println!(
        "limit {} | completed {} ({} failed) | decisions {} ({} adjustments)",
        stats.limit, stats.completed, stats.failed, stats.decisions, stats.adjustments
    );
    manager.shutdown().await;
    Ok(())
}
