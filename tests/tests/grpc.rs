//! The tower layer in front of a tonic server and behind a tonic client, over gRPC on 127.0.0.1.
//! The server sheds at its limit and answers `RESOURCE_EXHAUSTED`; the client classifies with
//! `GrpcStatusClassifier`, so those answers cut its own adaptive limit.
//!
//! No protoc and no build script: the messages derive `prost::Message` and the service is
//! written against tonic's `server::Grpc` and `client::Grpc` with `ProstCodec`, as generated
//! code would be. The test serves on port 0, runs on tokio's paused clock (the server's 50 ms
//! is the model's whatever else the machine runs), sends a bounded number of calls and has a
//! real-time watchdog.
#![allow(missing_docs, reason = "integration tests")]
#![allow(
    clippy::cast_precision_loss,
    reason = "call counts and limits are far below 2^52"
)]

#[path = "common/load.rs"]
mod load;
#[path = "common/quiet.rs"]
mod quiet;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, GrpcStatusClassifier, Overloaded};
use ace_std::AimdConfig;
use axum::http;
use hyper::body::Bytes;
use load::{on_paused_clock, quantile};
use quiet::quiet;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codec::ProstCodec;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder};

type Manager = ace_std::tokio::Manager;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone, PartialEq, prost::Message)]
struct WorkRequest {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WorkReply {
    #[prost(uint64, tag = "1")]
    id: u64,
}

const PATH: &str = "/ace.test.Work/Do";
/// The server's capacity: `SLOTS` calls at a time, `BASE` each.
const SLOTS: usize = 4;
const BASE: Duration = Duration::from_millis(50);
/// How long a caller waits before it retries a refused call.
const RETRY: Duration = Duration::from_millis(10);

/// The downstream: `SLOTS` workers, each call holding one for `BASE`.
#[derive(Clone)]
struct Work {
    workers: Arc<tokio::sync::Semaphore>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl tonic::server::UnaryService<WorkRequest> for Work {
    type Response = WorkReply;
    type Future = BoxFuture<Result<tonic::Response<WorkReply>, Status>>;

    fn call(&mut self, req: tonic::Request<WorkRequest>) -> Self::Future {
        let w = self.clone();
        Box::pin(async move {
            let now = w.running.fetch_add(1, Ordering::SeqCst) + 1;
            w.most.fetch_max(now, Ordering::SeqCst);
            let _worker = w.workers.acquire().await.expect("never closed");
            tokio::time::sleep(BASE).await;
            w.running.fetch_sub(1, Ordering::SeqCst);
            Ok(tonic::Response::new(WorkReply {
                id: req.into_inner().id,
            }))
        })
    }
}

/// The service as tonic's generated server code would have it: one unary method.
#[derive(Clone)]
struct WorkServer(Work);

impl tonic::server::NamedService for WorkServer {
    const NAME: &'static str = "ace.test.Work";
}

impl tower::Service<http::Request<Body>> for WorkServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let work = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != PATH {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<WorkReply, WorkRequest>::default());
            Ok(grpc.unary(work, req).await)
        })
    }
}

/// Serves `work` behind a shedding layer on `manager` (a refusal is `RESOURCE_EXHAUSTED`) on a
/// fresh loopback port.
async fn serve(work: Work, manager: Manager) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let incoming = futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(conn, _)| {
            // As tonic's own `serve(addr)` does: without it, Nagle holds a quiet connection's
            // last frames until the client's delayed ACK (40 ms or more of real time, seconds
            // on the paused clock), and the answers look lost (issue 20).
            conn.set_nodelay(true).expect("a TCP option");
            conn
        });
        Some((conn, l))
    });
    let layer = ServiceBuilder::new()
        .map_result(|r: Result<http::Response<Body>, BoxError>| match r {
            Err(e) if e.is::<Overloaded>() => {
                Ok(Status::resource_exhausted("overloaded").into_http())
            }
            r => r,
        })
        .layer(AdaptiveConcurrencyLayer::new(manager).shed());
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(WorkServer(work))
            .serve_with_incoming(incoming)
            .await
            .expect("the server runs");
    });
    addr
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid uri")
        .connect()
        .await
        .expect("connects to the loopback server")
}

/// One call through `grpc`: its time and its status code.
async fn call<T>(grpc: &mut tonic::client::Grpc<T>, id: u64) -> (Duration, Code)
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<BoxError> + Send,
{
    let start = Instant::now();
    let code = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(e.into().to_string()))?;
        let codec = ProstCodec::<WorkRequest, WorkReply>::default();
        let path = http::uri::PathAndQuery::from_static(PATH);
        let reply = grpc
            .unary(tonic::Request::new(WorkRequest { id }), path, codec)
            .await?;
        assert_eq!(reply.into_inner().id, id, "the reply to this call");
        Ok::<_, Status>(Code::Ok)
    }
    .await
    .unwrap_or_else(|s| s.code());
    (start.elapsed(), code)
}

#[test]
fn overloaded_grpc_server_answers_resource_exhausted_at_once_and_the_ace_client_backs_off() {
    on_paused_clock(Duration::from_secs(120), || async {
        let work = Work {
            workers: Arc::new(tokio::sync::Semaphore::new(SLOTS)),
            running: Arc::default(),
            most: Arc::default(),
        };
        let addr = serve(
            work.clone(),
            quiet(AimdConfig::fixed(SLOTS))
                .build()
                .expect("a valid config"),
        )
        .await;

        // 1. A plain client at 4 x the capacity (320 calls a second for a second): the
        //    server admits its capacity and refuses the rest at once.
        let rate = 4.0 * SLOTS as f64 / BASE.as_secs_f64();
        let plain = tonic::client::Grpc::new(channel(addr).await);
        let mut calls = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for id in 0..rate as u64 {
            tick.tick().await;
            let mut grpc = plain.clone();
            calls.push(tokio::spawn(async move { call(&mut grpc, id).await }));
        }
        let mut results = Vec::new();
        for c in calls {
            results.push(c.await.expect("a call task"));
        }
        let refused: Vec<_> = results
            .iter()
            .filter(|r| r.1 == Code::ResourceExhausted)
            .map(|r| r.0)
            .collect();
        let ok = results.iter().filter(|r| r.1 == Code::Ok).count();
        eprintln!("plain client: {ok} ok, {} refused", refused.len());
        assert_eq!(ok + refused.len(), results.len(), "every call is answered");
        assert!(
            refused.len() as f64 >= 0.5 * results.len() as f64,
            "4 x overload refuses most calls: {} of {}",
            refused.len(),
            results.len()
        );
        assert!(
            quantile(refused, 0.99) <= Duration::from_millis(10),
            "refusals are answered in 10 ms"
        );
        assert!(
            work.most.load(Ordering::SeqCst) <= SLOTS,
            "the server held its limit"
        );

        // 2. 32 callers in a closed loop through an ACE-limited client that starts at 32: the
        //    RESOURCE_EXHAUSTED answers cut its limit down to the server's capacity.
        let client = backing_off_client();
        let limited = tonic::client::Grpc::new(
            ServiceBuilder::new()
                .layer(
                    AdaptiveConcurrencyLayer::new(client.clone()).classifier(GrpcStatusClassifier),
                )
                .service(channel(addr).await),
        );
        let run = Duration::from_secs(6);
        let start = Instant::now();
        let mut callers = Vec::new();
        for n in 0..32u64 {
            let mut grpc = limited.clone();
            callers.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                // Bounded in count and in (paused) time.
                for i in 0..1_000 {
                    if start.elapsed() >= run {
                        break;
                    }
                    let code = call(&mut grpc, n * 1_000 + i).await.1;
                    codes.push((start.elapsed(), code));
                    if code != Code::Ok {
                        // A client's pause before it retries a refused call (without one, a
                        // refusal that takes no time on the paused clock is retried at once,
                        // forever).
                        tokio::time::sleep(RETRY).await;
                    }
                }
                codes
            }));
        }
        let mut limits = Vec::new();
        while start.elapsed() < run {
            tokio::time::sleep(Duration::from_millis(100)).await;
            limits.push((start.elapsed(), client.limit()));
        }
        let mut late = Vec::new();
        for c in callers {
            late.extend(
                c.await
                    .expect("a caller")
                    .into_iter()
                    .filter(|(t, _)| *t >= Duration::from_secs(3))
                    .map(|(_, code)| code),
            );
        }
        let settled: Vec<usize> = limits
            .iter()
            .filter(|(t, _)| *t >= Duration::from_secs(3))
            .map(|(_, l)| *l)
            .collect();
        let mean = settled.iter().sum::<usize>() as f64 / settled.len() as f64;
        let refused = late.iter().filter(|c| **c != Code::Ok).count();
        let ok = late.iter().filter(|c| **c == Code::Ok).count();
        eprintln!(
            "ace client: limit {limits:?}; after 3 s mean {mean:.1}, {ok} ok, {refused} refused"
        );
        assert!(
            mean <= 2.0 * SLOTS as f64,
            "the client backs off to about the server's capacity ({SLOTS}): {mean:.1}"
        );
        // The server's capacity over the last 3 s: SLOTS calls per BASE. The client's probes
        // above it are refused at once (and retried), so its goodput is the server's.
        let capacity = 3.0 * SLOTS as f64 / BASE.as_secs_f64();
        assert!(
            ok as f64 >= 0.8 * capacity,
            "once backed off, the client is answered at about the server's capacity: {ok} calls \
             in 3 s against {capacity}"
        );
        assert!(
            work.most.load(Ordering::SeqCst) <= SLOTS,
            "the server held its limit"
        );
        client.shutdown().await;
    });
}

/// A regression test for the answers that looked lost (issue 20): on one connection, a refusal
/// answered at once and then, with nothing sent meanwhile, the admitted calls' answers. Each
/// admitted call is answered in the server's time, on the paused clock too (the server's
/// sockets must not wait for the client's ACK of the refusal: see `serve`).
#[test]
fn answers_after_a_refusal_come_in_the_servers_time() {
    on_paused_clock(Duration::from_secs(60), || async {
        let work = Work {
            workers: Arc::new(tokio::sync::Semaphore::new(SLOTS)),
            running: Arc::default(),
            most: Arc::default(),
        };
        let server = quiet(AimdConfig::fixed(SLOTS))
            .build()
            .expect("a valid config");
        let addr = serve(work, server).await;
        let grpc = tonic::client::Grpc::new(channel(addr).await);
        for round in 0..10u64 {
            // One call more than the server's slots: one refused, the others served.
            let mut calls = Vec::new();
            for n in 0..=SLOTS as u64 {
                let mut grpc = grpc.clone();
                calls.push(tokio::spawn(async move {
                    call(&mut grpc, round * 100 + n).await
                }));
                tokio::task::yield_now().await;
            }
            let mut ok = 0;
            for c in calls {
                let (took, code) = c.await.expect("a call task");
                if code == Code::Ok {
                    ok += 1;
                    assert!(
                        took <= BASE + Duration::from_millis(5),
                        "round {round}: answered in the server's {BASE:?}, not {took:?}"
                    );
                }
            }
            assert!(ok >= 1, "round {round}: the server serves calls");
        }
    });
}

/// The same back-off with no tonic and no network: the ACE client layer over an in-process
/// service that refuses above `SLOTS` at once. Its callers keep being answered at the service's
/// capacity once the limit has come down (what the loopback test found missing had its cause
/// below the layer: see `serve`).
#[test]
fn the_client_layer_alone_keeps_its_goodput_after_backing_off() {
    on_paused_clock(Duration::from_secs(60), || async {
        let workers = Arc::new(tokio::sync::Semaphore::new(SLOTS));
        let downstream = tower::service_fn(move |id: u64| {
            let workers = Arc::clone(&workers);
            async move {
                let Ok(_worker) = workers.try_acquire() else {
                    return Err::<u64, BoxError>("resource exhausted".into());
                };
                tokio::time::sleep(BASE).await;
                Ok(id)
            }
        });
        let client = backing_off_client();
        let limited = ServiceBuilder::new()
            .layer(AdaptiveConcurrencyLayer::new(client.clone()))
            .service(downstream);
        let (run, from) = (Duration::from_secs(6), Duration::from_secs(3));
        let start = Instant::now();
        let mut callers = Vec::new();
        for n in 0..32u64 {
            let mut svc = limited.clone();
            callers.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..1_000 {
                    if start.elapsed() >= run {
                        break;
                    }
                    let result = tower::ServiceExt::ready(&mut svc)
                        .await
                        .expect("waits, never refuses")
                        .call(n * 1_000 + i)
                        .await;
                    if result.is_ok() {
                        ok += usize::from(start.elapsed() >= from);
                    } else {
                        tokio::time::sleep(RETRY).await;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for c in callers {
            ok += c.await.expect("a caller");
        }
        let capacity = (run - from).as_secs_f64() * SLOTS as f64 / BASE.as_secs_f64();
        eprintln!("in process: {ok} ok after {from:?}, capacity {capacity}");
        assert!(
            ok as f64 >= 0.8 * capacity,
            "answered at about the service's capacity: {ok} against {capacity}"
        );
        assert!(
            client.limit() <= 2 * SLOTS,
            "backed off: {}",
            client.limit()
        );
        client.shutdown().await;
    });
}

/// The ACE-limited client of the back-off tests: starts at 32 in flight, decides every 200 ms.
fn backing_off_client() -> Manager {
    quiet(AimdConfig {
        min_limit: 1,
        max_limit: 64,
        initial_limit: 32,
        adjustment_interval: Duration::from_millis(200),
        cooldown: Duration::from_millis(200),
        ..AimdConfig::default()
    })
    .build()
    .expect("a valid config")
}
