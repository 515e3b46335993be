//! One vocabulary: the same user code configures each of the three managers, and each handle
//! answers the same questions (`limit`, `stats().…`, `is_shut_down`).

use std::sync::{Arc, Mutex};

use ace_core::{source_fn, Decision, Signals};
use ace_std::kafka::{KafkaConsumerManager, KafkaMessage};
use ace_std::log::HoldLogging;
use ace_std::threadpool::ThreadPoolManager;
use ace_std::AimdConfig;

/// The user's code, written once: sources, a sink, the decision log's options.
macro_rules! configure {
    ($builder:expr, $seen:expr) => {{
        let seen = Arc::clone(&$seen);
        $builder
            .source(
                "cpu",
                source_fn(|| {
                    Ok(Signals {
                        cpu_percent: Some(25.0),
                        ..Signals::default()
                    })
                }),
            )
            .source_timeout(std::time::Duration::from_millis(100))
            .sink(move |d: &Decision| seen.lock().unwrap().push(d.new_limit))
            .log_writer(std::io::sink())
            .log_holds(HoldLogging::Always)
            .tracing(false)
            .metrics(false)
    }};
}

fn config() -> AimdConfig {
    AimdConfig {
        min_limit: 2,
        max_limit: 16,
        initial_limit: 4,
        ..AimdConfig::default()
    }
}

#[tokio::test]
async fn the_same_code_configures_every_manager() {
    let seen = Arc::new(Mutex::new(Vec::new()));

    let manager = configure!(ace_std::tokio::Manager::builder(config()), seen)
        .build()
        .unwrap();
    let stats: ace_std::Stats = manager.stats();
    assert_eq!((manager.limit(), stats.limit, stats.failed), (4, 4, 0));
    manager.shutdown().await;
    assert!(manager.is_shut_down());

    let pool = configure!(ThreadPoolManager::builder(config()), seen)
        .build()
        .unwrap();
    let stats: ace_std::Stats = pool.stats().core;
    assert_eq!((pool.limit(), stats.limit, stats.failed), (4, 4, 0));
    pool.shutdown();
    assert!(pool.is_shut_down());

    let kafka = configure!(KafkaConsumerManager::builder(config()), seen)
        .brokers("127.0.0.1:9")
        .topic("t")
        .group_id("g")
        .handler(|_m: KafkaMessage| async { Ok::<(), std::io::Error>(()) })
        .build()
        .unwrap();
    let stats: ace_std::Stats = kafka.stats().core;
    assert_eq!((kafka.limit(), stats.limit, stats.failed), (4, 4, 0));
    assert!(!kafka.is_shut_down());
}
