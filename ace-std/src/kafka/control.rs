//! The consumer's control loop, wired by [`crate::control`] like every manager's: the user's
//! sources, the defaults and the consumer lag, driving the gate.

use std::sync::atomic::Ordering as Atomic;
use std::sync::Arc;

use ace_core::{LimitTarget, Semaphore, SignalError, SignalSource, Signals, Usage};
use ace_tokio::TokioRuntime;

use super::context::Shared;
use crate::control::{Defaults, LoopHandle, Wiring};
use crate::signals::{LagProbe, Merge};

/// The consumer's default sources, as the async `Manager`'s: CPU and memory (cgroup aware) and
/// the executor's lag (the consumer task shares tokio's workers with the handlers).
const DEFAULTS: Defaults = Defaults {
    system: true,
    lag_probe: Some(LagProbe::DEFAULT_PERIOD),
};

/// The control loop's source: the user's sources, plus the consumer lag.
///
/// A failing user source must not cost the lag reading: [`Merge`] reports it (through the sink,
/// just before that cycle's decision) and reads it as absent.
struct KafkaSignals {
    user: Merge<TokioRuntime>,
    shared: Arc<Shared>,
}

impl SignalSource for KafkaSignals {
    async fn collect(&mut self) -> Result<Signals, SignalError> {
        let mut signals = self.user.collect().await?;
        signals.merge(&Signals {
            kafka_lag: self.shared.lag(),
            ..Signals::default()
        });
        Ok(signals)
    }
}

/// The control loop's target: the gate, with buffered messages reported as waiting (demand).
struct KafkaTarget {
    gate: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl LimitTarget for KafkaTarget {
    fn set_limit(&self, limit: usize) {
        LimitTarget::set_limit(&*self.gate, limit);
    }

    fn usage(&self) -> Usage {
        Usage {
            limit: self.gate.limit(),
            in_flight: self.gate.in_use(),
            waiting: self.shared.buffered.load(Atomic::Relaxed),
        }
    }
}

/// Starts the consumer's control loop on `runtime`: the sources (the user's, the defaults, the
/// lag), the latency epochs when handlers are timed, the fleet budget if any; panic-guarded.
pub(super) fn spawn(
    wiring: Wiring,
    runtime: TokioRuntime,
    shared: &Arc<Shared>,
    gate: &Arc<Semaphore>,
) -> LoopHandle {
    let target = Arc::new(KafkaTarget {
        gate: Arc::clone(gate),
        shared: Arc::clone(shared),
    });
    let shared = Arc::clone(shared);
    wiring
        .assemble(runtime, target, DEFAULTS)
        .map_source(|user| KafkaSignals { user, shared })
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::LoopOptions;
    use crate::util::lock;
    use ace_core::{source_fn, AimdConfig, Decision, DecisionSink};
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Recorded {
        errors: Vec<String>,
        lags: Vec<Option<u64>>,
    }

    struct Recorder(Arc<Mutex<Recorded>>);

    impl DecisionSink for Recorder {
        fn decision(&mut self, d: &Decision) {
            lock(&self.0).lags.push(d.signals.kafka_lag);
        }
        fn signal_error(&mut self, e: &SignalError) {
            lock(&self.0).errors.push(e.to_string());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tells_the_sink_about_a_failing_user_source_and_keeps_the_lag() {
        let shared = Arc::new(Shared::new());
        shared.lag.store(42, Atomic::Relaxed);
        let gate = Arc::new(Semaphore::new(4));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mut fail = true;
        let source = source_fn(move || {
            fail = !fail;
            if fail {
                Ok(Signals::default())
            } else {
                Err(SignalError::new("cpu", "no /proc"))
            }
        });
        let options = LoopOptions {
            sources: vec![("cpu", Box::new(source))],
            sinks: vec![Box::new(Recorder(Arc::clone(&recorded)))],
            tracing: false,
            metrics: false,
            default_signals: false,
            time_tasks: Some(false),
            ..LoopOptions::default()
        };
        let config = AimdConfig {
            adjustment_interval: Duration::from_millis(100),
            ..AimdConfig::default()
        };
        let control = spawn(
            Wiring::new(config, options).unwrap(),
            TokioRuntime::from_handle(tokio::runtime::Handle::current()),
            &shared,
            &gate,
        );
        // Two cycles of the paused clock.
        tokio::time::sleep(Duration::from_millis(250)).await;
        control.stop();
        control.stopped().await;
        let recorded = lock(&recorded);
        assert_eq!(recorded.errors, ["signal source `cpu` failed: no /proc"]);
        assert_eq!(recorded.lags, [Some(42), Some(42)]);
    }
}
