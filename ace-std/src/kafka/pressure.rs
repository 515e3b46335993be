//! Back-pressure, as a pure rule: from the backlog, whether to take messages, when to pause,
//! when to resume.

use std::time::Duration;

use tokio::time::Instant;

/// The backlog as back-pressure sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backlog {
    /// The limit on handlers in flight.
    pub(super) limit: usize,
    /// Handlers in flight.
    pub(super) in_flight: usize,
    /// Messages waiting (for a slot, or behind a busy key).
    pub(super) queued: usize,
    /// Handlers finished so far (a count that only grows).
    pub(super) finished: u64,
}

/// What back-pressure wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Take messages from librdkafka.
    pub(super) pull: bool,
    /// Pause at this instant unless the backlog drains first.
    pub(super) pause_at: Option<Instant>,
    /// Resume the paused partitions now.
    pub(super) resume: bool,
}

/// Back-pressure: the high-water mark stops taking messages; a backlog that stays high for
/// `pause_after` pauses, if the pause is worth its price; a paused consumer resumes while a
/// reserve still waits.
///
/// The high-water mark is the limit plus the buffer allowance. "Stays high" means it has not
/// drained to the reserve since it reached the mark: handlers that keep finishing one at a
/// time, each followed by a new message, hold the backlog just under the mark and must not
/// restart the clock. The reserve is the limit's worth of waiting messages, at most half the
/// buffer: resuming then leaves the slots work while librdkafka fetches again.
///
/// The price: a pause throws away librdkafka's prefetched messages, and after the resume the
/// first message comes a refetch later (measured at each resume: ~300 ms against Tansu). While
/// handlers keep finishing, a pause is taken only if the waiting messages cover that refetch at
/// the rate handlers finish (before the first measurement, it is taken, which measures it);
/// otherwise the consumer keeps taking one message per completion, which polls it as often as
/// a pause would. Handlers that stop finishing for `pause_after` pause whatever the price (the
/// group would evict a consumer that stops polling).
#[derive(Debug, Default)]
pub(super) struct Pressure {
    /// When the backlog reached the mark, and the completions then.
    full_since: Option<(Instant, u64)>,
    /// The last completion seen, and the count then.
    last_finish: Option<(Instant, u64)>,
    /// The last resume not yet followed by a message.
    resumed_at: Option<Instant>,
    /// How long the first message took after a resume (a running mean).
    refetch: Option<Duration>,
}

impl Pressure {
    pub(super) fn decide(
        &mut self,
        now: Instant,
        b: Backlog,
        buffer: usize,
        pause_after: Duration,
        paused: bool,
    ) -> Verdict {
        let high = b.limit.saturating_add(buffer);
        let full = b.in_flight + b.queued >= high;
        let reserve = b.limit.min(buffer / 2);
        let drained = !full && b.queued <= reserve;
        if self.last_finish.is_none_or(|(_, n)| n != b.finished) {
            self.last_finish = Some((now, b.finished));
        }
        if paused || drained {
            self.full_since = None;
        } else if full && self.full_since.is_none() {
            self.full_since = Some((now, b.finished));
        }
        let pause_at = self.full_since.map(|(since, finished_then)| {
            let finished = b.finished - finished_then;
            let covered = match self.refetch {
                None => true,
                // The waiting messages last `queued × (time per completion)`.
                Some(refetch) => {
                    finished > 0
                        && now
                            .duration_since(since)
                            .mul_f64(b.queued as f64 / finished as f64)
                            >= refetch
                }
            };
            let last = self.last_finish.map_or(since, |(at, _)| at.max(since));
            if covered {
                since + pause_after
            } else {
                last + pause_after
            }
        });
        let resume = paused && drained;
        if resume {
            self.resumed_at = Some(now);
        }
        Verdict {
            // With nothing queued, take one message even when full: it waits for a slot, and
            // that wait is what wakes the task when a handler finishes.
            pull: !full || paused || b.queued == 0,
            pause_at,
            resume,
        }
    }

    /// A message arrived: the first after a resume measures the refetch.
    pub(super) fn received(&mut self, now: Instant) {
        if let Some(at) = self.resumed_at.take() {
            let took = now.duration_since(at);
            self.refetch = Some(self.refetch.map_or(took, |mean| (mean + took) / 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MS: Duration = Duration::from_millis(1);

    /// Limit 4, buffer 8: the high-water mark is 12, the reserve 4. `finished` grows by one per
    /// call where the backlog dips (a handler finished).
    fn decide(
        p: &mut Pressure,
        at: Instant,
        in_flight: usize,
        queued: usize,
        paused: bool,
    ) -> Verdict {
        let finished = p.last_finish.map_or(0, |(_, n)| n) + u64::from(in_flight + queued < 12);
        let b = Backlog {
            limit: 4,
            in_flight,
            queued,
            finished,
        };
        p.decide(at, b, 8, 200 * MS, paused)
    }

    #[test]
    fn holds_off_pausing_finishing_handlers_when_the_buffer_cannot_cover_a_refetch() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        p.refetch = Some(300 * MS);
        decide(&mut p, t0, 4, 8, false);
        // A handler finishes every 12.5 ms: 8 waiting last 100 ms, less than the refetch.
        for i in 1..40u32 {
            let at = t0 + i * 25 * MS / 2;
            let v = decide(&mut p, at, 3, 8, false);
            assert_eq!(
                v.pause_at,
                Some(at + 200 * MS),
                "held off while handlers finish"
            );
            decide(&mut p, at, 4, 8, false);
        }
    }

    #[test]
    fn pauses_when_handlers_stop_finishing_whatever_the_price() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        p.refetch = Some(300 * MS);
        decide(&mut p, t0, 4, 8, false);
        let v = decide(&mut p, t0 + 150 * MS, 4, 8, false);
        assert_eq!(v.pause_at, Some(t0 + 200 * MS));
    }

    #[test]
    fn measures_the_refetch_after_a_resume() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert!(decide(&mut p, t0, 4, 4, true).resume);
        p.received(t0 + 300 * MS);
        p.received(t0 + 400 * MS);
        assert_eq!(
            p.refetch,
            Some(300 * MS),
            "only the first message after a resume"
        );
    }

    #[test]
    fn pauses_when_handlers_finish_one_at_a_time_at_the_mark() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert_eq!(
            decide(&mut p, t0, 4, 8, false).pause_at,
            Some(t0 + 200 * MS)
        );
        // Every 50 ms a handler finishes (the backlog dips below the mark) and a message comes.
        // Nothing measured the refetch yet: the pause is taken (and measures it).
        for i in 1..4 {
            let dip = decide(&mut p, t0 + i * 50 * MS, 3, 8, false);
            assert!(dip.pull);
            assert_eq!(
                dip.pause_at,
                Some(t0 + 200 * MS),
                "a dip does not restart the clock"
            );
            assert!(
                !decide(&mut p, t0 + i * 50 * MS, 4, 8, false).pull,
                "full: not taking"
            );
        }
    }

    #[test]
    fn does_not_pause_a_burst_that_drains() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        assert!(decide(&mut p, t0, 4, 8, false).pause_at.is_some());
        assert_eq!(decide(&mut p, t0 + MS, 4, 4, false).pause_at, None);
        assert_eq!(
            decide(&mut p, t0 + 2 * MS, 4, 7, false).pause_at,
            None,
            "not full again"
        );
    }

    #[test]
    fn resumes_while_the_reserve_keeps_every_slot_busy() {
        let (mut p, t0) = (Pressure::default(), Instant::now());
        let v = decide(&mut p, t0, 4, 5, true);
        assert!(
            !v.resume && v.pull && v.pause_at.is_none(),
            "paused: polls, does not resume"
        );
        assert!(
            decide(&mut p, t0, 4, 4, true).resume,
            "4 waiting cover the 4 slots"
        );
    }

    #[test]
    fn takes_one_message_when_full_with_nothing_queued() {
        let mut p = Pressure::default();
        assert!(decide(&mut p, Instant::now(), 12, 0, false).pull);
    }
}
