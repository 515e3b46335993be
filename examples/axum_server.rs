//! An axum server that protects itself with ACE: at the limit, a request waits briefly or is
//! answered `503` quickly instead of queueing behind all the others, and the limit follows the
//! handlers' latency. Requests with `x-priority: critical` (a health check, say) are served first: the layer reads
//! the class with `HttpPriority` and queues adaptively (FIFO, then newest first under a standing
//! queue), so `sheddable` requests take the refusals.
//!
//! `cargo run -p ace-examples --example axum_server` serves on 127.0.0.1:3000 (another address
//! as the first argument) until Ctrl-C; the decision log goes to stderr as JSON lines. Try it
//! with any load tool, e.g. `examples/http_client.rs`:
//! `cargo run -p ace-examples --example http_client -- http://127.0.0.1:3000/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, HttpPriority, Overloaded};
use ace_std::AimdConfig;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::{Listener, ListenerExt};
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
                // `.shed()` would refuse at the limit at once, whatever the class.
                .layer(
                    AdaptiveConcurrencyLayer::new(manager.clone())
                        // At most 64 waiting, 100 ms each; CoDel target 5 ms over 50 ms.
                        .adaptive_queue(
                            64,
                            Duration::from_millis(100),
                            Duration::from_millis(5),
                            Duration::from_millis(50),
                        )
                        .priority(HttpPriority::new()),
                ),
        );

    // TCP_NODELAY (axum's `serve` leaves Nagle on): a small answer, a 503 above all, must not
    // wait for the client's delayed ACK.
    let listener = tokio::net::TcpListener::bind(&addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
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
