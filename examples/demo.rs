//! The ACE demo (placeholder until the scenario harness lands): drives the AIMD controller
//! through a scripted day of signals and prints each decision.

use std::time::Duration;

use ace_core::{AimdConfig, Controller, Signals, Usage};

fn main() -> Result<(), ace_core::ConfigError> {
    let config = AimdConfig {
        min_limit: 5,
        max_limit: 50,
        initial_limit: 10,
        cooldown: Duration::from_secs(2),
        ..AimdConfig::default()
    };
    let mut controller = Controller::new(config)?;
    println!("{:>5}  {:>6}  {:>6}  decision", "t(s)", "cpu%", "limit");
    for tick in 0..30u64 {
        let cpu = match tick {
            0..=9 => 25.0,
            10..=14 => 92.0,
            _ => 55.0,
        };
        let signals = Signals {
            cpu_percent: Some(cpu),
            memory_percent: Some(45.0),
            ..Signals::default()
        };
        let limit = controller.limit();
        let usage = Usage {
            limit,
            in_flight: limit,
            waiting: 10,
        };
        let d = controller.decide(Duration::from_secs(tick * 2), &signals, usage);
        println!("{:>5}  {:>6.1}  {:>6}  {d}", tick * 2, cpu, d.new_limit);
    }
    Ok(())
}
