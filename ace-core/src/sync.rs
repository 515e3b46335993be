//! The one place atomics and `Arc` come from: `core`, `portable-atomic`, or loom under `cfg(loom)`.

#[cfg(not(loom))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use alloc::sync::Arc;
#[cfg(loom)]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use loom::sync::Arc;

#[cfg(all(not(loom), not(feature = "portable-atomic")))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use core::sync::atomic;
#[cfg(loom)]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use loom::sync::atomic;
#[cfg(all(not(loom), feature = "portable-atomic"))]
#[allow(unused_imports, reason = "not every build uses every item")]
pub(crate) use portable_atomic as atomic;
