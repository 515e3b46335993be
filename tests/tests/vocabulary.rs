//! One vocabulary: the same user code configures each of the three managers, each builder is
//! `<module>::Builder` from `builder(config)`, each handle answers the same questions (`limit`,
//! `set_limit`, `stats().…`, `is_shut_down`), and a shut-down manager says so in the same words.

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

    let builder: ace_std::manager::Builder<_> = ace_std::tokio::Manager::builder(config());
    let manager = configure!(builder, seen).build().unwrap();
    let stats: ace_std::Stats = manager.stats();
    assert_eq!((manager.limit(), stats.limit, stats.failed), (4, 4, 0));
    assert_eq!(manager.set_limit(6), 6);
    manager.shutdown().await;
    assert!(manager.is_shut_down());
    let manager_says = manager.submit(async {}).await.unwrap_err().to_string();

    let builder: ace_std::threadpool::Builder = ThreadPoolManager::builder(config());
    let pool = configure!(builder, seen).build().unwrap();
    let stats: ace_std::Stats = pool.stats().core;
    assert_eq!((pool.limit(), stats.limit, stats.failed), (4, 4, 0));
    assert_eq!(pool.set_limit(6), 6);
    pool.shutdown();
    assert!(pool.is_shut_down());
    let join_says = pool.submit(|| ()).join().unwrap_err().to_string();
    let try_says = pool.try_submit(|| ()).unwrap_err().to_string();
    assert_eq!(manager_says, "the manager is shut down");
    assert_eq!((&join_says, &try_says), (&manager_says, &manager_says));

    let builder: ace_std::kafka::Builder = KafkaConsumerManager::builder(config());
    let kafka = configure!(builder, seen)
        .brokers("127.0.0.1:9")
        .topic("t")
        .group_id("g")
        .handler(|_m: KafkaMessage| async { Ok::<(), std::io::Error>(()) })
        .build()
        .unwrap();
    let stats: ace_std::Stats = kafka.stats().core;
    assert_eq!((kafka.limit(), stats.limit, stats.failed), (4, 4, 0));
    assert_eq!(kafka.set_limit(6), 6);
    assert_eq!(kafka.limit(), 6);
    assert!(!kafka.is_shut_down());
}
