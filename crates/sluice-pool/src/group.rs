//! [`Group`]: wait for a batch of tasks without closing the pool.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::error::{SubmitError, TrySubmitError};
use crate::handle::TaskHandle;
use crate::key::Key;
use crate::pool::{Pool, Via};

/// A wait group over a [`Pool`]: tasks submitted through it run on the pool
/// as any other, and [`wait`](Group::wait) returns once every one of them has
/// settled (finished, panicked, or been cancelled or handed back). The pool
/// stays open for other work.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let pool = sluice_pool::Pool::new(3);
/// let sent = Arc::new(AtomicUsize::new(0));
/// let batch = pool.group();
/// for _ in 0..100 {
///     let sent = sent.clone();
///     batch.execute(async move { sent.fetch_add(1, Ordering::Relaxed); }).await.unwrap();
/// }
/// batch.wait().await;
/// assert_eq!(sent.load(Ordering::Relaxed), 100);
/// assert!(!pool.is_closed());
/// # }
/// ```
#[derive(Clone)]
pub struct Group {
    pool: Pool,
    inner: Arc<GroupInner>,
}

#[derive(Debug, Default)]
pub(crate) struct GroupInner {
    pending: AtomicUsize,
    settled: Notify,
}

/// Held by each task of a group; dropping it marks the task settled.
#[derive(Debug)]
pub(crate) struct GroupGuard(Arc<GroupInner>);

impl GroupGuard {
    pub(crate) fn new(inner: &Arc<GroupInner>) -> GroupGuard {
        inner.pending.fetch_add(1, Ordering::SeqCst);
        GroupGuard(inner.clone())
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Group {
    pub(crate) fn new(pool: Pool) -> Group {
        Group {
            pool,
            inner: Arc::default(),
        }
    }

    fn via(&self) -> Via<'_> {
        Via::new(self.pool.shared(), None, Some(&self.inner))
    }

    /// Like [`Pool::submit`], counted in this group.
    pub async fn submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().submit(task).await
    }

    /// Like [`Pool::try_submit`], counted in this group.
    pub fn try_submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_submit(task)
    }

    /// Like [`Pool::execute`], counted in this group.
    pub async fn execute<T>(&self, task: T) -> Result<(), SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().execute(task).await
    }

    /// Like [`Pool::try_execute`], counted in this group.
    pub fn try_execute<T>(&self, task: T) -> Result<(), TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_execute(task)
    }

    /// Submit under a [`Key`]'s limit, counted in this group.
    pub fn key(&self, key: impl Into<Key>) -> GroupKeyed<'_> {
        GroupKeyed {
            group: self,
            key: key.into(),
        }
    }

    /// How many of this group's tasks have not settled yet.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// Waits until every task submitted through this group so far has settled.
    /// Returns at once for an empty group. Handles of the group's tasks are
    /// resolved by the time this returns.
    pub async fn wait(&self) {
        loop {
            let settled = self.inner.settled.notified();
            let mut settled = std::pin::pin!(settled);
            settled.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            settled.await;
        }
    }

    /// The pool this group submits to.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// Submits tasks under one [`Key`], counted in a [`Group`]; see [`Group::key`].
#[derive(Debug, Clone)]
pub struct GroupKeyed<'a> {
    group: &'a Group,
    key: Key,
}

impl<'a> GroupKeyed<'a> {
    fn via(&self) -> Via<'a> {
        let group: &'a Group = self.group;
        Via::new(
            group.pool.shared(),
            Some(self.key.clone()),
            Some(&group.inner),
        )
    }

    /// Like [`Pool::submit`], under this key, counted in the group.
    pub fn submit<T>(
        &self,
        task: T,
    ) -> impl Future<Output = Result<TaskHandle<T::Output>, SubmitError<T>>> + Send + use<'a, T>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let via = self.via();
        async move { via.submit(task).await }
    }

    /// Like [`Pool::try_submit`], under this key, counted in the group.
    pub fn try_submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_submit(task)
    }

    /// Like [`Pool::execute`], under this key, counted in the group.
    pub fn execute<T>(
        &self,
        task: T,
    ) -> impl Future<Output = Result<(), SubmitError<T>>> + Send + use<'a, T>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let via = self.via();
        async move { via.execute(task).await }
    }

    /// Like [`Pool::try_execute`], under this key, counted in the group.
    pub fn try_execute<T>(&self, task: T) -> Result<(), TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_execute(task)
    }
}
