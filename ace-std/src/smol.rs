//! ACE on smol: [`Manager`] and [`Builder`] on [`SmolRuntime`].
//!
//! By default the control loop and spawned tasks run on smol's global executor (as
//! `smol::spawn` does); give [`SmolRuntime::with_executor`] to the builder to use your own.
//!
//! ```
//! use ace_std::AimdConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async fn work(i: u32) -> u32 {
//!     i * 2
//! }
//!
//! smol::block_on(async {
//!     let config = AimdConfig { min_limit: 5, max_limit: 50, initial_limit: 10, ..Default::default() };
//!     let manager = ace_std::smol::Manager::new(config)?;
//!     let results = futures::future::join_all((0..100).map(|i| manager.submit(work(i)))).await;
//!     assert_eq!(results[7], Ok(14));
//!     manager.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

pub use ace_smol::SmolRuntime;

/// A [`crate::Manager`] on smol (its global executor unless the builder is given another).
pub type Manager = crate::Manager<SmolRuntime>;

/// The builder of a smol [`Manager`].
pub type Builder = crate::Builder<SmolRuntime>;
