//! The pool's default signals are [`SystemSignals`](crate::signals::SystemSignals): machine (or
//! cgroup) CPU and memory. This module checks that reading under a real CPU-bound load.

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use crate::signals::SystemSignals;

    /// The real reading: spin every CPU the machine has between two readings.
    #[test]
    fn reads_high_cpu_under_load_on_every_core() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 64));
        let mut source = SystemSignals::new();
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
            let _ = source.read();
            std::thread::sleep(Duration::from_millis(300));
            let reading = source.read();
            stop.store(true, Ordering::Relaxed);
            reading
        });
        let cpu = reading.cpu_percent.expect("a CPU reading");
        assert!(cpu > 50.0, "{cpu}% with every core spinning");
        assert!(reading
            .memory_percent
            .is_some_and(|m| (0.0..=100.0).contains(&m)));
    }
}
