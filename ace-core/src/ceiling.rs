//! A ceiling on the limit set from outside the controller: a fleet grant.
//!
//! Kept apart from the AIMD rules: the controller bounds what a rule intends by the ceiling
//! before it carries it out, in one pre-pass (`controller/apply.rs`).

#[cfg(doc)]
use crate::Reason;

/// A ceiling on the limit, set from outside the controller with
/// [`Controller::set_ceiling`](crate::Controller::set_ceiling): the share of a budget shared by
/// several instances (`ace_std::fleet`).
///
/// The controller never increases past `grant` ([`Reason::FleetCap`]). A grant below the limit
/// is enforced by the target (the fleet's limit wrapper, `min(limit, grant)`), not by a cut: the
/// limit holds, so a dip in the grant (another member joining, a grant of 0 while a newcomer
/// waits for the others to return part of the budget) costs the AIMD nothing, and the limit in
/// force follows the grant back up at once. A stress cut starts from the limit in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ceiling {
    /// The most this instance may use.
    pub grant: usize,
    /// How many instances share the budget (for logs).
    pub members: usize,
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use alloc::string::ToString;

    use crate::{Action, AimdConfig, Ceiling, Controller, Reason, Signals, Usage};

    const SEC: Duration = Duration::from_secs(1);

    fn controller(initial: usize) -> Controller {
        Controller::new(AimdConfig {
            min_limit: 2,
            max_limit: 100,
            initial_limit: initial,
            cooldown: Duration::ZERO,
            slow_start: false,
            ..AimdConfig::default()
        })
        .unwrap()
    }

    fn healthy() -> Signals {
        Signals {
            cpu_percent: Some(60.0),
            memory_percent: Some(60.0),
            ..Signals::default()
        }
    }

    fn busy(limit: usize) -> Usage {
        Usage {
            limit,
            in_flight: limit,
            waiting: 3,
        }
    }

    fn grant(grant: usize) -> Option<Ceiling> {
        Some(Ceiling { grant, members: 4 })
    }

    #[test]
    fn should_not_increase_past_the_ceiling() {
        let mut c = controller(10);
        c.set_ceiling(grant(11));
        let d = c.decide(SEC, &healthy(), busy(10));
        assert_eq!((d.action, d.new_limit), (Action::Increase, 11));
        assert_eq!(
            d.reason,
            Reason::FleetCap {
                grant: 11,
                members: 4
            }
        );
        let d = c.decide(2 * SEC, &healthy(), busy(11));
        assert_eq!((d.action, d.new_limit), (Action::Hold, 11));
        assert_eq!(
            d.reason.to_string(),
            "fleet cap: this instance's grant is 11 of a budget shared by 4"
        );
    }

    #[test]
    fn should_hold_over_a_shrunken_grant_and_cut_from_it_under_stress() {
        let mut c = controller(30);
        c.set_ceiling(grant(12));
        let idle = Usage {
            limit: 12,
            in_flight: 1,
            waiting: 0,
        };
        // The target enforces 12; the limit holds at 30 and does not grow.
        let d = c.decide(SEC, &healthy(), idle);
        assert_eq!((d.action, d.new_limit), (Action::Hold, 30));
        let d = c.decide(2 * SEC, &healthy(), busy(12));
        assert_eq!((d.action, d.new_limit), (Action::Hold, 30));
        assert!(matches!(d.reason, Reason::FleetCap { grant: 12, .. }));
        // A fleet dip is not stress: it sets no slow-start ceiling.
        assert_eq!(c.slow_start_ceiling(), None);
        // Stress cuts from the 12 in force, not from 30 (which would change nothing).
        let hot = Signals {
            cpu_percent: Some(99.0),
            memory_percent: Some(60.0),
            ..Signals::default()
        };
        let d = c.decide(3 * SEC, &hot, busy(12));
        assert_eq!(d.action, Action::Decrease);
        assert!(d.new_limit < 12, "{d:?}");
    }

    #[test]
    fn should_hold_the_limit_while_the_grant_is_zero() {
        // A grant of 0 is a wait at join: the limit neither collapses nor grows.
        let mut c = controller(5);
        c.set_ceiling(grant(0));
        let waiting = Usage {
            limit: 0,
            in_flight: 0,
            waiting: 8,
        };
        for i in 1..6 {
            let d = c.decide(i * SEC, &healthy(), waiting);
            assert_eq!((d.action, d.new_limit), (Action::Hold, 5), "{d:?}");
        }
    }

    #[test]
    fn should_leave_a_decision_under_the_ceiling_alone() {
        let mut with = controller(10);
        with.set_ceiling(grant(50));
        let mut without = controller(10);
        for i in 1..5 {
            let a = with.decide(i * SEC, &healthy(), busy(with.limit()));
            let b = without.decide(i * SEC, &healthy(), busy(without.limit()));
            assert_eq!(a, b);
        }
        with.set_ceiling(None);
        assert_eq!(with.ceiling(), None);
    }
}
