//! An axum server that protects itself with ACE: at the limit, a request is answered `503` at
//! once instead of queueing behind the others, and the limit follows the handlers' latency.
//!
//! `cargo run -p ace-examples --example axum_server` serves on 127.0.0.1:3000 (another address
//! as the first argument) until Ctrl-C; the decision log goes to stderr as JSON lines. Try it
//! with any load tool, e.g. `examples/http_client.rs`:
//! `cargo run -p ace-examples --example http_client -- http://127.0.0.1:3000/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, Overloaded};
use ace_std::AimdConfig;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tower::ServiceBuilder;

/// The work: 20 ms while at most 16 requests run, slower past that (a database pool, say).
async fn handler(State(running): State<Arc<AtomicUsize>>) -> &'static str {
    let n = running.fetch_add(1, Ordering::SeqCst) + 1;
    let factor = (n as f64 / 16.0).max(1.0);
    tokio::time::sleep(Duration::from_millis(20).mul_f64(factor)).await;
    running.fetch_sub(1, Ordering::SeqCst);
    "hello from behind ACE\n"
}

/// Refused requests become 503s; anything else (none here) a 500.
async fn on_error(e: BoxError) -> (StatusCode, String) {
    if e.is::<Overloaded>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded, try again\n".into(),
        )
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let manager = ace_std::tokio::Manager::builder(AimdConfig {
        min_limit: 4,
        max_limit: 256,
        initial_limit: 8,
        adjustment_interval: Duration::from_millis(500),
        cooldown: Duration::from_millis(500),
        ..AimdConfig::default()
    })
    .log_writer(std::io::stderr())
    .build()?;

    let app = axum::Router::new()
        .route("/", get(handler))
        .with_state(Arc::new(AtomicUsize::new(0)))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(on_error))
                // `.queue(64, Duration::from_millis(100))` would wait a little instead.
                .layer(AdaptiveConcurrencyLayer::new(manager.clone()).shed()),
        );

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "serving on http://{}/ (Ctrl-C stops)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    manager.shutdown().await;
    eprintln!("{:?}", manager.stats());
    Ok(())
}
