//! [`TaskEvent`]: what the `on_task_end` hook hears of each settled task.

use std::time::Duration;

use crate::key::Key;

/// How a task settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// It ran to completion.
    Completed,
    /// It panicked.
    Panicked,
    /// It was cancelled while running.
    Cancelled,
}

/// One settled task, as passed to
/// [`Builder::on_task_end`](crate::Builder::on_task_end): feed a metrics
/// facade from it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct TaskEvent<'a> {
    /// The key the task ran under, if any.
    pub key: Option<&'a Key>,
    /// Time from admission to start.
    pub queue_wait: Duration,
    /// Time from start to settling.
    pub run_time: Duration,
    /// How it settled.
    pub outcome: TaskOutcome,
}

pub(crate) type Hook = Box<dyn Fn(&TaskEvent<'_>) + Send + Sync>;
