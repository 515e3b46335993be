//! The pool's queue: one channel per [`Priority`], taken most important first (first in, first
//! out within a class).
//!
//! A pool fed only plain (`Normal`) jobs pays one empty check of the `Critical` channel per job
//! taken; the blocking wait selects over every channel.

use std::time::Duration;

use ace_core::Priority;
use crossbeam_channel::{Receiver, Select, SendError, Sender, TrySendError};

use super::job::BoxTask;

const CLASSES: usize = Priority::ALL.len();

/// What a blocked worker woke for.
pub(super) enum Woke {
    /// A job arrived in some class (another worker may take it first).
    Work,
    /// The stop channel closed.
    Stop,
    /// Nothing for the timeout.
    Idle,
}

pub(super) struct Lanes {
    tx: [Sender<BoxTask>; CLASSES],
    rx: [Receiver<BoxTask>; CLASSES],
}

impl Lanes {
    /// `capacity` jobs per class (`None`: unbounded).
    pub(super) fn new(capacity: Option<usize>) -> Self {
        let channels: [_; CLASSES] = std::array::from_fn(|_| match capacity {
            // A rendezvous channel (capacity 0) would never show demand to `ensure_workers`.
            Some(n) => crossbeam_channel::bounded(n.max(1)),
            None => crossbeam_channel::unbounded(),
        });
        let tx = std::array::from_fn(|i| channels[i].0.clone());
        let rx = channels.map(|(_, rx)| rx);
        Self { tx, rx }
    }

    /// Queues `task` in `priority`, blocking while its class is full.
    pub(super) fn send(&self, priority: Priority, task: BoxTask) -> Result<(), SendError<BoxTask>> {
        self.tx[priority.rank()].send(task)
    }

    /// Queues `task` in `priority` if its class has room.
    pub(super) fn try_send(
        &self,
        priority: Priority,
        task: BoxTask,
    ) -> Result<(), TrySendError<BoxTask>> {
        self.tx[priority.rank()].try_send(task)
    }

    /// The next job, from the most important class that has one.
    pub(super) fn try_recv(&self) -> Option<BoxTask> {
        self.rx.iter().find_map(|rx| rx.try_recv().ok())
    }

    /// Jobs queued, every class.
    pub(super) fn len(&self) -> usize {
        self.rx.iter().map(Receiver::len).sum()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rx.iter().all(Receiver::is_empty)
    }

    /// Every job queued now, most important class first.
    pub(super) fn drain(&self) -> impl Iterator<Item = BoxTask> + '_ {
        self.rx.iter().flat_map(Receiver::try_iter)
    }

    /// Blocks until a job is queued in any class, `stop` closes, or `timeout` passes; takes
    /// nothing (the caller takes the most important job with [`try_recv`](Self::try_recv)).
    pub(super) fn wait(&self, stop: &Receiver<()>, timeout: Duration) -> Woke {
        let mut select = Select::new();
        for rx in &self.rx {
            select.recv(rx);
        }
        let stop_index = select.recv(stop);
        match select.ready_timeout(timeout) {
            Ok(i) if i == stop_index => Woke::Stop,
            Ok(_) => Woke::Work,
            Err(_) => Woke::Idle,
        }
    }
}
