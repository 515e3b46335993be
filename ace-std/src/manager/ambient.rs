//! [`AmbientRuntime`]: the runtimes a [`Manager`](super::Manager) finds from the calling
//! context.

use ace_core::Runtime;

mod sealed {
    /// Only this crate's runtimes are ambient: the trait may grow without breaking anyone.
    pub trait Sealed {}
    #[cfg(feature = "tokio")]
    impl Sealed for ace_tokio::TokioRuntime {}
    #[cfg(feature = "smol")]
    impl Sealed for ace_smol::SmolRuntime {}
    #[cfg(feature = "async-std")]
    impl Sealed for ace_async_std::AsyncStdRuntime {}
}

/// A [`Runtime`] that can be found from the calling context, so [`Manager::new`](super::Manager::new) needs no
/// handle: tokio's current runtime, smol's global executor, async-std's global runtime.
///
/// Sealed: for another runtime use [`Manager::with_runtime`](super::Manager::with_runtime).
pub trait AmbientRuntime: Runtime + sealed::Sealed {
    /// The runtime of the calling context.
    ///
    /// # Panics
    ///
    /// Where there is none (tokio outside a runtime).
    fn ambient() -> Self;
}

#[cfg(feature = "tokio")]
impl AmbientRuntime for ace_tokio::TokioRuntime {
    #[track_caller]
    fn ambient() -> Self {
        Self::current()
    }
}

#[cfg(feature = "smol")]
impl AmbientRuntime for ace_smol::SmolRuntime {
    fn ambient() -> Self {
        Self::global()
    }
}

#[cfg(feature = "async-std")]
impl AmbientRuntime for ace_async_std::AsyncStdRuntime {
    fn ambient() -> Self {
        Self::new()
    }
}
