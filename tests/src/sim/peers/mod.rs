//! The peers' limit rules, re-implemented from their published sources with their published
//! defaults, so that the harness runs them beside ACE on the same simulated downstream.
//!
//! - [`Vector`]: Vector's adaptive request concurrency (`adaptive_concurrency/controller.rs`).
//! - [`Gradient2`]: Netflix concurrency-limits' `Gradient2Limit.java`.
//! - [`Vegas`]: Netflix concurrency-limits' `VegasLimit.java`.
//! - [`Envoy`]: Envoy's adaptive concurrency filter, gradient controller (`gradient_controller.cc`
//!   and its docs).
//! - [`Brpc`]: brpc's auto concurrency limiter (`policy/auto_concurrency_limiter.cpp`, and the
//!   formula of its docs).
//!
//! Each sees what its project's limiter sees: one sample per attempt (its round-trip time, and
//! whether it failed), at the time it ends. Each is capped at the scenario's `max_limit` (the cap
//! ACE runs with) and starts at its own default initial limit, unless the scenario sets where
//! each sharer starts (`initial_limits`).

mod brpc;
mod envoy;
mod gradient2;
mod vector;
mod vegas;

pub use brpc::Brpc;
pub use envoy::Envoy;
pub use gradient2::Gradient2;
pub use vector::Vector;
pub use vegas::Vegas;

use std::fmt;

/// Nanoseconds in a second: the harness's clock counts nanoseconds.
pub(crate) const NS: f64 = 1e9;

/// A peer's limit rule, driven by the harness's events.
pub trait Rule: fmt::Debug {
    /// The limit now.
    fn limit(&self) -> usize;

    /// A task was admitted at `now` (ns) with `in_flight` tasks holding a slot, this one included.
    fn admitted(&mut self, now: u64, in_flight: usize) {
        let _ = (now, in_flight);
    }

    /// One attempt ended at `now` (ns) after `rtt_s` seconds; `ok` is false when it was refused
    /// or timed out. `in_flight` is the number of tasks that held a slot when its task was
    /// admitted (what Netflix's limiters pass to `onSample`).
    fn attempt(&mut self, now: u64, rtt_s: f64, ok: bool, in_flight: usize);

    /// Time passed: the timers due by `now` (ns) fire. Called before each admission.
    fn advance(&mut self, now: u64) {
        let _ = now;
    }

    /// A task ended at `now` (ns): its slot is free again.
    fn task_done(&mut self, now: u64) {
        let _ = now;
    }
}

/// Which peer rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Vector's adaptive request concurrency.
    Vector,
    /// Netflix concurrency-limits' `Gradient2Limit`.
    Gradient2,
    /// Netflix concurrency-limits' `VegasLimit`.
    Vegas,
    /// Envoy's adaptive concurrency gradient controller.
    Envoy,
    /// brpc's auto concurrency limiter.
    Brpc,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Self; 5] = [
        Self::Vector,
        Self::Gradient2,
        Self::Vegas,
        Self::Envoy,
        Self::Brpc,
    ];

    /// The label in tables and in scenario files' `expect`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Gradient2 => "gradient2",
            Self::Vegas => "vegas",
            Self::Envoy => "envoy",
            Self::Brpc => "brpc",
        }
    }

    /// The project and rule, for prose.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vector => "Vector's adaptive concurrency",
            Self::Gradient2 => "Netflix Gradient2",
            Self::Vegas => "Netflix Vegas",
            Self::Envoy => "Envoy's gradient controller",
            Self::Brpc => "brpc's auto limiter",
        }
    }

    /// The rule, at its defaults, starting at `initial` when given, capped at `max`; `seed` feeds
    /// the rules that draw random jitter.
    pub fn rule(self, initial: Option<usize>, max: usize, seed: u64) -> Box<dyn Rule> {
        match self {
            Self::Vector => Box::new(Vector::new(initial.unwrap_or(1), max)),
            Self::Gradient2 => Box::new(Gradient2::new(initial.unwrap_or(20), max)),
            Self::Vegas => Box::new(Vegas::new(initial.unwrap_or(20), max, seed)),
            Self::Envoy => Box::new(Envoy::new(initial, max, seed)),
            Self::Brpc => Box::new(Brpc::new(initial.unwrap_or(40), max, seed)),
        }
    }
}
