//! ACE's metrics scraped from a Prometheus `/metrics` endpoint over HTTP on 127.0.0.1: the limit
//! gauge moves as the manager decides. (Its own test binary: the `metrics` recorder is global.)
#![allow(missing_docs, reason = "integration tests")]

use std::time::{Duration, Instant};

use ace_std::AimdConfig;
use axum::routing::get;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the unlabelled `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn should_serve_the_limit_gauge_and_see_it_move() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let prometheus = PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary");
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let p = prometheus.clone();
                async move { p.render() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        // Steady work that keeps every slot busy: the limit grows (slow start doubles it).
        // Each task reports the same latency, whatever the machine: a loaded machine would
        // stretch the real sleeps and read as a slower downstream, and the limit would fall.
        let manager = ace_std::tokio::Manager::builder(AimdConfig {
            min_limit: 2,
            max_limit: 1_000,
            initial_limit: 4,
            adjustment_interval: Duration::from_millis(100),
            cooldown: Duration::from_millis(100),
            ..AimdConfig::default()
        })
        .default_signals(false)
        .tracing(false)
        .build()
        .unwrap();
        let m = manager.clone();
        let work = tokio::spawn(async move {
            for _ in 0..200_000 {
                let Ok(permit) = m.acquire().await else { break };
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    permit.record_attempt(Duration::from_millis(5));
                    permit.success();
                });
            }
        });

        let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let req = hyper::Request::get(url.as_str())
                .body(Empty::new())
                .unwrap();
            let resp = http.request(req).await.expect("a scrape");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8(body.to_vec()).unwrap();
            if let Some(v) = gauge(&text, "ace_concurrency_limit") {
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
                // Two values with an increase are the movement asked for: the slow start may
                // jump from one gauge read to `max_limit` and stay there.
                if seen.len() >= 2 && seen.windows(2).any(|w| w[1] > w[0]) {
                    assert!(
                        text.contains("ace_decisions_total{decision=\"increase\"}"),
                        "{text}"
                    );
                    assert!(text.contains("ace_in_flight"), "{text}");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        work.abort();
        assert!(seen.len() >= 2, "the limit gauge did not move: {seen:?}");
        assert!(seen.windows(2).any(|w| w[1] > w[0]), "{seen:?}");
        let _ = work.await;
        manager.shutdown().await;
    })
    .await
    .expect("the test hung");
}
