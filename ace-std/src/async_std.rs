//! ACE on async-std (**legacy**): [`Manager`] and [`Builder`] on [`AsyncStdRuntime`].
//!
//! async-std is discontinued upstream in favour of smol. This module is kept working for
//! programs that still run on it; new code should use [`crate::smol`] (feature `smol`).
//!
//! ```
//! use ace_std::AimdConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async fn work(i: u32) -> u32 {
//!     i * 2
//! }
//!
//! async_std::task::block_on(async {
//!     let config = AimdConfig { min_limit: 5, max_limit: 50, initial_limit: 10, ..Default::default() };
//!     let manager = ace_std::async_std::Manager::new(config)?;
//!     let results = futures::future::join_all((0..100).map(|i| manager.submit(work(i)))).await;
//!     assert_eq!(results[7], Ok(14));
//!     manager.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

pub use ace_async_std::AsyncStdRuntime;

/// A [`crate::Manager`] on async-std's global runtime (legacy; see the module docs).
pub type Manager = crate::Manager<AsyncStdRuntime>;

/// The builder of an async-std [`Manager`].
pub type Builder = crate::Builder<AsyncStdRuntime>;
