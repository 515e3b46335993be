//! What a [`FleetBudget`](super::FleetBudget)'s handles and its renewal thread share: the lease,
//! the target it caps, and how the leave went.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ace_core::{LimitTarget, Shutdown};
use event_listener::Event;

use super::lease::Lease;
use super::{FleetConfig, FleetError};

/// What the handles and the renewal thread share.
pub(super) struct Shared {
    pub(super) id: String,
    origin: Instant,
    lease: Mutex<Lease>,
    target: Mutex<Option<Arc<dyn LimitTarget>>>,
    // Set with `renew_now`: a renewal is due at once (a target was attached). The flag keeps
    // a notification sent before the loop listens.
    pub(super) renew_pending: AtomicBool,
    pub(super) renew_now: Event,
    pub(super) every: Duration,
    pub(super) lease_len: Duration,
    // How the leave went, once the renewal thread has stopped: `Err` holds why Redis could
    // not be told. `left` is notified when it is set.
    left_outcome: Mutex<Option<Result<(), String>>>,
    left: Event,
}

impl Shared {
    pub(super) fn new(id: String, config: &FleetConfig) -> Self {
        Self {
            id,
            origin: Instant::now(),
            lease: Mutex::new(Lease::new(config)),
            target: Mutex::new(None),
            renew_pending: AtomicBool::new(false),
            renew_now: Event::new(),
            every: config.renew_interval,
            lease_len: config.lease,
            left_outcome: Mutex::new(None),
            left: Event::new(),
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(super) fn lease(&self) -> MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn target(&self) -> Option<Arc<dyn LimitTarget>> {
        self.target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the target the grant caps (a second replaces the first).
    pub(super) fn set_target(&self, target: Arc<dyn LimitTarget>) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(target);
    }

    /// Applies `min(local, ceiling)` to the target, under the lease lock so that the control
    /// loop's and the renewals' updates cannot cross.
    pub(super) fn apply(&self, lease: &Lease) {
        if let Some(t) = self.target() {
            t.set_limit(lease.limit());
        }
    }

    fn outcome(&self) -> MutexGuard<'_, Option<Result<(), String>>> {
        self.left_outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records how the leave went (the first outcome stands) and wakes every `leave()`.
    pub(super) fn set_left(&self, outcome: Result<(), String>) {
        self.outcome().get_or_insert(outcome);
        self.left.notify(usize::MAX);
    }

    /// Waits until the renewal thread has left the fleet.
    pub(super) async fn wait_left(&self) -> Result<(), FleetError> {
        loop {
            let listener = self.left.listen();
            if let Some(outcome) = self.outcome().clone() {
                return outcome.map_err(|why| {
                    FleetError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "could not leave the fleet",
                        why,
                    )))
                });
            }
            listener.await;
        }
    }
}

/// Stops the renewal thread when the last handle goes.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) stop: Shutdown,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}
