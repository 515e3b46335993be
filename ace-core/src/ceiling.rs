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
/// The controller never increases past `grant`, and cuts to it when the grant shrinks below the
/// limit, with [`Reason::FleetCap`]. Its limit stays within `[min_limit, max_limit]`: a grant
/// under `min_limit` is enforced by the target (the fleet's limit wrapper), not the controller.
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
    fn should_cut_to_a_shrunken_grant_even_when_the_rules_hold() {
        let mut c = controller(30);
        c.set_ceiling(grant(12));
        let idle = Usage {
            limit: 30,
            in_flight: 1,
            waiting: 0,
        };
        let d = c.decide(SEC, &healthy(), idle);
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 12));
        assert!(matches!(d.reason, Reason::FleetCap { grant: 12, .. }));
        // A fleet cut is not stress: it sets no slow-start ceiling.
        assert_eq!(c.slow_start_ceiling(), None);
    }

    #[test]
    fn should_keep_min_limit_when_the_grant_is_below_it() {
        let mut c = controller(5);
        c.set_ceiling(grant(0));
        let d = c.decide(SEC, &healthy(), busy(5));
        assert_eq!((d.action, d.new_limit), (Action::Decrease, 2));
        assert!(matches!(d.reason, Reason::FleetCap { grant: 0, .. }));
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
