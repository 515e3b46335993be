//! ACE, the Adaptive Concurrency Engine, for `std` programs.
//!
//! Re-exports [`ace_core`] and adds real signal sources, the decision log and, behind features,
//! a manager per executor:
//!
//! - [`signals`]: [`SystemSignals`](signals::SystemSignals) (CPU % and memory %, cgroup v2
//!   aware), [`LagProbe`](signals::LagProbe) (executor lag),
//!   [`QueueDepth`](signals::QueueDepth) (a gauge you feed) and [`Merge`](signals::Merge).
//! - [`log`]: [`DecisionLog`](log::DecisionLog), JSON lines, `tracing` events and `metrics`.
//! - [`Manager`]: an adaptive concurrency limit for async tasks on any [`Runtime`](ace_core::Runtime),
//!   with `submit`, `spawn`, `stats` and `shutdown`; built by [`Builder`].
//! - `ace_std::tokio::Manager`, `ace_std::smol::Manager`, `ace_std::async_std::Manager`: the
//!   same on each executor.
//! - [`Stats`]: what every manager's `stats()` reports (the pool's and the Kafka consumer's
//!   embed it as `core`). All three managers share one vocabulary: `builder(config)` gives
//!   the module's `Builder` ([`manager::Builder`], `threadpool::Builder`); `.source(name, s)`,
//!   `.sink(s)`, `.log_writer(w)`, `.log_holds(h)`, `.log_epochs(e)`, `.tracing(bool)`,
//!   `.metrics(bool)` on the builder; `limit()`, `stats()`, `is_shut_down()`, `shutdown()` on
//!   the handle (and `set_limit(n)` on `Manager` and the pool); handles are `JoinHandle`, their
//!   errors `JoinError`; every "shut down" error displays `the manager is shut down`; one
//!   [`BoxError`].
//!
//! # Features
//!
//! - `tokio`: [`tokio::Manager`].
//! - `smol`: [`smol::Manager`].
//! - `kafka`: [`kafka::KafkaConsumerManager`](crate::kafka), an adaptive Kafka consumer on rdkafka.
//! - `async-std`: [`async_std::Manager`] (legacy: async-std is discontinued upstream; prefer smol).
//! - `threadpool`: [`threadpool::ThreadPoolManager`], an adaptive pool of threads for sync
//!   closures, on crossbeam.
//! - `tower`: [`tower::AdaptiveConcurrencyLayer`], a tower layer for clients and servers, and
//!   [`tower::AdaptiveStreamExt`], the adaptive `buffer_unordered`.
//! - `serde`: `config::from_toml`, configs from TOML files (durations as `"2s"`, unknown
//!   fields refused), validated at load; `Serialize`/`Deserialize` for
//!   [`AimdConfig`] and the pool's `PoolOptions`.
//! - `redis`: [`fleet::FleetBudget`](crate::fleet), one concurrency budget shared by many
//!   instances, leased from Redis; a manager takes it with `.fleet(budget)`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod control;
pub mod log;
pub mod manager;
pub mod signals;
mod stats;
mod util;

#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
pub mod async_std;
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

pub use manager::{
    AmbientRuntime, Builder, JoinError, JoinHandle, Manager, SubmitError, TaskPermit,
};

/// The boxed error every module hands back where it wraps the user's (a Kafka handler's, a
/// tower service's): tower's `BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub use stats::{PriorityStats, Stats};

pub use ace_core as core;
pub use ace_core::{
    Action, AimdConfig, ConfigError, ConfigRule, Controller, Decision, Priority, Reason, Shares,
    Signals, Usage,
};

#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;

#[cfg(feature = "threadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "threadpool")))]
pub mod threadpool;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;

// The README's examples are doctests: they must compile and run as written.
#[cfg(all(
    doctest,
    feature = "tokio",
    feature = "threadpool",
    feature = "kafka",
    feature = "tower",
    feature = "redis"
))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
