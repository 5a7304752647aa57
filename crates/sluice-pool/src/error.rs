//! Submission errors. Each hands the task back: a task is never dropped.

use std::fmt;

/// [`submit`](crate::Pool::submit) failed because the pool is closed; the task
/// is handed back, never dropped.
pub struct SubmitError<T>(pub T);

impl<T> SubmitError<T> {
    /// The task that was not submitted.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the pool is closed; the task was handed back unsubmitted")
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// [`try_submit`](crate::Pool::try_submit) could not take the task now; the
/// task is handed back, never dropped.
pub enum TrySubmitError<T> {
    /// Every slot is busy and the wait queue is full (or the task's key is at
    /// its limit and the queue is full). Try later, or use `submit` to wait.
    Full(T),
    /// The pool is closed and takes no more tasks.
    Closed(T),
}

impl<T> TrySubmitError<T> {
    /// The task that was not submitted.
    pub fn into_inner(self) -> T {
        match self {
            TrySubmitError::Full(t) | TrySubmitError::Closed(t) => t,
        }
    }

    /// True when the pool was full (rather than closed).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySubmitError::Full(_))
    }

    /// True when the pool was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySubmitError::Closed(_))
    }
}

impl<T> fmt::Debug for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str(
                "every slot is busy and the wait queue is full; the task was handed back \
                 (retry later, or use submit to wait for room)",
            ),
            TrySubmitError::Closed(_) => {
                f.write_str("the pool is closed; the task was handed back unsubmitted")
            }
        }
    }
}

impl<T> std::error::Error for TrySubmitError<T> {}

/// The pool is closed: no place can be reserved or slot taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the pool is closed")
    }
}

impl std::error::Error for Closed {}

/// [`try_reserve`](crate::Pool::try_reserve) found no place now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryReserveError {
    /// Every place is taken (running, waiting or reserved).
    Full,
    /// The pool is closed.
    Closed,
}

impl fmt::Display for TryReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryReserveError::Full => f.write_str("every place in the pool is taken"),
            TryReserveError::Closed => f.write_str("the pool is closed"),
        }
    }
}

impl std::error::Error for TryReserveError {}
