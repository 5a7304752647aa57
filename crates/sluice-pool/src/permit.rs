//! [`Permit`]: a place in the pool, reserved before the task exists.

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;

use crate::error::SubmitError;
use crate::handle::TaskHandle;
use crate::key::Key;
use crate::shared::Shared;
use crate::task::{Detached, Reply, Task, downcast};

/// One place in the pool, taken by [`Pool::reserve`](crate::Pool::reserve)
/// or [`Pool::try_reserve`](crate::Pool::try_reserve) before the task
/// exists: spending it never waits. Dropped unspent, it gives the place
/// back.
///
/// The pattern it serves: a queue consumer takes N permits, asks its broker
/// for at most N messages, and spends one per message, so it never holds a
/// message it has no room to run (as tokio's `Sender::reserve` or tower's
/// `poll_ready`).
///
/// Running, queued and reserved together stay within the pool's
/// `concurrency + queue_capacity`: with a queue capacity of 0, at most
/// `concurrency` permits and tasks exist at once. A permit spent on a task
/// that cannot start yet (no free slot, or its key at its limit) queues it
/// in the reserved place, past the queue's capacity.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sluice_pool::Pool;
///
/// let pool = Pool::builder().concurrency(4).queue_capacity(0).build();
/// let mut permits = vec![pool.reserve().await.unwrap()];
/// while let Ok(p) = pool.try_reserve() {
///     permits.push(p);
/// }
/// assert_eq!(permits.len(), 4); // room for exactly four
/// let messages = vec!["a", "b", "c"]; // ask the broker for up to 4
/// for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
///     permit.execute(async move { let _ = m; }).unwrap();
/// }
/// pool.join().await;
/// assert_eq!(pool.stats().completed, 3);
/// # }
/// ```
pub struct Permit {
    shared: Option<Arc<Shared>>,
}

impl Permit {
    pub(crate) fn new(shared: Arc<Shared>) -> Permit {
        Permit {
            shared: Some(shared),
        }
    }

    fn spend(&mut self) -> Arc<Shared> {
        self.shared.take().expect("a permit is spent once")
    }

    /// Runs `task` in the reserved place: at once if a slot is free, else
    /// first in line. Refused, the task handed back, only if the pool was
    /// closed since the reservation.
    pub fn execute<T>(mut self, task: T) -> Result<(), SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let task = Task::boxed(task, Detached, None);
        self.spend()
            .admit_reserved(None, task)
            .map_err(|t| SubmitError(downcast(t)))
    }

    /// Like [`execute`](Permit::execute), under `key`'s limit: if the key is
    /// at its limit the task waits for it, in the place reserved, behind the
    /// key's earlier tasks.
    pub fn execute_keyed<T>(mut self, key: impl Into<Key>, task: T) -> Result<(), SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let task = Task::boxed(task, Detached, None);
        self.spend()
            .admit_reserved(Some(key.into()), task)
            .map_err(|t| SubmitError(downcast(t)))
    }

    /// Like [`execute`](Permit::execute), with a handle to the output.
    pub fn submit<T>(mut self, task: T) -> Result<TaskHandle<T::Output>, SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = Task::boxed(task, Reply(tx), None);
        match self.spend().admit_reserved(None, task) {
            Ok(()) => Ok(TaskHandle::new(rx)),
            Err(t) => Err(SubmitError(downcast(t))),
        }
    }

    /// Like [`submit`](Permit::submit), under `key`'s limit, as
    /// [`execute_keyed`](Permit::execute_keyed).
    pub fn submit_keyed<T>(
        mut self,
        key: impl Into<Key>,
        task: T,
    ) -> Result<TaskHandle<T::Output>, SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = Task::boxed(task, Reply(tx), None);
        match self.spend().admit_reserved(Some(key.into()), task) {
            Ok(()) => Ok(TaskHandle::new(rx)),
            Err(t) => Err(SubmitError(downcast(t))),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.unreserve();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}
