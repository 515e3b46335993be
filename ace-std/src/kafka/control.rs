//! The consumer's control loop: the user's sources plus the lag, driving the gate.

use std::sync::atomic::Ordering as Atomic;
use std::sync::Arc;

use ace_core::{
    ControlLoop, Controller, LimitTarget, Semaphore, SignalError, SignalSource, Signals, Usage,
};
use ace_tokio::TokioRuntime;

use super::context::Shared;
use crate::signals::Merge;
use crate::stats::DecisionCounters;
use crate::control::{LoopOptions, Sinks};

/// The control loop's source: the user's sources, plus the consumer lag.
///
/// A failing user source must not cost the lag reading: [`Merge`] reports it (through the sink,
/// just before that cycle's decision) and reads it as absent.
pub(super) struct KafkaSignals {
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
pub(super) struct KafkaTarget {
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

/// The manager's control loop: the user's sources plus the lag, driving the gate, recording to
/// the decision log and the user's sinks.
pub(super) fn control_loop(
    runtime: TokioRuntime,
    controller: Controller,
    options: LoopOptions,
    counters: Arc<DecisionCounters>,
    shared: &Arc<Shared>,
    gate: &Arc<Semaphore>,
) -> ControlLoop<TokioRuntime, KafkaSignals, KafkaTarget, Sinks> {
    let interval = controller.config().adjustment_interval;
    let (user, sink) = options.into_parts(runtime.clone(), interval, counters);
    ControlLoop::new(
        runtime,
        controller,
        KafkaSignals {
            user,
            shared: Arc::clone(shared),
        },
        KafkaTarget {
            gate: Arc::clone(gate),
            shared: Arc::clone(shared),
        },
        sink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::lock;
    use ace_core::{source_fn, AimdConfig, Decision, DecisionSink};
    use std::sync::Mutex;

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

    #[tokio::test]
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
            ..LoopOptions::default()
        };
        let mut control = control_loop(
            TokioRuntime::from_handle(tokio::runtime::Handle::current()),
            Controller::new(AimdConfig::default()).unwrap(),
            options,
            Arc::default(),
            &shared,
            &gate,
        );
        control.step().await;
        control.step().await;
        let recorded = lock(&recorded);
        assert_eq!(recorded.errors, ["signal source `cpu` failed: no /proc"]);
        assert_eq!(recorded.lags, [Some(42), Some(42)]);
    }
}
