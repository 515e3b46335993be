//! [`Priority`]: the classes an acquire can wait in, and [`Shares`]: the part of the limit each
//! class may always use.

use core::fmt;

/// How many classes the queue keeps (one FIFO list each).
pub(super) const CLASSES: usize = 3;

/// The class of an acquire: under contention a released permit goes to the highest class waiting,
/// first in, first out within a class.
///
/// Ordered from most to least important, so `Critical < Normal` compares *more important first*;
/// use [`rank`](Self::rank) for an explicit index. Plain calls (`acquire`, `try_acquire`,
/// `submit`, …) are [`Normal`](Self::Normal).
///
/// # Examples
///
/// ```
/// use ace_core::Priority;
///
/// assert!(Priority::Critical < Priority::Normal);
/// assert_eq!(Priority::default(), Priority::Normal);
/// assert_eq!("sheddable".parse::<Priority>(), Ok(Priority::Sheddable));
/// assert_eq!(Priority::Critical.to_string(), "critical");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Served before everything else: health checks, checkouts, control traffic.
    Critical,
    /// The default class.
    #[default]
    Normal,
    /// Served last and refused first: batch work, prefetches, retries.
    Sheddable,
}

impl Priority {
    /// Every class, most important first.
    pub const ALL: [Priority; CLASSES] =
        [Priority::Critical, Priority::Normal, Priority::Sheddable];

    /// The class's index in [`ALL`](Self::ALL): 0 is the most important.
    #[inline]
    pub const fn rank(self) -> usize {
        self as usize
    }

    /// The class's name, lowercase (`"critical"`, `"normal"`, `"sheddable"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Sheddable => "sheddable",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Priority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParsePriorityError;

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown priority (expected critical, normal or sheddable)")
    }
}

impl core::error::Error for ParsePriorityError {}

impl core::str::FromStr for Priority {
    type Err = ParsePriorityError;

    /// Parses a class name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(ParsePriorityError)
    }
}

/// Guaranteed shares of the limit, in percent per class (Netflix concurrency-limits'
/// partitions): while a class holds fewer permits than its share and waits, it is served before
/// any class that holds its own share or more, whatever their priority.
///
/// So a flood of `Critical` work cannot starve `Normal` work that has a share, and `Sheddable`
/// work with no share is only served when nobody above it waits. A share is a serving order, not
/// a reservation: nothing is taken from permits in use, and an idle share is used by others.
/// The guaranteed count is `max(1, ⌊limit × percent / 100⌋)` for a nonzero share.
///
/// # Examples
///
/// ```
/// use ace_core::{Priority, Semaphore, Shares};
///
/// let shares = Shares::new().with(Priority::Normal, 30);
/// assert_eq!(shares.percent(Priority::Normal), 30);
/// assert_eq!(shares.guaranteed(Priority::Normal, 10), 3);
/// assert_eq!(shares.guaranteed(Priority::Critical, 10), 0);
/// let sem = Semaphore::with_shares(10, shares);
/// assert_eq!(sem.shares(), shares);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shares {
    percent: [u8; CLASSES],
}

impl Shares {
    /// No class has a share: plain priority order.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            percent: [0; CLASSES],
        }
    }

    /// These shares, with `priority`'s set to `percent` of the limit.
    ///
    /// # Panics
    ///
    /// If the shares would add up to more than 100 %. [`try_with`](Self::try_with) returns an
    /// error instead.
    #[must_use]
    #[track_caller]
    pub const fn with(self, priority: Priority, percent: u8) -> Self {
        match self.try_with(priority, percent) {
            Ok(shares) => shares,
            Err(_) => panic!("the shares of the classes add up to more than 100 %"),
        }
    }

    /// [`with`](Self::with), or [`SharesError`] if the shares would add up to more than 100 %.
    ///
    /// # Errors
    ///
    /// [`SharesError`] if the total of the shares would exceed 100.
    pub const fn try_with(mut self, priority: Priority, percent: u8) -> Result<Self, SharesError> {
        self.percent[priority.rank()] = percent;
        let mut total: u32 = 0;
        let mut i = 0;
        while i < CLASSES {
            total += self.percent[i] as u32;
            i += 1;
        }
        if total > 100 {
            return Err(SharesError { total });
        }
        Ok(self)
    }

    /// `priority`'s share, in percent.
    #[inline]
    pub const fn percent(&self, priority: Priority) -> u8 {
        self.percent[priority.rank()]
    }

    /// True if some class has a share.
    #[inline]
    pub const fn is_set(&self) -> bool {
        let mut i = 0;
        while i < CLASSES {
            if self.percent[i] != 0 {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The permits `priority` may always use under `limit`: `max(1, ⌊limit × percent / 100⌋)`
    /// for a nonzero share (so a small limit still guarantees one), 0 otherwise.
    #[inline]
    pub const fn guaranteed(&self, priority: Priority, limit: usize) -> usize {
        self.guaranteed_rank(priority.rank(), limit)
    }

    #[inline]
    pub(super) const fn guaranteed_rank(&self, rank: usize, limit: usize) -> usize {
        let percent = self.percent[rank] as usize;
        if percent == 0 || limit == 0 {
            return 0;
        }
        // Divide first: limit ≤ MAX_PERMITS, so limit × 100 could overflow on 32-bit targets.
        let share = limit / 100 * percent + limit % 100 * percent / 100;
        if share == 0 {
            1
        } else {
            share
        }
    }
}

/// Shares that add up to more than 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharesError {
    /// The total the shares would add up to, in percent.
    pub total: u32,
}

impl fmt::Display for SharesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the shares of the classes add up to {} %, more than 100 %",
            self.total
        )
    }
}

impl core::error::Error for SharesError {}
