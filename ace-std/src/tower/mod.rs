//! ACE in a tower stack and over streams: an adaptive concurrency limit for services (clients
//! and servers), and the adaptive `buffer_unordered`.
//!
//! - [`AdaptiveConcurrencyLayer`]: a tower [`Layer`](tower_layer::Layer) whose
//!   [`AdaptiveConcurrency`] service holds a slot of a [`Manager`](crate::Manager) from
//!   `poll_ready` to the end of the response, times each call and reports back-pressure.
//!   [`Admission`] picks what a call does at the limit: wait (clients), shed with
//!   [`Overloaded`] (servers) or queue with a bound and a timeout.
//! - [`Prioritize`], [`HttpPriority`], [`Deadline`]: a request's [`Priority`](crate::Priority)
//!   and deadline, for [`AdaptiveConcurrencyLayer::priority`].
//! - [`Classify`], [`Outcome`], [`ErrorIsBackPressure`] (the default) and
//!   [`HttpStatusClassifier`] (429 and 503 push back), [`GrpcStatusClassifier`]
//!   (`RESOURCE_EXHAUSTED` and `UNAVAILABLE` push back): what a finished call says.
//! - [`AdaptiveStreamExt`]: `adaptive_map`, `adaptive_map_result` and `for_each_adaptive`, a
//!   stream's items processed as concurrently as the manager's limit allows.
//!
//! The manager is built as usual (its builder sets signals, the decision log and metrics); the
//! layer only enforces its limit and feeds its latency signal. For a service whose latency is
//! the signal, turn the machine signals off (`.default_signals(false)`) unless the host's CPU
//! is also the bottleneck.
//!
//! # Examples
//!
//! A server that sheds at the limit and answers 503, with axum:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ace_std::tower::{AdaptiveConcurrencyLayer, BoxError, Overloaded};
//! use ace_std::AimdConfig;
//! use axum::error_handling::HandleErrorLayer;
//! use axum::http::StatusCode;
//! use axum::routing::get;
//! use tower::ServiceBuilder;
//!
//! let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
//!     .default_signals(false)
//!     .build()?;
//! let app: axum::Router = axum::Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(|e: BoxError| async move {
//!             if e.is::<Overloaded>() {
//!                 StatusCode::SERVICE_UNAVAILABLE
//!             } else {
//!                 StatusCode::INTERNAL_SERVER_ERROR
//!             }
//!         }))
//!         .layer(AdaptiveConcurrencyLayer::new(manager.clone()).shed()),
//! );
//! # drop(app);
//! # manager.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod admit;
mod classify;
mod layer;
mod priority;
mod queue;
mod stream;

use std::fmt;

pub use classify::{
    Classify, ErrorIsBackPressure, GrpcStatusClassifier, HttpStatusClassifier, Outcome,
};
pub use layer::{AdaptiveConcurrency, AdaptiveConcurrencyLayer, Admission, ResponseFuture};
pub use priority::{grpc_timeout, Deadline, HttpPriority, NoPriority, Prioritize};
pub use stream::{AdaptiveMap, AdaptiveStreamExt, ForEachAdaptive};

// The boxed error of `AdaptiveConcurrency` (tower's `BoxError`): `Overloaded`,
// `SubmitError::Shutdown` or the inner service's error; the crate's one `BoxError`, re-exported.
pub use crate::BoxError;

/// The call was refused: the limit was reached ([`Admission::Shed`]), or the queue was full or
/// its wait timed out ([`Admission::Queue`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overloaded {
    _private: (),
}

impl Overloaded {
    /// An `Overloaded` error.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the concurrency limit is reached")
    }
}

impl std::error::Error for Overloaded {}
