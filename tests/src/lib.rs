//! Helpers shared by the integration tests in `tests/tests/`, and the scenario harness
//! ([`sim`]) that the scenario test and the demo both run, and the fleet simulation
//! ([`fleet_sim`]).

pub mod fleet_sim;
pub mod sim;

/// The folder of the scenario files: `tests/data/scenarios`.
pub fn scenario_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/scenarios")
}
