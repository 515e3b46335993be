//! [`Manager`]: an adaptive concurrency limit for async tasks, on any
//! [`Runtime`](ace_core::Runtime), and its parts (all also at the crate root):
//!
//! - [`Builder`], from [`Manager::builder`]`(config)`;
//! - [`TaskPermit`], from [`Manager::acquire`];
//! - [`JoinHandle`] and [`JoinError`], from [`Manager::spawn`];
//! - [`SubmitError`]; [`AmbientRuntime`], the runtimes found from the calling context.

// handle: the Manager (submit, acquire, spawn, stats, set_limit, shutdown); builder: the
// constructors, which hand the loop to `crate::control`; classes: the per-priority counters;
// inner: what the handles share.
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
#[cfg(feature = "tower")]
pub(crate) use permit::Reserved;
pub use permit::TaskPermit;
