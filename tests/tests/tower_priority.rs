//! Priorities, the adaptive queue and deadlines through the tower layer, over real HTTP on
//! 127.0.0.1. Every test serves on port 0, runs on tokio's paused clock (so latencies are the
//! model's whatever else the machine runs), sends a bounded number of requests and has a
//! real-time watchdog.
//!
//! The downstream's capacity is modelled: `slots` workers, each request holding one for `base`
//! (a semaphore and a sleep, no CPU), behind a layer whose limit is `slots`.
#![allow(missing_docs, reason = "integration tests")]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "request counts and rates are small"
)]

#[path = "common/load.rs"]
mod load;
#[path = "common/loopback.rs"]
mod loopback;
#[path = "common/quiet.rs"]
mod quiet;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, HttpPriority, Overloaded};
use ace_std::{AimdConfig, Priority, Shares};
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use load::{on_paused_clock, quantile};
use loopback::{client, HttpClient};
use quiet::quiet;
use tokio::time::Instant;
use tower::ServiceBuilder;

type Manager = ace_std::tokio::Manager;

/// `slots` workers taking `base` ± 25 % each (spread evenly, so that on the paused clock the
/// workers do not all free up at the same instant).
struct Downstream {
    base: Duration,
    workers: tokio::sync::Semaphore,
    calls: AtomicU64,
}

async fn work(State(d): State<Arc<Downstream>>) -> &'static str {
    let _worker = d.workers.acquire().await.expect("never closed");
    // A fixed scramble of the call number: 0.75 to 1.25 x base, mean base.
    let n = d.calls.fetch_add(1, Ordering::Relaxed);
    let spread = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as f64 / 1024.0;
    tokio::time::sleep(d.base.mul_f64(0.75 + 0.5 * spread)).await;
    "ok"
}

/// A manager whose limit stays at `limit`.
fn fixed(limit: usize, shares: Shares) -> Manager {
    quiet(AimdConfig::fixed(limit))
        .shares(shares)
        .build()
        .expect("a valid config")
}

/// What the server saw of each request with a `grpc-timeout`: its time from arrival to answer,
/// its budget, its status.
type ServerLog = Arc<std::sync::Mutex<Vec<(Duration, Duration, u16)>>>;

/// The outermost server middleware: times each request with a deadline, arrival to answer.
async fn timed(
    State(log): State<ServerLog>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let budget = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(ace_std::tower::grpc_timeout);
    let start = Instant::now();
    let resp = next.run(req).await;
    if let Some(budget) = budget {
        let status = resp.status().as_u16();
        log.lock().unwrap().push((start.elapsed(), budget, status));
    }
    resp
}

/// Serves the downstream behind `layer` (503 when refused) on a fresh loopback port.
async fn serve<P>(
    log: &ServerLog,
    slots: usize,
    base: Duration,
    layer: AdaptiveConcurrencyLayer<
        ace_tokio::TokioRuntime,
        ace_std::tower::ErrorIsBackPressure,
        P,
    >,
) -> SocketAddr
where
    P: ace_std::tower::Prioritize<axum::extract::Request> + Clone + Send + Sync + 'static,
{
    let d = Arc::new(Downstream {
        base,
        workers: tokio::sync::Semaphore::new(slots),
        calls: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/work", get(work))
        .with_state(d)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    if e.is::<Overloaded>() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }))
                .layer(layer),
        )
        .layer(axum::middleware::from_fn_with_state(Arc::clone(log), timed));
    loopback::serve(app).await
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    class: Priority,
    sent: Duration,
    took: Duration,
    status: Option<u16>,
}

/// Which class the `i`-th request of a mix is: `mix` gives the share of each class in tenths,
/// the classes interleaved by a fixed scramble of `i` (not in runs, which would arrive in step
/// with the service).
fn class_of(i: usize, mix: [usize; 3]) -> Priority {
    let slot = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 10;
    let slot = slot as usize;
    if slot < mix[0] {
        Priority::Critical
    } else if slot < mix[0] + mix[1] {
        Priority::Normal
    } else {
        Priority::Sheddable
    }
}

/// `rate` requests per second for `run` (at most `rate × run`), each its own task, classed by
/// `class`; `deadline` adds a `grpc-timeout` header.
async fn open_loop(
    http: &HttpClient,
    addr: SocketAddr,
    rate: u32,
    run: Duration,
    class: impl Fn(usize) -> Priority,
    deadline: Option<Duration>,
) -> Vec<Sample> {
    let count = (f64::from(rate) * run.as_secs_f64()) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let (http, class) = (http.clone(), class(i));
        let mut req =
            Request::get(format!("http://{addr}/work")).header("x-priority", class.as_str());
        if let Some(d) = deadline {
            req = req.header("grpc-timeout", format!("{}m", d.as_millis()));
        }
        let req = req.body(Empty::new()).expect("a valid request");
        tasks.push(tokio::spawn(async move {
            let sent = start.elapsed();
            let call = async {
                let resp = http.request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            };
            let status = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .ok()
                .and_then(Result::ok);
            Sample {
                class,
                sent,
                took: start.elapsed() - sent,
                status,
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.push(t.await.expect("a request task"));
    }
    all
}

/// Per-class figures of a run, over the requests sent from `from` on.
struct Figures {
    offered: usize,
    ok: usize,
    ok_p99: Duration,
}

fn figures(samples: &[Sample], class: Option<Priority>, from: Duration) -> Figures {
    let mine: Vec<_> = samples
        .iter()
        .filter(|s| s.sent >= from && class.is_none_or(|c| s.class == c))
        .collect();
    let ok: Vec<_> = mine
        .iter()
        .filter(|s| s.status == Some(200))
        .map(|s| s.took)
        .collect();
    Figures {
        offered: mine.len(),
        ok: ok.len(),
        ok_p99: quantile(ok, 0.99),
    }
}

const K: usize = 8;
const BASE: Duration = Duration::from_millis(100);
const MS: Duration = Duration::from_millis(1);

/// The server layer of these tests: the adaptive queue (100 ms timeout, 5 ms target, 50 ms
/// interval) and the
/// `x-priority` header.
fn prioritized(
    m: &Manager,
) -> AdaptiveConcurrencyLayer<
    ace_tokio::TokioRuntime,
    ace_std::tower::ErrorIsBackPressure,
    HttpPriority,
> {
    AdaptiveConcurrencyLayer::new(m.clone())
        .adaptive_queue(4 * K, 100 * MS, 5 * MS, 50 * MS)
        .priority(HttpPriority::new())
}

#[test]
fn critical_keeps_its_goodput_at_4x_overload_while_sheddable_absorbs_the_refusals() {
    on_paused_clock(Duration::from_secs(300), || async {
        let capacity = (K as f64 / BASE.as_secs_f64()) as u32; // 80 requests/s
        let (run, warm) = (Duration::from_secs(4), Duration::from_secs(1));
        let mix = [2, 3, 5];
        let http = client();

        // The best static limit with shedding, one class: the baseline for total goodput.
        let plain = fixed(K, Shares::new());
        let shed_addr = serve(
            &ServerLog::default(),
            K,
            BASE,
            AdaptiveConcurrencyLayer::new(plain.clone()).shed(),
        )
        .await;
        let unloaded = open_loop(
            &http,
            shed_addr,
            capacity / 4,
            Duration::from_secs(1),
            |_| Priority::Normal,
            None,
        )
        .await;
        let unloaded_p99 = figures(&unloaded, None, Duration::ZERO).ok_p99;
        let baseline = open_loop(
            &http,
            shed_addr,
            4 * capacity,
            run,
            |i| class_of(i, mix),
            None,
        )
        .await;
        let baseline_ok = figures(&baseline, None, warm).ok;

        let m = fixed(K, Shares::new());
        let addr = serve(&ServerLog::default(), K, BASE, prioritized(&m)).await;
        let samples = open_loop(&http, addr, 4 * capacity, run, |i| class_of(i, mix), None).await;
        let [critical, normal, sheddable] = Priority::ALL.map(|c| figures(&samples, Some(c), warm));
        let total = figures(&samples, None, warm);
        let refusals: Vec<_> = samples
            .iter()
            .filter(|s| s.sent >= warm && s.status == Some(503))
            .map(|s| s.took)
            .collect();
        let lost = samples.iter().filter(|s| s.status.is_none()).count();
        let refused_p99 = quantile(refusals.clone(), 0.99);
        for c in Priority::ALL {
            let r: Vec<_> = samples
                .iter()
                .filter(|s| s.sent >= warm && s.class == c && s.status == Some(503))
                .map(|s| s.took)
                .collect();
            eprintln!(
                "{c}: {} refused, p99 {:?}, max {:?}",
                r.len(),
                quantile(r.clone(), 0.99),
                r.iter().max()
            );
        }
        eprintln!(
            "unloaded p99 {unloaded_p99:?}; baseline (shed, one class) {baseline_ok} ok; \
             critical {}/{} ok (p99 {:?}), normal {}/{}, sheddable {}/{}, total {} ok; \
             {} refusals (p99 {refused_p99:?}), {lost} lost; {:?}",
            critical.ok,
            critical.offered,
            critical.ok_p99,
            normal.ok,
            normal.offered,
            sheddable.ok,
            sheddable.offered,
            total.ok,
            refusals.len(),
            m.stats().priorities
        );
        assert_eq!(lost, 0, "every request was answered");
        assert!(
            critical.ok as f64 >= 0.95 * critical.offered as f64,
            "critical goodput {}/{}",
            critical.ok,
            critical.offered
        );
        assert!(
            critical.ok_p99.as_secs_f64() <= 1.5 * unloaded_p99.as_secs_f64(),
            "critical p99 {:?} > 1.5 x unloaded {unloaded_p99:?}",
            critical.ok_p99
        );
        // Normal before Sheddable: a larger part of what it offered served (so a smaller part
        // refused), with a margin.
        let share = |f: &Figures| f.ok as f64 / f.offered.max(1) as f64;
        assert!(
            share(&normal) >= 1.5 * share(&sheddable),
            "normal served {:.3}, sheddable {:.3}",
            share(&normal),
            share(&sheddable)
        );
        assert!(
            total.ok as f64 >= 0.9 * baseline_ok as f64,
            "total goodput {} < 0.9 x the static limit's {baseline_ok}",
            total.ok
        );
        // A lower class waits at most the target (5 ms) behind more important calls or in a
        // standing queue, so its refusal comes by then.
        assert!(
            refused_p99 <= 10 * MS,
            "refusals took up to {refused_p99:?} (p99)"
        );
        m.shutdown().await;
        plain.shutdown().await;
    });
}

#[test]
fn without_overload_every_class_is_served_alike() {
    on_paused_clock(Duration::from_secs(120), || async {
        let capacity = (K as f64 / BASE.as_secs_f64()) as u32;
        let m = fixed(K, Shares::new());
        let addr = serve(&ServerLog::default(), K, BASE, prioritized(&m)).await;
        let http = client();
        let samples = open_loop(
            &http,
            addr,
            capacity / 2,
            Duration::from_secs(3),
            |i| class_of(i, [2, 3, 5]),
            None,
        )
        .await;
        assert!(
            samples.iter().all(|s| s.status == Some(200)),
            "a request was refused"
        );
        let p99 = Priority::ALL.map(|c| figures(&samples, Some(c), Duration::ZERO).ok_p99);
        eprintln!("p99 by class: {p99:?}");
        let (lo, hi) = (p99.iter().min().unwrap(), p99.iter().max().unwrap());
        assert!(*hi - *lo <= BASE, "one class waited {:?} longer", *hi - *lo);
        m.shutdown().await;
    });
}

#[test]
fn a_critical_flood_leaves_normal_its_share() {
    on_paused_clock(Duration::from_secs(300), || async {
        let capacity = (K as f64 / BASE.as_secs_f64()) as u32;
        let m = fixed(K, Shares::new().with(Priority::Normal, 25));
        let addr = serve(&ServerLog::default(), K, BASE, prioritized(&m)).await;
        let http = client();
        // 2 x capacity of Critical, plus Normal at about a tenth of capacity (well within its
        // 25 %: its bursts stay within the 2 slots it is guaranteed).
        let (run, warm) = (Duration::from_secs(3), Duration::from_secs(1));
        let rate = 2 * capacity + capacity / 10;
        let samples = open_loop(
            &http,
            addr,
            rate,
            run,
            |i| {
                if i % 21 == 20 {
                    Priority::Normal
                } else {
                    Priority::Critical
                }
            },
            None,
        )
        .await;
        let normal = figures(&samples, Some(Priority::Normal), warm);
        let critical = figures(&samples, Some(Priority::Critical), warm);
        eprintln!(
            "normal {}/{} ok, critical {}/{} ok",
            normal.ok, normal.offered, critical.ok, critical.offered
        );
        assert!(normal.offered > 0);
        assert!(
            normal.ok as f64 >= 0.9 * normal.offered as f64,
            "normal got {}/{} under the flood",
            normal.ok,
            normal.offered
        );
        m.shutdown().await;
    });
}

#[test]
fn requests_with_deadlines_are_never_answered_late() {
    on_paused_clock(Duration::from_secs(300), || async {
        let (slots, base) = (4, Duration::from_millis(20));
        let capacity = (slots as f64 / base.as_secs_f64()) as u32; // 200 requests/s
        let deadline = Duration::from_millis(50);
        let m = fixed(slots, Shares::new());
        let log = ServerLog::default();
        let addr = serve(&log, slots, base, prioritized(&m)).await;
        let http = client();
        // A few calls unloaded teach the layer how long one takes.
        let warmup = open_loop(
            &http,
            addr,
            capacity / 4,
            Duration::from_millis(500),
            |_| Priority::Normal,
            Some(deadline),
        )
        .await;
        assert!(warmup.iter().all(|s| s.status == Some(200)));
        // And a burst opens the connections the overload will need (refusals are fine here).
        let burst = (0..64).map(|_| {
            let req = Request::get(format!("http://{addr}/work"))
                .body(Empty::new())
                .expect("a valid request");
            http.request(req)
        });
        drop(futures::future::join_all(burst).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let samples = open_loop(
            &http,
            addr,
            4 * capacity,
            Duration::from_secs(2),
            |i| class_of(i, [2, 3, 5]),
            Some(deadline),
        )
        .await;
        // The server answers every request within its deadline, from the request's arrival.
        let server = log.lock().unwrap().clone();
        let late_at_server: Vec<_> = server
            .iter()
            .filter(|(took, budget, _)| took > budget)
            .collect();
        // The client also counts the trips to and from the server (on the paused clock a new
        // connection can take a few virtual milliseconds): reported, bounded loosely.
        let late: Vec<_> = samples.iter().filter(|s| s.took > deadline).collect();
        let worst = samples.iter().map(|s| s.took).max().unwrap_or_default();
        let ok = samples.iter().filter(|s| s.status == Some(200)).count();
        let refused = samples.iter().filter(|s| s.status == Some(503)).count();
        eprintln!(
            "{ok} ok, {refused} refused of {}; server: {} late of {}; client: {} over {deadline:?} (worst {worst:?})",
            samples.len(),
            late_at_server.len(),
            server.len(),
            late.len()
        );
        assert!(ok > 0 && refused > 0);
        assert_eq!(ok + refused, samples.len(), "every request was answered");
        assert!(
            late_at_server.is_empty(),
            "the server answered after the deadline: {:?}",
            &late_at_server[..late_at_server.len().min(5)]
        );
        assert!(worst <= deadline + 25 * MS, "a client waited {worst:?}");
        m.shutdown().await;
    });
}
