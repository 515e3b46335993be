//! The `no_std` heart of ACE, the Adaptive Concurrency Engine: AIMD decisions, an adjustable
//! semaphore, and the control loop that joins them, for any executor.
//!
//! ACE keeps a program's concurrency near the best level for its health right now. A control
//! loop reads health signals, an AIMD controller picks a new limit, and an adjustable semaphore
//! enforces it. This crate holds all three, with no clock, no I/O and no `std`:
//!
//! - [`AimdConfig`] and [`ConfigError`]: bounds, steps, thresholds and timing, validated.
//! - [`Signals`] and [`Usage`]: one snapshot of health, and how much of the limit is used.
//! - [`LatencyRecorder`] and [`LatencySummary`]: the lock-free per-cycle record of task latencies
//!   and failures that the managers feed and the controller reads as stress.
//! - [`Controller`]: the pure decision rule, returning a [`Decision`] with an [`Action`] and a
//!   typed [`Reason`]; a [`Ceiling`] set from outside (a fleet grant) bounds it.
//! - [`Semaphore`]: the adjustable, fair, shrinkable async semaphore that enforces the limit, with
//!   [`Permit`], [`OwnedPermit`], the futures [`Acquire`] and [`AcquireOwned`], and the errors
//!   [`AcquireError`] and [`TryAcquireError`] (and, under `std`, `AcquireTimeoutError` and
//!   `ThreadWaker`, the parking waker of the blocking waits); [`Priority`] classes the acquires
//!   and [`Shares`] guarantees a class part of the limit.
//! - [`Runtime`], [`SignalSource`], [`LimitTarget`], [`DecisionSink`] and [`ControlLoop`]: the
//!   executor seam and the loop written once over it.
//!
//! # Features
//!
//! - `std`: blocking (thread) waits on the semaphore (`Semaphore::blocking_acquire` and friends).
//! - `portable-atomic`: atomics from `portable-atomic`, for targets without native CAS.
//! - `serde`: `Serialize`/`Deserialize` for [`AimdConfig`] (durations as `"2s"`, `"50ms"`,
//!   unknown fields refused), and [`serde_text`] for your own types; `no_std` too.
//! - `loom`: the loom models (with `RUSTFLAGS="--cfg loom"`).
#![no_std]
// The only `unsafe` is the spin lock in `sync`, which allows it there; each block says why it is
// sound.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod ceiling;
mod config;
mod controller;
mod latency;
mod runtime;
mod semaphore;
mod signals;
mod sync;

pub use ceiling::Ceiling;
pub use config::{AimdConfig, ConfigError, ConfigRule};
/// Serde helpers: durations as text (`"2s"`, `"50ms"`) and `"off"` for optional fields (feature
/// `serde`).
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod serde_text {
    pub use crate::config::text::{duration, optional_duration, optional_number};
}
pub use controller::{Action, Controller, Decision, Reason, Stress};
pub use latency::{LatencyRecorder, LatencySummary};
pub use runtime::{
    source_fn, ControlLoop, DecisionSink, FnSource, LimitTarget, Runtime, Shutdown, SignalError,
    SignalSource,
};
pub use semaphore::{
    Acquire, AcquireError, AcquireOwned, DetachedPermit, OwnedPermit, ParsePriorityError, Permit,
    Priority, Semaphore, Shares, SharesError, TryAcquireError,
};
#[cfg(feature = "std")]
pub use semaphore::{AcquireTimeoutError, ThreadWaker};
pub use signals::{Signals, Usage};
