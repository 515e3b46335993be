//! [`FleetBudget`]: one member of a fleet budget, renewing its lease on a thread of its own, and
//! [`FleetTarget`], the limit wrapper that enforces `min(local limit, grant)`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ace_core::{Ceiling, LimitTarget, Usage};
use futures_lite::future;

use super::lease::FleetMode;
use super::renewer;
use super::shared::Handle;
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
        let handle = rx.await.unwrap_or_else(|_| {
            Err(FleetError::Connect(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the fleet's renewal thread stopped before it connected",
            ))))
        })?;
        Ok(Self { handle })
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
        s.set_target(inner);
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
