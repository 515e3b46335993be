//! A hyper client that protects a downstream with ACE: callers wait for a slot, HTTP 429/503 and
//! errors count as back-pressure, and the limit settles where the downstream's latency starts to
//! grow.
//!
//! `cargo run -p ace-examples --example http_client` starts its own downstream on 127.0.0.1 (its
//! latency grows past 20 requests in flight) and sends it 2,000 requests from 200 callers;
//! `cargo run -p ace-examples --example http_client -- http://127.0.0.1:3000/` calls that URL
//! instead (e.g. `examples/axum_server.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_std::tower::{AdaptiveConcurrencyLayer, HttpStatusClassifier};
use ace_std::AimdConfig;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

/// A downstream whose latency grows past 20 in flight: 20 ms, then 20 ms × (n / 20)².
async fn start_downstream() -> std::io::Result<String> {
    let running = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let running = Arc::clone(&running);
            async move {
                let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                let factor = (n as f64 / 20.0).max(1.0).powi(2);
                tokio::time::sleep(Duration::from_millis(20).mul_f64(factor)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => start_downstream().await?,
    };
    // The downstream's latency is the signal here, not this machine's CPU.
    let manager = ace_std::tokio::Manager::builder(AimdConfig {
        min_limit: 2,
        max_limit: 200,
        initial_limit: 4,
        adjustment_interval: Duration::from_millis(200),
        cooldown: Duration::from_millis(200),
        ..AimdConfig::default()
    })
    .default_signals(false)
    .tracing(false)
    .build()?;

    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(AdaptiveConcurrencyLayer::new(manager.clone()).classifier(HttpStatusClassifier))
        .service(http);

    let started = Instant::now();
    let ok = futures::stream::iter(0..2_000)
        .map(|_| {
            let req = hyper::Request::get(url.as_str()).body(Empty::new());
            let client = client.clone();
            async move {
                let resp = client.oneshot(req.ok()?).await.ok()?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await.ok()?;
                Some(ok)
            }
        })
        // 200 callers at most; the layer lets `manager.limit()` of them through at once.
        .buffer_unordered(200)
        .filter(|r| futures::future::ready(*r == Some(true)))
        .count()
        .await;
    let took = started.elapsed();
    println!(
        "{ok} of 2000 OK in {took:.2?} ({:.0}/s); limit now {}",
        ok as f64 / took.as_secs_f64(),
        manager.limit()
    );
    manager.shutdown().await;
    Ok(())
}
