//! An adaptive Kafka consumer: handlers run concurrently up to the limit ACE picks, partitions
//! pause when handlers fall behind, offsets are committed at-least-once.
//!
//! Needs a broker (`.ci/tansu.sh start` prints one's port):
//!
//! ```text
//! cargo run -p ace-examples --example kafka -- 127.0.0.1:PORT my-topic
//! ```
//!
//! It consumes for ten seconds (or until Ctrl-C), then shuts down gracefully.

use std::time::Duration;

use ace_std::kafka::{KafkaConsumerManager, KafkaMessage, RetryPolicy};
use ace_std::AimdConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let topic = args.next().unwrap_or_else(|| "orders".to_owned());

    let config = AimdConfig {
        min_limit: 2,
        max_limit: 64,
        initial_limit: 8,
        cooldown: Duration::from_secs(2),
        adjustment_interval: Duration::from_secs(1),
        ..AimdConfig::default()
    };
    let manager = KafkaConsumerManager::builder(config)
        .brokers(brokers)
        .topic(topic)
        .group_id("ace-example")
        // Any rdkafka property; the manager owns the commit settings.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // The limit follows the handlers' latency and the machine's CPU and memory (the
        // defaults, as for every manager); the lag says there is work. More sources plug in
        // with `.source(name, s)`.
        .handler(|msg: KafkaMessage| async move {
            let payload = msg
                .payload()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            // Stand-in for real work: an I/O call that takes a few milliseconds.
            tokio::time::sleep(Duration::from_millis(5)).await;
            println!(
                "{}[{}]@{}: {payload}",
                msg.topic(),
                msg.partition(),
                msg.offset()
            );
            Ok::<(), std::io::Error>(())
        })
        // Three retries with backoff, then to a dead-letter callback instead of stopping.
        .retry(RetryPolicy::default())
        .dead_letter(|msg: KafkaMessage, failure| async move {
            eprintln!("dead letter at offset {}: {failure}", msg.offset());
            Ok::<(), std::io::Error>(())
        })
        .build()?;

    manager.start()?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
        () = manager.stopped() => {}
    }
    println!("stats: {:?}", manager.stats());
    let report = manager.shutdown().await?;
    println!("committed {:?}", report.committed);
    Ok(())
}
