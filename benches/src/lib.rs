//! Criterion benchmarks: see `benches/benches/*.rs` and BENCHMARKS.md.
