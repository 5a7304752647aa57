//! What waits inside the pool: a task not yet handed to a worker.

use std::fmt;
use std::time::Instant;

use crate::key::Key;
use crate::task::BoxTask;

/// A task admitted to the pool and waiting for a worker.
pub(crate) struct Queued {
    pub(crate) task: BoxTask,
    pub(crate) key: Option<Key>,
    pub(crate) queued_at: Instant,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("key", &self.key)
            .field("queued_at", &self.queued_at)
            .finish_non_exhaustive()
    }
}

/// One entry of the ready queue: a task that may start as soon as a worker
/// takes it, or a turn for a key whose oldest waiting task may start.
///
/// Keys take turns rather than queueing each task here, so a key at its limit
/// never blocks the tasks behind it, and busy keys share the pool round-robin.
#[derive(Debug)]
pub(crate) enum Entry {
    Task(Queued),
    Key(Key),
}
