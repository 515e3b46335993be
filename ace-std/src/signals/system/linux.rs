//! The `/proc` + cgroup v2 reader: files opened once, read with `pread`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{f, parallelism, percent, SystemReading, MIN_CPU_WINDOW};
use crate::signals::parse::{self, CpuTimes, Limit};

/// `/proc` counts CPU time in USER_HZ ticks, which the kernel ABI fixes at 100 per second on
/// every architecture Rust targets (sysconf(_SC_CLK_TCK) returns it).
const USER_HZ: f64 = 100.0;

pub(crate) struct ProcBackend {
    stat: File,
    meminfo: Option<File>,
    self_stat: Option<File>,
    cpu_cgroup: Option<CpuCgroup>,
    mem_cgroup: Option<MemCgroup>,
    buf: Vec<u8>,
    base: Option<Baseline>,
    last_cpu: Option<f64>,
    last_cgroup_cpu: bool,
    last_process: Option<f64>,
    parallelism: f64,
    pub(super) window: Duration,
}

struct CpuCgroup {
    stat: File,
    max: File,
}

struct MemCgroup {
    current: File,
    max: File,
    stat: Option<File>,
}

#[derive(Clone, Copy)]
struct Baseline {
    at: Instant,
    host: Option<CpuTimes>,
    cgroup_usec: Option<u64>,
    process_ticks: Option<u64>,
}

/// Reads the file from offset 0 into `buf`, up to `max` bytes, in one `pread`, and returns
/// the text. One call is enough: procfs and cgroupfs render the file at offset 0 and return
/// as much as fits, and a second call would render it again.
fn pread<'b>(file: &File, buf: &'b mut Vec<u8>, max: usize) -> Option<&'b str> {
    buf.resize(max, 0);
    let len = loop {
        match file.read_at(buf, 0) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    let bytes = &buf[..len];
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        // Cut mid-character at `max`: keep the whole characters.
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
    }
}

// Read sizes: the parsers need only the head of /proc/stat (the `cpu` line) and of
// /proc/meminfo (MemTotal and MemAvailable are lines 1 and 3); memory.stat is ~1.5 KiB.
const STAT_HEAD: usize = 256;
const MEMINFO_HEAD: usize = 256;
const SMALL: usize = 128;
const SELF_STAT: usize = 1024;
const MEMORY_STAT: usize = 4096;

fn read_with<T>(
    file: Option<&File>,
    buf: &mut Vec<u8>,
    max: usize,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    pread(file?, buf, max).and_then(parse)
}

impl ProcBackend {
    pub(crate) fn open() -> Option<Self> {
        Self::open_at(Path::new("/proc"))
    }

    fn open_at(proc: &Path) -> Option<Self> {
        let stat = File::open(proc.join("stat")).ok()?;
        let (cpu_cgroup, mem_cgroup) = find_cgroups(proc);
        let mut this = Self {
            stat,
            meminfo: File::open(proc.join("meminfo")).ok(),
            self_stat: File::open(proc.join("self/stat")).ok(),
            cpu_cgroup,
            mem_cgroup,
            buf: Vec::with_capacity(MEMORY_STAT),
            base: None,
            last_cpu: None,
            last_cgroup_cpu: false,
            last_process: None,
            parallelism: parallelism(),
            window: MIN_CPU_WINDOW,
        };
        this.base = Some(this.sample_cpu(Instant::now()));
        Some(this)
    }

    pub(crate) fn warming_up(&self) -> bool {
        self.last_cpu.is_none() && self.last_process.is_none()
    }

    fn quota(&mut self) -> Option<f64> {
        let cg = self.cpu_cgroup.as_ref()?;
        match read_with(Some(&cg.max), &mut self.buf, SMALL, parse::cpu_max)? {
            Limit::Max(cores) => Some(cores),
            Limit::Unlimited => None,
        }
    }

    fn sample_cpu(&mut self, at: Instant) -> Baseline {
        let host = read_with(
            Some(&self.stat),
            &mut self.buf,
            STAT_HEAD,
            parse::proc_stat_cpu,
        );
        let cgroup_usec = self.cpu_cgroup.as_ref().and_then(|cg| {
            read_with(Some(&cg.stat), &mut self.buf, SMALL * 2, |t| {
                parse::keyed_u64(t, "usage_usec")
            })
        });
        let process_ticks = read_with(
            self.self_stat.as_ref(),
            &mut self.buf,
            SELF_STAT,
            parse::self_stat_cpu_ticks,
        );
        Baseline {
            at,
            host,
            cgroup_usec,
            process_ticks,
        }
    }

    fn read_cpu(&mut self, now: Instant) {
        let Some(base) = self.base else {
            self.base = Some(self.sample_cpu(now));
            return;
        };
        let wall = now.saturating_duration_since(base.at);
        if wall < self.window || wall.is_zero() {
            return;
        }
        let cur = self.sample_cpu(now);
        let wall_us = wall.as_secs_f64() * 1e6;
        let quota = self.quota();
        let host = match (base.host, cur.host) {
            (Some(a), Some(b)) if b.total > a.total => {
                percent(f(b.busy.saturating_sub(a.busy)), f(b.total - a.total))
            }
            _ => None,
        };
        let cgroup = match (quota, base.cgroup_usec, cur.cgroup_usec) {
            (Some(cores), Some(a), Some(b)) => percent(f(b.saturating_sub(a)), wall_us * cores),
            _ => None,
        };
        self.last_cgroup_cpu = cgroup.is_some();
        self.last_cpu = cgroup.or(host);
        let cores = quota.unwrap_or(self.parallelism);
        self.last_process = match (base.process_ticks, cur.process_ticks) {
            (Some(a), Some(b)) => percent(f(b.saturating_sub(a)) / USER_HZ * 1e6, wall_us * cores),
            _ => None,
        };
        self.base = Some(cur);
    }

    fn read_memory(&mut self) -> (Option<f64>, bool) {
        let host = read_with(
            self.meminfo.as_ref(),
            &mut self.buf,
            MEMINFO_HEAD,
            parse::meminfo,
        );
        let cgroup = self.mem_cgroup.as_ref().and_then(|cg| {
            let max = match read_with(Some(&cg.max), &mut self.buf, SMALL, parse::memory_max)? {
                Limit::Max(m) => m,
                Limit::Unlimited => return None,
            };
            // A limit above the machine's memory does not bind: the machine's figure does.
            if host.is_some_and(|h| max >= h.total) {
                return None;
            }
            let current = read_with(Some(&cg.current), &mut self.buf, SMALL, parse::single_u64)?;
            let inactive = read_with(cg.stat.as_ref(), &mut self.buf, MEMORY_STAT, |t| {
                parse::keyed_u64(t, "inactive_file")
            })
            .unwrap_or(0);
            percent(f(current.saturating_sub(inactive)), f(max))
        });
        match cgroup {
            Some(p) => (Some(p), true),
            None => (
                host.and_then(|h| percent(f(h.total.saturating_sub(h.available)), f(h.total))),
                false,
            ),
        }
    }

    pub(crate) fn read(&mut self, now: Instant) -> SystemReading {
        self.read_cpu(now);
        let (memory_percent, cgroup_memory) = self.read_memory();
        SystemReading {
            cpu_percent: self.last_cpu,
            memory_percent,
            process_cpu_percent: self.last_process,
            cgroup_cpu: self.last_cgroup_cpu,
            cgroup_memory,
        }
    }
}

/// The cgroups whose `cpu.max` and `memory.max` bind this process: its own cgroup v2 or the
/// ancestor with the tightest limit. `None` where there is no cgroup v2 or no limit.
fn find_cgroups(proc: &Path) -> (Option<CpuCgroup>, Option<MemCgroup>) {
    let Some(dirs) = cgroup_chain(proc) else {
        return (None, None);
    };
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let cpu_dir = dirs
        .iter()
        .filter_map(|d| match parse::cpu_max(&read(d.join("cpu.max"))?)? {
            Limit::Max(cores) => Some((cores, d)),
            Limit::Unlimited => None,
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d);
    let mem_dir = dirs
        .iter()
        .filter_map(|d| match parse::memory_max(&read(d.join("memory.max"))?)? {
            Limit::Max(bytes) => Some((bytes, d)),
            Limit::Unlimited => None,
        })
        .min_by_key(|&(bytes, _)| bytes)
        .map(|(_, d)| d);
    let cpu = cpu_dir.and_then(|d| {
        Some(CpuCgroup {
            stat: File::open(d.join("cpu.stat")).ok()?,
            max: File::open(d.join("cpu.max")).ok()?,
        })
    });
    let mem = mem_dir.and_then(|d| {
        Some(MemCgroup {
            current: File::open(d.join("memory.current")).ok()?,
            max: File::open(d.join("memory.max")).ok()?,
            stat: File::open(d.join("memory.stat")).ok(),
        })
    });
    (cpu, mem)
}

/// The process's cgroup v2 directory and its ancestors up to the cgroup2 mount.
fn cgroup_chain(proc: &Path) -> Option<Vec<PathBuf>> {
    let cgroup = std::fs::read_to_string(proc.join("self/cgroup")).ok()?;
    let path = parse::cgroup_v2_path(&cgroup)?;
    let mountinfo = std::fs::read_to_string(proc.join("self/mountinfo")).ok();
    let mount = mountinfo
        .as_deref()
        .and_then(parse::cgroup2_mount)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    let mut dir = parse::cgroup_dir(&mount, path);
    let mut chain = vec![dir.clone()];
    while dir != mount && dir.pop() && dir.starts_with(&mount) {
        chain.push(dir.clone());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ace-std-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake /proc and cgroup2 tree: the process is in /app, whose parent /sys sets the
    /// limits.
    fn fake_tree(root: &Path, cpu_max: &str, memory_max: &str) -> PathBuf {
        let proc = root.join("proc");
        let cg = root.join("cg");
        write(&proc, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
        write(
            &proc,
            "meminfo",
            "MemTotal: 1000000 kB\nMemFree: 1 kB\nMemAvailable: 750000 kB\n",
        );
        write(
            &proc,
            "self/stat",
            "1 (t) S 1 1 1 0 -1 0 0 0 0 0 10 10 0 0\n",
        );
        write(&proc, "self/cgroup", "0::/sys/app\n");
        write(
            &proc,
            "self/mountinfo",
            &format!("30 25 0:26 / {} rw - cgroup2 cgroup2 rw\n", cg.display()),
        );
        write(&cg, "sys/cpu.max", cpu_max);
        write(&cg, "sys/memory.max", memory_max);
        write(&cg, "sys/cpu.stat", "usage_usec 1000000\nuser_usec 5\n");
        write(&cg, "sys/memory.current", "300000000\n");
        write(&cg, "sys/memory.stat", "anon 1\ninactive_file 100000000\n");
        write(&cg, "sys/app/cpu.max", "max 100000\n");
        write(&cg, "sys/app/memory.max", "max\n");
        proc
    }

    #[test]
    fn reads_the_host_when_there_is_no_cgroup() {
        let root = tmp("host");
        let proc = root.join("proc");
        write(&proc, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
        write(
            &proc,
            "meminfo",
            "MemTotal: 1000 kB\nMemAvailable: 250 kB\n",
        );
        let mut b = ProcBackend::open_at(&proc).unwrap();
        assert!(b.cpu_cgroup.is_none() && b.mem_cgroup.is_none());
        let t0 = b.base.unwrap().at;
        // Too soon: no CPU figure yet, memory at once.
        let r = b.read(t0 + Duration::from_millis(10));
        assert_eq!(r.cpu_percent, None);
        assert_eq!(r.memory_percent, Some(75.0));
        // 100 busy of 200 jiffies since the baseline.
        write(&proc, "stat", "cpu  150 0 150 900 0 0 0 0 0 0\n");
        let r = b.read(t0 + Duration::from_secs(2));
        assert_eq!(r.cpu_percent, Some(50.0));
        assert!(!r.cgroup_cpu && !r.cgroup_memory);
        // The self/stat file is missing: no process figure, nothing else lost.
        assert_eq!(r.process_cpu_percent, None);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn reads_cpu_and_memory_relative_to_the_binding_cgroup() {
        let root = tmp("cgroup");
        let proc = fake_tree(&root, "50000 100000\n", "400000000\n");
        let cg = root.join("cg");
        let mut b = ProcBackend::open_at(&proc).unwrap();
        assert!(b.cpu_cgroup.is_some() && b.mem_cgroup.is_some());
        let t0 = b.base.unwrap().at;
        // 0.5 CPU quota for 2 s = 1 s of CPU; 0.25 s used = 25 %.
        write(&cg, "sys/cpu.stat", "usage_usec 1250000\n");
        // 50 ticks = 0.5 s of the 1 s allowed.
        write(
            &proc,
            "self/stat",
            "1 (t) S 1 1 1 0 -1 0 0 0 0 0 40 30 0 0\n",
        );
        let r = b.read(t0 + Duration::from_secs(2));
        assert!(r.cgroup_cpu && r.cgroup_memory);
        assert!((r.cpu_percent.unwrap() - 25.0).abs() < 1e-9);
        assert!((r.process_cpu_percent.unwrap() - 50.0).abs() < 1e-9);
        // (300 MB − 100 MB inactive file) of 400 MB.
        assert_eq!(r.memory_percent, Some(50.0));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unlimited_cgroup_falls_back_to_the_host() {
        let root = tmp("unlimited");
        let proc = fake_tree(&root, "max 100000\n", "max\n");
        let b = ProcBackend::open_at(&proc).unwrap();
        assert!(b.cpu_cgroup.is_none() && b.mem_cgroup.is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_memory_limit_above_the_machine_does_not_bind() {
        let root = tmp("biglimit");
        let proc = fake_tree(&root, "max\n", "99999999999999\n");
        let mut b = ProcBackend::open_at(&proc).unwrap();
        let r = b.read(Instant::now());
        assert_eq!(r.memory_percent, Some(25.0));
        assert!(!r.cgroup_memory);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_proc_stat_is_no_backend() {
        let root = tmp("empty");
        assert!(ProcBackend::open_at(&root).is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_file_that_vanishes_makes_its_signal_absent() {
        let root = tmp("vanish");
        let proc = fake_tree(&root, "max\n", "max\n");
        let mut b = ProcBackend::open_at(&proc).unwrap();
        // Replace meminfo with garbage: memory is absent, the reader carries on.
        write(&proc, "meminfo", "garbage\n");
        b.meminfo = File::open(proc.join("meminfo")).ok();
        assert_eq!(b.read(Instant::now()).memory_percent, None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
