//! 100 instances behind one downstream (knee C = 100), simulated and deterministic: with the
//! fleet budget the total in flight stays ≤ C and goodput is ≥ 0.9 × the best static split;
//! without it, `100 × min_limit` = 200 in flight overloads the downstream.
#![allow(missing_docs, reason = "integration tests")]

use ace_tests::fleet_sim::{run, FleetScenario, FleetVariant};

#[test]
fn a_fleet_budget_keeps_a_hundred_instances_under_the_knee() {
    let s = FleetScenario::hundred_instances();
    let split = (s.capacity / s.instances).max(1);
    let fleet = run(&s, FleetVariant::Fleet);
    let alone = run(&s, FleetVariant::Alone);
    let best = run(&s, FleetVariant::Static(split));
    for (name, o) in [("fleet", fleet), ("alone", alone), ("static split", best)] {
        println!(
            "{name:>12}: goodput {:7.0}/s ({:.2} × static), in flight mean {:6.1} peak {:4}, \
             held peak {}",
            o.goodput,
            o.goodput / best.goodput,
            o.mean_in_flight,
            o.peak_in_flight,
            o.peak_held
        );
    }
    assert!(fleet.peak_in_flight <= s.capacity, "{fleet:?}");
    assert!(fleet.peak_held <= s.capacity, "{fleet:?}");
    assert!(fleet.goodput >= 0.9 * best.goodput, "{fleet:?} vs {best:?}");
    // Alone: at least min_limit each, twice the knee, and the goodput of an overloaded downstream.
    assert!(alone.mean_in_flight >= 1.9 * s.capacity as f64, "{alone:?}");
    assert!(alone.goodput <= 0.7 * best.goodput, "{alone:?} vs {best:?}");
    // Deterministic: the same run twice gives the same figures.
    assert_eq!(run(&s, FleetVariant::Fleet), fleet);
}
