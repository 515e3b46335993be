//! Loads ACE's settings from a TOML file, as a service would, and starts a thread pool with them.
//!
//! `cargo run --example config [-- path/to/ace.toml]` (default: `examples/config/ace.toml`).
//! A bad file stops it with the field named, e.g. `invalid config: `min_limit` is 0, but it
//! must be at least 1`.

use std::path::PathBuf;

use ace_core::ConfigError;
use ace_std::config::{from_toml_file, FromConfigFile};
use ace_std::threadpool::{PoolOptions, ThreadPoolManager};
use ace_std::AimdConfig;
use serde::Deserialize;

/// The file's shape: one table per part, each optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    aimd: AimdConfig,
    pool: PoolOptions,
}

impl FromConfigFile for Settings {
    fn validate_loaded(&self) -> Result<(), ConfigError> {
        self.aimd.validate()?;
        self.pool.validate()
    }
}

fn main() {
    let path = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/ace.toml"),
        PathBuf::from,
    );
    let settings: Settings = match from_toml_file(&path) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(2);
        }
    };
    println!("{settings:#?}");
    let pool = ThreadPoolManager::builder(settings.aimd)
        .options(settings.pool)
        .build()
        .expect("validated at load");
    let sum: u64 = (0..100u64)
        .map(|i| pool.submit(move || i * i))
        .map(|h| h.join().expect("no panic"))
        .sum();
    println!("sum of squares below 100: {sum}; {}", pool.stats());
    pool.shutdown();
}
