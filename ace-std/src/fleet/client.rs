//! [`FleetClient`]: the connection to Redis and the two scripts (renew, snapshot).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script};

use super::{FleetConfig, FleetError};

/// The lease renewal, one round trip, atomic in Redis (see the script's header).
const RENEW: &str = include_str!("renew.lua");
/// The read-only view of the live members.
const SNAPSHOT: &str = include_str!("snapshot.lua");

/// What one renewal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewal {
    /// The grant: the most this member may use until its lease expires.
    pub grant: usize,
    /// What Redis now counts as held by this member: the grant, or more while permits taken
    /// under a larger earlier grant are still in use (never more than it held before).
    pub held: usize,
    /// The live members, this one included.
    pub members: usize,
    /// The sum of the live members' held grants, this one's included: never above the capacity.
    pub total_held: usize,
    /// Redis did not know this member although it said it held a grant (Redis lost the
    /// budget's state, or the lease expired there): the grant was capped at what it held.
    pub rejoined: bool,
}

/// One live member as Redis sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLease {
    /// The member's id.
    pub id: String,
    /// What it asked for at its last renewal.
    pub want: usize,
    /// The grant Redis counts as held by it.
    pub held: usize,
    /// Time left on its lease, by Redis's clock.
    pub expires_in: Duration,
}

/// The live members of a fleet budget, read at one instant of Redis's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// The members whose lease has not expired, in no particular order.
    pub members: Vec<MemberLease>,
}

impl FleetSnapshot {
    /// The sum of the live members' held grants.
    pub fn total_held(&self) -> usize {
        self.members.iter().map(|m| m.held).sum()
    }
}

/// A connection to the Redis (or Valkey) that holds a fleet budget: renew leases, leave, read a
/// snapshot. [`FleetBudget`](super::FleetBudget) drives one for its member; use it directly to
/// drive many simulated members over one connection, or to watch a budget.
///
/// Cheap to clone (the connection is shared and multiplexed); reconnects by itself after Redis
/// comes back. Needs a tokio runtime: it is built and used inside one.
#[derive(Clone)]
pub struct FleetClient {
    conn: ConnectionManager,
    keys: [String; 6],
    renew: Script,
    snapshot: Script,
    capacity: usize,
    lease_ms: u64,
    timeout: Duration,
}

impl fmt::Debug for FleetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetClient")
            .field("keys", &self.keys)
            .field("capacity", &self.capacity)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl FleetClient {
    /// Connects, authenticates (a password or ACL user in the URL) and loads the scripts.
    ///
    /// # Errors
    ///
    /// - [`FleetError::Config`] / [`FleetError::EmptyPrefix`]: the config breaks a rule of
    ///   [`FleetConfig::validate`];
    /// - [`FleetError::Url`]: the URL does not parse;
    /// - [`FleetError::Auth`]: wrong password or user;
    /// - [`FleetError::Tls`]: a `rediss://` URL, and the TLS handshake failed (a plain server,
    ///   say);
    /// - [`FleetError::Connect`]: Redis could not be reached or answered with an error.
    pub async fn connect(config: &FleetConfig) -> Result<Self, FleetError> {
        let Plan {
            client,
            manager,
            keys,
            tls,
        } = Plan::new(config)?;
        let classify = |e: RedisError| classify(e, tls);
        let timed_out = || {
            classify(RedisError::from((
                ErrorKind::Io,
                "timed out connecting",
                format!("no answer within {:?}", config.timeout),
            )))
        };
        // One plain connection and a PING first, without the manager's retries, so that wrong
        // credentials or a TLS mismatch come back as such (a server that wants a password
        // only says so to a command).
        let mut probe =
            tokio::time::timeout(config.timeout, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| timed_out())?
                .map_err(classify)?;
        let _: String =
            tokio::time::timeout(config.timeout, redis::cmd("PING").query_async(&mut probe))
                .await
                .map_err(|_| timed_out())?
                .map_err(classify)?;
        drop(probe);
        let mut conn = tokio::time::timeout(
            config.timeout,
            ConnectionManager::new_with_config(client, manager),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(classify)?;
        let renew = Script::new(RENEW);
        let snapshot = Script::new(SNAPSHOT);
        let _: String = renew.load_async(&mut conn).await.map_err(classify)?;
        Ok(Self {
            conn,
            keys,
            renew,
            snapshot,
            capacity: config.capacity,
            lease_ms: u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
            timeout: config.timeout,
        })
    }

    /// The budget's capacity C.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Renews `member`'s lease in one round trip (EVALSHA, or EVAL once after Redis lost its
    /// script cache): reports what it wants and how many permits it has in use, and answers
    /// its grant. A new member joins by renewing. The same as
    /// [`renew_held`](Self::renew_held) with `held` 0: for a member that never held a grant.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis fails or does not answer within the config's `timeout`.
    pub async fn renew(
        &self,
        member: &str,
        want: usize,
        in_use: usize,
    ) -> Result<Renewal, FleetError> {
        self.renew_held(member, want, in_use, 0).await
    }

    /// [`renew`](Self::renew), saying also what the member holds: the `held` of its last
    /// [`Renewal`] (0 if it never joined). A member Redis does not know that says it holds a
    /// grant rejoins with at most that much: Redis lost the budget's state (a restart without
    /// persistence, `FLUSHALL`, a failover to a lagging replica, eviction) or its lease expired
    /// there, and the others may still use what they held, so the sum stays within C.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis fails or does not answer within the config's `timeout`.
    pub async fn renew_held(
        &self,
        member: &str,
        want: usize,
        in_use: usize,
        held: usize,
    ) -> Result<Renewal, FleetError> {
        let reply: Vec<u64> = self
            .run_renew(member, [want, in_use, held], self.lease_ms, false)
            .await?;
        let get = |i: usize| {
            reply
                .get(i)
                .copied()
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(0)
        };
        Ok(Renewal {
            grant: get(0),
            held: get(1),
            members: get(2),
            total_held: get(3),
            rejoined: get(4) == 1,
        })
    }

    /// Removes `member`'s lease at once, so that the others may take its share at their next
    /// renewal rather than after its lease expires.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis fails or does not answer in time.
    pub async fn leave(&self, member: &str) -> Result<(), FleetError> {
        let _: Vec<u64> = self
            .run_renew(member, [0, 0, 0], self.lease_ms, true)
            .await?;
        Ok(())
    }

    /// The live members and their held grants, by Redis's clock.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis fails or does not answer in time.
    pub async fn snapshot(&self) -> Result<FleetSnapshot, FleetError> {
        let mut conn = self.conn.clone();
        let mut call = self.snapshot.prepare_invoke();
        for k in &self.keys {
            call.key(k);
        }
        let flat: Vec<redis::Value> = self.bounded(call.invoke_async(&mut conn)).await?;
        let members = flat
            .chunks_exact(4)
            .map(|c| {
                let num = |v: &redis::Value| match v {
                    redis::Value::Int(i) => u64::try_from(*i).unwrap_or(0),
                    _ => 0,
                };
                MemberLease {
                    id: match &c[0] {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    },
                    want: usize::try_from(num(&c[1])).unwrap_or(usize::MAX),
                    held: usize::try_from(num(&c[2])).unwrap_or(usize::MAX),
                    expires_in: Duration::from_millis(num(&c[3])),
                }
            })
            .collect();
        Ok(FleetSnapshot { members })
    }

    /// Redis's `INFO` section `section` (e.g. `"cpu"`), as `key:value` lines.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] if Redis fails or does not answer in time.
    pub async fn info(&self, section: &str) -> Result<String, FleetError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("INFO").arg(section).to_owned();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// One run of the lease script; `[want, in_use, held]` are bounded by the capacity, so
    /// that Lua's doubles count them exactly.
    async fn run_renew(
        &self,
        member: &str,
        counts: [usize; 3],
        lease_ms: u64,
        leave: bool,
    ) -> Result<Vec<u64>, FleetError> {
        let mut conn = self.conn.clone();
        let mut call = self.renew.prepare_invoke();
        for k in &self.keys {
            call.key(k);
        }
        call.arg(member);
        for n in counts {
            call.arg(n.min(self.capacity));
        }
        call.arg(lease_ms)
            .arg(self.capacity)
            .arg(if leave { "leave" } else { "renew" });
        self.bounded(call.invoke_async(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(FleetError::Redis),
            Err(_) => Err(FleetError::Redis(RedisError::from((
                ErrorKind::Io,
                "timed out",
                format!("no answer within {:?}", self.timeout),
            )))),
        }
    }
}

/// Everything a connection is built from, without connecting: checked config, parsed URL.
pub(super) struct Plan {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    keys: [String; 6],
    tls: bool,
}

impl Plan {
    pub(super) fn new(config: &FleetConfig) -> Result<Self, FleetError> {
        config.validate()?;
        let tls = config.url.starts_with("rediss://");
        if tls {
            // redis's rustls has no provider of its own; ignore "already installed".
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(config.url.as_str()).map_err(FleetError::Url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            // Fail fast and let the next renewal try again: the lease logic handles outages.
            .set_number_of_retries(1)
            .set_max_delay(config.renew_interval);
        let p = &config.prefix;
        Ok(Self {
            client,
            manager,
            keys: [
                format!("{p}:lease"),
                format!("{p}:want"),
                format!("{p}:grant"),
                format!("{p}:total"),
                format!("{p}:hist"),
                format!("{p}:recover"),
            ],
            tls,
        })
    }
}

/// Sorts a failure at construction into the error the user can act on.
fn classify(e: RedisError, tls: bool) -> FleetError {
    // A password sent to a server without one: "ERR AUTH <password> called without any
    // password configured for the default user".
    let no_password = e.to_string().contains("without any password configured");
    let auth = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || no_password;
    if auth {
        FleetError::Auth(e)
    } else if tls && (e.is_io_error() || e.is_timeout()) {
        FleetError::Tls(e)
    } else {
        FleetError::Connect(e)
    }
}
