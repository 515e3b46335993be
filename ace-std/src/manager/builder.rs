//! [`Builder`]: a [`Manager`] with its optional parts, and the manager's constructors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{AimdConfig, ConfigError, LimitTarget, Runtime, Semaphore, Shares};

use super::ambient::AmbientRuntime;
use super::handle::Manager;
use super::inner::Inner;
use crate::control::{engine_methods, loop_options_methods, Defaults, LoopOptions, Wiring};
use crate::signals::{LagProbe, QueueDepth};
use crate::stats::ClassProbe;

impl<R: AmbientRuntime> Manager<R> {
    /// A manager on the runtime of the calling context, with the default signals (system CPU
    /// and memory, executor lag) and the default log (`tracing` events and metrics).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    ///
    /// # Panics
    ///
    /// Where the context has no runtime (tokio outside a runtime).
    #[track_caller]
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for the optional parts, on the runtime of the calling context (found at
    /// [`build`](Builder::build) unless [`Builder::runtime`] sets one).
    pub fn builder(config: AimdConfig) -> Builder<R> {
        Builder::new(RuntimeChoice::Ambient(R::ambient), config)
    }
}

impl<R: Runtime> Manager<R> {
    /// A manager on `runtime`, with the default signals and log.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    pub fn with_runtime(runtime: R, config: AimdConfig) -> Result<Self, ConfigError> {
        Self::builder_with_runtime(runtime, config).build()
    }

    /// A builder for a manager on `runtime`.
    pub fn builder_with_runtime(runtime: R, config: AimdConfig) -> Builder<R> {
        Builder::new(RuntimeChoice::Given(runtime), config)
    }
}

enum RuntimeChoice<R> {
    Given(R),
    Ambient(fn() -> R),
}

/// Builds a [`Manager`] with its optional parts. Start from [`Manager::builder`].
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ace_std::log::HoldLogging;
/// use ace_std::signals::QueueDepth;
/// use ace_std::AimdConfig;
///
/// let depth = QueueDepth::new();
/// let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
///     .queue_depth(depth.clone())
///     .log_writer(std::io::stderr())
///     .log_holds(HoldLogging::Always)
///     .metrics(false)
///     .build()?;
/// # manager.shutdown().await;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R> {
    runtime: RuntimeChoice<R>,
    config: AimdConfig,
    loop_options: LoopOptions,
    queue_depth: Option<QueueDepth>,
    lag_period: Duration,
    shares: Shares,
}

impl<R> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("loop_options", &self.loop_options)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Builder<R> {
    fn new(runtime: RuntimeChoice<R>, config: AimdConfig) -> Self {
        Self {
            runtime,
            config,
            loop_options: LoopOptions::default(),
            queue_depth: None,
            lag_period: LagProbe::DEFAULT_PERIOD,
            shares: Shares::new(),
        }
    }

    loop_options_methods!();
    engine_methods!();

    /// The runtime to run on (instead of the calling context's).
    pub fn runtime(mut self, runtime: R) -> Self {
        self.runtime = RuntimeChoice::Given(runtime);
        self
    }

    /// Reads `depth` as the queue depth.
    pub fn queue_depth(mut self, depth: QueueDepth) -> Self {
        self.queue_depth = Some(depth);
        self
    }

    /// Guaranteed shares of the limit per [`Priority`](ace_core::Priority) (none by default):
    /// a class holding less than its share is served before more important classes, so a
    /// flood of `Critical` work cannot starve `Normal` work with a share. See [`Shares`].
    pub fn shares(mut self, shares: Shares) -> Self {
        self.shares = shares;
        self
    }

    /// How often the default lag probe wakes (default [`LagProbe::DEFAULT_PERIOD`]).
    pub fn lag_probe_period(mut self, period: Duration) -> Self {
        self.lag_period = period;
        self
    }

    /// Starts the manager: validates the config, then spawns the control loop. Limits above
    /// [`Semaphore::MAX_PERMITS`] are clamped to it.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`AimdConfig::validate`].
    ///
    /// # Panics
    ///
    /// With no runtime given, where the context has none (tokio outside a runtime).
    #[track_caller]
    pub fn build(self) -> Result<Manager<R>, ConfigError> {
        let mut options = self.loop_options;
        if let Some(depth) = self.queue_depth {
            options.sources.push(("queue_depth", Box::new(depth)));
        }
        let classes = ClassProbe::default();
        options.classes = Some(classes.clone());
        let wiring = Wiring::new(self.config, options)?;
        let runtime = match self.runtime {
            RuntimeChoice::Given(r) => r,
            RuntimeChoice::Ambient(f) => f(),
        };
        let config = wiring.config();
        let bounds = (config.min_limit, config.max_limit);
        let sem = Arc::new(Semaphore::with_shares(wiring.initial_limit(), self.shares));
        let counters = Arc::clone(wiring.counters());
        let latency = wiring.latency().cloned();
        let defaults = Defaults {
            system: true,
            lag_probe: Some(self.lag_period),
        };
        let target = Arc::clone(&sem) as Arc<dyn LimitTarget>;
        let control = wiring.assemble(runtime.clone(), target, defaults).spawn();
        let inner = Arc::new(Inner::new(runtime, sem, bounds, control, counters, latency));
        // A weak handle: the log lives in the loop, which the manager owns.
        let weak = Arc::downgrade(&inner);
        classes.set(move || {
            weak.upgrade()
                .map(|inner| inner.priorities())
                .unwrap_or_default()
        });
        Ok(Manager { inner })
    }
}
