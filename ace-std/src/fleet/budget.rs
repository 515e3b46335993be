//! [`FleetBudget`]: one member of a fleet budget, renewing its lease on a thread of its own, and
//! [`FleetTarget`], the limit wrapper that enforces `min(local limit, grant)`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ace_core::{Ceiling, LimitTarget, Shutdown, Usage};
use event_listener::Event;
use futures_lite::future;

use super::lease::{FleetMode, Lease};
use super::renewer;
use super::{FleetConfig, FleetError};

/// A member's view of its lease, from [`FleetBudget::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetState {
    /// This member's id.
    pub member_id: String,
    /// Leased, holding, on its fallback limit, or left.
    pub mode: FleetMode,
    /// The ceiling in force: the grant, or the fallback limit.
    pub grant: usize,
    /// What Redis counted as held by this member at the last renewal.
    pub held: usize,
    /// The live members at the last renewal.
    pub members: usize,
    /// The local (AIMD) limit the control loop last set.
    pub local_limit: usize,
    /// The limit in force: `min(local_limit, grant)`.
    pub limit: usize,
    /// Renewals that succeeded.
    pub renewals: u64,
    /// Renewals that failed or timed out.
    pub failures: u64,
    /// The last successful renewal's round trip.
    pub last_round_trip: Option<Duration>,
}

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
    async fn wait_left(&self) -> Result<(), FleetError> {
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

/// One member of a fleet budget: joins at [`connect`](Self::connect), renews its lease on a
/// thread of its own (its own small tokio runtime, so any executor or none can use it), and
/// leaves the fleet with [`leave`](Self::leave).
///
/// Call `leave().await` when the process stops using the budget (after its tasks have
/// finished): the others may take its share at their next renewal. Dropping the last clone
/// without it also asks the renewal thread to leave, but nothing waits for that: a process that
/// returns from `main` right after may exit first, and then its share comes back to the others
/// only when its lease expires in Redis (`lease` later).
///
/// Give it to a manager's builder (`.fleet(budget)`), or wrap a [`LimitTarget`] of your own with
/// [`target`](Self::target). One budget serves one limit: a second target replaces the first.
#[derive(Clone)]
pub struct FleetBudget {
    pub(super) handle: Arc<Handle>,
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget")
            .field("state", &self.state())
            .finish()
    }
}

impl FleetBudget {
    /// Connects to Redis, checks the credentials, loads the script and joins the fleet (one
    /// renewal), then starts renewing every `renew_interval`. Works on any executor (the
    /// renewals run on a thread of their own); [`connect_blocking`](Self::connect_blocking)
    /// is the same for sync code.
    ///
    /// # Errors
    ///
    /// Those of [`FleetClient::connect`](super::FleetClient::connect) (config, URL, credentials, TLS, connection), or
    /// [`FleetError::Redis`] if the first renewal fails.
    pub async fn connect(config: FleetConfig) -> Result<Self, FleetError> {
        config.validate()?;
        let (tx, rx) = futures_channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("ace-fleet".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(FleetError::Connect(e.into())));
                        return;
                    }
                };
                runtime.block_on(renewer::start(config, tx));
            });
        if let Err(e) = spawned {
            return Err(FleetError::Connect(e.into()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(FleetError::Connect(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the fleet's renewal thread stopped before it connected",
            ))))
        })
    }

    /// [`connect`](Self::connect), waiting on the calling thread.
    ///
    /// # Errors
    ///
    /// Those of [`connect`](Self::connect).
    pub fn connect_blocking(config: FleetConfig) -> Result<Self, FleetError> {
        future::block_on(Self::connect(config))
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.handle.shared.id
    }

    /// Leaves the fleet: this member's limit drops to 0 at once (it admits no new work), its
    /// renewals stop, and its lease is removed from Redis, so that the others may take its share
    /// at their next renewal. Returns once Redis has answered (or failed to, within the config's
    /// `timeout`). Leaves for every clone of this budget.
    ///
    /// Idempotent: a later call (from any clone) waits for the same leave and returns its
    /// outcome. Call it after the tasks that used the grant have finished (a manager's
    /// `shutdown` first): tasks still running keep their permits, but Redis no longer counts
    /// them.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis could not be told; the lease then expires there on its
    /// own, one `lease` after the last renewal, and the others take the share back after it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the leave goes on without the caller; call again to wait for it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ace_std::fleet::{FleetBudget, FleetConfig, FleetMode};
    ///
    /// let budget = FleetBudget::connect(FleetConfig::default()).await?;
    /// // ... a manager with `.fleet(budget.clone())` runs its tasks, then shuts down ...
    /// budget.leave().await?;
    /// assert_eq!(budget.state().mode, FleetMode::Left);
    /// budget.leave().await?; // again: nothing more to do
    /// # Ok(())
    /// # }
    /// ```
    pub async fn leave(&self) -> Result<(), FleetError> {
        self.handle.stop.trigger();
        self.handle.shared.wait_left().await
    }

    /// [`leave`](Self::leave), waiting on the calling thread.
    ///
    /// # Errors
    ///
    /// Those of [`leave`](Self::leave).
    pub fn leave_blocking(&self) -> Result<(), FleetError> {
        future::block_on(self.leave())
    }

    /// Where this member stands: mode, grant, members, limits and counters.
    pub fn state(&self) -> FleetState {
        let s = &self.handle.shared;
        let l = s.lease();
        FleetState {
            member_id: s.id.clone(),
            mode: l.mode,
            grant: l.ceiling(),
            held: l.held,
            members: l.members,
            local_limit: l.local,
            limit: l.limit(),
            renewals: l.renewals,
            failures: l.failures,
            last_round_trip: l.last_round_trip,
        }
    }

    /// Wraps `inner` (a semaphore, a manager's gate) so that its limit is
    /// `min(local limit, grant)`, and renews at once with its usage. The control loop reads the
    /// grant as a [`Ceiling`] through [`LimitTarget::ceiling`].
    pub fn target(&self, inner: Arc<dyn LimitTarget>) -> FleetTarget {
        let s = &self.handle.shared;
        *s.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        {
            let lease = s.lease();
            s.apply(&lease);
        }
        s.renew_pending.store(true, Ordering::SeqCst);
        s.renew_now.notify(usize::MAX);
        FleetTarget {
            budget: self.clone(),
        }
    }
}

/// A [`LimitTarget`] whose limit is `min(local limit, grant)`: what the control loop sets is the
/// local limit; each renewal re-applies the minimum. From [`FleetBudget::target`].
#[derive(Debug, Clone)]
pub struct FleetTarget {
    budget: FleetBudget,
}

impl FleetTarget {
    /// The budget this target draws on.
    pub fn budget(&self) -> &FleetBudget {
        &self.budget
    }
}

impl LimitTarget for FleetTarget {
    fn set_limit(&self, limit: usize) {
        let s = &self.budget.handle.shared;
        let mut lease = s.lease();
        lease.local = limit;
        s.apply(&lease);
    }

    fn usage(&self) -> Usage {
        let s = &self.budget.handle.shared;
        s.target().map_or(
            Usage {
                limit: 0,
                in_flight: 0,
                waiting: 0,
            },
            |t| t.usage(),
        )
    }

    fn ceiling(&self) -> Option<Ceiling> {
        let lease = self.budget.handle.shared.lease();
        Some(Ceiling {
            grant: lease.ceiling(),
            members: lease.members,
        })
    }
}
