//! The renewal thread of one [`FleetBudget`]: join, renew every `renew_interval`, fall back when
//! the lease runs out, leave when stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ace_core::Shutdown;
use futures_lite::future;

use super::lease::{FleetMode, Lease};
use super::shared::{Handle, Shared};
use super::{FleetClient, FleetConfig, FleetError, Renewal};

pub(super) type Reply = futures_channel::oneshot::Sender<Result<Arc<Handle>, FleetError>>;

/// Tells every `leave()` that the thread stopped, even if it stops by a panic.
struct LeftGuard(Arc<Shared>);

impl Drop for LeftGuard {
    fn drop(&mut self) {
        self.0
            .set_left(Err("the fleet's renewal thread stopped".to_owned()));
    }
}

/// The renewal thread: connect, join, hand the budget back, then renew until stopped and leave.
pub(super) async fn start(config: FleetConfig, reply: Reply) {
    let client = match FleetClient::connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let id = config.member_id.clone().unwrap_or_else(default_member_id);
    let shared = Arc::new(Shared::new(id, &config));
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
    let _guard = LeftGuard(Arc::clone(&shared));
    let stop = Shutdown::new();
    let handle = Arc::new(Handle {
        shared: Arc::clone(&shared),
        stop: stop.clone(),
    });
    if reply.send(Ok(handle)).is_ok() {
        drive(&client, &shared, &stop).await;
    }
    leave(&client, &shared).await;
}

/// Stops using the grant, then tells Redis, so the others may take the share at their next
/// renewal.
async fn leave(client: &FleetClient, shared: &Shared) {
    {
        let mut lease = shared.lease();
        lease.left();
        shared.apply(&lease);
    }
    let outcome = client.leave(&shared.id).await;
    if let Err(e) = &outcome {
        tracing::warn!(
            target: "ace_std::fleet",
            member = %shared.id,
            error = %e,
            "could not leave the fleet: its share comes back to the others when its lease \
             expires in Redis"
        );
    }
    shared.set_left(outcome.map_err(|e| {
        std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
    }));
}

/// Renews every `renew_interval` (at once when a target is attached) until stopped.
async fn drive(client: &FleetClient, shared: &Shared, stop: &Shutdown) {
    let mut next = shared.now() + shared.every;
    while wait_until_due(shared, stop, &mut next).await && renew_once(client, shared, stop).await {}
}

/// Sleeps until the next renewal is due, or one is asked for, falling back on the way when the
/// lease runs out on this clock; false once stopped.
async fn wait_until_due(shared: &Shared, stop: &Shutdown, next: &mut Duration) -> bool {
    loop {
        let now = shared.now();
        let wake = match shared.lease().next_change() {
            Some(t) if t > now => (*next).min(t),
            _ => *next,
        };
        let listener = shared.renew_now.listen();
        if shared.renew_pending.swap(false, Ordering::SeqCst) {
            *next = now;
        } else if wake > now {
            let sleep = async {
                tokio::time::sleep(wake - now).await;
                false
            };
            let asked = async {
                listener.await;
                false
            };
            let stopped = async {
                stop.wait().await;
                true
            };
            if future::or(stopped, future::or(sleep, asked)).await {
                return false;
            }
            if shared.renew_pending.swap(false, Ordering::SeqCst) {
                *next = shared.now();
            }
        }
        let now = shared.now();
        fall_back_if_expired(shared, now);
        if now >= *next {
            while *next <= now {
                *next += shared.every;
            }
            return true;
        }
    }
}

fn fall_back_if_expired(shared: &Shared, now: Duration) {
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

/// One renewal with this member's usage; false if stopped meanwhile.
async fn renew_once(client: &FleetClient, shared: &Shared, stop: &Shutdown) -> bool {
    let (want, in_use, held) = {
        let mut lease = shared.lease();
        // Read under the lease lock, as `apply` sets the limit under it: read before it, the
        // permits in use miss those admitted under a limit cut before the lock was taken.
        let usage = shared.target().map(|t| t.usage());
        // In use: the permits held, or the limit in force if higher: until this renewal's
        // answer is applied, the member may take up to that many, so Redis must count them,
        // and the limit may not rise past them meanwhile.
        let in_use = usage.map_or(0, |u| u.in_flight.max(lease.limit()));
        lease.sending(in_use);
        (lease.want(usage), in_use, lease.claim())
    };
    let sent = shared.now();
    let renewal = async { Some(client.renew_held(&shared.id, want, in_use, held).await) };
    let stopped = async {
        stop.wait().await;
        None
    };
    let Some(result) = future::or(renewal, stopped).await else {
        return false;
    };
    let now = shared.now();
    let mut lease = shared.lease();
    match result {
        Ok(r) => renewed(shared, &mut lease, sent, now, r),
        Err(e) => {
            let changed = lease.failed(in_use);
            // The cap of the renewal in flight is gone: re-apply, or a rise it held back would
            // wait for the next `set_limit` or expiry.
            shared.apply(&lease);
            if changed {
                tracing::warn!(
                    target: "ace_std::fleet",
                    member = %shared.id,
                    error = %e,
                    cause = %std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default(),
                    grant = lease.grant,
                    "fleet lease renewal failed: keeping what it uses until the lease expires"
                );
            }
        }
    }
    true
}

fn renewed(shared: &Shared, lease: &mut Lease, sent: Duration, now: Duration, r: Renewal) {
    let was = lease.renewed(sent, now, r);
    if r.rejoined {
        tracing::warn!(
            target: "ace_std::fleet",
            member = %shared.id,
            grant = r.grant,
            members = r.members,
            "Redis did not know this member although it held a grant (Redis lost the budget's \
             state: a restart, FLUSHALL, failover or eviction; or the lease expired there): \
             rejoined with at most what it held"
        );
    } else if let Some(FleetMode::Fallback | FleetMode::Holding) = was {
        tracing::info!(
            target: "ace_std::fleet",
            member = %shared.id,
            grant = r.grant,
            members = r.members,
            "fleet lease renewed again: rejoined the fleet"
        );
    }
    log_wait(shared, lease, now);
    shared.apply(lease);
}

/// Says why new work waits when the grant is 0, and how long that should take.
fn log_wait(shared: &Shared, lease: &mut Lease, now: Duration) {
    if lease.grant > 0 {
        lease.waiting_since = None;
        return;
    }
    let bound = shared.lease_len + shared.every * 2;
    match lease.waiting_since {
        None => {
            lease.waiting_since = Some(now);
            tracing::info!(
                target: "ace_std::fleet",
                member = %shared.id,
                members = lease.members,
                "fleet grant is 0: new work waits until the other members return part of the \
                 budget, within two of their renewals ({:?}), or {bound:?} if one of them died",
                shared.every * 2,
            );
        }
        Some(since) if now.saturating_sub(since) >= bound && lease.renewals % 10 == 0 => {
            tracing::warn!(
                target: "ace_std::fleet",
                member = %shared.id,
                members = lease.members,
                waited = ?now.saturating_sub(since),
                "fleet grant still 0: the other members use the whole budget (with more \
                 members than its capacity, some get 0 until others ask for less)"
            );
        }
        Some(_) => {}
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn should_say_why_it_waits_at_a_grant_of_zero_and_for_how_long() {
        let shared = Shared::new("m".to_owned(), &FleetConfig::default());
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let zero = Renewal {
            grant: 0,
            held: 0,
            members: 4,
            total_held: 40,
            rejoined: false,
        };
        tracing::subscriber::with_default(subscriber, || {
            let mut lease = shared.lease();
            let second = Duration::from_secs(1);
            renewed(&shared, &mut lease, Duration::ZERO, second, zero);
            // Once per wait, not at every renewal.
            renewed(&shared, &mut lease, second, second * 2, zero);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("fleet grant is 0").count(), 1, "{text}");
        // The bound: two of the others' renewals (2 s), or a lease and two renewals (5 s).
        assert!(text.contains("2s") && text.contains("5s"), "{text}");
    }
}
