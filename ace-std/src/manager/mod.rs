//! [`Manager`]: an adaptive concurrency limit for async tasks, on any
//! [`Runtime`](ace_core::Runtime).
//!
//! - `handle`: [`Manager`] itself (submit, acquire, spawn, stats, `set_limit`, shutdown);
//! - `builder`: [`Builder`] and the constructors, which hand the loop to [`crate::control`];
//! - `permit`: [`TaskPermit`]; `join`: [`JoinHandle`] and [`JoinError`];
//! - `classes`: the per-[`Priority`](ace_core::Priority) counters;
//! - `inner`: what the handles share; `ambient`: [`AmbientRuntime`].

mod ambient;
mod builder;
mod classes;
mod handle;
mod inner;
mod join;
mod permit;

pub use ambient::AmbientRuntime;
pub use builder::Builder;
pub use handle::{Manager, SubmitError};
pub use join::{JoinError, JoinHandle};
pub use permit::TaskPermit;
