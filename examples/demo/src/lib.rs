//! The ACE demo lives in this crate's example: `cargo run --release --example demo`.
