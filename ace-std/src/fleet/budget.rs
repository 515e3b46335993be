//! [`FleetBudget`]: one member of a fleet budget, renewing its lease on a thread of its own, and
//! [`FleetTarget`], the limit wrapper that enforces `min(local limit, grant)`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ace_core::{Ceiling, LimitTarget, Shutdown, Usage};
use event_listener::Event;
use futures_lite::future;

use super::{Fallback, FleetClient, FleetConfig, FleetError, Renewal};

/// Where a member stands with the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FleetMode {
    /// The last renewal succeeded: the grant is in force until the lease expires.
    Leased,
    /// Renewals fail, but the lease has not expired on the member's clock: the grant stands.
    Holding,
    /// The lease expired without a renewal: the [`Fallback`] limit is in force until Redis
    /// answers again.
    Fallback,
}

impl FleetMode {
    /// `"leased"`, `"holding"` or `"fallback"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Leased => "leased",
            Self::Holding => "holding",
            Self::Fallback => "fallback",
        }
    }
}

/// A member's view of its lease, from [`FleetBudget::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetState {
    /// This member's id.
    pub member_id: String,
    /// Leased, holding, or on its fallback limit.
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

/// The lease state machine: pure, on a clock given by the caller.
#[derive(Debug)]
struct Lease {
    capacity: usize,
    fallback: Fallback,
    // lease − safety margin: how long after sending a renewal its grant may be used.
    usable: Duration,
    mode: FleetMode,
    grant: usize,
    held: usize,
    members: usize,
    valid_until: Duration,
    // Fallback starts cautious: `min(share, grant)` until this time, one lease after the
    // expiry, when every other member's lease has expired too; the full share after it.
    // Otherwise a member still holding a large grant and one already on its share could
    // together exceed C.
    cautious_until: Option<Duration>,
    lease: Duration,
    // A renewal failed since the last success: the next want is capped at the limit in force,
    // since Redis may have lost the others' grants (a restart) while they still use them.
    rejoin: bool,
    local: usize,
    renewals: u64,
    failures: u64,
    last_round_trip: Option<Duration>,
}

impl Lease {
    fn new(config: &FleetConfig) -> Self {
        Self {
            capacity: config.capacity,
            fallback: config.fallback,
            usable: config.lease.saturating_sub(config.safety_margin),
            mode: FleetMode::Fallback,
            grant: 0,
            held: 0,
            members: 1,
            valid_until: Duration::ZERO,
            cautious_until: None,
            lease: config.lease,
            rejoin: false,
            local: 0,
            renewals: 0,
            failures: 0,
            last_round_trip: None,
        }
    }

    fn fallback_limit(&self) -> usize {
        let limit = match self.fallback {
            Fallback::Share => (self.capacity / self.members.max(1)).max(1),
            Fallback::Limit(n) => n,
        };
        if self.cautious_until.is_some() {
            limit.min(self.grant)
        } else {
            limit
        }
    }

    /// When the ceiling changes next without a renewal: the lease expires, or the cautious
    /// fallback ends.
    fn next_change(&self) -> Option<Duration> {
        match self.mode {
            FleetMode::Leased | FleetMode::Holding => Some(self.valid_until),
            FleetMode::Fallback => self.cautious_until,
        }
    }

    /// The ceiling in force: the grant while the lease is valid, else the fallback.
    fn ceiling(&self) -> usize {
        match self.mode {
            FleetMode::Leased | FleetMode::Holding => self.grant,
            FleetMode::Fallback => self.fallback_limit(),
        }
    }

    fn limit(&self) -> usize {
        self.local.min(self.ceiling())
    }

    /// What to ask for, from the permits in use and waiting.
    fn want(&self, usage: Option<Usage>) -> usize {
        let Some(u) = usage else {
            return 1;
        };
        let effective = self.limit();
        let ceiling = self.ceiling();
        let demand = u.in_flight.saturating_add(u.waiting);
        // A quarter over what is used, so that the grant follows demand up within a few
        // renewals; demand that fell returns the rest at the next renewal.
        let more = |n: usize| n.saturating_add(n / 4).saturating_add(1);
        let mut want = more(demand);
        let busy = u.waiting > 0 || (effective > 0 && u.in_flight * 5 >= effective * 4);
        if busy {
            want = want.max(more(effective));
        }
        // AIMD below the grant (stressed, or still climbing): ask for little more than it allows.
        if self.local < ceiling {
            want = want.min(more(self.local));
        }
        if self.rejoin {
            want = want.min(effective.max(1));
        }
        want.clamp(1, self.capacity)
    }

    fn renewed(&mut self, sent: Duration, now: Duration, r: Renewal) -> Option<FleetMode> {
        let was = self.mode;
        self.mode = FleetMode::Leased;
        self.grant = r.grant;
        self.held = r.held;
        self.members = r.members.max(1);
        self.valid_until = sent + self.usable;
        self.cautious_until = None;
        self.rejoin = false;
        self.renewals += 1;
        self.last_round_trip = Some(now.saturating_sub(sent));
        (was != FleetMode::Leased).then_some(was)
    }

    fn failed(&mut self) -> bool {
        self.failures += 1;
        self.rejoin = true;
        if self.mode == FleetMode::Leased {
            self.mode = FleetMode::Holding;
            return true;
        }
        false
    }

    /// Falls back once the lease has run out on this clock, cautiously for one lease, then to
    /// the full fallback limit; true if the ceiling just changed.
    fn expire(&mut self, now: Duration) -> bool {
        if self.mode != FleetMode::Fallback && now >= self.valid_until {
            self.mode = FleetMode::Fallback;
            self.cautious_until = Some(self.valid_until + self.lease);
            return true;
        }
        if self.cautious_until.is_some_and(|t| now >= t) {
            self.cautious_until = None;
            return true;
        }
        false
    }
}

struct Shared {
    id: String,
    origin: Instant,
    lease: Mutex<Lease>,
    target: Mutex<Option<Arc<dyn LimitTarget>>>,
    // Set with `renew_now`: a renewal is due at once (a target was attached). The flag keeps
    // a notification sent before the loop listens.
    renew_pending: AtomicBool,
    renew_now: Event,
}

impl Shared {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn lease(&self) -> MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self) -> Option<Arc<dyn LimitTarget>> {
        self.target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `min(local, ceiling)` to the target, under the lease lock so that the control
    /// loop's and the renewals' updates cannot cross.
    fn apply(&self, lease: &Lease) {
        if let Some(t) = self.target() {
            t.set_limit(lease.limit());
        }
    }
}

/// Stops the renewal thread when the last handle goes.
struct Handle {
    shared: Arc<Shared>,
    stop: Shutdown,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// One member of a fleet budget: joins at [`connect`](Self::connect), renews its lease on a
/// thread of its own (its own small tokio runtime, so any executor or none can use it), and
/// leaves the fleet when the last clone is dropped.
///
/// Give it to a manager's builder (`.fleet(budget)`), or wrap a [`LimitTarget`] of your own with
/// [`target`](Self::target). One budget serves one limit: a second target replaces the first.
#[derive(Clone)]
pub struct FleetBudget {
    handle: Arc<Handle>,
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
    /// Those of [`FleetClient::connect`] (config, URL, credentials, TLS, connection), or
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
                runtime.block_on(start(config, tx));
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

fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        fastrand_u32(std::process::id())
    )
}

/// A little entropy for member ids without a dependency: the clock's nanoseconds, mixed.
fn fastrand_u32(salt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (nanos ^ salt.rotate_left(16)).wrapping_mul(0x9E37_79B9)
}

type Reply = futures_channel::oneshot::Sender<Result<FleetBudget, FleetError>>;

/// The renewal thread: connect, join, hand the budget back, then renew until stopped.
async fn start(config: FleetConfig, reply: Reply) {
    let client = match FleetClient::connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let id = config.member_id.clone().unwrap_or_else(default_member_id);
    let shared = Arc::new(Shared {
        id,
        origin: Instant::now(),
        lease: Mutex::new(Lease::new(&config)),
        target: Mutex::new(None),
        renew_pending: AtomicBool::new(false),
        renew_now: Event::new(),
    });
    let sent = shared.now();
    match client.renew(&shared.id, 1, 0).await {
        Ok(r) => {
            let now = shared.now();
            shared.lease().renewed(sent, now, r);
        }
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    }
    let stop = Shutdown::new();
    let budget = FleetBudget {
        handle: Arc::new(Handle {
            shared: Arc::clone(&shared),
            stop: stop.clone(),
        }),
    };
    if reply.send(Ok(budget)).is_err() {
        let _ = client.leave(&shared.id).await;
        return;
    }
    drive(&client, &shared, &stop, config.renew_interval).await;
    // Leave at once, so the others may take this share at their next renewal.
    let _ = client.leave(&shared.id).await;
}

async fn drive(client: &FleetClient, shared: &Shared, stop: &Shutdown, every: Duration) {
    let mut next = shared.now() + every;
    loop {
        let now = shared.now();
        let change = shared.lease().next_change();
        let wake = match change {
            Some(t) if t > now => next.min(t),
            _ => next,
        };
        let listener = shared.renew_now.listen();
        if shared.renew_pending.swap(false, Ordering::SeqCst) {
            next = now;
        } else if wake > now {
            let stopped = future::or(
                async {
                    stop.wait().await;
                    true
                },
                future::or(
                    async {
                        tokio::time::sleep(wake - now).await;
                        false
                    },
                    async {
                        listener.await;
                        false
                    },
                ),
            )
            .await;
            if stopped {
                return;
            }
            if shared.renew_pending.swap(false, Ordering::SeqCst) {
                next = shared.now();
            }
        }
        let now = shared.now();
        {
            let mut lease = shared.lease();
            if lease.expire(now) {
                tracing::warn!(
                    target: "ace_std::fleet",
                    member = %shared.id,
                    fallback_limit = lease.fallback_limit(),
                    "fleet lease expired without a renewal (Redis unreachable): on the local \
                     fallback limit until Redis answers"
                );
                shared.apply(&lease);
            }
        }
        if now < next {
            continue;
        }
        while next <= now {
            next += every;
        }
        let usage = shared.target().map(|t| t.usage());
        let (want, in_use) = {
            let lease = shared.lease();
            // In use: the permits held, or the limit in force if higher: until this renewal's
            // answer is applied, the member may take up to that many, so Redis must count them.
            let in_use = usage.map_or(0, |u| u.in_flight.max(lease.limit()));
            (lease.want(usage), in_use)
        };
        let sent = shared.now();
        let result = future::or(
            async { Some(client.renew(&shared.id, want, in_use).await) },
            async {
                stop.wait().await;
                None
            },
        )
        .await;
        let Some(result) = result else {
            return;
        };
        let now = shared.now();
        let mut lease = shared.lease();
        match result {
            Ok(r) => {
                if let Some(FleetMode::Fallback | FleetMode::Holding) = lease.renewed(sent, now, r)
                {
                    tracing::info!(
                        target: "ace_std::fleet",
                        member = %shared.id,
                        grant = r.grant,
                        members = r.members,
                        "fleet lease renewed again: rejoined the fleet"
                    );
                }
                shared.apply(&lease);
            }
            Err(e) => {
                if lease.failed() {
                    tracing::warn!(
                        target: "ace_std::fleet",
                        member = %shared.id,
                        error = %e,
                        cause = %std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default(),
                        grant = lease.grant,
                        "fleet lease renewal failed: keeping the grant until the lease expires"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn lease() -> Lease {
        Lease::new(&FleetConfig {
            capacity: 40,
            ..FleetConfig::default()
        })
    }

    fn renewal(grant: usize, members: usize) -> Renewal {
        Renewal {
            grant,
            held: grant,
            members,
            total_held: grant * members,
        }
    }

    fn usage(in_flight: usize, waiting: usize) -> Option<Usage> {
        Some(Usage {
            limit: 0,
            in_flight,
            waiting,
        })
    }

    #[test]
    fn should_expire_on_its_own_clock_a_margin_before_redis() {
        let mut l = lease();
        l.local = 30;
        l.renewed(Duration::ZERO, 2 * MS, renewal(10, 4));
        assert_eq!((l.mode, l.limit()), (FleetMode::Leased, 10));
        // Renewals fail: the grant stands until lease − margin = 2.5 s after the send.
        assert!(l.failed());
        assert!(!l.expire(2499 * MS));
        assert_eq!((l.mode, l.ceiling()), (FleetMode::Holding, 10));
        assert!(l.expire(2500 * MS));
        // Fallback: C / last known members = 40 / 4, but no more than the grant for one lease,
        // until every other member's lease has expired too.
        assert_eq!((l.mode, l.ceiling()), (FleetMode::Fallback, 10));
        l.grant = 6;
        assert_eq!(l.ceiling(), 6);
        assert!(!l.expire(5499 * MS));
        assert!(l.expire(5500 * MS));
        assert_eq!((l.mode, l.ceiling()), (FleetMode::Fallback, 10));
        assert!(!l.expire(9000 * MS));
    }

    #[test]
    fn should_cap_the_first_want_after_an_outage_at_the_limit_in_force() {
        let mut l = lease();
        l.local = 40;
        l.renewed(Duration::ZERO, MS, renewal(10, 4));
        l.failed();
        l.expire(3 * Duration::from_secs(1));
        l.expire(6 * Duration::from_secs(1));
        // Busy with a long queue: it would ask for C, but asks only for the fallback limit.
        assert_eq!(l.want(usage(10, 500)), 10);
        l.renewed(4 * Duration::from_secs(1), 4001 * MS, renewal(10, 4));
        assert_eq!(l.want(usage(10, 500)), 40);
    }

    #[test]
    fn should_want_what_demand_uses_and_return_the_rest() {
        let mut l = lease();
        l.local = 20;
        l.renewed(Duration::ZERO, MS, renewal(20, 2));
        // Idle: 2 in flight wants 3, returning 17 to the fleet.
        assert_eq!(l.want(usage(2, 0)), 3);
        // Pressing on its grant: a quarter more.
        assert_eq!(l.want(usage(20, 0)), 26);
        // AIMD cut the local limit to 8 under the grant of 20: little more than 8.
        l.local = 8;
        assert_eq!(l.want(usage(8, 30)), 11);
        // Before a target is attached: 1.
        assert_eq!(l.want(None), 1);
    }

    #[test]
    fn should_use_a_fixed_fallback_when_configured() {
        let mut l = Lease::new(&FleetConfig {
            capacity: 40,
            fallback: Fallback::Limit(3),
            ..FleetConfig::default()
        });
        l.local = 30;
        assert_eq!(l.ceiling(), 3);
        l.renewed(Duration::ZERO, MS, renewal(0, 50));
        assert_eq!(l.limit(), 0);
    }
}
