//! ACE, the Adaptive Concurrency Engine, for `std` programs.
//!
//! Re-exports [`ace_core`] and adds, behind features, real signal sources and a manager per
//! executor.
//!
//! # Features
//!
//! - `tokio`, `smol`, `async-std` (legacy): a `Manager` for that executor.
//! - `threadpool`: [`threadpool::ThreadPoolManager`], an adaptive pool of threads for sync
//!   closures, on crossbeam.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use ace_core as core;
pub use ace_core::{
    Action, AimdConfig, ConfigError, ConfigRule, Controller, Decision, Reason, Signals, Usage,
};

#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;

#[cfg(feature = "threadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "threadpool")))]
pub mod threadpool;
