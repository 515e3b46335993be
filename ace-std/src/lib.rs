//! ACE, the Adaptive Concurrency Engine, for `std` programs.
//!
//! Re-exports [`ace_core`] and adds real signal sources, the decision log and, behind features,
//! a manager per executor:
//!
//! - [`signals`]: [`SystemSignals`](signals::SystemSignals) (CPU % and memory %, cgroup v2
//!   aware), [`LagProbe`](signals::LagProbe) (executor lag),
//!   [`QueueDepth`](signals::QueueDepth) (a gauge you feed) and [`Merge`](signals::Merge).
//! - [`log`]: [`DecisionLog`](log::DecisionLog), JSON lines, `tracing` events and `metrics`.
//!
//! # Features
//!
//! - `tokio`, `smol`, `async-std` (legacy): a `Manager` for that executor.
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

pub mod log;
pub mod signals;

pub use ace_core as core;
pub use ace_core::{
    Action, AimdConfig, ConfigError, ConfigRule, Controller, Decision, Reason, Signals, Usage,
};
