//! Runs every scenario in `tests/data/scenarios/` on the simulated clock, prints a table of ACE
//! against the seed's rules and static limits, and checks every expected range.
//!
//! `ACE_SCENARIO=name` runs only the files whose name contains `name`.

use ace_tests::sim;

#[test]
fn scenarios_meet_their_expected_ranges() {
    let filter = std::env::var("ACE_SCENARIO").unwrap_or_default();
    let mut files: Vec<_> = std::fs::read_dir(ace_tests::scenario_dir())
        .expect("tests/data/scenarios exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| p.to_string_lossy().contains(&filter))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario file matched");
    let mut misses = Vec::new();
    for path in &files {
        let scenario = sim::load(path).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        let outcomes = sim::run_scenario(&scenario);
        println!("{}", sim::table(&scenario, &outcomes));
        if std::env::var_os("ACE_TRACE").is_some() {
            for line in &outcomes[0].log {
                println!("    {line}");
            }
        }
        println!("   ({:.2} s wall)\n", started.elapsed().as_secs_f64());
        let missed = sim::check(&scenario, &outcomes);
        assert!(
            !scenario.expect.is_empty(),
            "{}: a scenario must expect something",
            scenario.name
        );
        misses.extend(missed);
    }
    assert!(misses.is_empty(), "missed ranges:\n{}", misses.join("\n"));
}
