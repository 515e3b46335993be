//! The pool's default signals: machine CPU from `/proc/stat` and memory from `/proc/meminfo`.
//!
//! A stopgap until `ace_std::signals` (sysinfo, cgroup v2) lands; on systems without `/proc`
//! every reading fails, and a failed reading counts as absent (fail-open).

use std::future::Future;

use ace_core::{SignalError, SignalSource, Signals};

/// CPU time counters from the first line of `/proc/stat`: (busy, total) in ticks.
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    // in user and nice, so only the first eight count.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Used memory in percent from `/proc/meminfo`: 100 × (1 − MemAvailable / MemTotal).
fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| 100.0 * (1.0 - available / total))
}

/// Reads CPU use since the previous reading and memory use now.
#[derive(Debug, Default)]
pub(crate) struct ProcSignals {
    previous: Option<(u64, u64)>,
}

impl ProcSignals {
    /// A reader whose first CPU reading covers the time since this call.
    pub(crate) fn new() -> Self {
        Self {
            previous: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_stat(&t)),
        }
    }

    fn read(&mut self) -> Result<Signals, SignalError> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map_err(|e| SignalError::new("proc-cpu", e.to_string()))?;
        let now = parse_stat(&stat)
            .ok_or_else(|| SignalError::new("proc-cpu", "unexpected /proc/stat format"))?;
        let cpu_percent = match self.previous.replace(now) {
            Some((busy0, total0)) if now.1 > total0 => {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "tick deltas between two readings are far below 2^52"
                )]
                let percent = 100.0 * now.0.saturating_sub(busy0) as f64 / (now.1 - total0) as f64;
                Some(percent)
            }
            _ => None,
        };
        let memory_percent = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t));
        Ok(Signals {
            cpu_percent,
            memory_percent,
            ..Signals::default()
        })
    }
}

impl SignalSource for ProcSignals {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        std::future::ready(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_parse_busy_and_total_ticks() {
        let stat = "cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_stat(stat), Some((160, 980)));
    }

    #[test]
    fn should_parse_used_memory_percent() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(75.0));
    }

    /// The real reading: spin every CPU that `/proc/stat` lists between two readings.
    #[test]
    #[cfg(target_os = "linux")]
    fn should_read_high_cpu_under_load_on_every_core() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};

        let cpus = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
            .clamp(1, 64);
        let mut source = ProcSignals::new();
        let stop = AtomicBool::new(false);
        let reading = std::thread::scope(|s| {
            for _ in 0..cpus {
                s.spawn(|| {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005));
                    }
                });
            }
            // The first reading covers the spin-up; the second covers load only.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(100) {
                std::hint::spin_loop();
            }
            source.read().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let reading = source.read().unwrap();
            stop.store(true, Ordering::Relaxed);
            reading
        });
        let cpu = reading.cpu_percent.expect("a CPU reading");
        assert!(cpu > 50.0, "{cpu}% with every core spinning");
        assert!(reading
            .memory_percent
            .is_some_and(|m| (0.0..=100.0).contains(&m)));
    }

    #[test]
    fn should_fail_on_garbage() {
        assert_eq!(parse_stat("nothing here"), None);
        assert_eq!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB"), None);
    }
}
