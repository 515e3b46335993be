//! The tower layer over real HTTP on 127.0.0.1: a client protecting a downstream, a server
//! protecting itself, and cancellation. Every test starts its own servers on port 0; every load
//! loop is bounded in count and in time; every test has a watchdog. The two load tests run on
//! tokio's paused clock, so their latencies are the model's whatever else the machine runs.
//!
//! The downstream is a model of a service with `slots` workers: a request takes `base` while at
//! most `slots` are in the system; past that the extra ones queue, and each queued request slows
//! the work by 1 % (contention), so running far past the knee costs goodput, not only latency.
#![allow(missing_docs, reason = "integration tests")]
#![allow(
    clippy::cast_precision_loss,
    reason = "request counts and limits are far below 2^52"
)]

#[path = "common/load.rs"]
mod load;
#[path = "common/loopback.rs"]
mod loopback;
#[path = "common/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, HttpStatusClassifier, Overloaded};
use ace_std::AimdConfig;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use load::{on_paused_clock, quantile, quiet};
use loopback::{client, serve, HttpClient};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use wait::wait_for;

type Manager = ace_std::tokio::Manager;

/// The model downstream (see the file's docs).
struct Downstream {
    slots: usize,
    base: Duration,
    workers: tokio::sync::Semaphore,
    in_system: AtomicUsize,
}

/// Counts a request out of the system, also when its handler is dropped (client gone).
struct Leave(Arc<Downstream>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.in_system.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Downstream {
    fn new(slots: usize, base: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots,
            base,
            workers: tokio::sync::Semaphore::new(slots),
            in_system: AtomicUsize::new(0),
        })
    }

    fn in_system(&self) -> usize {
        self.in_system.load(Ordering::SeqCst)
    }
}

async fn work(State(d): State<Arc<Downstream>>) -> &'static str {
    let n = d.in_system.fetch_add(1, Ordering::SeqCst) + 1;
    let _leave = Leave(Arc::clone(&d));
    let _worker = d.workers.acquire().await.expect("never closed");
    let contention = 1.0 + 0.01 * n.saturating_sub(d.slots) as f64;
    tokio::time::sleep(d.base.mul_f64(contention)).await;
    "ok"
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(60)).await;
    "late"
}

fn downstream_router(d: &Arc<Downstream>) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/slow", get(slow))
        .route("/fast", get(|| async { "fast" }))
        .with_state(Arc::clone(d))
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("a valid request")
}

/// One finished request: when it was sent (from the run's start), how long it took, and its
/// status (`None`: an error or the client's timeout).
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Duration,
    took: Duration,
    status: Option<u16>,
}

/// Sends one request through `svc` and reads the whole body, within `timeout`.
async fn one<S>(svc: S, req: Request<Empty<Bytes>>, timeout: Duration) -> Option<u16>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Incoming>>,
    S::Error: Into<BoxError>,
{
    let call = async {
        let resp = svc.oneshot(req).await.map_err(Into::into)?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok::<_, BoxError>(status)
    };
    tokio::time::timeout(timeout, call).await.ok()?.ok()
}

/// `workers` callers, each calling `svc` in a loop for `run` (at most `per_worker` calls).
async fn closed_loop<S>(svc: S, addr: SocketAddr, workers: usize, run: Duration) -> Vec<Sample>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    const PER_WORKER: usize = 2_000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while start.elapsed() < run && samples.len() < PER_WORKER {
                    let sent = start.elapsed();
                    let status =
                        one(svc.clone(), get_req(addr, "/work"), Duration::from_secs(5)).await;
                    samples.push(Sample {
                        sent,
                        took: start.elapsed() - sent,
                        status,
                    });
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a caller task"));
    }
    all
}

/// `rate` requests per second for `run` (so at most `rate × run` of them), each its own task.
async fn open_loop(http: &HttpClient, addr: SocketAddr, rate: u32, run: Duration) -> Vec<Sample> {
    let count = (f64::from(rate) * run.as_secs_f64()) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        tick.tick().await;
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let sent = start.elapsed();
            let status = one(http, get_req(addr, "/work"), Duration::from_secs(2)).await;
            Sample {
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

/// OK responses per second among the requests sent in `[from, to)`.
fn goodput(samples: &[Sample], from: Duration, to: Duration) -> f64 {
    let ok = samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to && s.status == Some(200))
        .count();
    ok as f64 / (to - from).as_secs_f64()
}

type Limits = Arc<Mutex<Vec<(Duration, usize)>>>;

/// Records `m`'s limit every 50 ms until `stop` is set (at most 10 minutes of samples).
fn sample_limit(m: &Manager) -> (Limits, Arc<AtomicUsize>) {
    let (samples, stop): (Limits, _) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let (out, done, m) = (Arc::clone(&samples), Arc::clone(&stop), m.clone());
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for _ in 0..12_000 {
            tick.tick().await;
            if done.load(Ordering::SeqCst) != 0 {
                break;
            }
            out.lock().unwrap().push((start.elapsed(), m.limit()));
        }
    });
    (samples, stop)
}

async fn watchdog<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f).await.expect("the test hung")
}

#[test]
fn client_through_the_layer_converges_near_the_knee_and_keeps_the_goodput() {
    on_paused_clock(Duration::from_secs(300), || async {
        const K: usize = 20;
        let base = Duration::from_millis(50);
        let d = Downstream::new(K, base);
        let addr = serve(downstream_router(&d)).await;
        let http = client();
        let settle = || {
            wait_for("the downstream to drain", Duration::from_secs(10), || {
                d.in_system() == 0
            })
        };

        // Static limits: `n` callers in a closed loop is a static limit of `n`.
        let phase = Duration::from_millis(2_500);
        let warm = Duration::from_millis(500);
        let mut best = (0, 0.0);
        for n in [K / 2, K, 2 * K] {
            let g = goodput(
                &closed_loop(http.clone(), addr, n, phase).await,
                warm,
                phase,
            );
            settle().await;
            eprintln!("static {n}: {g:.0} ok/s");
            if g > best.1 {
                best = (n, g);
            }
        }

        // The adaptive limit: 200 callers through the layer, the limit found by latency.
        let manager = quiet(AimdConfig {
            min_limit: 2,
            max_limit: 200,
            initial_limit: 4,
            adjustment_interval: Duration::from_millis(200),
            cooldown: Duration::from_millis(200),
            // A 25 % rise of the p90 over the unloaded one is the knee for this caller, and a
            // gentle cut (Vector's ARC cuts by 0.9) keeps the limit near a knee that stays put.
            latency_tolerance: Some(1.25),
            latency_decrease_factor: 0.85,
            ..AimdConfig::default()
        })
        .build()
        .expect("a valid config");
        let svc = ServiceBuilder::new()
            .layer(AdaptiveConcurrencyLayer::new(manager.clone()).classifier(HttpStatusClassifier))
            .service(http.clone());
        let run = Duration::from_secs(7);
        let from = Duration::from_secs(3);
        let (limits, stop) = sample_limit(&manager);
        let samples = closed_loop(svc, addr, 200, run).await;
        stop.store(1, Ordering::SeqCst);
        let adaptive = goodput(&samples, from, run);
        let mut settled: Vec<usize> = limits
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|&(_, l)| l)
            .collect();
        eprintln!("limits after {from:?}: {settled:?}");
        settled.sort_unstable();
        let median = settled[settled.len() / 2];
        settle().await;
        assert_eq!(manager.stats().in_flight, 0);

        // No protection: 200 callers straight at the downstream.
        let unprotected = closed_loop(http.clone(), addr, 200, phase).await;
        let flood = goodput(&unprotected, warm, phase);
        settle().await;
        let ok_latency = |s: &[Sample], from: Duration| {
            quantile(
                s.iter()
                    .filter(|s| s.sent >= from)
                    .map(|s| s.took)
                    .collect(),
                0.5,
            )
        };
        let (adaptive_p50, flood_p50) =
            (ok_latency(&samples, from), ok_latency(&unprotected, warm));
        eprintln!(
            "adaptive: {adaptive:.0} ok/s, median limit {median} (K = {K}), p50 {adaptive_p50:?}; \
             best static {} at {:.0} ok/s; static 200: {flood:.0} ok/s, p50 {flood_p50:?}",
            best.0, best.1
        );
        assert!(
            (0.8 * K as f64..=1.2 * K as f64).contains(&(median as f64)),
            "the limit settled at {median}, not within 0.8-1.2 x {K}"
        );
        assert!(
            adaptive >= 0.9 * best.1,
            "adaptive goodput {adaptive:.0}/s < 0.9 x the best static ({:.0}/s at {})",
            best.1,
            best.0
        );
        assert!(
            flood < adaptive,
            "static 200 ({flood:.0}/s) is not slower than adaptive ({adaptive:.0}/s)"
        );
        assert!(
            flood_p50 > adaptive_p50 * 2,
            "static 200's p50 {flood_p50:?} vs adaptive {adaptive_p50:?}"
        );
        manager.shutdown().await;
    });
}

/// A server of `d` behind `layer`: 503 when refused.
fn behind(d: &Arc<Downstream>, layer: AdaptiveConcurrencyLayer<ace_tokio::TokioRuntime>) -> Router {
    downstream_router(d).layer(
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
}

#[test]
fn server_under_4x_overload_keeps_admitted_latency_and_sheds_the_rest_quickly() {
    on_paused_clock(Duration::from_secs(300), || async {
        const K: usize = 8;
        let base = Duration::from_millis(100);
        let capacity = (K as f64 / base.as_secs_f64()) as u32; // 80 requests/s
        let manager = quiet(AimdConfig {
            min_limit: 2,
            max_limit: 200,
            initial_limit: 4,
            increase_step: 1,
            // Grow additively from the start: a doubling would overshoot the knee by 2 x for a
            // cycle, and those admitted requests would wait twice as long.
            slow_start: false,
            // At the floor (2 x 100 ms) a cycle of 300 ms sees 6 requests: enough for a p90.
            adjustment_interval: Duration::from_millis(300),
            cooldown: Duration::from_millis(300),
            latency_min_samples: 5,
            latency_tolerance: Some(1.25),
            ..AimdConfig::default()
        })
        .build()
        .expect("a valid config");
        let guarded = Downstream::new(K, base);
        let bare = Downstream::new(K, base);
        let guarded_addr = serve(behind(
            &guarded,
            AdaptiveConcurrencyLayer::new(manager.clone()).shed(),
        ))
        .await;
        let bare_addr = serve(downstream_router(&bare)).await;
        let http = client();

        // Unloaded: two callers, well under capacity.
        let unloaded = closed_loop(http.clone(), guarded_addr, 2, Duration::from_secs(1)).await;
        assert!(unloaded.iter().all(|s| s.status == Some(200)));
        let unloaded_took: Vec<_> = unloaded.iter().map(|s| s.took).collect();
        let (unloaded_p50, unloaded_p99) = (
            quantile(unloaded_took.clone(), 0.5),
            quantile(unloaded_took, 0.99),
        );

        // 4 x capacity, open loop, for 4.5 s; the first 1.5 s let the limit find the knee.
        let run = Duration::from_millis(4_500);
        let warm = Duration::from_millis(1_500);
        let overload = open_loop(&http, guarded_addr, 4 * capacity, run).await;
        let settled: Vec<_> = overload.iter().filter(|s| s.sent >= warm).collect();
        let admitted: Vec<_> = settled
            .iter()
            .filter(|s| s.status == Some(200))
            .map(|s| s.took)
            .collect();
        let shed: Vec<_> = settled
            .iter()
            .filter(|s| s.status == Some(503))
            .map(|s| s.took)
            .collect();
        let lost = settled.iter().filter(|s| s.status.is_none()).count();
        let (admitted_n, shed_n) = (admitted.len(), shed.len());
        let admitted_p99 = quantile(admitted, 0.99);
        let shed_p99 = quantile(shed, 0.99);
        wait_for(
            "the protected server to drain",
            Duration::from_secs(10),
            || manager.stats().in_flight == 0,
        )
        .await;

        // The same server without the layer, the same load.
        let flood = open_loop(&http, bare_addr, 4 * capacity, run).await;
        let flood_p50 = quantile(
            flood
                .iter()
                .filter(|s| s.sent >= warm)
                .map(|s| s.took)
                .collect(),
            0.5,
        );
        let flood_ok = flood
            .iter()
            .filter(|s| s.sent >= warm && s.status == Some(200))
            .count();
        eprintln!(
            "unloaded p50 {unloaded_p50:?} p99 {unloaded_p99:?}; protected: {admitted_n} admitted \
             (p99 {admitted_p99:?}), {shed_n} shed (p99 {shed_p99:?}), {lost} lost, limit {}; \
             unprotected: {flood_ok} ok, p50 {flood_p50:?}",
            manager.limit()
        );
        assert_eq!(
            lost, 0,
            "every request of the protected server was answered"
        );
        assert!(admitted_n > 0 && shed_n > 0);
        assert!(
            admitted_p99 <= unloaded_p99 * 2,
            "admitted p99 {admitted_p99:?} > 2 x unloaded p99 {unloaded_p99:?}"
        );
        assert!(
            shed_p99 <= unloaded_p50 / 2,
            "503s took up to {shed_p99:?} (unloaded p50 {unloaded_p50:?})"
        );
        assert!(
            flood_p50 > unloaded_p99 * 2,
            "the unprotected server's p50 {flood_p50:?} did not degrade (unloaded p99 {unloaded_p99:?})"
        );
        manager.shutdown().await;
    });
}

/// A manager whose limit stays at `limit` (min = max).
fn fixed(limit: usize) -> Manager {
    quiet(AimdConfig {
        min_limit: limit,
        max_limit: limit,
        initial_limit: limit,
        ..AimdConfig::default()
    })
    .build()
    .expect("a valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_drop_requests_mid_flight_leak_no_permit() {
    watchdog(Duration::from_secs(60), async {
        let d = Downstream::new(4, Duration::from_millis(10));
        let server = fixed(4);
        let addr = serve(behind(&d, AdaptiveConcurrencyLayer::new(server.clone()))).await;
        let client_side = fixed(4);
        let svc = ServiceBuilder::new()
            .layer(AdaptiveConcurrencyLayer::new(client_side.clone()))
            .service(client());
        // Ten slow requests: four in flight on each side, six waiting at the client.
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(one(svc, get_req(addr, "/slow"), Duration::from_secs(60)))
            })
            .collect();
        wait_for("4 in flight and 6 waiting", Duration::from_secs(10), || {
            let s = client_side.stats();
            s.in_flight == 4 && s.waiting == 6 && server.stats().in_flight == 4
        })
        .await;
        for c in &calls {
            c.abort();
        }
        wait_for("every permit back", Duration::from_secs(10), || {
            let (c, s) = (client_side.stats(), server.stats());
            c.in_flight == 0 && c.waiting == 0 && s.in_flight == 0 && s.waiting == 0
        })
        .await;
        // The slots are all usable again.
        let statuses = futures::future::join_all(
            (0..4).map(|_| one(svc.clone(), get_req(addr, "/fast"), Duration::from_secs(5))),
        )
        .await;
        assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
        assert_eq!(client_side.stats().in_flight, 0);
        client_side.shutdown().await;
        server.shutdown().await;
    })
    .await;
}
