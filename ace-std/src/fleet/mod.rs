//! One concurrency budget shared by many instances: leases on Redis (or Valkey), max-min fair
//! grants, ACE's AIMD inside each grant.
//!
//! When a service runs as 20 instances in front of one database that takes 100 connections,
//! each instance's own limit is not enough: their sum must stay under what the downstream can
//! take. A [`FleetBudget`] names a budget (a key prefix) with a capacity C; each instance is a
//! member that renews a **lease** once per cycle:
//!
//! - one round trip, one Lua script, atomic in Redis: the member says what it wants (what its
//!   demand would use, bounded by its local AIMD limit) and how many permits it has in use;
//!   Redis drops expired members and answers its **grant**, its max-min fair share of C among
//!   the live members' wants, never more than C minus the others' held grants. So **the sum of
//!   the unexpired grants never exceeds C**, including while members join, leave or die.
//! - the member's limit is `min(local AIMD limit, grant)`, and the controller knows the grant
//!   is a ceiling: it does not increase past it, and the decision log says `fleet_cap` with the
//!   grant and the member count. Demand below the grant returns the rest to the fleet at the
//!   next renewal.
//! - a lease expires on the member's own clock a safety margin before Redis drops it, so a
//!   paused or partitioned member stops relying on its grant before anyone else can take it: it
//!   moves to its fallback limit (below), which Redis does not count. While the others still
//!   reach Redis, the permits in use across the fleet may then exceed C by up to each cut-off
//!   member's fallback limit (at first `min(C / members, grant)`, for one lease; then
//!   `C / members`). Fail-open is the choice: a member that cannot reach Redis keeps working.
//! - **Redis unreachable**: the member keeps what it reported in use (at most its grant: a
//!   renewal that timed out may have run) until its lease expires, then falls back to a local
//!   limit ([`Fallback`]: by default C / the last known member count), logs it, and
//!   rejoins when Redis answers again, asking at first for no more than it uses (so the sum
//!   stays under C while the others rejoin too). Fail-open, but bounded.
//! - **Redis loses the budget's state** without an error (a restart without persistence,
//!   `FLUSHALL`, a failover, eviction): each renewal says what the member held, and a member
//!   Redis does not know that held a grant rejoins with at most that; for one lease after
//!   (the recovery window) no member grows and newcomers wait. The sum stays within C, except
//!   for a member joining for the first time before any returning member has renewed (see the
//!   README's fleet section for that bound).
//! - **Leaving**: [`FleetBudget::leave`] gives the share back at once and waits until Redis
//!   has it; call it after the manager's `shutdown`.
//!
//! Redis's `TIME` is wall-clock: a forward step of its clock larger than `safety_margin` lets a
//! grant be handed on while its holder still uses it; a backward step keeps a dead member's
//! share longer. Keep Redis's host clock slewed, not stepped.
//!
//! Time in the script is Redis's (`TIME`): members' clocks only time their own lease. Keys live
//! under the prefix only: `<prefix>:lease`, `<prefix>:want`, `<prefix>:grant`,
//! `<prefix>:total`, `<prefix>:hist`, `<prefix>:recover`. A renewal costs O(log n) plus one pass over the distinct
//! wants (at most C + 1 of them).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ace_std::fleet::{FleetBudget, FleetConfig};
//! use ace_std::AimdConfig;
//!
//! let budget = FleetBudget::connect(FleetConfig {
//!     url: "redis://127.0.0.1:6379".into(),
//!     prefix: "ace:orders-db".into(),
//!     capacity: 100,
//!     ..FleetConfig::default()
//! })
//! .await?;
//! let manager = ace_std::tokio::Manager::builder(AimdConfig::default())
//!     .fleet(budget.clone())
//!     .build()?;
//! let rows = manager.submit(async { 42 }).await?;
//! # let _ = rows;
//! println!("{:?}", budget.state());
//! # manager.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`FleetBudget::target`] wraps any [`LimitTarget`](ace_core::LimitTarget), for a control loop
//! of your own; [`FleetClient`] drives many members over one connection, or watches a budget.

mod budget;
mod client;
mod lease;
mod renewer;
mod shared;

use std::fmt;
use std::time::Duration;

use ace_core::{ConfigError, ConfigRule};

pub use budget::{FleetBudget, FleetState, FleetTarget};
pub use client::{FleetClient, FleetSnapshot, MemberLease, Renewal};
pub use lease::FleetMode;

/// The limit a member falls back to once Redis has been unreachable for longer than its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fallback {
    /// C / the last known member count, rounded down, so that the members together stay within
    /// C; with more members than C (a share under 1) the member keeps its last grant instead
    /// (0 or 1 for most), since the last grants summed to at most C. A member that joins during
    /// the outage is not counted.
    #[default]
    Share,
    /// A fixed limit, e.g. the controller's `min_limit` for a downstream that must never be
    /// overrun.
    Limit(usize),
}

/// A fleet budget: where it lives, how big it is, how leases are timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// The budget's name: every key lives under `<prefix>:`.
    pub prefix: String,
    /// C: the most all members together may use.
    pub capacity: usize,
    /// This member's id, unique in the fleet. Default: `<host>-<pid>-<random>`.
    pub member_id: Option<String>,
    /// How often the member renews its lease (one round trip each time).
    pub renew_interval: Duration,
    /// How long Redis keeps a lease that is not renewed.
    pub lease: Duration,
    /// How much earlier than Redis the member gives its lease up, on its own clock.
    pub safety_margin: Duration,
    /// How long one round trip (and connecting) may take.
    pub timeout: Duration,
    /// The limit once Redis has been unreachable for longer than a lease.
    pub fallback: Fallback,
}

// Defaults: renew every second, the controller's default adjustment interval; a lease of three
// renewals, so one lost round trip costs nothing; give it up 500 ms early, well over the clock
// drift of a few seconds; a round trip may take a quarter second, far over a local Redis's.
impl FleetConfig {
    /// The default `renew_interval`: 1 s.
    pub const fn default_renew_interval() -> Duration {
        Duration::from_secs(1)
    }
    /// The default `lease`: 3 s.
    pub const fn default_lease() -> Duration {
        Duration::from_secs(3)
    }
    /// The default `safety_margin`: 500 ms.
    pub const fn default_safety_margin() -> Duration {
        Duration::from_millis(500)
    }
    /// The default `timeout`: 250 ms.
    pub const fn default_timeout() -> Duration {
        Duration::from_millis(250)
    }

    /// The largest `capacity`: the lease script counts in Lua numbers (doubles), exact for
    /// `capacity × members` up to 2^53 with up to 2^21 members.
    pub const MAX_CAPACITY: usize = u32::MAX as usize;
    /// The longest `renew_interval`, `lease`, `safety_margin` and `timeout`: one day. A longer
    /// lease would keep a dead member's share for longer than anyone waits, and the script's
    /// millisecond arithmetic (Redis time + 4 leases) must stay exact.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

    /// Checks the config.
    ///
    /// # Errors
    ///
    /// - [`FleetError::EmptyPrefix`] if `prefix` is empty;
    /// - [`FleetError::Config`] naming the field and the rule if: `capacity` is 0 or above
    ///   [`MAX_CAPACITY`](Self::MAX_CAPACITY); `renew_interval`, `lease`, `safety_margin` or
    ///   `timeout` is zero or longer than [`MAX_DURATION`](Self::MAX_DURATION); `timeout` is
    ///   longer than `renew_interval`; `lease` is shorter than
    ///   `renew_interval + timeout + safety_margin` (a lease must outlive the wait for its next
    ///   renewal); `Fallback::Limit(n)` with n = 0 or n above `capacity`.
    pub fn validate(&self) -> Result<(), FleetError> {
        let secs = |d: Duration| d.as_secs_f64();
        if self.prefix.is_empty() {
            return Err(FleetError::EmptyPrefix);
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "only shown in the error message"
        )]
        let count = |n: usize| n as f64;
        if self.capacity == 0 {
            return Err(config("capacity", ConfigRule::AtLeastOne, 0.0));
        }
        if self.capacity > Self::MAX_CAPACITY {
            return Err(config(
                "capacity",
                ConfigRule::NotAbove(Self::MAX_CAPACITY as u64),
                count(self.capacity),
            ));
        }
        for (field, d) in [
            ("renew_interval", self.renew_interval),
            ("lease", self.lease),
            ("safety_margin", self.safety_margin),
            ("timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(config(field, ConfigRule::NonZero, 0.0));
            }
            if d > Self::MAX_DURATION {
                return Err(config(
                    field,
                    ConfigRule::AtMost(Self::MAX_DURATION),
                    secs(d),
                ));
            }
        }
        if self.timeout > self.renew_interval {
            return Err(config(
                "renew_interval",
                ConfigRule::NotShorterThan("timeout", self.timeout),
                secs(self.renew_interval),
            ));
        }
        // No overflow: each term is at most a day.
        let needed = self.renew_interval + self.timeout + self.safety_margin;
        if self.lease < needed {
            return Err(config(
                "lease",
                ConfigRule::NotShorterThan("renew_interval + timeout + safety_margin", needed),
                secs(self.lease),
            ));
        }
        match self.fallback {
            Fallback::Limit(0) => return Err(config("fallback", ConfigRule::AtLeastOne, 0.0)),
            Fallback::Limit(n) if n > self.capacity => {
                return Err(config(
                    "fallback",
                    ConfigRule::NotAbove(self.capacity as u64),
                    count(n),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn config(field: &'static str, rule: ConfigRule, value: f64) -> FleetError {
    FleetError::Config(ConfigError::custom(field, rule, value))
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "ace:fleet".to_owned(),
            capacity: 100,
            member_id: None,
            renew_interval: Self::default_renew_interval(),
            lease: Self::default_lease(),
            safety_margin: Self::default_safety_margin(),
            timeout: Self::default_timeout(),
            fallback: Fallback::Share,
        }
    }
}

/// A fleet budget could not be set up or a round trip failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetError {
    /// A field of [`FleetConfig`] breaks a rule.
    Config(ConfigError),
    /// [`FleetConfig::prefix`] is empty: the keys would not be under a prefix of the user's.
    EmptyPrefix,
    /// The URL does not parse.
    Url(redis::RedisError),
    /// Redis refused the credentials (wrong password or ACL user, or a password given to a
    /// server that has none).
    Auth(redis::RedisError),
    /// A `rediss://` URL, and the TLS handshake failed: is the server serving TLS?
    Tls(redis::RedisError),
    /// Redis could not be reached at construction.
    Connect(redis::RedisError),
    /// A round trip failed or took longer than the config's `timeout`.
    Redis(redis::RedisError),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid fleet config: {e}"),
            Self::EmptyPrefix => {
                f.write_str("invalid fleet config: field `prefix`: it must not be empty")
            }
            Self::Url(_) => f.write_str("the fleet's Redis URL is invalid"),
            Self::Auth(_) => f.write_str(
                "Redis refused the fleet's credentials (wrong password or user in the URL, or a \
                 password for a server that has none)",
            ),
            Self::Tls(_) => f.write_str(
                "TLS handshake with the fleet's Redis failed (a rediss:// URL needs a server \
                 that serves TLS; use redis:// for a plain one)",
            ),
            Self::Connect(_) => f.write_str("could not connect to the fleet's Redis"),
            Self::Redis(_) => f.write_str("a fleet lease round trip to Redis failed"),
        }
    }
}

impl std::error::Error for FleetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::EmptyPrefix => None,
            Self::Url(e) | Self::Auth(e) | Self::Tls(e) | Self::Connect(e) | Self::Redis(e) => {
                Some(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn should_accept_the_defaults() {
        FleetConfig::default().validate().unwrap();
    }

    #[test]
    fn should_name_the_field_that_breaks_a_rule() {
        let bad = |c: FleetConfig| match c.validate() {
            Err(FleetError::Config(e)) => e.field(),
            other => panic!("{other:?}"),
        };
        let d = FleetConfig::default;
        assert_eq!(bad(FleetConfig { capacity: 0, ..d() }), "capacity");
        assert_eq!(
            bad(FleetConfig {
                lease: Duration::from_secs(1),
                ..d()
            }),
            "lease"
        );
        assert_eq!(
            bad(FleetConfig {
                timeout: Duration::from_secs(2),
                ..d()
            }),
            "renew_interval"
        );
        assert_eq!(
            bad(FleetConfig {
                fallback: Fallback::Limit(0),
                ..d()
            }),
            "fallback"
        );
        assert!(matches!(
            FleetConfig {
                prefix: String::new(),
                ..d()
            }
            .validate(),
            Err(FleetError::EmptyPrefix)
        ));
        let e = FleetConfig {
            lease: Duration::from_secs(1),
            ..d()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`lease`"), "{e}");
    }

    #[test]
    fn should_refuse_durations_and_capacities_the_script_cannot_count() {
        let d = FleetConfig::default;
        let rule = |c: FleetConfig| match c.validate() {
            Err(FleetError::Config(e)) => (e.field(), e.rule()),
            other => panic!("{other:?}"),
        };
        let day = FleetConfig::MAX_DURATION;
        assert_eq!(
            rule(FleetConfig {
                renew_interval: Duration::MAX,
                ..d()
            }),
            ("renew_interval", ConfigRule::AtMost(day))
        );
        assert_eq!(
            rule(FleetConfig {
                lease: Duration::MAX,
                ..d()
            }),
            ("lease", ConfigRule::AtMost(day))
        );
        assert_eq!(
            rule(FleetConfig {
                safety_margin: Duration::MAX,
                ..d()
            }),
            ("safety_margin", ConfigRule::AtMost(day))
        );
        assert_eq!(
            rule(FleetConfig {
                capacity: usize::MAX,
                ..d()
            }),
            (
                "capacity",
                ConfigRule::NotAbove(FleetConfig::MAX_CAPACITY as u64)
            )
        );
        assert_eq!(
            rule(FleetConfig {
                fallback: Fallback::Limit(101),
                ..d()
            }),
            ("fallback", ConfigRule::NotAbove(100))
        );
        let e = FleetConfig {
            lease: Duration::MAX,
            ..d()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`lease`"), "{e}");
        // The largest accepted values are accepted.
        FleetConfig {
            capacity: FleetConfig::MAX_CAPACITY,
            lease: day,
            fallback: Fallback::Limit(FleetConfig::MAX_CAPACITY),
            ..d()
        }
        .validate()
        .unwrap();
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            (1u64..5_000).prop_map(Duration::from_millis),
            (0u64..=200_000).prop_map(Duration::from_secs),
            any::<u64>().prop_map(Duration::from_secs),
            Just(FleetConfig::MAX_DURATION),
            Just(Duration::MAX),
        ]
    }

    fn fleet_config() -> impl Strategy<Value = FleetConfig> {
        let capacity = prop_oneof![
            0usize..1000,
            Just(FleetConfig::MAX_CAPACITY),
            Just(FleetConfig::MAX_CAPACITY + 1),
            any::<usize>(),
        ];
        let fallback = prop_oneof![
            Just(Fallback::Share),
            any::<usize>().prop_map(Fallback::Limit),
            (0usize..200).prop_map(Fallback::Limit),
        ];
        (
            capacity,
            (duration(), duration(), duration()),
            prop_oneof![duration(), Just(Duration::ZERO)],
            fallback,
            "[a-z:]{0,8}",
        )
            .prop_map(
                |(capacity, (renew, timeout, margin), extra, fallback, prefix)| {
                    // Often a lease that fits the rule, so that accepted configs are common.
                    let lease = renew
                        .checked_add(timeout)
                        .and_then(|d| d.checked_add(margin))
                        .and_then(|d| d.checked_add(extra))
                        .unwrap_or(extra);
                    FleetConfig {
                        prefix,
                        capacity,
                        renew_interval: renew,
                        lease,
                        safety_margin: margin,
                        timeout,
                        fallback,
                        ..FleetConfig::default()
                    }
                },
            )
    }

    proptest! {
        /// Any config `validate()` accepts builds (the connection plan, the lease state
        /// machine and its clock arithmetic) without a panic; a refused one names its field.
        #[test]
        fn should_build_any_config_that_validate_accepts(c in fleet_config()) {
            match c.validate() {
                Ok(()) => {
                    let plan = client::Plan::new(&c);
                    prop_assert!(plan.is_ok());
                    let mut lease = lease::Lease::new(&c);
                    lease.local = usize::MAX;
                    let far = Duration::MAX;
                    let renewal = Renewal {
                        grant: c.capacity,
                        held: c.capacity,
                        members: usize::MAX,
                        total_held: c.capacity,
                        rejoined: false,
                    };
                    for at in [Duration::ZERO, c.lease, far] {
                        lease.renewed(at, at, renewal);
                        lease.failed(c.capacity);
                        lease.expire(at.saturating_add(c.lease));
                        lease.expire(far);
                        prop_assert!(lease.limit() <= c.capacity);
                        let most = ace_core::Usage {
                            limit: usize::MAX,
                            in_flight: usize::MAX,
                            waiting: usize::MAX,
                        };
                        prop_assert!(lease.want(Some(most)) <= c.capacity);
                    }
                    let _ = shared::Shared::new("m".to_owned(), &c);
                }
                Err(FleetError::Config(e)) => prop_assert!(!e.field().is_empty()),
                Err(FleetError::EmptyPrefix) => prop_assert!(c.prefix.is_empty()),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
