//! [`SystemSignals`]: CPU % and memory % of the machine, or of the cgroup v2 quota the process
//! runs in, and this process's own CPU %.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use ace_core::{SignalError, SignalSource, Signals};

#[cfg(target_os = "linux")]
use self::linux::ProcBackend;

/// The shortest window a CPU percentage is computed over.
///
/// `/proc/stat` counts in 10 ms jiffies, so a shorter window reads too coarse a value; a faster
/// control loop reuses the last value until the window has passed, and never sleeps for it.
pub const MIN_CPU_WINDOW: Duration = Duration::from_millis(100);

/// Which CPU figure becomes [`Signals::cpu_percent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CpuBasis {
    /// The machine's CPU use, or, under a cgroup v2 `cpu.max` quota, the cgroup's use of that
    /// quota. The default: the "CPU %" of the Python package ace-concurrency.
    #[default]
    System,
    /// This process's own CPU use, as a percentage of the CPUs it may use (the cgroup quota, or
    /// the available parallelism).
    Process,
}

/// What the system reader saw at its last reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct SystemReading {
    /// CPU use in percent of the machine, or of the cgroup's `cpu.max` quota when there is one.
    pub cpu_percent: Option<f64>,
    /// Memory use in percent of the machine, or of the cgroup's `memory.max` when it is lower.
    pub memory_percent: Option<f64>,
    /// This process's CPU use, in percent of the CPUs it may use.
    pub process_cpu_percent: Option<f64>,
    /// True if `cpu_percent` is relative to a cgroup quota.
    pub cgroup_cpu: bool,
    /// True if `memory_percent` is relative to a cgroup limit.
    pub cgroup_memory: bool,
}

/// CPU % and memory % as a [`SignalSource`], relative to a cgroup v2 quota where there is one.
///
/// - **Linux** (the fast path): reads `/proc/stat`, `/proc/meminfo`, `/proc/self/stat` and, when
///   the process's cgroup v2 (or one of its ancestors) sets `cpu.max` or `memory.max`, that
///   cgroup's `cpu.stat`, `cpu.max`, `memory.current`, `memory.max` and `memory.stat`. Every file
///   is opened once and read with `pread`, so a cycle costs tens of microseconds.
///   Under a quota, CPU % is the cgroup's `usage_usec` delta over the quota; memory % is the
///   working set (`memory.current − inactive_file`, as Kubernetes counts it) over `memory.max`.
/// - **Elsewhere**, or when `/proc` cannot be read: [`sysinfo`], respecting its
///   [`MINIMUM_CPU_UPDATE_INTERVAL`](sysinfo::MINIMUM_CPU_UPDATE_INTERVAL) (a faster loop gets the
///   last value, not a stale refresh). [`SystemSignals::sysinfo`] picks it on purpose.
///
/// CPU % is a delta between two readings across cycles: nothing ever sleeps, and the first
/// reading after construction has only memory. Windows shorter than [`MIN_CPU_WINDOW`] reuse
/// the last value.
///
/// Fails open: a file that cannot be read makes its signal absent; `collect` fails only when
/// neither CPU nor memory can be read.
///
/// ```
/// use ace_std::signals::SystemSignals;
///
/// let mut system = SystemSignals::new();
/// let reading = system.read();
/// assert!(reading.memory_percent.is_some() || cfg!(not(unix)));
/// ```
pub struct SystemSignals {
    backend: Backend,
    basis: CpuBasis,
    last: SystemReading,
}

enum Backend {
    #[cfg(target_os = "linux")]
    Proc(Box<ProcBackend>),
    Sysinfo(Box<SysinfoBackend>),
}

impl fmt::Debug for SystemSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemSignals")
            .field("backend", &self.backend_name())
            .field("basis", &self.basis)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Default for SystemSignals {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemSignals {
    /// The fast `/proc` + cgroup reader on Linux, [`sysinfo`] elsewhere.
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        if let Some(proc) = ProcBackend::open() {
            return Self::from_backend(Backend::Proc(Box::new(proc)));
        }
        Self::sysinfo()
    }

    /// The [`sysinfo`] reader, on any platform (portable; slower, and on Linux blind to a
    /// cgroup's CPU quota).
    pub fn sysinfo() -> Self {
        Self::from_backend(Backend::Sysinfo(Box::new(SysinfoBackend::new())))
    }

    fn from_backend(backend: Backend) -> Self {
        Self {
            backend,
            basis: CpuBasis::System,
            last: SystemReading::default(),
        }
    }

    /// Which CPU figure is reported as [`Signals::cpu_percent`] (default [`CpuBasis::System`]).
    #[must_use]
    pub fn cpu_basis(mut self, basis: CpuBasis) -> Self {
        self.basis = basis;
        self
    }

    /// The shortest window a CPU percentage is computed over (default [`MIN_CPU_WINDOW`]).
    ///
    /// Below 100 ms `/proc/stat`'s 10 ms jiffies make the machine figure coarse; the cgroup
    /// figure (µs) stays exact. The sysinfo reader never goes below
    /// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`].
    #[must_use]
    pub fn min_cpu_window(mut self, window: Duration) -> Self {
        match &mut self.backend {
            #[cfg(target_os = "linux")]
            Backend::Proc(p) => p.window = window,
            Backend::Sysinfo(s) => s.window = window.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL),
        }
        self
    }

    /// `"procfs"` or `"sysinfo"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            #[cfg(target_os = "linux")]
            Backend::Proc(_) => "procfs",
            Backend::Sysinfo(_) => "sysinfo",
        }
    }

    /// Reads now (memory always; CPU once at least [`MIN_CPU_WINDOW`] has passed since the
    /// last CPU sample, else the last CPU value).
    pub fn read(&mut self) -> SystemReading {
        self.last = match &mut self.backend {
            #[cfg(target_os = "linux")]
            Backend::Proc(p) => p.read(Instant::now()),
            Backend::Sysinfo(s) => s.read(),
        };
        if let Some(p) = self.last.process_cpu_percent {
            metrics::gauge!("ace_process_cpu_percent").set(p);
        }
        self.last
    }

    /// The last reading.
    pub fn last_reading(&self) -> SystemReading {
        self.last
    }

    fn read_signals(&mut self) -> Result<Signals, SignalError> {
        let r = self.read();
        let cpu = match self.basis {
            CpuBasis::System => r.cpu_percent,
            CpuBasis::Process => r.process_cpu_percent,
        };
        if cpu.is_none() && r.memory_percent.is_none() && !self.warming_up() {
            return Err(SignalError::new(
                "system",
                "neither cpu nor memory use could be read",
            ));
        }
        Ok(Signals {
            cpu_percent: cpu,
            memory_percent: r.memory_percent,
            ..Signals::default()
        })
    }

    fn warming_up(&self) -> bool {
        match &self.backend {
            #[cfg(target_os = "linux")]
            Backend::Proc(p) => p.warming_up(),
            Backend::Sysinfo(s) => s.last_cpu.is_none(),
        }
    }
}

impl SignalSource for SystemSignals {
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SignalError>> + Send {
        std::future::ready(self.read_signals())
    }
}

/// `part / whole` in percent, clamped to 0–100 (counters read a few µs apart can overshoot).
fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0 && part.is_finite()).then(|| (part / whole * 100.0).clamp(0.0, 100.0))
}

#[allow(
    clippy::cast_precision_loss,
    reason = "byte, tick and µs counts stay far below 2^52 in any delta we divide"
)]
fn f(v: u64) -> f64 {
    v as f64
}

fn parallelism() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| f(n.get() as u64))
}

/// The portable reader.
struct SysinfoBackend {
    sys: sysinfo::System,
    pid: Option<sysinfo::Pid>,
    last_refresh: Instant,
    last_cpu: Option<f64>,
    last_process: Option<f64>,
    cpus: f64,
    window: Duration,
}

impl SysinfoBackend {
    fn new() -> Self {
        let mut sys = sysinfo::System::new();
        let pid = sysinfo::get_current_pid().ok();
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        Self::refresh_process(&mut sys, pid);
        Self {
            cpus: parallelism(),
            sys,
            pid,
            last_refresh: Instant::now(),
            last_cpu: None,
            last_process: None,
            // sysinfo's CPU figure only moves after MINIMUM_CPU_UPDATE_INTERVAL: refreshing
            // sooner returns a stale or zero value, so keep the last one until then.
            window: sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(MIN_CPU_WINDOW),
        }
    }

    fn refresh_process(sys: &mut sysinfo::System, pid: Option<sysinfo::Pid>) {
        if let Some(pid) = pid {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[pid]),
                false,
                sysinfo::ProcessRefreshKind::nothing().with_cpu(),
            );
        }
    }

    fn read(&mut self) -> SystemReading {
        if self.last_refresh.elapsed() >= self.window {
            self.sys.refresh_cpu_usage();
            Self::refresh_process(&mut self.sys, self.pid);
            self.last_refresh = Instant::now();
            let cpu = f64::from(self.sys.global_cpu_usage());
            self.last_cpu = cpu.is_finite().then(|| cpu.clamp(0.0, 100.0));
            self.last_process = self
                .pid
                .and_then(|pid| self.sys.process(pid))
                .and_then(|p| percent(f64::from(p.cpu_usage()) / 100.0, self.cpus));
        }
        self.sys.refresh_memory();
        let total = self.sys.total_memory();
        let host = percent(
            f(total.saturating_sub(self.sys.available_memory())),
            f(total),
        );
        let cgroup = self
            .sys
            .cgroup_limits()
            .filter(|l| l.total_memory > 0 && l.total_memory < total)
            .and_then(|l| {
                percent(
                    f(l.total_memory.saturating_sub(l.free_memory)),
                    f(l.total_memory),
                )
            });
        SystemReading {
            cpu_percent: self.last_cpu,
            memory_percent: cgroup.or(host),
            process_cpu_percent: self.last_process,
            cgroup_cpu: false,
            cgroup_memory: cgroup.is_some(),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine_without_sleeping() {
        let mut s = SystemSignals::new();
        let t = Instant::now();
        let r = s.read();
        assert!(t.elapsed() < Duration::from_millis(50));
        if cfg!(target_os = "linux") {
            assert_eq!(s.backend_name(), "procfs");
            assert!(r.memory_percent.is_some());
        }
    }

    #[test]
    fn sysinfo_reuses_its_cpu_value_inside_the_minimum_interval() {
        let mut s = SystemSignals::sysinfo();
        // Right after construction: no CPU value yet (and no stale one either).
        assert_eq!(s.read().cpu_percent, None);
        assert!(s.read_signals().is_ok(), "warming up is not a failure");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let first = s.read().cpu_percent;
        assert!(first.is_some());
        assert_eq!(s.read().cpu_percent, first);
    }

    #[test]
    fn percent_clamps_and_rejects_empty_wholes() {
        assert_eq!(percent(1.0, 0.0), None);
        assert_eq!(percent(3.0, 2.0), Some(100.0));
        assert_eq!(percent(1.0, 4.0), Some(25.0));
    }
}
