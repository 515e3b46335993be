//! Pure parsers for the `/proc` and cgroup v2 files the system source reads.
//!
//! Each takes the file's text and returns `None` when it is not in the expected shape, so a
//! kernel that words a file differently makes the signal absent, never wrong.

use std::path::{Path, PathBuf};

/// Jiffies from the aggregate `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuTimes {
    /// Time not idle: user, nice, system, irq, softirq, steal.
    pub(crate) busy: u64,
    /// busy + idle + iowait.
    pub(crate) total: u64,
}

/// The first line of `/proc/stat`: `cpu  user nice system idle iowait irq softirq steal guest
/// guest_nice`. Guest time is already counted in user and nice, so it is left out.
pub(crate) fn proc_stat_cpu(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    // Kernels before 2.6.11 had no steal column; fewer than idle's column is not /proc/stat.
    if n < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    let idle_all = idle + iowait;
    let busy = user + nice + system + irq + softirq + steal;
    Some(CpuTimes {
        busy,
        total: busy + idle_all,
    })
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemInfo {
    pub(crate) total: u64,
    pub(crate) available: u64,
}

/// `/proc/meminfo`: `MemTotal:  16318412 kB` ... `MemAvailable:  9876543 kB`.
pub(crate) fn meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            total = kib(rest);
        } else if let Some(rest) = line.strip_prefix("MemAvailable:") {
            available = kib(rest);
        }
        if total.is_some() && available.is_some() {
            break;
        }
    }
    Some(MemInfo {
        total: total.filter(|&t| t > 0)?,
        available: available?,
    })
}

fn kib(rest: &str) -> Option<u64> {
    let mut it = rest.split_ascii_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// `utime + stime` of `/proc/self/stat`, in clock ticks. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn self_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let mut fields = after.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The process's cgroup v2 path from `/proc/self/cgroup`: the line `0::/some/path`.
pub(crate) fn cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// The mount point of the cgroup2 file system, from `/proc/self/mountinfo`.
///
/// A line is `id parent major:minor root mount-point options [optional...] - fstype source
/// super-options`.
pub(crate) fn cgroup2_mount(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount = left.split_ascii_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount(mount)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\040`-style octal.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let code = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(code) = code {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of the cgroup at `path` (from `/proc/self/cgroup`) under `mount`.
pub(crate) fn cgroup_dir(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// A limit read from a cgroup file: unlimited (`max`) or a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Limit<T> {
    /// `max`: no limit at this level.
    Unlimited,
    /// A limit.
    Max(T),
}

/// `cpu.max`: `$QUOTA $PERIOD` in µs, or `max $PERIOD`. Returns the quota in CPUs (cores).
pub(crate) fn cpu_max(text: &str) -> Option<Limit<f64>> {
    let mut it = text.split_ascii_whitespace();
    let quota = it.next()?;
    let period: u64 = match it.next() {
        Some(p) => p.parse().ok()?,
        None => 100_000,
    };
    if quota == "max" {
        return Some(Limit::Unlimited);
    }
    let quota: u64 = quota.parse().ok()?;
    if period == 0 || quota == 0 {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "quota and period are µs counts far below 2^52"
    )]
    Some(Limit::Max(quota as f64 / period as f64))
}

/// `memory.max`: bytes, or `max`.
pub(crate) fn memory_max(text: &str) -> Option<Limit<u64>> {
    let t = text.trim();
    if t == "max" {
        return Some(Limit::Unlimited);
    }
    t.parse().ok().filter(|&v| v > 0).map(Limit::Max)
}

/// A single number file such as `memory.current`.
pub(crate) fn single_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`cpu.stat`'s `usage_usec`, `memory.stat`'s
/// `inactive_file`).
pub(crate) fn keyed_u64(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
        intr 199292 0 0\n";

    #[test]
    fn parses_the_cpu_line_of_proc_stat() {
        let t = proc_stat_cpu(PROC_STAT).unwrap();
        assert_eq!(t.busy, 10132153 + 290696 + 3084719 + 25195);
        assert_eq!(t.total, t.busy + 46828483 + 16683);
    }

    #[test]
    fn proc_stat_with_few_columns_or_wrong_head_is_none() {
        assert_eq!(proc_stat_cpu("cpu 1 2\n"), None);
        assert_eq!(proc_stat_cpu("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(proc_stat_cpu(""), None);
        assert_eq!(proc_stat_cpu("cpu 1 x 3 4\n"), None);
        assert!(proc_stat_cpu("cpu 1 2 3 4\n").is_some());
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234567 kB\n\
                    MemAvailable:    8159206 kB\nBuffers:          1 kB\n";
        let m = meminfo(text).unwrap();
        assert_eq!(m.total, 16318412 * 1024);
        assert_eq!(m.available, 8159206 * 1024);
    }

    #[test]
    fn meminfo_without_available_or_zero_total_is_none() {
        assert_eq!(meminfo("MemTotal: 100 kB\nMemFree: 5 kB\n"), None);
        assert_eq!(meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
        assert_eq!(meminfo(""), None);
    }

    #[test]
    fn parses_self_stat_even_with_odd_process_names() {
        let text = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 \
                    8 0 123456 1000000 500 18446744073709551615\n";
        assert_eq!(self_stat_cpu_ticks(text), Some(175));
        assert_eq!(self_stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(self_stat_cpu_ticks("no name here"), None);
    }

    #[test]
    fn finds_the_v2_line_of_proc_self_cgroup() {
        let hybrid = "5:memory:/user.slice\n1:cpu:/\n0::/user.slice/session-2.scope\n";
        assert_eq!(cgroup_v2_path(hybrid), Some("/user.slice/session-2.scope"));
        assert_eq!(cgroup_v2_path("0::/\n"), Some("/"));
        assert_eq!(cgroup_v2_path("4:memory:/docker/abc\n"), None);
        assert_eq!(cgroup_v2_path(""), None);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/sys/fs/cgroup")));
        let hybrid = "31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      32 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("1 1 0:1 / /odd\\040dir rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/odd dir"))
        );
        assert_eq!(
            cgroup2_mount("32 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn joins_cgroup_dirs() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_dir(m, "/"), PathBuf::from("/sys/fs/cgroup/"));
        assert_eq!(
            cgroup_dir(m, "/kubepods/pod1"),
            PathBuf::from("/sys/fs/cgroup/kubepods/pod1")
        );
    }

    #[test]
    fn parses_cpu_max() {
        assert_eq!(cpu_max("max 100000\n"), Some(Limit::Unlimited));
        assert_eq!(cpu_max("150000 100000\n"), Some(Limit::Max(1.5)));
        assert_eq!(cpu_max("50000\n"), Some(Limit::Max(0.5)));
        assert_eq!(cpu_max("0 100000\n"), None);
        assert_eq!(cpu_max("abc 100000\n"), None);
        assert_eq!(cpu_max(""), None);
    }

    #[test]
    fn parses_memory_max() {
        assert_eq!(memory_max("max\n"), Some(Limit::Unlimited));
        assert_eq!(memory_max("536870912\n"), Some(Limit::Max(536_870_912)));
        assert_eq!(memory_max("0\n"), None);
        assert_eq!(memory_max(""), None);
    }

    #[test]
    fn parses_keyed_files() {
        let cpu_stat = "usage_usec 81234567\nuser_usec 61234567\nsystem_usec 20000000\n\
                        nr_periods 0\n";
        assert_eq!(keyed_u64(cpu_stat, "usage_usec"), Some(81_234_567));
        assert_eq!(keyed_u64(cpu_stat, "user"), None);
        let mem_stat = "anon 1000\nfile 5000\nactive_file 3000\ninactive_file 2000\n";
        assert_eq!(keyed_u64(mem_stat, "inactive_file"), Some(2000));
        assert_eq!(keyed_u64(mem_stat, "active_anon"), None);
        assert_eq!(single_u64("123456\n"), Some(123_456));
        assert_eq!(single_u64("x"), None);
    }
}
