//! What Redis counts for a member against the permits it really has in use: a limit cut that
//! lands between a renewal's read of the usage and its look at the limit (the usage is read
//! under the lease lock, as the limit is set under it), and a member Redis lost that rejoins
//! with permits in use beyond its new grant (Redis keeps what it uses of what it claims to have
//! held).
#![allow(missing_docs, reason = "integration tests")]

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use ace_std::core::{LimitTarget, Usage};
use ace_std::fleet::{FleetBudget, FleetConfig, FleetTarget};
use redis_server::RedisServer;

/// A limit whose `usage()`, once armed, plays what other threads may do right after it read
/// the permits in use: 15 more are admitted under the limit of 20, then the control loop cuts
/// the limit to 8.
#[derive(Default)]
struct CutAfterRead {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    armed: AtomicBool,
    fleet: OnceLock<FleetTarget>,
}

impl LimitTarget for CutAfterRead {
    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
    }

    fn usage(&self) -> Usage {
        let usage = Usage {
            limit: self.limit.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            waiting: self.waiting.load(Ordering::SeqCst),
        };
        if self.armed.swap(false, Ordering::SeqCst) {
            // Admitted under the limit of 20 after the read above.
            self.in_flight.store(20, Ordering::SeqCst);
            // The control loop's cut, on another thread (an uncontended lock: microseconds).
            // If the renewal holds the lease lock around this read (the fix), the cut waits for
            // it: give up waiting after 50 ms, well within the lease.
            let fleet = self.fleet.get().expect("set").clone();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                fleet.set_limit(8);
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_millis(50));
        }
        usage
    }
}

/// A member "m" of a budget of 40, renewing every 100 ms.
fn member(server: &RedisServer, prefix: &str) -> FleetBudget {
    FleetBudget::connect_blocking(FleetConfig {
        url: server.url(),
        prefix: prefix.to_owned(),
        capacity: 40,
        member_id: Some("m".to_owned()),
        renew_interval: Duration::from_millis(100),
        lease: Duration::from_millis(400),
        safety_margin: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..FleetConfig::default()
    })
    .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn redis_counts_every_permit_in_use_when_a_cut_lands_during_the_usage_read() {
    let server = RedisServer::start();
    let budget = member(&server, "accounting-cut");
    let inner = Arc::new(CutAfterRead::default());
    inner.waiting.store(100, Ordering::SeqCst);
    let fleet = budget.target(Arc::clone(&inner) as Arc<dyn LimitTarget>);
    assert!(inner.fleet.set(fleet.clone()).is_ok());
    fleet.set_limit(20);
    // Alone in the fleet and busy: granted all 40, so the limit in force is the local 20.
    wait_for("a limit of 20", || budget.state().limit == 20);
    // 5 in use when the next renewal reads the usage; 20 just after, then the cut.
    inner.waiting.store(0, Ordering::SeqCst);
    inner.in_flight.store(5, Ordering::SeqCst);
    let armed_at = budget.state().renewals;
    inner.armed.store(true, Ordering::SeqCst);
    wait_for("the armed read", || !inner.armed.load(Ordering::SeqCst));
    // From the armed read on, 20 permits are in use: what Redis counts for the member (the
    // `held` of each renewal's answer) must never be less, renewal after renewal. Sampled until
    // three renewals after the armed one (later ones may grow the grant alone in the fleet).
    let in_use = inner.in_flight.load(Ordering::SeqCst);
    let mut low = None;
    wait_for("three more renewals", || {
        let state = budget.state();
        if state.held < in_use && low.is_none() {
            low = Some(state.clone());
        }
        state.renewals >= armed_at + 3
    });
    assert!(
        low.is_none(),
        "Redis counted less for the member than the {in_use} permits it has in use: {low:?}"
    );
    budget.leave_blocking().unwrap();
}

/// A limit of the test's own: permits in use and waiting set by the test, the limit recorded.
#[derive(Default)]
struct Fixed {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
}

impl LimitTarget for Fixed {
    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
    }

    fn usage(&self) -> Usage {
        Usage {
            limit: self.limit.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            waiting: self.waiting.load(Ordering::SeqCst),
        }
    }
}

/// Samples the member's `held` until `renewals` more renewals answered; the first sample below
/// `in_use`, if any.
fn lowest_held(
    budget: &FleetBudget,
    in_use: usize,
    renewals: u64,
) -> Option<ace_std::fleet::FleetState> {
    let from = budget.state().renewals;
    let mut low = None;
    wait_for("more renewals", || {
        let state = budget.state();
        if state.held < in_use && low.is_none() {
            low = Some(state.clone());
        }
        state.renewals >= from + renewals
    });
    low
}

/// Redis loses the member (`FLUSHALL` here; a lease that expired in Redis while the member was
/// on its fallback is the same) while 20 permits are in use above a limit cut to 8. The member
/// rejoins: renew.lua has no `prev` for it, and must still count the 20 it reported in use
/// (at most what it claims to have held), not only its new grant.
#[test]
fn redis_counts_the_permits_in_use_of_a_member_that_rejoins() {
    let server = RedisServer::start();
    let budget = member(&server, "accounting-rejoin");
    let inner = Arc::new(Fixed::default());
    inner.waiting.store(100, Ordering::SeqCst);
    let fleet = budget.target(Arc::clone(&inner) as Arc<dyn LimitTarget>);
    fleet.set_limit(20);
    wait_for("a limit of 20", || budget.state().limit == 20);
    // 20 admitted, then the control loop cuts to 8: the 20 run on.
    inner.in_flight.store(20, Ordering::SeqCst);
    inner.waiting.store(0, Ordering::SeqCst);
    fleet.set_limit(8);
    // Known to Redis: it keeps min(in_use, prev) = 20 for the member.
    let low = lowest_held(&budget, 20, 3);
    assert!(low.is_none(), "before the flush: {low:?}");
    assert_eq!(server.command(&["FLUSHALL"]), "+OK");
    let low = lowest_held(&budget, 20, 4);
    assert!(
        low.is_none(),
        "after the flush, Redis counted less for the member than the 20 permits it has in use: \
         {low:?}"
    );
    budget.leave_blocking().unwrap();
}
