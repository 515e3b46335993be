//! The manager most integration tests build: one that reads only its own tasks.

use ace_std::AimdConfig;

/// A tokio manager's builder on `config` that reads only the latency of its tasks (no machine
/// signals), with no log and no metrics.
pub(crate) fn quiet(config: AimdConfig) -> ace_std::tokio::Builder {
    ace_std::tokio::Manager::builder(config)
        .default_signals(false)
        .tracing(false)
        .metrics(false)
}
