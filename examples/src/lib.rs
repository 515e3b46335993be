//! Runnable ACE programs live in this crate's examples; see `examples/*.rs`.
