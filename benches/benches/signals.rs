//! The cost of one signal-collection cycle: ACE's `/proc` + cgroup reader against sysinfo.
//!
//! `cargo bench -p ace-benches --bench signals`
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented functions"
)]

use std::hint::black_box;
use std::time::Duration;

use ace_std::signals::{QueueDepth, SystemSignals};
use criterion::{criterion_group, criterion_main, Criterion};

fn system(c: &mut Criterion) {
    let mut g = c.benchmark_group("signal_cycle");
    // A window of zero: every read samples CPU (machine, cgroup, process) and memory, which is
    // what one control cycle does.
    let mut procfs = SystemSignals::new().min_cpu_window(Duration::ZERO);
    g.bench_function(format!("ace_{}", procfs.backend_name()), |b| {
        b.iter(|| black_box(procfs.read()));
    });
    // What the sysinfo path costs when it does refresh: CPU + memory (the issue's ≈ 80 µs).
    let mut sys = sysinfo::System::new();
    g.bench_function("sysinfo_cpu_memory", |b| {
        b.iter(|| {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            black_box((sys.global_cpu_usage(), sys.used_memory()))
        });
    });
    // ... plus this process's CPU and the cgroup memory limits, as SystemSignals::sysinfo does.
    let pid = sysinfo::get_current_pid().unwrap();
    g.bench_function("sysinfo_cpu_memory_process_cgroup", |b| {
        b.iter(|| {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[pid]),
                false,
                sysinfo::ProcessRefreshKind::nothing().with_cpu(),
            );
            black_box((sys.global_cpu_usage(), sys.cgroup_limits()))
        });
    });
    let depth = QueueDepth::new();
    g.bench_function("queue_depth", |b| b.iter(|| black_box(depth.get())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = system
}
criterion_main!(benches);
