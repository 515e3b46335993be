//! [`LatencyRecorder`], the lock-free per-cycle record of task latencies and failures, and the
//! [`LatencySummary`] the control loop takes from it once a cycle.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

// A log-linear histogram over nanoseconds: values below 2^SUB_BITS⁺¹ have their own bucket, and
// each power of two above is split into 2^SUB_BITS equal buckets, so a bucket's width is at most
// 1/8 = 12.5 % of its lower bound; the summary reports the midpoint (≤ 6.25 % off). Plenty for a
// ratio compared with a tolerance of 1.5.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
// The largest exponent kept: 2^48 ns ≈ 3.3 days; longer samples land in the top bucket.
const MAX_EXP: u32 = 48;
const BUCKETS: usize = (MAX_EXP as usize - SUB_BITS as usize + 2) * SUB;
const MAX_NANOS: u64 = (1 << (MAX_EXP + 1)) - 1;

/// The bucket of a value in nanoseconds. Inlined into the `_in` methods, which are inlined into
/// the managers of other crates.
#[inline]
fn bucket_of(nanos: u64) -> usize {
    let v = nanos.min(MAX_NANOS);
    if v < (SUB as u64) << 1 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The representative value (midpoint) of a bucket, in nanoseconds.
fn value_of(bucket: usize) -> u64 {
    if bucket < SUB << 1 {
        return bucket as u64;
    }
    let exp = (bucket / SUB) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB as u64 + sub) << (exp - SUB_BITS)) + width / 2
}

/// Records how long tasks take, from admission to completion, and how many fail; lock-free and
/// bounded.
///
/// Managers call [`record`](Self::record) when a task completes and
/// [`record_error`](Self::record_error) when it fails or times out; the control loop calls
/// [`take_summary`](Self::take_summary) once a cycle, which returns the cycle's percentiles and
/// starts the next cycle empty. Every call takes `&self`: share it in an `Arc`.
///
/// - **Cheap:** a record is one relaxed atomic increment of a histogram bucket (log-linear buckets,
///   at most 12.5 % wide, from 1 ns to about 3 days).
/// - **Bounded:** a fixed array of counters (about 1.5 KiB) per stripe, whatever the traffic.
/// - **Striped:** made with [`striped`](Self::striped), it keeps several copies of its counters,
///   each on cache lines of its own; a writer that names its stripe
///   ([`record_in`](Self::record_in) and the other `_in` methods: one stripe per thread, say)
///   then never writes a line another thread writes, and threads on different cores do not pass
///   the lines back and forth on every task. The summaries add the stripes up: they read the
///   same as from one stripe.
/// - **Failures are not fast samples:** a timeout or an error must go through
///   [`record_error`](Self::record_error), never [`record`](Self::record) with the (short) time it
///   took to fail. The controller treats a high error rate as stress of its own.
///
/// A sample recorded while [`take_summary`](Self::take_summary) runs lands in this cycle or the
/// next, never in both and never lost.
///
/// ```
/// use ace_core::LatencyRecorder;
/// use core::time::Duration;
///
/// let recorder = LatencyRecorder::new();
/// for ms in 1..=100 {
///     recorder.record(Duration::from_millis(ms));
/// }
/// recorder.record_error();
/// let summary = recorder.take_summary();
/// assert_eq!((summary.samples, summary.errors), (100, 1));
/// // Within a bucket's width (≤ 12.5 %) of the true 90th percentile.
/// let p90 = summary.p90.as_secs_f64() * 1000.0;
/// assert!((85.0..=97.0).contains(&p90), "{p90}");
/// // The next cycle starts empty.
/// assert_eq!(recorder.take_summary().samples, 0);
/// ```
pub struct LatencyRecorder {
    // A power of two of them, at least one: a stripe hint is masked, never divided.
    stripes: Box<[Stripe]>,
    counted: Counted,
}

/// The running total of [`LatencyRecorder::count_admission`], on a line of its own (every
/// admission writes it; the stripes' pointer beside it is read by every sample), and the total
/// the last summary took.
#[repr(align(128))]
struct Counted {
    total: AtomicU64,
    seen: AtomicU64,
}

/// One stripe's counters. Aligned (and so padded) to 128 bytes, the span an x86 prefetcher
/// pulls in pairs: two stripes never share a line, and a writer's hot lines (its bucket, the tail
/// below) are its own.
#[repr(align(128))]
struct Stripe {
    buckets: [AtomicU32; BUCKETS],
    errors: AtomicU32,
    // Admissions this cycle: with the tasks in flight, they bound how many have run for longer
    // than any span of recent cycles (the controller's "in flight too long").
    admitted: AtomicU32,
    // The successes' total time, for the mean, in nanoseconds (wraps after 584 years of tasks).
    total_nanos: AtomicU64,
    // Per stripe too: one shared flag, read by every admission, would sit on a line the
    // cycle's first "reached" writes.
    reached: AtomicBool,
}

impl Stripe {
    fn new() -> Self {
        Self {
            buckets: core::array::from_fn(|_| AtomicU32::new(0)),
            errors: AtomicU32::new(0),
            admitted: AtomicU32::new(0),
            total_nanos: AtomicU64::new(0),
            reached: AtomicBool::new(false),
        }
    }
}

impl fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyRecorder")
            .field("buckets", &BUCKETS)
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// The most stripes a recorder keeps ([`striped`](Self::striped)).
    pub const MAX_STRIPES: usize = 64;

    /// An empty recorder with one stripe: for writers on one thread, or few writes.
    pub fn new() -> Self {
        Self::striped(1)
    }

    /// An empty recorder with `stripes` stripes (rounded up to a power of two, between 1 and
    /// [`MAX_STRIPES`](Self::MAX_STRIPES)): for writers on several threads at once, each naming
    /// its own stripe in [`record_in`](Self::record_in) and the other `_in` methods.
    pub fn striped(stripes: usize) -> Self {
        let n = stripes.clamp(1, Self::MAX_STRIPES).next_power_of_two();
        Self {
            stripes: (0..n).map(|_| Stripe::new()).collect(),
            counted: Counted {
                total: AtomicU64::new(0),
                seen: AtomicU64::new(0),
            },
        }
    }

    /// The stripe of hint `stripe`: any number will do (a thread's index, a hash), the same
    /// one from the same writer keeps its lines its own.
    #[inline]
    fn stripe(&self, stripe: usize) -> &Stripe {
        &self.stripes[stripe & (self.stripes.len() - 1)]
    }

    /// Records one task that succeeded after `latency` (from admission to completion).
    pub fn record(&self, latency: Duration) {
        self.record_in(0, latency);
    }

    /// [`record`](Self::record) into stripe `stripe` (any number: it is masked to the stripes).
    pub fn record_in(&self, stripe: usize, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let stripe = self.stripe(stripe);
        // Relaxed: counters only; the summary needs no ordering with anything else.
        stripe.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        stripe
            .total_nanos
            .fetch_add(nanos.min(MAX_NANOS), Ordering::Relaxed);
    }

    /// Notes one admission with `in_flight` of `limit` slots taken (this task included): when
    /// the limit was reached, the summary says so ([`LatencySummary::limit_reached`]), and the
    /// controller may grow it. Managers call it right after each admission.
    ///
    /// The count of admissions per cycle ([`LatencySummary::admitted`]) also tells the controller
    /// how many of the tasks in flight were admitted long ago: tasks still running past a
    /// multiple of the usual latency (a retry loop inside the task, a hung request) count as
    /// stress before any of them completes. No clock, no per-task state: one counter.
    pub fn record_admission(&self, in_flight: usize, limit: usize) {
        self.record_admission_in(0, in_flight, limit);
    }

    /// [`record_admission`](Self::record_admission) into stripe `stripe` (any number: it is
    /// masked to the stripes).
    pub fn record_admission_in(&self, stripe: usize, in_flight: usize, limit: usize) {
        let stripe = self.stripe(stripe);
        stripe.admitted.fetch_add(1, Ordering::Relaxed);
        // Load first: once set, admissions only read the flag.
        if in_flight >= limit && !stripe.reached.load(Ordering::Relaxed) {
            stripe.reached.store(true, Ordering::Relaxed);
        }
    }

    /// `count` admissions at once, into stripe `stripe`: what [`record_admission_in`] records
    /// `count` times, with `reached` true if any of them took the last free slot. For a writer
    /// that admits in batches (the Kafka consumer's task): one atomic add per batch rather than
    /// one per admission.
    ///
    /// [`record_admission_in`]: Self::record_admission_in
    pub fn record_admissions_in(&self, stripe: usize, count: u32, reached: bool) {
        let stripe = self.stripe(stripe);
        if count > 0 {
            stripe.admitted.fetch_add(count, Ordering::Relaxed);
        }
        if reached && !stripe.reached.load(Ordering::Relaxed) {
            stripe.reached.store(true, Ordering::Relaxed);
        }
    }

    /// Counts one admission in a running total the recorder keeps (each summary counts the rise
    /// since the last, beside the stripes' admissions), and returns the total before it: for a
    /// caller that keeps such a total anyway (a manager's admissions, read by its statistics and
    /// its shutdown), which would otherwise pay a second atomic add per admission. With
    /// `ordering` as the caller's own count needs it. Pair it with
    /// [`note_limit_reached_in`](Self::note_limit_reached_in).
    pub fn count_admission(&self, ordering: Ordering) -> u64 {
        self.counted.total.fetch_add(1, ordering)
    }

    /// Takes one admission back from [`count_admission`](Self::count_admission)'s total (a slot
    /// given back unused). A summary never counts a fall: the next one counts from the lower
    /// total.
    pub fn uncount_admission(&self, ordering: Ordering) {
        self.counted.total.fetch_sub(1, ordering);
    }

    /// [`count_admission`](Self::count_admission)'s running total.
    pub fn counted_admissions(&self, ordering: Ordering) -> u64 {
        self.counted.total.load(ordering)
    }

    /// An admission counted with [`count_admission`](Self::count_admission) took the last free
    /// slot: the summary says the limit was reached. Into stripe `stripe` (masked).
    pub fn note_limit_reached_in(&self, stripe: usize) {
        self.record_admissions_in(stripe, 0, true);
    }

    /// Records one task that failed or timed out. It is not a latency sample: a failure that came
    /// back fast must not make the downstream look fast.
    pub fn record_error(&self) {
        self.record_error_in(0);
    }

    /// [`record_error`](Self::record_error) into stripe `stripe` (any number: it is masked to
    /// the stripes).
    pub fn record_error_in(&self, stripe: usize) {
        self.stripe(stripe).errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary of everything recorded since the last call, and a fresh start for the next
    /// cycle.
    pub fn take_summary(&self) -> LatencySummary {
        self.summarize(true)
    }

    /// The summary of everything recorded since the last [`take_summary`](Self::take_summary),
    /// leaving it in place: for a running total read by several observers (a manager's
    /// per-class wait times).
    pub fn summary(&self) -> LatencySummary {
        self.summarize(false)
    }

    fn summarize(&self, take: bool) -> LatencySummary {
        // A counter is swapped only if it is not 0: most buckets are, and a load leaves the line
        // shared with its writer where a swap would take it away (8 stripes of 376 buckets per
        // epoch). An increment after the load counts in the next cycle, as after a swap.
        let read = |cell: &AtomicU32| match cell.load(Ordering::Relaxed) {
            0 => 0,
            _ if take => cell.swap(0, Ordering::Relaxed),
            value => value,
        };
        // Each counter is read (or swapped) once: a sample counts in this summary or the next,
        // whichever stripe holds it.
        let mut counts = [0u64; BUCKETS];
        let (mut errors, mut admitted, mut total) = (0u32, 0u32, 0u64);
        let mut limit_reached = false;
        for stripe in &*self.stripes {
            for (count, bucket) in counts.iter_mut().zip(&stripe.buckets) {
                *count += u64::from(read(bucket));
            }
            errors = errors.saturating_add(read(&stripe.errors));
            admitted = admitted.saturating_add(read(&stripe.admitted));
            let (nanos, reached) = if take {
                (
                    stripe.total_nanos.swap(0, Ordering::Relaxed),
                    stripe.reached.load(Ordering::Relaxed)
                        && stripe.reached.swap(false, Ordering::Relaxed),
                )
            } else {
                (
                    stripe.total_nanos.load(Ordering::Relaxed),
                    stripe.reached.load(Ordering::Relaxed),
                )
            };
            total = total.wrapping_add(nanos);
            limit_reached |= reached;
        }
        let counted = self.counted.total.load(Ordering::Relaxed);
        let seen = if take {
            self.counted.seen.swap(counted, Ordering::Relaxed)
        } else {
            self.counted.seen.load(Ordering::Relaxed)
        };
        admitted = admitted
            .saturating_add(u32::try_from(counted.saturating_sub(seen)).unwrap_or(u32::MAX));
        let samples: u64 = counts.iter().sum();
        let percentile = |per_mille: u64| -> Duration {
            if samples == 0 {
                return Duration::ZERO;
            }
            // The rank of the percentile, 1-based, rounded up: p90 of 10 samples is the 9th.
            let rank = (samples * per_mille).div_ceil(1000).max(1);
            let mut seen = 0u64;
            for (bucket, &count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Duration::from_nanos(value_of(bucket));
                }
            }
            Duration::from_nanos(MAX_NANOS)
        };
        LatencySummary {
            samples: u32::try_from(samples).unwrap_or(u32::MAX),
            errors,
            // A sample recorded during the swaps may count in the total but not the buckets (or
            // the reverse): at most one sample's worth off, and never a division by zero.
            mean: Duration::from_nanos(total.checked_div(samples).unwrap_or(0)),
            p50: percentile(500),
            p90: percentile(900),
            p99: percentile(990),
            limit_reached,
            admitted,
        }
    }
}

/// One cycle of task outcomes, as taken by [`LatencyRecorder::take_summary`]: the count of
/// successes and failures and the successes' percentiles.
///
/// The controller compares [`p90`](Self::p90) with its baseline, and the share of
/// [`errors`](Self::errors) with `latency_max_error_rate`. Percentiles are zero when `samples` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Tasks that succeeded this cycle.
    pub samples: u32,
    /// Tasks that failed or timed out this cycle.
    pub errors: u32,
    /// The mean latency of the successes.
    pub mean: Duration,
    /// The median latency of the successes.
    pub p50: Duration,
    /// The 90th percentile latency of the successes: the figure the controller reads.
    pub p90: Duration,
    /// The 99th percentile latency of the successes.
    pub p99: Duration,
    /// The limit was reached at some admission ([`LatencyRecorder::record_admission`]): there
    /// was demand for more.
    pub limit_reached: bool,
    /// Admissions this cycle ([`LatencyRecorder::record_admission`]); 0 from a manager that does
    /// not report them (the controller then never judges tasks by their time in flight).
    pub admitted: u32,
}

impl LatencySummary {
    /// A summary of `samples` successes all taking `latency`, and `errors` failures: handy for
    /// tests and scripted signals.
    pub const fn uniform(latency: Duration, samples: u32, errors: u32) -> Self {
        Self {
            samples,
            errors,
            mean: latency,
            p50: latency,
            p90: latency,
            p99: latency,
            limit_reached: false,
            admitted: 0,
        }
    }

    /// This summary with [`limit_reached`](Self::limit_reached) set.
    #[must_use]
    pub const fn reached(mut self) -> Self {
        self.limit_reached = true;
        self
    }

    /// Both summaries as one: counts added, the mean exact, percentiles weighted by samples
    /// (an approximation: the histograms are gone).
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let samples = self.samples.saturating_add(other.samples);
        let weigh = |a: Duration, b: Duration| -> Duration {
            if samples == 0 {
                return Duration::ZERO;
            }
            let total =
                a.as_nanos() * u128::from(self.samples) + b.as_nanos() * u128::from(other.samples);
            Duration::from_nanos(u64::try_from(total / u128::from(samples)).unwrap_or(u64::MAX))
        };
        Self {
            samples,
            errors: self.errors.saturating_add(other.errors),
            mean: weigh(self.mean, other.mean),
            p50: weigh(self.p50, other.p50),
            p90: weigh(self.p90, other.p90),
            p99: weigh(self.p99, other.p99),
            limit_reached: self.limit_reached || other.limit_reached,
            admitted: self.admitted.saturating_add(other.admitted),
        }
    }

    /// Successes and failures together.
    pub const fn total(&self) -> u64 {
        self.samples as u64 + self.errors as u64
    }

    /// The share of failures in `[0, 1]`, or 0 with no task at all.
    pub fn error_rate(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            0.0
        } else {
            f64::from(self.errors) / total as f64
        }
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} failed, mean {:?}, p50 {:?}, p90 {:?}, p99 {:?}",
            self.samples, self.errors, self.mean, self.p50, self.p90, self.p99
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000u64).chain((13..60).map(|e| (1u64 << e) + 3)) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went down");
            assert!(b < BUCKETS);
            last = b;
            let mid = value_of(b) as f64;
            let v = v.min(MAX_NANOS) as f64;
            assert!((mid - v).abs() <= v * 0.125 + 1.0, "{v} → {mid}");
        }
    }

    #[test]
    fn failures_are_not_samples() {
        let r = LatencyRecorder::new();
        r.record(Duration::from_millis(100));
        for _ in 0..9 {
            r.record_error();
        }
        let s = r.take_summary();
        assert_eq!((s.samples, s.errors), (1, 9));
        assert!(s.p50 >= Duration::from_millis(94));
        assert!((s.error_rate() - 0.9).abs() < 1e-12);
    }

    #[test]
    fn take_summary_resets_the_cycle() {
        let r = LatencyRecorder::new();
        r.record(Duration::from_secs(1));
        r.record_error();
        assert_eq!(r.take_summary().total(), 2);
        assert_eq!(r.take_summary(), LatencySummary::default());
    }

    #[test]
    fn admissions_are_counted_per_cycle() {
        let r = LatencyRecorder::new();
        for k in 1..=5 {
            r.record_admission(k, 10);
        }
        let s = r.take_summary();
        assert_eq!((s.admitted, s.limit_reached), (5, false));
        assert_eq!(s.merge(&s).admitted, 10);
        assert_eq!(r.take_summary().admitted, 0);
    }

    #[test]
    fn admissions_counted_in_the_running_total_count_per_cycle() {
        let r = LatencyRecorder::striped(2);
        for k in 0..5 {
            assert_eq!(r.count_admission(Ordering::Relaxed), k);
        }
        r.record_admission_in(1, 1, 10);
        assert_eq!(r.summary().admitted, 6, "a peek takes nothing");
        let s = r.take_summary();
        assert_eq!((s.admitted, s.limit_reached), (6, false));
        r.count_admission(Ordering::Relaxed);
        r.note_limit_reached_in(0);
        let s = r.take_summary();
        assert_eq!((s.admitted, s.limit_reached), (1, true));
        // A slot given back: no fall counted, and the next rise counts from the lower total.
        r.uncount_admission(Ordering::Relaxed);
        assert_eq!(r.take_summary().admitted, 0);
        r.count_admission(Ordering::Relaxed);
        assert_eq!(r.take_summary().admitted, 1);
        assert_eq!(r.counted_admissions(Ordering::Relaxed), 6);
    }

    #[test]
    fn admissions_counted_in_a_batch_are_as_many_admissions() {
        let r = LatencyRecorder::striped(4);
        r.record_admissions_in(1, 7, false);
        r.record_admissions_in(2, 0, false);
        let s = r.take_summary();
        assert_eq!((s.admitted, s.limit_reached), (7, false));
        r.record_admissions_in(3, 2, true);
        let s = r.take_summary();
        assert_eq!((s.admitted, s.limit_reached), (2, true));
    }

    #[test]
    fn stripes_add_up_to_one_recorder() {
        let one = LatencyRecorder::new();
        let striped = LatencyRecorder::striped(5);
        assert_eq!(striped.stripes.len(), 8);
        assert_eq!(LatencyRecorder::striped(0).stripes.len(), 1);
        assert_eq!(
            LatencyRecorder::striped(usize::MAX).stripes.len(),
            LatencyRecorder::MAX_STRIPES
        );
        // Hints past the stripe count wrap: every one lands somewhere, none twice.
        for k in 0..1_000u64 {
            let hint = (k as usize).wrapping_mul(2_654_435_761);
            let latency = Duration::from_micros(k * k % 9_973 + 1);
            one.record(latency);
            striped.record_in(hint, latency);
            if k % 7 == 0 {
                one.record_error();
                striped.record_error_in(hint >> 3);
            }
            one.record_admission(1, 10);
            striped.record_admission_in(hint >> 5, 1, 10);
        }
        striped.record_admission_in(3, 10, 10);
        one.record_admission(10, 10);
        let s = striped.summary();
        assert_eq!(s, one.summary());
        assert_eq!((s.samples, s.errors, s.admitted), (1_000, 143, 1_001));
        assert!(s.limit_reached);
        assert_eq!(striped.take_summary(), one.take_summary());
        assert_eq!(striped.take_summary(), LatencySummary::default());
    }

    #[test]
    fn huge_latencies_land_in_the_top_bucket() {
        let r = LatencyRecorder::new();
        r.record(Duration::MAX);
        assert_eq!(
            r.take_summary().p99,
            Duration::from_nanos(value_of(BUCKETS - 1))
        );
    }
}
