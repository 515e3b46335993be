//! The ACE demo: ACE finds the right concurrency for a downstream it knows nothing about.
//!
//! Runs a scenario (by default: a downstream whose latency grows past 20 in flight while the CPU
//! stays idle, the case the seed's rules get wrong) on a simulated clock with an embedded,
//! simulated downstream; no external service. It prints one line per control cycle of the ACE
//! run, then a table of ACE against the seed's rules, the peers' rules (Vector, Netflix Gradient2
//! and Vegas, Envoy, brpc) and static limits, and writes a PNG chart.
//!
//! ```text
//! cargo run --release --example demo [-- --scenario FILE] [--out PNG] [--real] [--fast]
//! ```
//!
//! - `--scenario FILE`: another scenario (`tests/data/scenarios/*.toml`).
//! - `--out PNG`: where to write the chart (default `target/ace-demo.png`).
//! - `--real`: read this machine's CPU and memory (`/proc/stat`, `/proc/meminfo`) each cycle
//!   instead of the scenario's simulated ones; the downstream stays simulated.
//! - `--fast`: no pacing of the progress lines.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ace_core::Signals;
use ace_tests::sim::{self, Cycle, Outcome, Peer, Scenario, Variant};
use plotters::coord::Shift;
use plotters::prelude::*;

struct Args {
    scenario: PathBuf,
    out: PathBuf,
    real: bool,
    fast: bool,
}

const USAGE: &str =
    "usage: demo [--scenario FILE] [--out PNG] [--real] [--fast]\n  (default scenario: knee20_idle_cpu)";

fn parse_args() -> Result<Args, String> {
    // This package sits in `examples/demo`, two levels below the workspace.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let mut args = Args {
        scenario: ace_tests::scenario_dir().join("knee20_idle_cpu.toml"),
        out: target.join("ace-demo.png"),
        real: false,
        fast: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scenario" => {
                args.scenario = it.next().ok_or("--scenario needs a file")?.into();
            }
            "--out" => args.out = it.next().ok_or("--out needs a file")?.into(),
            "--real" => args.real = true,
            "--fast" => args.fast = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let scenario = sim::load(&args.scenario)?;
    let started = Instant::now();
    println!("ACE demo: {} — {}", scenario.name, scenario.description);
    println!(
        "simulated: {:.0} s, {} sharer(s), downstream {} ms base{}; machine signals: {}\n",
        scenario.duration_s,
        scenario.sharers,
        scenario.downstream.base_ms,
        scenario
            .downstream
            .knee
            .map_or(", flat".into(), |k| format!(", knee at {k}")),
        if args.real {
            "this machine (/proc)"
        } else {
            "simulated"
        }
    );

    // The ACE run, cycle by cycle, paced to a few seconds so the progress can be read.
    let cycles = (scenario.duration_s
        / sim::config_for(&scenario, &Variant::Ace, 0)
            .adjustment_interval
            .as_secs_f64()) as u32;
    let pace = if args.fast || args.real {
        Duration::ZERO
    } else {
        Duration::from_secs(3) / cycles.max(1)
    };
    println!(
        "{:>6}  {:>5}  {:>9}  {:>8}  {:>8}  decision",
        "t", "limit", "in flight", "p90", "baseline"
    );
    let mut real = args.real.then(RealSignals::new);
    let mut machine = real
        .as_mut()
        .map(|r| move |_t: f64| r.read(Duration::from_millis(100)));
    let on_cycle = |c: &Cycle, decision: &str| {
        println!(
            "{:>5.0}s  {:>5}  {:>9}  {:>6.1}ms  {:>6.1}ms  {decision}",
            c.t, c.limit, c.in_flight, c.p90_ms, c.baseline_ms
        );
        std::thread::sleep(pace);
    };
    let ace = sim::run_with(
        &scenario,
        &Variant::Ace,
        on_cycle,
        machine
            .as_mut()
            .map(|m| m as &mut dyn FnMut(f64) -> Signals),
    );

    // The others, at full speed, and the goodput ratios against the best static limit.
    let mut outcomes = vec![ace];
    let mut others = vec![Variant::Seed];
    others.extend(Peer::ALL.map(Variant::Peer));
    others.extend(scenario.static_limits.iter().map(|&n| Variant::Static(n)));
    for v in &others {
        outcomes.push(sim::run(&scenario, v, |_, _| {}));
    }
    sim::add_goodput_ratios(&mut outcomes);

    println!();
    print!("{}", sim::table(&scenario, &outcomes));
    println!(
        "\nlimit over time (total over sharers; each mark is 1/60 of the run, scaled to its max):"
    );
    for o in outcomes
        .iter()
        .filter(|o| !matches!(o.variant, Variant::Static(_)))
    {
        println!("{:<11} {}", o.variant.label(), sparkline(o, 60));
    }
    let misses = sim::check(&scenario, &outcomes);
    if args.real {
        println!(
            "\n--real: the ACE run read this machine's CPU and memory; the other rows and the \
             scenario's expected ranges use its simulated machine, so the ranges are not checked"
        );
    } else if misses.is_empty() {
        println!(
            "\nevery expected range of {} holds",
            args.scenario.display()
        );
    } else {
        println!("\nexpected ranges missed:\n  {}", misses.join("\n  "));
    }

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    chart(&scenario, &outcomes, &args.out)?;
    println!(
        "\nchart written to {} ({:.1} s wall)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The total limit over time as a one-line chart of block characters.
fn sparkline(o: &Outcome, width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let totals = totals(o, |c| c.limit as f64);
    let max = totals.iter().map(|p| p.1).fold(1.0, f64::max);
    let n = totals.len().max(1);
    let line: String = (0..width)
        .map(|i| {
            let v = totals[(i * n / width).min(n - 1)].1;
            BLOCKS[((v / max) * 7.0).round() as usize]
        })
        .collect();
    format!(
        "{line}  (max {max:.0}, final {:.0})",
        o.metrics["final_limit"]
    )
}

/// A per-cycle value summed over sharers: `(t, value)`.
fn totals(o: &Outcome, f: impl Fn(&Cycle) -> f64) -> Vec<(f64, f64)> {
    (0..o.cycles[0].len())
        .map(|i| {
            let t = o.cycles[0][i].t;
            (t, o.cycles.iter().filter_map(|s| s.get(i)).map(&f).sum())
        })
        .collect()
}

/// The p90 of a cycle, the worst over sharers (a cycle without samples is skipped).
fn latencies(o: &Outcome) -> Vec<(f64, f64)> {
    (0..o.cycles[0].len())
        .filter_map(|i| {
            let p90 = o
                .cycles
                .iter()
                .filter_map(|s| s.get(i))
                .map(|c| c.p90_ms)
                .fold(0.0, f64::max);
            (p90 > 0.0).then(|| (o.cycles[0][i].t, p90))
        })
        .collect()
}

fn color(v: &Variant, statics: &[usize]) -> RGBColor {
    match v {
        Variant::Ace => RGBColor(31, 119, 180),
        Variant::Seed => RGBColor(214, 39, 40),
        Variant::Peer(Peer::Vector) => RGBColor(148, 103, 189),
        Variant::Peer(Peer::Gradient2) => RGBColor(140, 86, 75),
        Variant::Peer(Peer::Vegas) => RGBColor(227, 119, 194),
        Variant::Peer(Peer::Envoy) => RGBColor(188, 189, 34),
        Variant::Peer(Peer::Brpc) => RGBColor(23, 190, 207),
        Variant::Static(n) => match statics.iter().position(|s| s == n) {
            Some(0) => RGBColor(150, 150, 150),
            Some(1) => RGBColor(44, 160, 44),
            _ => RGBColor(255, 127, 14),
        },
    }
}

fn name(v: &Variant) -> String {
    match v {
        Variant::Ace => "ACE".into(),
        Variant::Seed => "seed rules (no latency)".into(),
        Variant::Peer(p) => p.name().into(),
        Variant::Static(n) => format!("static {n}"),
    }
}

fn chart(s: &Scenario, outcomes: &[Outcome], out: &Path) -> Result<(), Box<dyn Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded font is invalid")?;
    plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| "the embedded font is invalid")?;
    let root = BitMapBackend::new(out, (1600, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(60);
    title.draw(&Text::new(
        format!("ACE demo — {}: {}", s.name, s.description),
        (20, 18),
        ("sans-serif", 24).into_font().style(FontStyle::Bold),
    ))?;
    let panels = body.split_evenly((2, 2));
    let statics = &s.static_limits;
    let sharers = s.sharers as f64;
    let limit_max = outcomes
        .iter()
        .flat_map(|o| totals(o, |c| c.limit as f64))
        .map(|p| p.1)
        .fold(1.0, f64::max);
    panel(
        &panels[0],
        "limit (total over sharers)",
        "limit",
        outcomes,
        statics,
        (0.0, limit_max * 1.1),
        false,
        |o| totals(o, |c| c.limit as f64),
    )?;
    panel(
        &panels[1],
        "in flight at each decision",
        "tasks",
        outcomes,
        statics,
        (0.0, limit_max * 1.1),
        false,
        |o| totals(o, |c| c.in_flight as f64),
    )?;
    let lat_max = outcomes
        .iter()
        .flat_map(latencies)
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let lat_min = outcomes
        .iter()
        .flat_map(latencies)
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(lat_max);
    panel(
        &panels[2],
        "p90 latency per cycle (log scale)",
        "ms",
        outcomes,
        statics,
        (lat_min * 0.7, lat_max * 1.5),
        true,
        latencies,
    )?;
    let good_max = outcomes
        .iter()
        .flat_map(|o| totals(o, |c| c.goodput))
        .map(|p| p.1)
        .fold(1.0, f64::max);
    panel(
        &panels[3],
        &format!(
            "goodput (successes/s{})",
            if sharers > 1.0 { ", total" } else { "" }
        ),
        "per s",
        outcomes,
        statics,
        (0.0, good_max * 1.1),
        false,
        |o| totals(o, |c| c.goodput),
    )?;
    root.present()?;
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call per panel, all different"
)]
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    outcomes: &[Outcome],
    statics: &[usize],
    (y_min, y_max): (f64, f64),
    log: bool,
    series: impl Fn(&Outcome) -> Vec<(f64, f64)>,
) -> Result<(), Box<dyn Error>> {
    let t_max = outcomes
        .iter()
        .flat_map(|o| o.cycles[0].last())
        .map(|c| c.t)
        .fold(1.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    // Draw ACE last, so it is on top.
    let order: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.variant != Variant::Ace)
        .chain(outcomes.iter().filter(|o| o.variant == Variant::Ace))
        .collect();
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("simulated time (s)")
                .y_desc(y_desc)
                .label_style(("sans-serif", 14))
                .draw()?;
            for o in &order {
                let c = color(&o.variant, statics);
                let width = match o.variant {
                    Variant::Ace => 3,
                    Variant::Seed | Variant::Peer(_) => 2,
                    Variant::Static(_) => 1,
                };
                chart
                    .draw_series(LineSeries::new(series(o), c.stroke_width(width)))?
                    .label(name(&o.variant))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log {
        draw!(builder.build_cartesian_2d(0f64..t_max, (y_min..y_max).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(0f64..t_max, y_min..y_max)?);
    }
    Ok(())
}

/// This machine's CPU and memory use, from `/proc` (Linux); absent elsewhere (fail-open).
struct RealSignals {
    last: Option<(u64, u64)>,
}

impl RealSignals {
    fn new() -> Self {
        Self {
            last: Self::cpu_times(),
        }
    }

    /// `(busy, total)` jiffies from the first line of `/proc/stat`.
    fn cpu_times() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // idle + iowait
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((total - idle, total))
    }

    fn memory_percent() -> Option<f64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<f64> {
            info.lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let total = field("MemTotal:")?;
        let available = field("MemAvailable:")?;
        Some(100.0 * (1.0 - available / total))
    }

    /// Waits `over` (so the CPU reading spans some real time), then reads both.
    fn read(&mut self, over: Duration) -> Signals {
        std::thread::sleep(over);
        let now = Self::cpu_times();
        let cpu = match (self.last, now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        self.last = now;
        Signals {
            cpu_percent: cpu,
            memory_percent: Self::memory_percent(),
            ..Signals::default()
        }
    }
}
