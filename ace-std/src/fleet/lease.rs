//! The lease state machine of one member: pure, on a clock given by the caller.

use std::time::Duration;

use ace_core::Usage;

use super::{Fallback, FleetConfig, Renewal};

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
    /// The member left the fleet ([`FleetBudget::leave`](super::FleetBudget::leave)): its limit
    /// is 0 and it renews no more.
    Left,
}

impl FleetMode {
    /// `"leased"`, `"holding"`, `"fallback"` or `"left"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Leased => "leased",
            Self::Holding => "holding",
            Self::Fallback => "fallback",
            Self::Left => "left",
        }
    }
}

/// The lease state machine: pure, on a clock given by the caller.
#[derive(Debug)]
pub(super) struct Lease {
    capacity: usize,
    fallback: Fallback,
    // lease − safety margin: how long after sending a renewal its grant may be used.
    usable: Duration,
    pub(super) mode: FleetMode,
    pub(super) grant: usize,
    pub(super) held: usize,
    pub(super) members: usize,
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
    // A renewal is on its way to Redis, which will count this member for at most this many
    // (the limit in force, or the permits in use, when it was sent): until its answer is
    // applied the limit may not rise above it, or Redis would give the rise to another member
    // too (the control loop raising the local limit under an old, larger grant).
    in_flight_cap: Option<usize>,
    pub(super) local: usize,
    pub(super) renewals: u64,
    pub(super) failures: u64,
    pub(super) last_round_trip: Option<Duration>,
    // Since when the grant has been 0 (a wait), for the log.
    pub(super) waiting_since: Option<Duration>,
}

impl Lease {
    pub(super) fn new(config: &FleetConfig) -> Self {
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
            in_flight_cap: None,
            local: 0,
            renewals: 0,
            failures: 0,
            last_round_trip: None,
            waiting_since: None,
        }
    }

    /// C / the last known member count, rounded down, so that the members together stay
    /// within C; with more members than C (a share of 0) the member keeps its last grant,
    /// since the last grants summed to at most C.
    pub(super) fn fallback_limit(&self) -> usize {
        let limit = match self.fallback {
            Fallback::Share => match self.capacity / self.members.max(1) {
                0 => self.grant,
                share => share,
            },
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
    pub(super) fn next_change(&self) -> Option<Duration> {
        match self.mode {
            FleetMode::Leased | FleetMode::Holding => Some(self.valid_until),
            FleetMode::Fallback => self.cautious_until,
            FleetMode::Left => None,
        }
    }

    /// The ceiling in force: the grant while the lease is valid, else the fallback.
    pub(super) fn ceiling(&self) -> usize {
        match self.mode {
            FleetMode::Leased | FleetMode::Holding => self.grant,
            FleetMode::Fallback => self.fallback_limit(),
            FleetMode::Left => 0,
        }
    }

    pub(super) fn limit(&self) -> usize {
        let limit = self.local.min(self.ceiling());
        self.in_flight_cap.map_or(limit, |cap| limit.min(cap))
    }

    /// A renewal reporting `in_use` is being sent: the limit stays at or below it until the
    /// answer (or the failure) is applied.
    pub(super) fn sending(&mut self, in_use: usize) {
        self.in_flight_cap = Some(in_use);
    }

    /// What this member tells Redis it holds: its last held grant, so that a member Redis no
    /// longer knows (its state was lost) rejoins no higher than that.
    pub(super) fn claim(&self) -> usize {
        match self.mode {
            FleetMode::Left => 0,
            _ => self.held,
        }
    }

    /// What to ask for, from the permits in use and waiting.
    pub(super) fn want(&self, usage: Option<Usage>) -> usize {
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
        let busy = u.waiting > 0
            || (effective > 0 && u.in_flight.saturating_mul(5) >= effective.saturating_mul(4));
        if busy {
            want = want.max(more(effective));
        }
        // AIMD below the grant (stressed, or still climbing): ask for little more than it
        // allows. Not while the grant is 0 (a wait at join): the newcomer asks for its demand.
        if ceiling > 0 && self.local < ceiling {
            want = want.min(more(self.local));
        }
        // After a failure, a member that held a grant asks for no more than it uses; one that
        // held nothing (waiting at 0) has nothing to protect and asks for its demand.
        if self.rejoin && self.held > 0 {
            want = want.min(effective.max(1));
        }
        want.clamp(1, self.capacity)
    }

    pub(super) fn renewed(
        &mut self,
        sent: Duration,
        now: Duration,
        r: Renewal,
    ) -> Option<FleetMode> {
        let was = self.mode;
        self.mode = FleetMode::Leased;
        self.grant = r.grant;
        self.held = r.held;
        self.members = r.members.max(1);
        self.valid_until = sent.saturating_add(self.usable);
        self.cautious_until = None;
        self.rejoin = false;
        self.in_flight_cap = None;
        self.renewals += 1;
        self.last_round_trip = Some(now.saturating_sub(sent));
        (was != FleetMode::Leased).then_some(was)
    }

    /// A renewal failed. `sent_in_use` is what it reported in use: Redis may have run it
    /// anyway (a timeout), and then counts this member for no more than that, so the grant in
    /// force shrinks to it; the member holds what it uses, and grows no more, until a renewal
    /// answers.
    pub(super) fn failed(&mut self, sent_in_use: usize) -> bool {
        self.failures += 1;
        self.rejoin = true;
        self.in_flight_cap = None;
        self.grant = self.grant.min(sent_in_use);
        if self.mode == FleetMode::Leased {
            self.mode = FleetMode::Holding;
            return true;
        }
        false
    }

    /// The member left: limit 0, no more renewals.
    pub(super) fn left(&mut self) {
        self.mode = FleetMode::Left;
        self.grant = 0;
        self.held = 0;
    }

    /// Falls back once the lease has run out on this clock, cautiously for one lease, then to
    /// the full fallback limit; true if the ceiling just changed.
    pub(super) fn expire(&mut self, now: Duration) -> bool {
        if matches!(self.mode, FleetMode::Leased | FleetMode::Holding) && now >= self.valid_until {
            self.mode = FleetMode::Fallback;
            self.cautious_until = Some(self.valid_until.saturating_add(self.lease));
            return true;
        }
        if self.cautious_until.is_some_and(|t| now >= t) {
            self.cautious_until = None;
            return true;
        }
        false
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
            rejoined: false,
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
        assert!(l.failed(10));
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
    fn should_not_rise_above_what_a_renewal_in_flight_reported() {
        let mut l = lease();
        l.local = 10;
        l.renewed(Duration::ZERO, MS, renewal(38, 1));
        assert_eq!(l.limit(), 10);
        // Sent with 10 in force; the control loop doubles the local limit meanwhile: Redis
        // counts this member for 10 (and gives the rest to others), so the limit stays at 10.
        l.sending(10);
        l.local = 20;
        assert_eq!(l.limit(), 10);
        // A cut still applies at once.
        l.local = 6;
        assert_eq!(l.limit(), 6);
        l.local = 20;
        l.renewed(200 * MS, 201 * MS, renewal(19, 2));
        assert_eq!(l.limit(), 19);
        // A failed renewal holds what it reported, and the cap ends with it.
        l.sending(19);
        l.failed(19);
        assert_eq!((l.mode, l.limit()), (FleetMode::Holding, 19));
    }

    #[test]
    fn should_cap_the_first_want_after_an_outage_at_the_limit_in_force() {
        let mut l = lease();
        l.local = 40;
        l.renewed(Duration::ZERO, MS, renewal(10, 4));
        l.failed(10);
        l.expire(3 * Duration::from_secs(1));
        l.expire(6 * Duration::from_secs(1));
        // Busy with a long queue: it would ask for C, but asks only for the fallback limit.
        assert_eq!(l.want(usage(10, 500)), 10);
        assert_eq!(l.claim(), 10);
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
    fn should_ask_for_its_demand_while_waiting_at_a_grant_of_zero() {
        let mut l = lease();
        l.local = 5;
        l.renewed(Duration::ZERO, MS, renewal(0, 4));
        // 12 waiting at grant 0: it asks for its demand, not for 1.25 × its (zero) limit.
        assert_eq!(l.want(usage(0, 12)), 16);
        // The same after a failed renewal (a busy machine's timeout): nothing held to protect.
        l.failed(0);
        assert_eq!(l.want(usage(0, 12)), 16);
    }

    #[test]
    fn should_hold_no_more_than_it_reported_in_use_after_a_failed_renewal() {
        // Redis may have run a renewal that timed out: it then counts 6 for this member (what
        // the renewal reported in use), and the member must not use its old grant of 20.
        let mut l = lease();
        l.local = 6;
        l.renewed(Duration::ZERO, MS, renewal(20, 2));
        assert!(l.failed(6));
        l.local = 30;
        assert_eq!((l.mode, l.limit()), (FleetMode::Holding, 6));
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

    #[test]
    fn should_keep_the_fleet_within_c_on_the_share_fallback_with_more_members_than_c() {
        // 1,000 members on C = 100: a share of 0.1 each. Each keeps its last grant (0 or 1, as
        // the fair split gave them), so the fleet together keeps at most the 100 it held.
        let config = FleetConfig {
            capacity: 100,
            ..FleetConfig::default()
        };
        let mut total = 0;
        for i in 0..1000 {
            let mut l = Lease::new(&config);
            l.local = 10;
            l.renewed(Duration::ZERO, MS, renewal(usize::from(i % 10 == 0), 1000));
            l.failed(l.limit());
            l.expire(Duration::from_secs(10));
            l.expire(Duration::from_secs(20));
            assert_eq!(l.mode, FleetMode::Fallback);
            total += l.limit();
        }
        assert_eq!(total, 100);
        // With fewer members than C: C / members, rounded down (3 × 33 ≤ 100).
        let mut l = Lease::new(&config);
        l.local = 50;
        l.renewed(Duration::ZERO, MS, renewal(30, 3));
        l.failed(30);
        l.expire(Duration::from_secs(10));
        l.expire(Duration::from_secs(20));
        assert_eq!(l.limit(), 33);
    }

    #[test]
    fn should_hold_nothing_once_left() {
        let mut l = lease();
        l.local = 30;
        l.renewed(Duration::ZERO, MS, renewal(10, 4));
        l.left();
        assert_eq!((l.mode, l.limit(), l.claim()), (FleetMode::Left, 0, 0));
        assert_eq!(l.next_change(), None);
        assert!(!l.expire(Duration::from_secs(100)));
    }
}
