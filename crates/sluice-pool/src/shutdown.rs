//! What a deadline shutdown gives back: [`ShutdownReport`] and [`Unstarted`].

use std::any::TypeId;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::key::Key;
use crate::task::{BoxTask, CatchUnwind, RawTask, downcast};

/// A task the pool admitted but never started, handed back so the caller can
/// put its work back where it came from (release a queue message, say), run
/// it elsewhere, or drop it. Nothing is lost silently.
///
/// Submit a type of your own (any `T: IntoFuture`) and [`downcast`] gets the
/// very value back:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::future::{IntoFuture, Ready, ready};
/// use std::time::Duration;
///
/// struct Delivery { message_id: u32 }
/// impl IntoFuture for Delivery {
///     type Output = ();
///     type IntoFuture = Ready<()>;
///     fn into_future(self) -> Ready<()> { ready(()) }
/// }
///
/// let pool = sluice_pool::Pool::builder().concurrency(1).queue_capacity(10).build();
/// pool.resize(0); // nothing may start: everything stays queued
/// pool.execute(Delivery { message_id: 7 }).await.unwrap();
/// let report = pool.shutdown(Duration::ZERO).await;
/// let back: Delivery = report.unstarted.into_iter().next().unwrap().downcast().ok().unwrap();
/// assert_eq!(back.message_id, 7);
/// # }
/// ```
///
/// [`downcast`]: Unstarted::downcast
pub struct Unstarted {
    task: BoxTask,
    key: Option<Key>,
}

impl Unstarted {
    pub(crate) fn new(task: BoxTask, key: Option<Key>) -> Unstarted {
        Unstarted { task, key }
    }

    /// The key the task was submitted under, if any.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// True if the task was submitted as a value of type `T`.
    pub fn is<T: 'static>(&self) -> bool {
        self.task.submitted_type() == TypeId::of::<T>()
    }

    /// The submitted value back, if it was a `T`; otherwise `self` unchanged.
    /// Its [`TaskHandle`](crate::TaskHandle), if any, resolves to
    /// [`Cancelled`](crate::TaskError::Cancelled).
    pub fn downcast<T: 'static>(self) -> Result<T, Unstarted> {
        if self.is::<T>() {
            Ok(downcast(self.task))
        } else {
            Err(self)
        }
    }

    /// Runs the task here, outside any pool. Its output still goes to its
    /// handle; a panic is caught and reported there, as in the pool.
    pub fn run(self) -> RunUnstarted {
        RunUnstarted {
            task: Box::into_pin(self.task),
            done: false,
        }
    }
}

impl fmt::Debug for Unstarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unstarted")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Future returned by [`Unstarted::run`].
#[must_use = "futures do nothing unless polled"]
pub struct RunUnstarted {
    task: Pin<Box<dyn RawTask>>,
    done: bool,
}

impl fmt::Debug for RunUnstarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunUnstarted")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Future for RunUnstarted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let res = {
            let mut guarded = CatchUnwind {
                task: self.task.as_mut(),
            };
            ready!(Pin::new(&mut guarded).poll(cx))
        };
        if let Err(payload) = res {
            self.task.as_mut().set_panicked(payload);
        }
        self.task.as_mut().deliver();
        self.done = true;
        Poll::Ready(())
    }
}

/// What [`Pool::shutdown`](crate::Pool::shutdown) did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// True when everything finished before the deadline.
    pub drained: bool,
    /// Tasks that never started, oldest first: yours to put back.
    pub unstarted: Vec<Unstarted>,
    /// Tasks that were running at the deadline and were cancelled.
    pub cancelled: u64,
}
