//! ACE on tokio: [`Manager`] and [`Builder`] on [`TokioRuntime`].
//!
//! ```
//! use ace_std::AimdConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async fn work(i: u32) -> u32 {
//!     i * 2
//! }
//!
//! let config = AimdConfig { min_limit: 5, max_limit: 50, initial_limit: 10, ..Default::default() };
//! let manager = ace_std::tokio::Manager::new(config)?;
//! let results = futures::future::join_all((0..100).map(|i| manager.submit(work(i)))).await;
//! assert_eq!(results.len(), 100);
//! assert_eq!(results[7], Ok(14));
//! # manager.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub use ace_tokio::TokioRuntime;

/// A [`crate::Manager`] on tokio: `Manager::new(config)` runs on the current tokio runtime
/// (it panics outside one); [`Builder::runtime`](crate::Builder::runtime) picks another.
pub type Manager = crate::Manager<TokioRuntime>;

/// The builder of a tokio [`Manager`].
pub type Builder = crate::Builder<TokioRuntime>;
