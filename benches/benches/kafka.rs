//! Throughput and CPU of `KafkaConsumerManager` with a trivial handler, unordered and
//! key-ordered, against a plain rdkafka `StreamConsumer` loop that handles each message inline and
//! commits the same way (the highest offset + 1 of each partition, asynchronously, every second),
//! on the same broker and the same messages (1,000 keys over 4 partitions), in alternating runs;
//! each round's ratios are to the plain loop of the same round, and the summary gives their median
//! and range. The manager is built with `.headers(false)`: the plain loop reads no header either
//! (`ACE_BENCH_HEADERS=1` reads them). Then the fairness scenario: 97 keys on 4 partitions (each
//! key in one partition), a fixed limit of 64, handlers sleeping 0–5 ms, key-ordered against
//! unordered throughput (`pause_after` 20 s on both sides: the one back-pressure pause a full
//! backlog takes after 1 s costs a refetch of about a second against Tansu, on either side at
//! random).
//!
//! Needs a broker: `ACE_KAFKA_BROKERS=host:port`, or a Tansu binary (`ACE_TANSU_BIN`, or
//! `target/tansu/tansu` from `.ci/tansu.sh fetch`) that the bench starts on a free port.
//!
//! ```text
//! .ci/tansu.sh fetch && cargo bench -p ace-benches --bench kafka
//! ```
//!
//! Environment: `ACE_BENCH_MESSAGES` (default 500000), `ACE_BENCH_ROUNDS` (default 3),
//! `ACE_BENCH_FAIR_MESSAGES` (default 30000), `ACE_BENCH_FAIR_LIMIT` (default 64),
//! `ACE_BENCH_ONLY=throughput` or `fairness` (one part), `manager` or `plain` (the throughput
//! part's managers or plain loop only, for profiling), `ACE_BENCH_SET=k=v,k=v` (extra rdkafka
//! settings for the manager), `ACE_BENCH_BACKOFF` (`fetch.queue.backoff.ms` for both, default 50,
//! the manager's), `ACE_BENCH_PLAIN_SPAWN=1` (run the plain loop as a spawned task, like the
//! manager's, instead of in `block_on`), `ACE_BENCH_GAPS=1` (print the longest gap between two
//! messages the manager handled), `ACE_BENCH_STATS=1` (print each manager's stats),
//! `ACE_BENCH_TOUCH=1` (both handlers read every payload byte), `ACE_BENCH_RUNTIME=current` (a
//! current-thread tokio runtime: everything on the main thread), `ACE_BENCH_PLAIN_DETACH=1` (the
//! plain loop copies each message into an rdkafka `OwnedMessage`, as handing it to a task would
//! need).
#![allow(missing_docs, reason = "bench binary")]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ace_std::kafka::{KafkaConsumerManager, KafkaMessage, Ordering as Order};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

const PARTITIONS: i32 = 4;

/// The process's CPU time so far (user + system, every thread: librdkafka's included), from
/// `getrusage` (microsecond resolution, unlike `/proc/self/stat`'s 10 ms ticks).
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // Safety: `getrusage` writes a `rusage` into the pointer it is given, which is valid for
    // writes of that size; zeroed is a valid `rusage` even if it did not.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The CPU time of librdkafka's own threads (named `rdk:…`), from `/proc/self/task/*/stat`
/// (10 ms ticks: only meaningful summed over rounds). Threads that ended are not counted, so
/// only differences between two readings in one consumer's life mean anything.
fn rdkafka_cpu_time() -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.contains("(rdk:") {
            continue;
        }
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the `)`.
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        ticks += fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    }
    Duration::from_millis(ticks * 10)
}

/// CPU time so far: the whole process, and librdkafka's threads alone.
fn cpu_times() -> (Duration, Duration) {
    (cpu_time(), rdkafka_cpu_time())
}

/// One run: messages per second in the window, CPU microseconds per message in it, and the part
/// of that spent in librdkafka's threads.
type Run = (f64, f64, f64);

#[allow(clippy::cast_precision_loss, reason = "rates")]
fn run_of(count: u64, wall: Duration, cpu: (Duration, Duration)) -> Run {
    (
        count as f64 / wall.as_secs_f64(),
        cpu.0.as_secs_f64() * 1e6 / count as f64,
        cpu.1.as_secs_f64() * 1e6 / count as f64,
    )
}

struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker() -> (String, Option<Tansu>) {
    if let Ok(b) = std::env::var("ACE_KAFKA_BROKERS") {
        return (b, None);
    }
    let bin = std::env::var_os("ACE_TANSU_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tansu/tansu"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "no broker: set ACE_KAFKA_BROKERS, or ACE_TANSU_BIN, or run `.ci/tansu.sh fetch`"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("127.0.0.1:{port}"), Some(Tansu(child)))
}

/// Creates `topic` with [`PARTITIONS`] partitions and produces `n` messages of 100 bytes, message
/// `i` with the key and to the partition `key_of(i)` says.
async fn setup(brokers: &str, topic: &str, n: usize, key_of: impl Fn(usize) -> (String, i32)) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create")
    {
        r.expect("created");
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let payload = vec![b'x'; 100];
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let (key, partition) = key_of(i);
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
        f.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

fn consumer_config(brokers: &str, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", brokers.to_owned()),
        ("group.id", group.to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("session.timeout.ms", "2000".to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        // The manager's default, given to both sides so they fetch alike; `ACE_BENCH_BACKOFF=1000`
        // gives both librdkafka's default (1 s idle gaps whenever its queue passes a threshold).
        (
            "fetch.queue.backoff.ms",
            std::env::var("ACE_BENCH_BACKOFF").unwrap_or_else(|_| "50".to_owned()),
        ),
        ("fetch.wait.max.ms", "50".to_owned()),
        // Below the session timeout: the fairness runs last seconds.
        ("heartbeat.interval.ms", "500".to_owned()),
    ]
}

/// The trivial handler: passes the payload to `black_box`; with `touch` (`ACE_BENCH_TOUCH=1`)
/// it also reads every byte, as a real handler would.
fn handle(payload: Option<&[u8]>, touch: bool) {
    if touch {
        std::hint::black_box(
            payload
                .unwrap_or_default()
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>(),
        );
    } else {
        std::hint::black_box(payload);
    }
}

fn touch() -> bool {
    std::env::var("ACE_BENCH_TOUCH").as_deref() == Ok("1")
}

/// Messages per second in the steady state: from the 10 % mark to the 90 % mark of the run
/// (group joins and the tail are left out).
async fn plain(brokers: &str, topic: &str, group: &str, n: u64) -> Run {
    let mut config = ClientConfig::new();
    for (k, v) in consumer_config(brokers, group) {
        config.set(k, v);
    }
    let consumer: StreamConsumer = config.create().expect("consumer");
    let touch = touch();
    let detach = std::env::var("ACE_BENCH_PLAIN_DETACH").as_deref() == Ok("1");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut count = 0u64;
    let (from, to) = (n / 10, n - n / 10);
    let (mut t_from, mut t_to) = (None, None);
    let zero = (Duration::ZERO, Duration::ZERO);
    let (mut c_from, mut c_to) = (zero, zero);
    while count < n {
        let m = consumer.recv().await.expect("message");
        // The trivial handler.
        if detach {
            // What handing each message to a task costs in plain rdkafka: an `OwnedMessage`.
            let owned = m.detach();
            handle(owned.payload(), touch);
        } else {
            handle(m.payload(), touch);
        }
        next.insert(m.partition(), m.offset() + 1);
        count += 1;
        if count == from {
            t_from = Some(Instant::now());
            c_from = cpu_times();
        }
        if count == to {
            t_to = Some(Instant::now());
            c_to = cpu_times();
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &next {
                tpl.add_partition_offset(topic, p, Offset::Offset(o))
                    .expect("tpl");
            }
            consumer.commit(&tpl, CommitMode::Async).expect("commit");
            last_commit = Instant::now();
        }
    }
    let elapsed = t_to.expect("to") - t_from.expect("from");
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in &next {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .expect("tpl");
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(tpl);
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .expect("close");
    run_of(
        to - from,
        elapsed,
        (c_to.0 - c_from.0, c_to.1.saturating_sub(c_from.1)),
    )
}

/// What the manager's handler records: a count, and time and CPU at the window's two ends.
#[derive(Default)]
struct Probe {
    count: AtomicU64,
    /// With `ACE_BENCH_GAPS=1`: nanoseconds since `t0` of the last message, and the longest gap.
    gaps: Option<(Instant, AtomicU64, AtomicU64)>,
    first: Mutex<Option<(Instant, (Duration, Duration))>>,
    done: Mutex<Option<(Instant, (Duration, Duration))>>,
}

/// What the manager's handler does besides counting: nothing (`Trivial`), or sleep 0–5 ms
/// (`Sleep`, the fairness scenario).
#[derive(Clone, Copy)]
enum Work {
    Trivial,
    Sleep,
}

/// A handler's sleep in the fairness scenario: 0–5 ms, from the offset (xorshift).
fn sleep_of(offset: i64) -> Duration {
    let mut x = u64::try_from(offset)
        .unwrap_or(0)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_micros(x % 5_001)
}

#[allow(
    clippy::too_many_arguments,
    reason = "a bench's knobs, each passed once"
)]
async fn managed(
    brokers: &str,
    topic: &str,
    group: &str,
    n: u64,
    ordering: Order,
    work: Work,
    limit: Option<usize>,
) -> Run {
    // Leaked (a few bytes per round) so the handler reaches it without an `Arc` clone per
    // message: the plain loop pays nothing of the kind either.
    let touch = touch();
    let probe: &'static Probe = Box::leak(Box::new(Probe {
        gaps: (std::env::var("ACE_BENCH_GAPS").as_deref() == Ok("1"))
            .then(|| (Instant::now(), AtomicU64::new(0), AtomicU64::new(0))),
        ..Probe::default()
    }));
    let config = limit.map_or_else(ace_std::AimdConfig::default, ace_std::AimdConfig::fixed);
    // The plain loop reads no header: neither does the manager, unless `ACE_BENCH_HEADERS=1`.
    let headers = std::env::var("ACE_BENCH_HEADERS").as_deref() == Ok("1");
    let mut builder = KafkaConsumerManager::builder(config)
        .topic(topic)
        .ordering(ordering)
        .headers(headers);
    if let Work::Sleep = work {
        // The fairness scenario compares orderings, not back-pressure: a backlog full for
        // `pause_after` (1 s) pauses every partition once, and Tansu's refetch then stalls about
        // a second, on either side at random.
        builder = builder.pause_after(Duration::from_secs(20));
    }
    for (k, v) in consumer_config(brokers, group) {
        builder = match k {
            "bootstrap.servers" => builder.brokers(v),
            "group.id" => builder.group_id(v),
            _ => builder.set(k, v),
        };
    }
    // `ACE_BENCH_SET=key=value,key=value`: extra rdkafka settings for the manager, to experiment.
    for kv in std::env::var("ACE_BENCH_SET")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = kv.split_once('=') {
            builder = builder.set(k, v);
        }
    }
    let manager = builder
        .handler(move |m: KafkaMessage| async move {
            handle(m.payload(), touch);
            if let Work::Sleep = work {
                tokio::time::sleep(sleep_of(m.offset())).await;
            }
            let c = probe.count.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some((t0, last, max)) = &probe.gaps {
                let now = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let prev = last.swap(now, Ordering::Relaxed);
                if c > n / 10 && c < n - n / 10 {
                    max.fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
                }
            }
            if c == n / 10 {
                *probe.first.lock().unwrap() = Some((Instant::now(), cpu_times()));
            }
            if c == n - n / 10 {
                *probe.done.lock().unwrap() = Some((Instant::now(), cpu_times()));
            }
            Ok::<(), std::io::Error>(())
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    while probe.count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = loop {
        if let Some(t) = *probe.done.lock().unwrap() {
            break t;
        }
        tokio::task::yield_now().await;
    };
    let start = probe.first.lock().unwrap().expect("first");
    let stats = manager.stats();
    if std::env::var("ACE_BENCH_STATS").as_deref() == Ok("1") {
        eprintln!("  (manager: {stats:?})");
    } else if stats.pauses > 0 || stats.rebalances > 1 {
        eprintln!(
            "  (manager: {} pauses, {} rebalances, {} received for {n}, last error: {:?})",
            stats.pauses, stats.rebalances, stats.received, stats.last_error
        );
    }
    if let Some((_, _, max)) = &probe.gaps {
        eprintln!(
            "  (longest gap between two messages: {:.1} ms)",
            Duration::from_nanos(max.load(Ordering::Relaxed)).as_secs_f64() * 1000.0
        );
    }
    manager.shutdown().await.expect("shutdown");
    run_of(
        n - 2 * (n / 10),
        end.0 - start.0,
        (end.1 .0 - start.1 .0, end.1 .1.saturating_sub(start.1 .1)),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `median (min–max)` of a series.
fn spread(v: &[f64], digits: usize) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(v))
}

/// The main comparison: `rounds` rounds of plain, unordered and key-ordered on the same `n`
/// messages (1,000 keys over 4 partitions); prints each round, then per side the median of the
/// per-round ratios to the plain loop of the same round, with their range.
async fn throughput(brokers: &str, n: u64, rounds: u64) {
    let topic = "bench";
    setup(brokers, topic, usize::try_from(n).unwrap(), |i| {
        (
            format!("key-{}", i % 1000),
            i32::try_from(i).unwrap() % PARTITIONS,
        )
    })
    .await;
    let sides = ["plain", "unordered", "key-ordered"];
    // Per side: throughput, CPU per message, their ratios to the round's plain loop, and
    // librdkafka's share (summed).
    let mut runs: Vec<[Vec<f64>; 4]> = vec![Default::default(); 3];
    let mut rdkafka = [0.0f64; 3];
    let only = std::env::var("ACE_BENCH_ONLY").ok();
    for round in 0..rounds {
        let skipped = (1.0, 1.0, 0.0);
        let b = if only.as_deref() == Some("manager") {
            skipped
        } else {
            let (brokers, group) = (brokers.to_owned(), format!("plain-{round}"));
            if std::env::var("ACE_BENCH_PLAIN_SPAWN").as_deref() == Ok("1") {
                tokio::spawn(async move { plain(&brokers, topic, &group, n).await })
                    .await
                    .expect("plain")
            } else {
                plain(&brokers, topic, &group, n).await
            }
        };
        let (u, k) = if only.as_deref() == Some("plain") {
            (skipped, skipped)
        } else {
            let (t, trivial) = (topic, Work::Trivial);
            let u = managed(
                brokers,
                t,
                &format!("ace-u-{round}"),
                n,
                Order::Unordered,
                trivial,
                None,
            )
            .await;
            let k = managed(
                brokers,
                t,
                &format!("ace-k-{round}"),
                n,
                Order::Key,
                trivial,
                None,
            )
            .await;
            (u, k)
        };
        println!(
            "round {round}: plain {:>9.0} msg/s {:>5.2} cpu-us/msg   unordered {:>9.0} msg/s \
             {:>5.2} cpu-us/msg ({:.3})   key-ordered {:>9.0} msg/s {:>5.2} cpu-us/msg ({:.3})",
            b.0,
            b.1,
            u.0,
            u.1,
            u.0 / b.0,
            k.0,
            k.1,
            k.0 / b.0
        );
        for (i, run) in [b, u, k].into_iter().enumerate() {
            let side = &mut runs[i];
            side[0].push(run.0);
            side[1].push(run.1);
            side[2].push(run.0 / b.0);
            side[3].push(run.1 / b.1);
            rdkafka[i] += run.2;
        }
    }
    println!(
        "median (min–max) over {rounds} rounds of {n} messages; ratios to the same round's plain loop:"
    );
    for (name, side) in sides.iter().zip(&runs) {
        println!(
            "  {name:<12} {} msg/s, {} cpu-us/msg   throughput ratio {}, CPU ratio {}",
            spread(&side[0], 0),
            spread(&side[1], 2),
            spread(&side[2], 3),
            spread(&side[3], 2),
        );
    }
    #[allow(clippy::cast_precision_loss, reason = "a round count")]
    let r = rounds as f64;
    println!(
        "of which librdkafka's threads (mean, 10 ms ticks): plain {:.2}, unordered {:.2}, \
         key-ordered {:.2} cpu-us/msg",
        rdkafka[0] / r,
        rdkafka[1] / r,
        rdkafka[2] / r
    );
}

/// The fairness scenario: 97 keys on 4 partitions (each key in one partition), a fixed limit
/// (default 64), handlers that sleep 0–5 ms; key-ordered against unordered throughput, in
/// alternating runs.
async fn fairness(brokers: &str, n: u64, rounds: u64, limit: usize) {
    let topic = "fair";
    setup(brokers, topic, usize::try_from(n).unwrap(), |i| {
        let k = i % 97;
        (format!("key-{k}"), i32::try_from(k).unwrap() % PARTITIONS)
    })
    .await;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (t, sleep, fixed) = (topic, Work::Sleep, Some(limit));
        let u = managed(
            brokers,
            t,
            &format!("fair-u-{round}"),
            n,
            Order::Unordered,
            sleep,
            fixed,
        )
        .await;
        let k = managed(
            brokers,
            t,
            &format!("fair-k-{round}"),
            n,
            Order::Key,
            sleep,
            fixed,
        )
        .await;
        println!(
            "fairness round {round}: unordered {:>7.0} msg/s   key-ordered {:>7.0} msg/s ({:.3})",
            u.0,
            k.0,
            k.0 / u.0
        );
        ratios.push(k.0 / u.0);
    }
    println!(
        "fairness, 97 keys on {PARTITIONS} partitions, limit {limit}, handlers 0–5 ms, {n} \
         messages: key-ordered / unordered throughput {} (median, min–max over {rounds} rounds)",
        spread(&ratios, 3)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a quick smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = if smoke {
        2_000
    } else {
        env("ACE_BENCH_MESSAGES", 500_000)
    };
    let rounds = if smoke { 1 } else { env("ACE_BENCH_ROUNDS", 3) };
    let fair_n = if smoke {
        500
    } else {
        env("ACE_BENCH_FAIR_MESSAGES", 30_000)
    };
    let fair_limit = usize::try_from(env("ACE_BENCH_FAIR_LIMIT", 64)).unwrap_or(64);
    if smoke
        && std::env::var("ACE_KAFKA_BROKERS").is_err()
        && std::env::var("ACE_TANSU_BIN").is_err()
        && !PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tansu/tansu")
            .exists()
    {
        eprintln!("kafka bench: no broker, skipping the smoke run");
        return;
    }
    let rt = if std::env::var("ACE_BENCH_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    let only = std::env::var("ACE_BENCH_ONLY").ok();
    rt.block_on(async {
        let (brokers, _tansu) = broker();
        if only.as_deref() != Some("fairness") {
            throughput(&brokers, n, rounds).await;
        }
        if only.is_none() || only.as_deref() == Some("fairness") {
            fairness(&brokers, fair_n, rounds, fair_limit).await;
        }
    });
}
