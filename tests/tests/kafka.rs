//! `ace_std::kafka::KafkaConsumerManager` against a real Kafka-compatible broker (Tansu).
//!
//! Each test starts its own Tansu broker (see `common/tansu.rs`); set `ACE_SKIP_KAFKA_TESTS=1` to
//! skip these tests.

#![allow(missing_docs, reason = "integration tests")]

mod common;
#[path = "common/tansu.rs"]
mod tansu;

use common::kafka::wait_for;
use tansu::{create_topic, produce, produce_keyed, Broker};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_std::kafka::{
    BuildError, HandlerError, KafkaConsumerManager, KafkaMessage, Ordering as Order, RetryPolicy,
    StartError, StopError,
};
use ace_std::AimdConfig;

/// A key in its partition.
type PartitionKey = (i32, Vec<u8>);
/// The last offset of a key started, and whether it runs now.
type LastStarted = (i64, bool);

/// Checks, from inside handlers, that messages of one key (in one partition) run one at a time
/// and in strictly increasing offset order.
#[derive(Default)]
struct KeyOrder {
    keys: Mutex<HashMap<PartitionKey, LastStarted>>,
    /// Violations, as text (empty when the order held).
    violations: Mutex<Vec<String>>,
    running: AtomicU32,
    peak: AtomicU32,
}

impl KeyOrder {
    fn start(&self, msg: &KafkaMessage) {
        let running = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(running, Ordering::AcqRel);
        let Some(key) = msg.key() else { return };
        let mut keys = self.keys.lock().unwrap();
        let entry = keys
            .entry((msg.partition(), key.to_vec()))
            .or_insert((-1, false));
        let mut violations = Vec::new();
        if entry.1 {
            violations.push(format!("two at once in key {key:?} at {}", msg.offset()));
        }
        if msg.offset() <= entry.0 {
            violations.push(format!(
                "key {key:?}: offset {} after {}",
                msg.offset(),
                entry.0
            ));
        }
        *entry = (msg.offset(), true);
        drop(keys);
        self.violations.lock().unwrap().extend(violations);
    }

    fn end(&self, msg: &KafkaMessage) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = msg.key() {
            if let Some(entry) = self
                .keys
                .lock()
                .unwrap()
                .get_mut(&(msg.partition(), key.to_vec()))
            {
                entry.1 = false;
            }
        }
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
}

/// The group's committed offsets, read back from the broker.
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    common::kafka::committed_offsets(brokers, group, topic, partitions, Duration::from_secs(10))
        .expect("committed offsets")
}

fn base_builder(brokers: &str, topic: &str, group: &str) -> ace_std::kafka::Builder {
    KafkaConsumerManager::builder(AimdConfig::default())
        .brokers(brokers)
        .topic(topic)
        .group_id(group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .commit_interval(Duration::from_millis(200))
}

fn id_of(msg: &KafkaMessage, prefix: &str) -> usize {
    let payload = std::str::from_utf8(msg.payload().expect("payload")).expect("utf-8");
    payload
        .strip_prefix(prefix)
        .expect("our prefix")
        .parse()
        .expect("an id")
}

fn counts(n: usize) -> Arc<Vec<AtomicU32>> {
    Arc::new((0..n).map(|_| AtomicU32::new(0)).collect())
}

/// A small deterministic PRNG (xorshift), seeded per message.
fn rand(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// 100,000 messages over 1,000 keys and 4 partitions, handlers with random latency finishing out
/// of order, under the default per-key ordering: every key's offsets handled one at a time and
/// strictly increasing, every message handled, committed offsets reach the end, and no duplicate
/// (a single member that shuts down gracefully has no uncommitted window to redeliver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_and_committed() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("load", "load-group", 100_000usize);
    create_topic(&brokers, topic, 4).await;
    let started = Instant::now();
    let ends = produce(&brokers, topic, 4, "m", n).await;
    eprintln!("produced {n} in {:?}; ends {ends:?}", started.elapsed());

    let seen = counts(n);
    let order = Arc::new(KeyOrder::default());
    let manager = base_builder(&brokers, topic, group)
        .config(AimdConfig {
            initial_limit: 64,
            max_limit: 256,
            ..AimdConfig::default()
        })
        .handler({
            let (seen, order) = (Arc::clone(&seen), Arc::clone(&order));
            move |msg: KafkaMessage| {
                let (seen, order) = (Arc::clone(&seen), Arc::clone(&order));
                async move {
                    order.start(&msg);
                    let id = id_of(&msg, "m");
                    // Random latency: most messages yield, some sleep up to 3 ms, so handlers
                    // finish out of order.
                    let r = rand(id as u64);
                    if r % 20 == 0 {
                        tokio::time::sleep(Duration::from_micros(r % 3000)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    seen[id].fetch_add(1, Ordering::Relaxed);
                    order.end(&msg);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    let started = Instant::now();
    manager.start().expect("start");
    wait_for("every message", Duration::from_secs(120), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    eprintln!(
        "consumed {n} in {:?}: {:?}",
        started.elapsed(),
        manager.stats()
    );
    let report = manager.shutdown().await.expect("shutdown");
    assert_eq!(report.abandoned, 0);
    // Shut down: said in every manager's words.
    let again = manager.shutdown().await.unwrap_err();
    assert!(matches!(again, StopError::Shutdown), "{again:?}");
    assert_eq!(again.to_string(), "the manager is shut down");
    assert_eq!(order.violations(), Vec::<String>::new(), "per-key order");
    assert!(
        order.peak.load(Ordering::Relaxed) > 4,
        "more handlers at once than partitions"
    );

    let got = committed(&brokers, group, topic, 4);
    assert_eq!(
        got, ends,
        "committed offsets reach the end of every partition"
    );
    let dups: u32 = seen.iter().map(|c| c.load(Ordering::Relaxed) - 1).sum();
    assert_eq!(dups, 0, "no redelivery without a rebalance or restart");
}

/// A hot key with 30 % of the traffic is handled one at a time in order, and does not starve the
/// other keys: they run alongside it and are all done before it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_keeps_its_order_and_does_not_starve_the_others() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("hot", "hot-group", 10_000usize);
    create_topic(&brokers, topic, 4).await;
    let hot = |i: usize| i % 10 < 3;
    let ends = produce_keyed(&brokers, topic, 4, "k", n, |i| {
        if hot(i) {
            ("hot".to_owned(), 0)
        } else {
            let k = i % 100;
            (format!("key-{k}"), i32::try_from(k % 4).unwrap())
        }
    })
    .await;

    let seen = counts(n);
    let order = Arc::new(KeyOrder::default());
    // When each group of messages was last handled, from the start.
    let last_hot = Arc::new(AtomicU64::new(0));
    let last_other = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let manager = base_builder(&brokers, topic, group)
        .config(AimdConfig::fixed(16))
        .handler({
            let (seen, order) = (Arc::clone(&seen), Arc::clone(&order));
            let (last_hot, last_other) = (Arc::clone(&last_hot), Arc::clone(&last_other));
            move |msg: KafkaMessage| {
                let (seen, order) = (Arc::clone(&seen), Arc::clone(&order));
                let (last_hot, last_other) = (Arc::clone(&last_hot), Arc::clone(&last_other));
                async move {
                    order.start(&msg);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let id = id_of(&msg, "k");
                    seen[id].fetch_add(1, Ordering::Relaxed);
                    let at = u64::try_from(started.elapsed().as_micros()).unwrap();
                    if hot(id) { &last_hot } else { &last_other }.fetch_max(at, Ordering::Relaxed);
                    order.end(&msg);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    wait_for("every message", Duration::from_secs(120), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    let stats = manager.stats();
    manager.shutdown().await.expect("shutdown");
    let (last_hot, last_other) = (
        Duration::from_micros(last_hot.load(Ordering::Relaxed)),
        Duration::from_micros(last_other.load(Ordering::Relaxed)),
    );
    eprintln!(
        "hot done at {last_hot:?}, the others at {last_other:?}, peak {}: {stats:?}",
        order.peak.load(Ordering::Relaxed)
    );
    assert_eq!(order.violations(), Vec::<String>::new(), "per-key order");
    assert!(
        last_other < last_hot,
        "the others finish before the hot key"
    );
    assert!(
        order.peak.load(Ordering::Relaxed) > 4,
        "keys ran concurrently"
    );
    assert_eq!(committed(&brokers, group, topic, 4), ends);
}

/// Run by [`kill_9_and_restart_keep_per_key_order`] as a child process, which it kills with
/// SIGKILL: consumes under per-key ordering and appends one line per handled message to
/// `ACE_ORDER_LOG` (`id`, or `violation …` if per-key order broke).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_9_and_restart_keep_per_key_order"]
async fn order_child() {
    use std::io::Write as _;
    let (Ok(brokers), Ok(log)) = (
        std::env::var("ACE_ORDER_BROKERS"),
        std::env::var("ACE_ORDER_LOG"),
    ) else {
        panic!("run by kill_9_and_restart_keep_per_key_order, with its environment")
    };
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the log"),
    ));
    let order = Arc::new(KeyOrder::default());
    let manager = base_builder(&brokers, "crash", "crash-group")
        .config(AimdConfig::fixed(32))
        .handler(move |msg: KafkaMessage| {
            let (log, order) = (Arc::clone(&log), Arc::clone(&order));
            async move {
                order.start(&msg);
                let id = id_of(&msg, "c");
                let r = rand(id as u64);
                if r % 4 == 0 {
                    tokio::time::sleep(Duration::from_micros(r % 2000)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                order.end(&msg);
                let mut line = String::new();
                for v in order.violations.lock().unwrap().drain(..) {
                    line.push_str(&format!("violation {v}\n"));
                }
                line.push_str(&format!("{id}\n"));
                // One write per line: whatever the kill interrupts, lines stay whole.
                log.lock().unwrap().write_all(line.as_bytes()).expect("log");
                Ok::<(), std::io::Error>(())
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    // Killed by the parent; the watchdog ends an orphan.
    tokio::time::sleep(Duration::from_secs(120)).await;
    std::process::exit(3);
}

/// The consumer is killed with SIGKILL mid-stream and started again: nothing is lost, and both
/// runs handle each key one message at a time in strictly increasing offsets (the second from
/// the last commit on, redelivering what the first had not committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keep_per_key_order() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let n = 20_000usize;
    create_topic(&brokers, "crash", 4).await;
    produce(&brokers, "crash", 4, "c", n).await;
    let dir = std::env::temp_dir().join(format!("ace-kill9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let logs = [dir.join("first.log"), dir.join("second.log")];
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let spawn = |log: &PathBuf| {
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--ignored", "--exact", "order_child", "--nocapture"])
            .env("ACE_ORDER_BROKERS", &brokers)
            .env("ACE_ORDER_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the child")
    };
    /// Kills the child however the test ends.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let mut first = Reap(spawn(&logs[0]));
    wait_for(
        "the first run to be under way",
        Duration::from_secs(60),
        || read(&logs[0]).lines().count() >= n / 4,
    )
    .await;
    first.0.kill().expect("kill -9"); // SIGKILL on Unix
    first.0.wait().expect("reaped");
    let handled_first = read(&logs[0]).lines().count();

    let _second = Reap(spawn(&logs[1]));
    let all = || {
        let mut seen = vec![false; n];
        for line in read(&logs[0]).lines().chain(read(&logs[1]).lines()) {
            if let Ok(id) = line.parse::<usize>() {
                seen[id] = true;
            }
        }
        seen.iter().all(|&s| s)
    };
    wait_for(
        "every message across both runs",
        Duration::from_secs(120),
        all,
    )
    .await;
    let (first_log, second_log) = (read(&logs[0]), read(&logs[1]));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "first run handled {handled_first} before the kill, second {}",
        second_log.lines().count()
    );
    assert!(handled_first < n, "killed mid-stream");
    for (run, log) in [("first", &first_log), ("second", &second_log)] {
        let violations: Vec<&str> = log.lines().filter(|l| l.starts_with("violation")).collect();
        assert!(violations.is_empty(), "{run} run: {violations:?}");
    }
}

/// A slow handler makes the manager pause; nothing is fetched while paused, even for longer than
/// `max.poll.interval.ms` (and the group does not evict the consumer: no rebalance, no
/// redelivery); resuming brings the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_pause_and_resume_without_eviction() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("slow", "slow-group", 300usize);
    create_topic(&brokers, topic, 1).await;
    produce(&brokers, topic, 1, "s", n).await;

    let valve = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = counts(n);
    let manager = base_builder(&brokers, topic, group)
        .set("max.poll.interval.ms", "3000")
        .config(AimdConfig::fixed(2))
        .buffer(4)
        .pause_after(Duration::from_millis(200))
        .handler({
            let (valve, seen) = (Arc::clone(&valve), Arc::clone(&seen));
            move |msg: KafkaMessage| {
                let (valve, seen) = (Arc::clone(&valve), Arc::clone(&seen));
                async move {
                    valve.acquire().await.expect("open").forget();
                    seen[id_of(&msg, "s")].fetch_add(1, Ordering::Relaxed);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    wait_for("a pause", Duration::from_secs(30), || manager.is_paused()).await;
    let at_pause = manager.stats();
    eprintln!("paused: {at_pause:?}");
    assert!(
        at_pause.received <= 2 + 4 + 1,
        "backlog bounded at the high-water mark"
    );

    // Longer than max.poll.interval.ms (3 s): still paused, nothing fetched, still a member.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = manager.stats();
    assert!(later.paused);
    assert_eq!(
        later.received, at_pause.received,
        "no message fetched while paused"
    );
    assert_eq!(
        later.rebalances, at_pause.rebalances,
        "not evicted from the group"
    );
    assert_eq!(later.assigned, 1);

    valve.add_permits(n * 2);
    wait_for("every message", Duration::from_secs(60), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    let end = manager.stats();
    eprintln!("done: {end:?}");
    assert!(end.resumes >= 1, "resumed");
    assert!(end.pauses >= 1);
    manager.shutdown().await.expect("shutdown");
    let dups: u32 = seen.iter().map(|c| c.load(Ordering::Relaxed) - 1).sum();
    assert_eq!(
        dups, 0,
        "no redelivery: the consumer kept its partition throughout"
    );
    assert_eq!(
        committed(&brokers, group, topic, 1),
        vec![i64::try_from(n).unwrap()]
    );
}

/// Handlers that are slow but keep finishing (50 ms each, limit 4, buffer 8) hold the backlog at
/// the high-water mark, one completion at a time: the manager pauses after `pause_after`, and
/// pausing costs no throughput against a manager that never pauses (same broker, same time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_finishing_handlers_pause_without_losing_throughput() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let n = 1000usize;
    for topic in ["steady-pause", "steady-never"] {
        create_topic(&brokers, topic, 1).await;
        produce(&brokers, topic, 1, "s", n).await;
    }
    let gaps: Arc<Mutex<(Option<Instant>, Duration)>> = Arc::default();
    let make = |topic: &str, pause_after: Duration| {
        let seen = counts(n);
        let gaps = Arc::clone(&gaps);
        let track = pause_after < Duration::from_secs(1);
        let manager = base_builder(&brokers, topic, &format!("{topic}-group"))
            .config(AimdConfig::fixed(4))
            .buffer(8)
            .pause_after(pause_after)
            .handler({
                let seen = Arc::clone(&seen);
                move |msg: KafkaMessage| {
                    let (seen, gaps) = (Arc::clone(&seen), Arc::clone(&gaps));
                    async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        seen[id_of(&msg, "s")].fetch_add(1, Ordering::Relaxed);
                        if track {
                            // The longest time without a completion: what a pause costs.
                            let mut g = gaps.lock().unwrap();
                            let now = Instant::now();
                            if let Some(last) = g.0 {
                                g.1 = g.1.max(now - last);
                            }
                            g.0 = Some(now);
                        }
                        Ok::<(), std::io::Error>(())
                    }
                }
            })
            .build()
            .expect("build");
        (manager, seen)
    };
    let (pausing, seen_pausing) = make("steady-pause", Duration::from_millis(200));
    let (never, seen_never) = make("steady-never", Duration::from_secs(60));
    let started = Instant::now();
    pausing.start().expect("start");
    never.start().expect("start");
    let all = |seen: &[AtomicU32]| seen.iter().all(|c| c.load(Ordering::Relaxed) > 0);
    let (mut t_pausing, mut t_never) = (None, None);
    wait_for(
        "both to handle every message",
        Duration::from_secs(60),
        || {
            if t_pausing.is_none() && all(&seen_pausing) {
                t_pausing = Some(started.elapsed());
            }
            if t_never.is_none() && all(&seen_never) {
                t_never = Some(started.elapsed());
            }
            t_pausing.is_some() && t_never.is_some()
        },
    )
    .await;
    let (t_pausing, t_never) = (t_pausing.unwrap(), t_never.unwrap());
    let (s_pausing, s_never) = (pausing.stats(), never.stats());
    eprintln!(
        "pausing: {t_pausing:?} {s_pausing:?} (longest gap {:?})\nnever: {t_never:?} {s_never:?}",
        gaps.lock().unwrap().1
    );
    pausing.shutdown().await.expect("shutdown");
    never.shutdown().await.expect("shutdown");
    assert!(s_pausing.pauses > 0, "a sustained backlog pauses");
    assert_eq!(s_never.pauses, 0);
    // 1,000 × 50 ms over 4 slots is 12.5 s at best; 5 % for a noisy machine.
    assert!(
        t_pausing.as_secs_f64() <= t_never.as_secs_f64() * 1.05,
        "pausing costs throughput: {t_pausing:?} against {t_never:?}"
    );
}

/// A rebalance while a member has a full buffer: the revoked partitions' buffered messages are
/// dropped (the next owner handles them), and those in flight finish before the revoke-time
/// commit, so no message is handled twice across the two members. (Unordered: under per-key
/// ordering, messages that finished above one still queued behind its key are handled again by
/// the next owner, the at-least-once window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_over_buffered_messages_without_handling_them_twice() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("handover", "handover-group", 4000usize);
    create_topic(&brokers, topic, 4).await;
    let ends = produce(&brokers, topic, 4, "h", n).await;

    let seen = counts(n);
    let make = |who: Arc<AtomicU64>, weight: u32| {
        let seen = Arc::clone(&seen);
        base_builder(&brokers, topic, group)
            .config(AimdConfig::fixed(4))
            .ordering(Order::Unordered)
            .buffer(256)
            .handler(move |msg: KafkaMessage| {
                let (seen, who) = (Arc::clone(&seen), Arc::clone(&who));
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    seen[id_of(&msg, "h")].fetch_add(weight, Ordering::Relaxed);
                    who.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), std::io::Error>(())
                }
            })
            .build()
            .expect("build")
    };
    let (count_a, count_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = make(Arc::clone(&count_a), 1);
    a.start().expect("start a");
    wait_for("a to fill its buffer", Duration::from_secs(30), || {
        a.stats().core.waiting >= 200
    })
    .await;
    let b = make(Arc::clone(&count_b), 1000);
    b.start().expect("start b");
    wait_for("every message", Duration::from_secs(90), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    let (sa, sb) = (a.stats(), b.stats());
    eprintln!(
        "a handled {}, b handled {}\na: {sa:?}\nb: {sb:?}",
        count_a.load(Ordering::Relaxed),
        count_b.load(Ordering::Relaxed)
    );
    a.shutdown().await.expect("a shuts down");
    b.shutdown().await.expect("b shuts down");
    assert!(count_b.load(Ordering::Relaxed) > 0, "b took partitions");
    // Message `i` is at offset `i / 4` of partition `i % 4`; handled by A counts 1, by B 1000.
    let twice: Vec<(usize, usize, u32)> = (0..n)
        .map(|i| (i % 4, i / 4, seen[i].load(Ordering::Relaxed)))
        .filter(|&(_, _, c)| c != 1 && c != 1000)
        .collect();
    assert_eq!(
        twice,
        [],
        "(partition, offset) handled twice: by the old owner after the revoke"
    );
    assert_eq!(committed(&brokers, group, topic, 4), ends);
}

/// Two managers in one group split the partitions and both work; when one leaves, its partitions
/// move to the other and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_and_hand_over_partitions() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("shared", "shared-group", 20_000usize);
    create_topic(&brokers, topic, 4).await;
    let ends = produce(&brokers, topic, 4, "t", n).await;

    let seen = counts(n);
    let make = |who: Arc<AtomicU64>| {
        let seen = Arc::clone(&seen);
        base_builder(&brokers, topic, group)
            .config(AimdConfig::fixed(4))
            .handler(move |msg: KafkaMessage| {
                let (seen, who) = (Arc::clone(&seen), Arc::clone(&who));
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    seen[id_of(&msg, "t")].fetch_add(1, Ordering::Relaxed);
                    who.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), std::io::Error>(())
                }
            })
            .build()
            .expect("build")
    };
    let (count_a, count_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = make(Arc::clone(&count_a));
    a.start().expect("start a");
    wait_for("a to consume", Duration::from_secs(30), || {
        count_a.load(Ordering::Relaxed) > 100
    })
    .await;

    let b = make(Arc::clone(&count_b));
    b.start().expect("start b");
    wait_for("the split", Duration::from_secs(30), || {
        a.stats().assigned == 2 && b.stats().assigned == 2
    })
    .await;
    let (a_at_split, b_at_split) = (
        count_a.load(Ordering::Relaxed),
        count_b.load(Ordering::Relaxed),
    );
    wait_for("both to work", Duration::from_secs(30), || {
        count_a.load(Ordering::Relaxed) > a_at_split + 100
            && count_b.load(Ordering::Relaxed) > b_at_split + 100
    })
    .await;

    // A leaves: its partitions move to B.
    a.shutdown().await.expect("a shuts down");
    wait_for("b to take all four", Duration::from_secs(30), || {
        b.stats().assigned == 4
    })
    .await;
    wait_for("every message", Duration::from_secs(120), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    b.shutdown().await.expect("b shuts down");
    eprintln!(
        "a handled {}, b handled {}",
        count_a.load(Ordering::Relaxed),
        count_b.load(Ordering::Relaxed)
    );
    assert_eq!(committed(&brokers, group, topic, 4), ends);
}

/// A new manager in the same group resumes from the committed offsets: it sees nothing below
/// what the first one committed, and together they see everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_resumes_from_committed_offsets() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group, n) = ("restart", "restart-group", 10_000usize);
    create_topic(&brokers, topic, 2).await;
    let ends = produce(&brokers, topic, 2, "r", n).await;

    let seen = counts(n);
    let offsets: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let make = || {
        let (seen, offsets) = (Arc::clone(&seen), Arc::clone(&offsets));
        base_builder(&brokers, topic, group)
            .config(AimdConfig::fixed(8))
            .handler(move |msg: KafkaMessage| {
                let (seen, offsets) = (Arc::clone(&seen), Arc::clone(&offsets));
                async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    seen[id_of(&msg, "r")].fetch_add(1, Ordering::Relaxed);
                    offsets
                        .lock()
                        .unwrap()
                        .push((msg.partition(), msg.offset()));
                    Ok::<(), std::io::Error>(())
                }
            })
            .build()
            .expect("build")
    };
    let first = make();
    first.start().expect("start");
    wait_for("some progress", Duration::from_secs(30), || {
        first.stats().handled >= 3000
    })
    .await;
    let report = first.shutdown().await.expect("shutdown");
    let handed_over: HashMap<i32, i64> =
        report.committed.iter().map(|(_, p, o)| (*p, *o)).collect();
    eprintln!("first committed {handed_over:?}");
    // A partition the first manager never received from has nothing committed (-1).
    let expected: Vec<i64> = (0..2)
        .map(|p| handed_over.get(&p).copied().unwrap_or(-1))
        .collect();
    assert_eq!(committed(&brokers, group, topic, 2), expected);
    offsets.lock().unwrap().clear();

    let second = make();
    second.start().expect("start again");
    wait_for("every message", Duration::from_secs(60), || {
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    second.shutdown().await.expect("shutdown");
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, o) in offsets.lock().unwrap().iter() {
        let e = first_seen.entry(p).or_insert(o);
        *e = (*e).min(o);
    }
    for (p, o) in first_seen {
        let resume = handed_over.get(&p).copied().unwrap_or(0);
        assert_eq!(o, resume, "partition {p} resumes at the committed offset");
    }
    assert_eq!(committed(&brokers, group, topic, 2), ends);
}

/// Under the default policy, a handler that keeps failing is retried, then the manager stops:
/// nothing at or past the failed offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_stops_without_committing_past_it() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group) = ("fail", "fail-group");
    create_topic(&brokers, topic, 1).await;
    produce(&brokers, topic, 1, "f", 200).await;

    let attempts = Arc::new(AtomicU32::new(0));
    let manager = base_builder(&brokers, topic, group)
        .config(AimdConfig::fixed(4))
        .retry(RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        })
        .handler({
            let attempts = Arc::clone(&attempts);
            move |msg: KafkaMessage| {
                let attempts = Arc::clone(&attempts);
                async move {
                    if msg.offset() == 50 {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        return Err("poison message".into());
                    }
                    Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    tokio::time::timeout(Duration::from_secs(30), manager.stopped())
        .await
        .expect("the manager stops by itself");
    let err = manager.shutdown().await.expect_err("a handler failure");
    let StopError::HandlerFailed(failure) = err else {
        panic!("expected HandlerFailed, got {err:?}")
    };
    assert_eq!(
        (failure.partition, failure.offset, failure.attempts),
        (0, 50, 3)
    );
    assert!(matches!(failure.error, HandlerError::Failed(_)));
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        3,
        "one attempt and two retries"
    );
    assert_eq!(
        committed(&brokers, group, topic, 1),
        vec![50],
        "not committed past the failure"
    );
}

/// With a dead-letter callback, a failing (or panicking) handler's message goes to the callback
/// after its retries, then counts as done; the manager keeps going and survives the panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_panicking_messages_go_to_the_dead_letter_callback() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group) = ("dlq", "dlq-group");
    create_topic(&brokers, topic, 1).await;
    produce(&brokers, topic, 1, "d", 200).await;

    let dead: Arc<Mutex<Vec<(i64, u32, bool)>>> = Arc::default();
    let manager = base_builder(&brokers, topic, group)
        .config(AimdConfig::fixed(4))
        .retry(RetryPolicy {
            max_retries: 1,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(5),
        })
        .handler(|msg: KafkaMessage| async move {
            match msg.offset() {
                50 => Err(std::io::Error::other("poison")),
                60 => panic!("handler bug on offset 60"),
                _ => Ok(()),
            }
        })
        .dead_letter({
            let dead = Arc::clone(&dead);
            move |msg: KafkaMessage, failure| {
                let dead = Arc::clone(&dead);
                async move {
                    let panicked = matches!(failure.error, HandlerError::Panicked(_));
                    dead.lock()
                        .unwrap()
                        .push((msg.offset(), failure.attempts, panicked));
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    wait_for("every message", Duration::from_secs(30), || {
        let s = manager.stats();
        s.handled + s.dead_lettered >= 200
    })
    .await;
    let report = manager.shutdown().await.expect("shutdown");
    eprintln!("{report:?}");
    let mut dead = dead.lock().unwrap().clone();
    dead.sort_unstable();
    assert_eq!(dead, vec![(50, 2, false), (60, 2, true)]);
    assert_eq!(committed(&brokers, group, topic, 1), vec![200]);
}

/// The broker is killed and restarted on the same port (empty: memory storage). The manager
/// reports errors while it is away, does not panic, and consumes what is produced after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_broker_restart() {
    let Some(mut broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let (topic, group) = ("bounce", "bounce-group");
    create_topic(&brokers, topic, 1).await;
    produce(&brokers, topic, 1, "a", 100).await;

    let before = counts(100);
    let after = counts(300);
    let manager = base_builder(&brokers, topic, group)
        .config(AimdConfig::fixed(4))
        // librdkafka 2.12.1 dereferences a NULL topic name (rd_kafka_metadata_update_op) when
        // a Fetch v12 response carries KIP-951 leader-change tags, which Tansu sends for a
        // partition it does not know. A restarted (memory-only) Tansu knows none, so the
        // consumer must not fetch before the topic is back: reconnect only after 4 s.
        .set("reconnect.backoff.ms", "4000")
        .set("reconnect.backoff.max.ms", "4000")
        .handler({
            let (before, after) = (Arc::clone(&before), Arc::clone(&after));
            move |msg: KafkaMessage| {
                let (before, after) = (Arc::clone(&before), Arc::clone(&after));
                async move {
                    let payload =
                        std::str::from_utf8(msg.payload().unwrap_or_default()).unwrap_or("");
                    if let Some(id) = payload.strip_prefix('a') {
                        before[id.parse::<usize>().unwrap()].fetch_add(1, Ordering::Relaxed);
                    } else if let Some(id) = payload.strip_prefix('b') {
                        after[id.parse::<usize>().unwrap()].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    wait_for("the first batch", Duration::from_secs(30), || {
        before.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;

    let errors_before = manager.stats().consumer_errors;
    broker.kill();
    wait_for("an error report", Duration::from_secs(30), || {
        manager.stats().consumer_errors > errors_before
    })
    .await;
    eprintln!("broker down: {:?}", manager.stats());

    broker.restart();
    create_topic(&brokers, topic, 1).await;
    produce(&brokers, topic, 1, "b", 300).await;
    wait_for("the second batch", Duration::from_secs(60), || {
        after.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    })
    .await;
    eprintln!("recovered: {:?}", manager.stats());
    manager
        .shutdown()
        .await
        .expect("a clean shutdown after the restart");
    assert_eq!(committed(&brokers, group, topic, 1), vec![300]);
}

/// Bad settings are refused at build time, naming the field.
#[test]
fn bad_config_is_refused_at_build() {
    let ok = || {
        KafkaConsumerManager::builder(AimdConfig::default())
            .brokers("127.0.0.1:1")
            .topic("t")
            .group_id("g")
            .handler(|_m: KafkaMessage| async { Ok::<(), std::io::Error>(()) })
    };
    assert!(ok().build().is_ok());
    let missing = KafkaConsumerManager::builder(AimdConfig::default())
        .topic("t")
        .build()
        .unwrap_err();
    assert!(
        matches!(missing, BuildError::Missing("brokers")),
        "{missing}"
    );
    let aimd = ok()
        .config(AimdConfig {
            decrease_factor: 2.0,
            ..AimdConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(&aimd, BuildError::Config(e) if e.field() == "decrease_factor"),
        "{aimd}"
    );
    // Display says what was refused and leaves the cause to `source()`, not repeating it.
    let cause = std::error::Error::source(&aimd)
        .expect("the rule broken")
        .to_string();
    assert!(cause.contains("decrease_factor"), "{cause}");
    assert!(!aimd.to_string().contains(&cause), "{aimd}");
    let revoke = ok()
        .set("max.poll.interval.ms", "10000")
        .revoke_timeout(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(matches!(&revoke, BuildError::Config(e) if e.field() == "revoke_timeout"));
    let interval = ok().commit_interval(Duration::ZERO).build().unwrap_err();
    assert!(matches!(&interval, BuildError::Config(e) if e.field() == "commit_interval"));
    let auto = ok().set("enable.auto.commit", "true").build().unwrap_err();
    assert!(matches!(&auto, BuildError::Forbidden { key, .. } if key == "enable.auto.commit"));
    let bogus = ok().set("no.such.property", "1").build().unwrap_err();
    assert!(matches!(bogus, BuildError::Client(_)), "{bogus}");
    let not_running = ok().build().unwrap();
    assert!(matches!(not_running.start(), Err(StartError::NoRuntime)));
}

/// Key-ordered, 97 keys on 4 partitions (each key in one partition), limit 64: as many handlers
/// run as there are keys with work, from every partition from the start, whatever order
/// librdkafka hands the partitions over in (a buffer full of one partition's messages, whose
/// keys are all busy, must not starve the other three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_is_served_from_the_start_under_key_order() {
    // 20–40 ms: 64 handlers want ~2,000 messages a second; sampled every 50 ms over 4 s.
    served_from_the_start("fair", 16_000, (20_000, 40_000), (50, 80)).await;
}

/// The same with handlers of 0–5 ms (~25,000 messages a second): a partition held for its share
/// of the buffer is fetched again without waiting out the broker's long poll of the others
/// (with librdkafka's `fetch.wait.max.ms=500`: idle half a second after each resume, 13.9 of 64 in
/// flight on average).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_is_served_with_fast_handlers_under_key_order() {
    served_from_the_start("fast", 80_000, (0, 5_000), (10, 150)).await;
}

/// 97 keys on 4 partitions, limit 64, handlers sleeping `micros` (a range, per message); handlers
/// in flight sampled every `sample.0` ms, `sample.1` times, from the first message handled.
async fn served_from_the_start(topic: &str, n: usize, micros: (u64, u64), sample: (u64, usize)) {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    let group = format!("{topic}-group");
    create_topic(&brokers, topic, 4).await;
    produce_keyed(&brokers, topic, 4, "f", n, |i| {
        let k = i % 97;
        (format!("key-{k}"), i32::try_from(k % 4).unwrap())
    })
    .await;

    let order = Arc::new(KeyOrder::default());
    // The first time each partition had a message handled, from the first of all.
    let first: Arc<Mutex<BTreeMap<i32, Instant>>> = Arc::default();
    let handled = Arc::new(AtomicU64::new(0));
    let manager = base_builder(&brokers, topic, &group)
        .config(AimdConfig::fixed(64))
        // The subject is the share between partitions, not back-pressure: a backlog full for
        // `pause_after` (as a consumer tens of thousands of messages behind has) pauses every
        // partition once, and against Tansu the refetch then takes about half a second.
        .pause_after(Duration::from_secs(20))
        .handler({
            let (order, first, handled) =
                (Arc::clone(&order), Arc::clone(&first), Arc::clone(&handled));
            move |msg: KafkaMessage| {
                let (order, first, handled) =
                    (Arc::clone(&order), Arc::clone(&first), Arc::clone(&handled));
                async move {
                    order.start(&msg);
                    first
                        .lock()
                        .unwrap()
                        .entry(msg.partition())
                        .or_insert_with(Instant::now);
                    let spread = micros.1 - micros.0 + 1;
                    let us = micros.0 + rand(u64::try_from(msg.offset()).unwrap()) % spread;
                    tokio::time::sleep(Duration::from_micros(us)).await;
                    order.end(&msg);
                    handled.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .build()
        .expect("build");
    manager.start().expect("start");
    wait_for("a first message", Duration::from_secs(30), || {
        !first.lock().unwrap().is_empty()
    })
    .await;
    let mut samples = Vec::new();
    for _ in 0..sample.1 {
        tokio::time::sleep(Duration::from_millis(sample.0)).await;
        samples.push(order.running.load(Ordering::Relaxed));
    }
    let done = handled.load(Ordering::Relaxed);
    let stats = manager.stats();
    manager.shutdown().await.expect("shutdown");
    let first = first.lock().unwrap().clone();
    let t0 = *first.values().min().unwrap();
    let waits: BTreeMap<i32, Duration> = first.iter().map(|(p, t)| (*p, *t - t0)).collect();
    #[allow(clippy::cast_precision_loss, reason = "a few hundred small samples")]
    let mean = samples.iter().sum::<u32>() as f64 / samples.len() as f64;
    eprintln!("first handled per partition after {waits:?}; in flight mean {mean:.1}: {stats:?}");
    assert!(
        done < u64::try_from(n).unwrap(),
        "every message was handled before the sampling ended: produce more"
    );
    assert_eq!(order.violations(), Vec::<String>::new(), "per-key order");
    assert_eq!(waits.len(), 4, "a partition got nothing: {waits:?}");
    assert!(
        waits.values().all(|w| *w < Duration::from_secs(1)),
        "a partition waited: {waits:?}"
    );
    assert!(
        mean >= 48.0,
        "{mean:.1} handlers in flight on average, of 64"
    );
}
