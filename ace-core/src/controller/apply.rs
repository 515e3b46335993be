//! The one place that moves the limit: [`Controller::apply`] bounds a rule's [`Intent`] by the
//! fleet ceiling, defers a machine-cycle change in its cooldown, carries the intent out and
//! builds the [`Decision`].

use core::time::Duration;

use super::probe::Probing;
use super::rules::{Intent, Path};
use super::{Action, Controller, Decision, Reason, Stress, RECOVERY};
use crate::{Signals, Usage};

impl Controller {
    /// Changes the state as `intent` says, and builds the decision.
    pub(super) fn apply(
        &mut self,
        now: Duration,
        intent: Intent,
        signals: &Signals,
        usage: Usage,
    ) -> Decision {
        let previous = self.limit;
        let intent = self.bound(intent);
        let machine = match intent {
            Intent::Cut {
                path: Path::Machine,
                ..
            } => Some(Action::Decrease),
            Intent::Grow {
                path: Path::Machine,
                ..
            } => Some(Action::Increase),
            _ => None,
        };
        if let Some(wanted) = machine {
            if let Some(remaining) = self.machine_cooldown(now, wanted == Action::Decrease) {
                let reason = Reason::Cooldown { wanted, remaining };
                return self.decision(now, Action::Hold, reason, previous, signals, usage);
            }
        }
        let (action, new_limit, reason) = self.carry_out(now, intent);
        let action = if new_limit == previous {
            Action::Hold
        } else {
            self.limit = new_limit;
            self.last_change = Some(now);
            self.epochs_since_change = 0;
            if machine.is_some() {
                self.machine_change = Some((now, action == Action::Increase));
            }
            action
        };
        self.decision(now, action, reason, previous, signals, usage)
    }

    /// The fleet ceiling, a pre-pass on the rule's intent: never grow or restore past the
    /// grant. A grant under the limit is enforced by the target (the fleet's limit wrapper),
    /// not by a cut: the limit holds, so a dip (a member joining; a grant of 0 at join, a wait)
    /// costs the AIMD nothing. A stress cut starts from the limit in force, or it would change
    /// nothing.
    fn bound(&self, intent: Intent) -> Intent {
        let Some(c) = self.ceiling else {
            return intent;
        };
        let cap = c
            .grant
            .clamp(self.config.min_limit, self.config.max_limit)
            .max(self.limit);
        let reason = Reason::FleetCap {
            grant: c.grant,
            members: c.members,
        };
        match intent {
            Intent::Cut { to, stress, path } if c.grant > 0 => {
                let in_force = self.limit.min(c.grant.max(self.config.min_limit));
                let to = if to < in_force {
                    to
                } else {
                    self.cut(in_force)
                };
                Intent::Cut { to, stress, path }
            }
            Intent::Grow { to, path, .. } if to > cap => {
                if cap > self.limit {
                    Intent::Grow {
                        to: cap,
                        reason,
                        path,
                    }
                } else {
                    Intent::Hold(reason)
                }
            }
            Intent::EndProbe {
                baseline, restore, ..
            } if restore > cap => Intent::EndProbe {
                baseline,
                restore: cap,
                reason,
            },
            other => other,
        }
    }

    /// Carries out `intent` on the state other than the limit; returns what the decision says.
    fn carry_out(&mut self, now: Duration, intent: Intent) -> (Action, usize, Reason) {
        let limit = self.limit;
        match intent {
            Intent::Hold(reason) => (Action::Hold, limit, reason),
            Intent::Cut { to, stress, path } => {
                self.on_cut(to, path);
                if let Stress::Overdue { tasks, .. } = stress {
                    // Cut once for these: a cut again needs more overdue than now.
                    self.admissions.at_cut = tasks;
                }
                (Action::Decrease, to, Reason::Stressed(stress))
            }
            Intent::Grow { to, reason, .. } => {
                self.cutting = false;
                self.doubled = matches!(reason, Reason::SlowStart { .. });
                (Action::Increase, to, reason)
            }
            Intent::EndSlowStart(reason) => {
                self.ssthresh = self.ssthresh.min(limit);
                (Action::Hold, limit, reason)
            }
            Intent::StartProbe => {
                self.probing = Some(Probing {
                    restore: limit,
                    started: now,
                    epochs: 0,
                    best: None,
                });
                let to = self.config.min_limit;
                (Action::Decrease, to, Reason::Probe { limit })
            }
            Intent::EndProbe {
                baseline,
                restore,
                reason,
            } => {
                self.probing = None;
                if let Some(b) = baseline {
                    self.baseline.reset(now, b);
                }
                self.next_probe = Some(now + self.rng_interval());
                (Action::Increase, restore, reason)
            }
            Intent::Rebase { baseline, floor } => {
                self.baseline.reset(now, baseline);
                self.floor.reset(now, floor);
                let reason = Reason::ProbeDone {
                    restored: limit,
                    baseline: Some(baseline),
                };
                (Action::Hold, limit, reason)
            }
            Intent::AbandonProbe(stress) => {
                // Stress during a probe: give the probe up, stay low, let slow start climb back.
                if let Some(p) = self.probing.take() {
                    if self.config.slow_start {
                        self.ssthresh = self.ssthresh.max(self.cut(p.restore));
                    }
                    self.cutting = true;
                    self.next_probe = Some(now + self.rng_interval());
                }
                (Action::Hold, limit, Reason::AtMinLimit(stress))
            }
        }
    }

    /// A cut's effect on slow start. The first cut of a run remembers where the stress struck
    /// (W_max) and sets the ceiling that slow start climbs back to: RECOVERY × W_max (fast
    /// recovery). A latency epoch's cut right after a doubling ends slow start at the level cut
    /// to, as TCP does: the doubling overshot, so W_max says little.
    fn on_cut(&mut self, to: usize, path: Path) {
        if to <= self.cut(self.limit) {
            self.knee_known = true;
        }
        if !self.cutting && self.config.slow_start {
            self.ssthresh = if path == Path::Latency && self.doubled {
                to
            } else {
                to.max(self.cut_by(self.limit, RECOVERY))
            };
        }
        self.cutting = true;
    }

    fn decision(
        &self,
        now: Duration,
        action: Action,
        reason: Reason,
        previous: usize,
        signals: &Signals,
        usage: Usage,
    ) -> Decision {
        Decision {
            at: now,
            action,
            previous_limit: previous,
            new_limit: self.limit,
            reason,
            signals: *signals,
            usage,
        }
    }

    /// How long the machine cycle must still wait before changing the limit, if it must.
    /// A cut right after an increase of the machine cycle is not deferred (the increase caused
    /// it; see the type's docs).
    fn machine_cooldown(&self, now: Duration, cut: bool) -> Option<Duration> {
        let (at, was_increase) = self.machine_change?;
        let since = now.saturating_sub(at);
        (since < self.config.cooldown && !(cut && was_increase))
            .then(|| self.config.cooldown - since)
    }
}
