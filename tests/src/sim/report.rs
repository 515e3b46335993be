//! What the runs show: ratios against the best static limit and the best peer, the expected
//! ranges and goals, and the tables.

use std::fmt::Write as _;

use super::peers::Peer;
use super::run::{Outcome, Variant, REFERENCE};
use super::scenario::Scenario;

/// The best of the peers' outcomes: the first to finish a batch (then the lower mean latency);
/// else the highest goodput, goodputs within 1 % of it counting as equal, then the lower mean
/// latency.
pub fn best_peer(outcomes: &[Outcome]) -> Option<&Outcome> {
    let peers = || {
        outcomes
            .iter()
            .filter(|o| matches!(o.variant, Variant::Peer(_)) && o.metrics["goodput"] > 0.0)
    };
    let by_mean =
        |a: &&Outcome, b: &&Outcome| a.metrics["mean_ms"].total_cmp(&b.metrics["mean_ms"]);
    if peers().any(|o| o.metrics.contains_key("finish_s")) {
        return peers().min_by(|a, b| {
            a.metrics["finish_s"]
                .total_cmp(&b.metrics["finish_s"])
                .then_with(|| by_mean(a, b))
        });
    }
    let top = peers().map(|o| o.metrics["goodput"]).fold(0.0, f64::max);
    peers()
        .filter(|o| o.metrics["goodput"] >= 0.99 * top)
        .min_by(by_mean)
}

/// Adds to every outcome: `goodput_ratio` (its goodput over the best static limit's),
/// `finish_vs_static` (its finish time over the best static limit's), `time_ratio` and
/// `mean_ratio` (over Vector's, [`REFERENCE`]), and `time_vs_best_peer`, `goodput_vs_best_peer`,
/// `mean_vs_best_peer` (over [`best_peer`]'s).
pub fn add_goodput_ratios(outcomes: &mut [Outcome]) {
    let best_peer = best_peer(outcomes).map(|o| o.metrics.clone());
    for o in outcomes.iter_mut() {
        let Some(b) = &best_peer else { break };
        if let (Some(f), Some(bf)) = (o.metrics.get("finish_s"), b.get("finish_s")) {
            let ratio = f / bf;
            o.metrics.insert("time_vs_best_peer", ratio);
        }
        let goodput = o.metrics["goodput"] / b["goodput"].max(1e-9);
        o.metrics.insert("goodput_vs_best_peer", goodput);
        let mean = o.metrics["mean_ms"] / b["mean_ms"].max(1e-9);
        o.metrics.insert("mean_vs_best_peer", mean);
    }
    let best = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .map(|o| o.metrics["goodput"])
        .fold(0.0, f64::max);
    let reference = outcomes
        .iter()
        .find(|o| o.variant == REFERENCE)
        .map(|o| o.metrics.clone());
    let best_finish = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .filter_map(|o| o.metrics.get("finish_s").copied())
        .fold(f64::INFINITY, f64::min);
    for o in outcomes {
        let g = o.metrics["goodput"];
        o.metrics
            .insert("goodput_ratio", if best > 0.0 { g / best } else { 0.0 });
        if let Some(r) = &reference {
            if let (Some(f), Some(rf)) = (o.metrics.get("finish_s"), r.get("finish_s")) {
                let ratio = f / rf;
                o.metrics.insert("time_ratio", ratio);
            }
            let mean_ratio = o.metrics["mean_ms"] / r["mean_ms"].max(1e-9);
            o.metrics.insert("mean_ratio", mean_ratio);
        }
        if let Some(&f) = o.metrics.get("finish_s") {
            o.metrics.insert("finish_vs_static", f / best_finish);
        }
    }
}

/// The expected ranges that an outcome misses, as readable lines; unknown variant or metric
/// names are misses too (a typo must not pass silently).
pub fn check(s: &Scenario, outcomes: &[Outcome]) -> Vec<String> {
    let mut misses = Vec::new();
    for (variant, ranges) in &s.expect {
        let Some(o) = outcomes.iter().find(|o| &o.variant.label() == variant) else {
            misses.push(format!("{}: no variant `{variant}`", s.name));
            continue;
        };
        for (metric, [lo, hi]) in ranges {
            match o.metrics.get(metric.as_str()) {
                None => misses.push(format!("{}: {variant}: no metric `{metric}`", s.name)),
                Some(&v) if !(v >= *lo && v <= *hi) => misses.push(format!(
                    "{}: {variant}.{metric} = {v:.3}, expected [{lo}, {hi}]",
                    s.name
                )),
                Some(_) => {}
            }
        }
    }
    misses
}

/// A comparison table of the outcomes, one row per variant.
pub fn table(s: &Scenario, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}: {}", s.name, s.description);
    let _ = writeln!(
        out,
        "{:<13} {:>7} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "variant",
        "mean L",
        "min–max L",
        "final L",
        "goodput/s",
        "vs best",
        "p50 ms",
        "p99 ms",
        "p99 ×",
        "err %",
        "settle",
        "fair",
        "finish s",
        "mean ms",
        "time ×V",
        "mean ×V",
        "time ×P",
        "mean ×P"
    );
    for o in outcomes {
        let m = &o.metrics;
        let settle = m
            .get("settle_cycles")
            .map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "{:<13} {:>7.1} {:>9} {:>7.0} {:>9.1} {:>8.2} {:>8.1} {:>8.1} {:>6.2} {:>6.1} {:>7} {:>6.3} {:>8} {:>8.1} {:>7} {:>7} {:>7} {:>7}",
            o.variant.label(),
            m["mean_limit"],
            format!("{:.0}–{:.0}", m["min_limit"], m["max_limit"]),
            m["final_limit"],
            m["goodput"],
            m["goodput_ratio"],
            m["p50_ms"],
            m["p99_ms"],
            m["p99_ratio"],
            m["error_rate"] * 100.0,
            settle,
            m["fairness"],
            m.get("finish_s").map_or("-".into(), |v| format!("{v:.2}")),
            m["mean_ms"],
            m.get("time_ratio").map_or("-".into(), |v| format!("{v:.2}")),
            m.get("mean_ratio").map_or("-".into(), |v| format!("{v:.2}")),
            m.get("time_vs_best_peer")
                .map_or("-".into(), |v| format!("{v:.2}")),
            m.get("mean_vs_best_peer")
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    if let Some(b) = best_peer(outcomes) {
        let _ = writeln!(
            out,
            "(×P: against the best peer rule here, {})",
            b.variant.label()
        );
    }
    out
}

/// One goal: a `[min, max]` range for a variant's metric, and whether the run meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// The scenario's name.
    pub scenario: String,
    /// The variant's label.
    pub variant: String,
    /// The metric.
    pub metric: String,
    /// Its value in the run (NaN when the run has no such metric).
    pub value: f64,
    /// The range the goal asks for.
    pub range: [f64; 2],
}

impl Goal {
    /// Whether the value is in the range.
    pub fn met(&self) -> bool {
        self.value >= self.range[0] && self.value <= self.range[1]
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}.{} = {:.3}, goal [{}, {}]",
            self.scenario, self.variant, self.metric, self.value, self.range[0], self.range[1]
        )
    }
}

/// ACE against the best peer (issue 19): within 1.05 × its time on a batch (else at least
/// 0.95 × its goodput), with mean latency at most 1.10 × its.
pub const PEER_GOALS: [(&str, [f64; 2]); 3] = [
    ("time_vs_best_peer", [0.0, 1.05]),
    ("goodput_vs_best_peer", [0.95, f64::INFINITY]),
    ("mean_vs_best_peer", [0.0, 1.10]),
];

/// Every goal of a scenario: [`PEER_GOALS`] for ACE (those whose metric the run has), then the
/// file's own `goals`.
pub fn goals(s: &Scenario, outcomes: &[Outcome]) -> Vec<Goal> {
    let mut out = Vec::new();
    let ace = outcomes.iter().find(|o| o.variant == Variant::Ace);
    let batch = ace.is_some_and(|o| o.metrics.contains_key("finish_s"));
    for (metric, range) in PEER_GOALS {
        // A batch is judged on its time, anything else on its goodput.
        if (metric == "goodput_vs_best_peer" && batch) || (metric == "time_vs_best_peer" && !batch)
        {
            continue;
        }
        if let Some(&value) = ace.and_then(|o| o.metrics.get(metric)) {
            out.push(Goal {
                scenario: s.name.clone(),
                variant: "ace".into(),
                metric: metric.into(),
                value,
                range,
            });
        }
    }
    for (variant, ranges) in &s.goals {
        let o = outcomes.iter().find(|o| &o.variant.label() == variant);
        for (metric, &range) in ranges {
            out.push(Goal {
                scenario: s.name.clone(),
                variant: variant.clone(),
                metric: metric.clone(),
                value: o
                    .and_then(|o| o.metrics.get(metric.as_str()).copied())
                    .unwrap_or(f64::NAN),
                range,
            });
        }
    }
    out
}

/// Where the best peer rule beats ACE by more than [`PEER_GOALS`] allow, as readable lines: its
/// time (or goodput) and its mean latency against ACE's, then the file's `why_a_peer_wins`.
pub fn peer_wins(s: &Scenario, outcomes: &[Outcome]) -> Vec<String> {
    let (Some(ace), Some(best)) = (
        outcomes.iter().find(|o| o.variant == Variant::Ace),
        best_peer(outcomes),
    ) else {
        return Vec::new();
    };
    let (a, b) = (&ace.metrics, &best.metrics);
    let name = best.variant.label();
    let mut wins = Vec::new();
    for g in goals(s, outcomes)
        .into_iter()
        .filter(|g| g.variant == "ace" && !g.met())
    {
        let line = match g.metric.as_str() {
            "time_vs_best_peer" => format!(
                "{}: {name} finishes in {:.2} s, ACE in {:.2} s ({:.2} ×)",
                s.name, b["finish_s"], a["finish_s"], g.value
            ),
            "goodput_vs_best_peer" => format!(
                "{}: {name} gets {:.1}/s, ACE {:.1}/s ({:.2} ×)",
                s.name, b["goodput"], a["goodput"], g.value
            ),
            "mean_vs_best_peer" => format!(
                "{}: {name}'s mean latency {:.1} ms, ACE's {:.1} ms ({:.2} ×)",
                s.name, b["mean_ms"], a["mean_ms"], g.value
            ),
            _ => continue,
        };
        wins.push(match &s.why_a_peer_wins {
            Some(why) => format!("{line}. {why}"),
            None => line,
        });
    }
    wins
}

/// The columns of [`summary_row`]: ACE, each peer, then the best static limit.
pub fn summary_header() -> String {
    let mut head = String::from("| scenario | ACE |");
    let mut rule = String::from("|---|---|");
    for p in Peer::ALL {
        let _ = write!(head, " {} |", p.name());
        rule.push_str("---|");
    }
    head.push_str(" best static |");
    rule.push_str("---|");
    format!("{head}\n{rule}\n")
}

/// One markdown row: per rule, a batch's time, or else goodput per second, then mean and p99
/// latency in ms; the best time (goodput) of the adaptive rules in bold.
pub fn summary_row(s: &Scenario, outcomes: &[Outcome]) -> String {
    row(s, outcomes, true)
}

/// [`summary_row`] without the p99.
pub fn summary_row_short(s: &Scenario, outcomes: &[Outcome]) -> String {
    row(s, outcomes, false)
}

fn row(s: &Scenario, outcomes: &[Outcome], p99: bool) -> String {
    let batch = outcomes.iter().any(|o| o.metrics.contains_key("finish_s"));
    let key = |o: &Outcome| {
        if batch {
            -o.metrics["finish_s"]
        } else {
            o.metrics["goodput"]
        }
    };
    let cell = |o: &Outcome, best: bool| {
        let m = &o.metrics;
        let head = if batch {
            format!("{:.2} s", m["finish_s"])
        } else {
            format!("{:.0}/s", m["goodput"])
        };
        let head = if best { format!("**{head}**") } else { head };
        match (m["goodput"] > 0.0, p99) {
            (false, _) => format!("{head} · -"),
            (true, true) => format!("{head} · {:.0} · {:.0}", m["mean_ms"], m["p99_ms"]),
            (true, false) => format!("{head} · {:.0}", m["mean_ms"]),
        }
    };
    let adaptive: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Ace | Variant::Peer(_)))
        .collect();
    let top = adaptive
        .iter()
        .map(|o| key(o))
        .fold(f64::NEG_INFINITY, f64::max);
    // Within 1 % of the best counts as the best.
    let is_best = |o: &Outcome| {
        let k = key(o);
        if batch {
            k >= top * 1.01
        } else {
            k >= top * 0.99
        }
    };
    let mut row = format!("| {} |", s.name);
    for o in &adaptive {
        let _ = write!(row, " {} |", cell(o, is_best(o)));
    }
    let best_static = outcomes
        .iter()
        .filter(|o| matches!(o.variant, Variant::Static(_)))
        .max_by(|a, b| key(a).total_cmp(&key(b)));
    match best_static {
        Some(o) => {
            let _ = write!(row, " {} ({}) |", cell(o, false), o.variant.label());
        }
        None => row.push_str(" - |"),
    }
    row
}
