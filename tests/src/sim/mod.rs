//! A discrete-event simulation of ACE in front of a downstream with a concurrency knee, on a
//! simulated clock, driving the real [`ace_core::Controller`] and [`ace_core::LatencyRecorder`].
//!
//! A [`Scenario`] (read from TOML) describes the downstream, the load, the machine signals over
//! time, the config, and the ranges the outcome must fall in. [`run_scenario`] runs it once per
//! variant (ACE, the seed's rules, each peer's rule from [`peers`], each static limit) and returns
//! the [`Outcome`] of each, with the per-cycle trace that the demo charts. Deterministic: every
//! random draw comes from one seeded generator per run.

pub mod peers;
mod report;
mod run;
mod scenario;

pub use peers::{Peer, Rule};
pub use report::{
    add_goodput_ratios, best_peer, check, goals, peer_wins, summary_header, summary_row,
    summary_row_short, table, Goal, PEER_GOALS,
};
pub use run::{
    config_for, run, run_scenario, run_with, Cycle, MachineSource, Outcome, Variant, REFERENCE,
    SETTLE_WINDOW,
};
pub use scenario::{
    load, ConfigOverrides, Downstream, Load, Machine, Overload, OverloadAction, Per, Queue, Retry,
    Scenario,
};
