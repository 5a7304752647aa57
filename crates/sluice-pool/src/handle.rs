//! [`TaskHandle`]: the result of a submitted task.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;

/// Resolves to a task's output, or to why there is none.
///
/// Dropping a handle detaches it: the task still runs, its output is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = sluice_pool::Pool::new(2);
/// let handle = pool.submit(async { 6 * 7 }).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 42);
/// # }
/// ```
#[must_use = "a handle does nothing unless awaited; drop it to detach the task"]
pub struct TaskHandle<O> {
    rx: oneshot::Receiver<Result<O, TaskError>>,
}

impl<O> TaskHandle<O> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<O, TaskError>>) -> TaskHandle<O> {
        TaskHandle { rx }
    }
}

impl<O> fmt::Debug for TaskHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle").finish_non_exhaustive()
    }
}

impl<O> Future for TaskHandle<O> {
    type Output = Result<O, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(Pin::new(&mut self.rx).poll(cx));
        // The sender goes away without a word only when the task was dropped
        // unfinished: cancelled at a shutdown deadline, handed back unstarted,
        // or lost with its runtime.
        Poll::Ready(res.unwrap_or(Err(TaskError::Cancelled)))
    }
}

/// Why a task has no output.
pub enum TaskError {
    /// The task panicked; the payload is what it panicked with. The pool and
    /// its other tasks are unaffected.
    Panicked(Box<dyn Any + Send>),
    /// The task was dropped before it finished: cancelled at a shutdown
    /// deadline, handed back to the caller unstarted, or its runtime shut down.
    Cancelled,
}

impl TaskError {
    /// True if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// True if the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// The panic's message, when it was a string (as `panic!` makes).
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            TaskError::Panicked(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            TaskError::Cancelled => None,
        }
    }

    /// The panic payload, to resume the panic with
    /// [`std::panic::resume_unwind`]; gives the error back if it was no panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, TaskError> {
        match self {
            TaskError::Panicked(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or("<non-string payload>"))
                .finish(),
            TaskError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(_) => match self.panic_message() {
                Some(msg) => write!(f, "task panicked: {msg}"),
                None => f.write_str("task panicked"),
            },
            TaskError::Cancelled => f.write_str("task was cancelled before it finished"),
        }
    }
}

impl std::error::Error for TaskError {}
