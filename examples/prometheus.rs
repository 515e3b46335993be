//! ACE's metrics on a Prometheus `/metrics` endpoint, through `metrics-exporter-prometheus`.
//!
//! `cargo run -p ace-examples --example prometheus` serves on 127.0.0.1:9000 (another address as
//! the first argument) until Ctrl-C, and loads its own `/work` route so the figures move:
//! `curl -s http://127.0.0.1:9000/metrics | grep ^ace_`. What a scrape shows:
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `ace_concurrency_limit` | gauge | the limit in force |
//! | `ace_in_flight`, `ace_waiting` | gauges | slots held, callers waiting (at the last decision) |
//! | `ace_decisions_total{decision}` | counter | decisions by kind: `increase`, `decrease`, `hold` |
//! | `ace_signal_errors_total{source}` | counter | failed signal reads, by source name |
//! | `ace_latency_p90_seconds`, `ace_cpu_percent`, … | gauges | each signal's last reading |

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::core::{source_fn, SignalError, Signals};
use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError};
use ace_std::AimdConfig;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    // The global `metrics` recorder: every manager's decision log records into it.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    // A signal source that fails every third read, to show `ace_signal_errors_total`.
    let reads = AtomicUsize::new(0);
    let flaky = source_fn(move || {
        if reads.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
            Err(SignalError::new("flaky", "the gauge did not answer"))
        } else {
            Ok(Signals::default())
        }
    });
    let manager = ace_std::tokio::Manager::builder(AimdConfig {
        min_limit: 2,
        max_limit: 100,
        initial_limit: 4,
        adjustment_interval: Duration::from_millis(500),
        cooldown: Duration::from_millis(500),
        ..AimdConfig::default()
    })
    .source("flaky", flaky)
    .build()?;

    // `/work` gets slower past 10 at once; ACE keeps it near there and sheds the rest.
    let running = Arc::new(AtomicUsize::new(0));
    let work = move || {
        let running = Arc::clone(&running);
        async move {
            let n = running.fetch_add(1, Ordering::SeqCst) + 1;
            let factor = (n as f64 / 10.0).max(1.0);
            tokio::time::sleep(Duration::from_millis(20).mul_f64(factor)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            "done"
        }
    };
    let protected = axum::Router::new().route("/work", get(work)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                StatusCode::SERVICE_UNAVAILABLE
            }))
            .layer(AdaptiveConcurrencyLayer::new(manager.clone()).shed()),
    );
    let app = protected.route(
        "/metrics",
        get(move || {
            let prometheus = prometheus.clone();
            async move {
                prometheus.run_upkeep();
                prometheus.render()
            }
        }),
    );

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    eprintln!("metrics on http://{local}/metrics (Ctrl-C stops)");
    tokio::spawn(load(format!("http://{local}/work")));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    manager.shutdown().await;
    Ok(())
}

/// 40 callers in a loop, so the limit has something to find.
async fn load(url: String) {
    use http_body_util::{BodyExt, Empty};
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let callers = (0..40).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            loop {
                let Ok(req) = hyper::Request::get(url.as_str()).body(Empty::new()) else {
                    return;
                };
                match http.request(req).await {
                    Ok(resp) => drop(resp.into_body().collect().await),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    });
    futures::future::join_all(callers).await;
}
