//! [`Pool`]: the handle everything goes through.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::builder::Builder;
use crate::error::{Closed, SubmitError, TryReserveError, TrySubmitError};
use crate::group::{Group, GroupGuard, GroupInner};
use crate::handle::TaskHandle;
use crate::key::Key;
use crate::permit::Permit;
use crate::shared::Shared;
use crate::shutdown::{ShutdownReport, Unstarted};
use crate::slot::Slot;
use crate::state::Refusal;
use crate::stats::Stats;
use crate::task::{Detached, Reply, Task, downcast};

/// A bounded async worker pool. Cheap to clone: clones share one pool, and
/// when the last clone (or [`Group`]) is dropped the pool closes, lets what
/// it holds finish, and frees everything.
///
/// A task is any `T: IntoFuture + Send + 'static` — an `async` block, or a
/// type of yours that a deadline shutdown can hand back (see [`Unstarted`]).
///
/// | call | waits for room | returns |
/// |---|---|---|
/// | [`submit`](Pool::submit) | yes | a [`TaskHandle`] to the output |
/// | [`try_submit`](Pool::try_submit) | no: `Full` hands the task back | a [`TaskHandle`] |
/// | [`execute`](Pool::execute) | yes | nothing (fire and forget, no handle allocated) |
/// | [`try_execute`](Pool::try_execute) | no | nothing |
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = sluice_pool::Pool::new(3);
/// let mut handles = Vec::new();
/// for n in 0..10u64 {
///     handles.push(pool.submit(async move { n * n }).await.unwrap());
/// }
/// let mut sum = 0;
/// for h in handles {
///     sum += h.await.unwrap();
/// }
/// assert_eq!(sum, 285);
/// pool.join().await;
/// # }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool running at most `concurrency` tasks at once, with a wait queue
    /// as long, on the current tokio runtime. See [`Pool::builder`] for more.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[track_caller]
    pub fn new(concurrency: usize) -> Pool {
        Builder::default().concurrency(concurrency).build()
    }

    /// Configure a pool: queue capacity, pacing, per-key limits, hooks.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Pool {
        Pool { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn via(&self) -> Via<'_> {
        Via::new(&self.shared, None, None)
    }

    /// Submits a task, waiting while the pool is full. The handle resolves to
    /// the task's output. Refused (with the task handed back) only when the
    /// pool is closed. Dropping this future before it resolves drops the task
    /// unsubmitted.
    pub async fn submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().submit(task).await
    }

    /// Submits a task if there is room now; otherwise hands it straight back.
    pub fn try_submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_submit(task)
    }

    /// Like [`submit`](Pool::submit), without a handle: nothing is allocated
    /// for the output, which is dropped. Panics are still caught and counted.
    pub async fn execute<T>(&self, task: T) -> Result<(), SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().execute(task).await
    }

    /// Like [`try_submit`](Pool::try_submit), without a handle.
    pub fn try_execute<T>(&self, task: T) -> Result<(), TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_execute(task)
    }

    /// Reserves a place for a task not made yet, waiting for one; spending
    /// the [`Permit`] never waits. Cancel-safe: dropped while waiting, it
    /// reserves nothing. Fails only once the pool is closed.
    ///
    /// A place is a running slot or room in the queue: running, queued and
    /// reserved together stay within `concurrency + queue_capacity`, and
    /// other submissions wait (or are `Full`) rather than take a reserved
    /// place.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sluice_pool::{Pool, TryReserveError};
    ///
    /// let pool = Pool::builder().concurrency(1).queue_capacity(1).build();
    /// let first = pool.reserve().await.unwrap();
    /// let second = pool.try_reserve().unwrap();
    /// assert_eq!(pool.try_reserve().unwrap_err(), TryReserveError::Full);
    /// assert!(pool.try_execute(async {}).unwrap_err().is_full()); // reserved
    /// drop(second); // unspent: its place is free again
    /// let h = first.submit(async { 6 * 7 }).unwrap(); // never waits
    /// assert_eq!(h.await.unwrap(), 42);
    /// # }
    /// ```
    pub async fn reserve(&self) -> Result<Permit, Closed> {
        match self.shared.reserve().await {
            Ok(()) => Ok(Permit::new(self.shared.clone())),
            Err(_) => Err(Closed),
        }
    }

    /// Reserves a place if one is free now.
    pub fn try_reserve(&self) -> Result<Permit, TryReserveError> {
        match self.shared.try_reserve() {
            Ok(()) => Ok(Permit::new(self.shared.clone())),
            Err(Refusal::Full) => Err(TryReserveError::Full),
            Err(Refusal::Closed) => Err(TryReserveError::Closed),
        }
    }

    /// Takes a running slot for work you run inline, in your own task,
    /// waiting for one (and for the pool's pace, if any); the [`Slot`] gives
    /// it back when dropped. Cancel-safe. Fails only once the pool is
    /// closed, waiting callers included. See [`Keyed::acquire`] for the same
    /// under a key's limits.
    pub async fn acquire(&self) -> Result<Slot, Closed> {
        self.shared.acquire(None).await
    }

    /// Submit under a [`Key`]'s limit (see [`Builder::per_key`]), e.g. the
    /// host a request goes to. A key at its limit never holds up other tasks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sluice_pool::{KeyLimit, Pool};
    ///
    /// let pool = Pool::builder().concurrency(100).per_key(KeyLimit::concurrency(2)).build();
    /// let h = pool.key("api.example.com").submit(async { "sent" }).await.unwrap();
    /// assert_eq!(h.await.unwrap(), "sent");
    /// # }
    /// ```
    pub fn key(&self, key: impl Into<Key>) -> Keyed<'_> {
        Keyed {
            pool: self,
            key: key.into(),
        }
    }

    /// A [`Group`] on this pool: wait for just the tasks you submit through it.
    pub fn group(&self) -> Group {
        Group::new(self.clone())
    }

    /// Changes the concurrency limit, from any thread or task. Growing starts
    /// waiting tasks at once; shrinking never interrupts a running task, it
    /// takes effect as tasks finish. `0` pauses the pool.
    pub fn resize(&self, concurrency: usize) {
        self.shared.resize(concurrency);
    }

    /// The current concurrency limit.
    pub fn capacity(&self) -> usize {
        self.shared.stats().capacity
    }

    /// A snapshot of the pool's gauges, counters and timings.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops intake: later submissions are refused with the task handed back,
    /// and blocked submitters get theirs back at once. Queued and running
    /// tasks carry on.
    pub fn close(&self) {
        self.shared.close();
    }

    /// True once the pool refuses new tasks.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the pool and waits until every task it holds has settled and
    /// every handle has its output.
    ///
    /// Do not await this from inside one of the pool's own tasks: it would
    /// wait for itself.
    pub async fn join(&self) {
        self.shared.close();
        self.shared.wait_idle().await;
    }

    /// Waits until nothing is running or queued, without closing the pool.
    pub async fn idle(&self) {
        self.shared.wait_idle().await;
    }

    /// Takes every task still waiting in the queue out of the pool, oldest
    /// first, unstarted. Running tasks carry on.
    pub fn take_queued(&self) -> Vec<Unstarted> {
        self.shared.take_queued()
    }

    /// Closes the pool and lets it drain for at most `timeout`; then cancels
    /// the tasks still running (dropping them at their next await) and hands
    /// back every task that never started. Every task either ran, was
    /// cancelled (counted), or comes back in the report.
    ///
    /// A task that never yields cannot be cancelled; shutdown waits for it.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.shared.shutdown(timeout).await
    }
}

impl Clone for Pool {
    fn clone(&self) -> Pool {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Pool")
            .field("capacity", &s.capacity)
            .field("running", &s.running)
            .field("queued", &s.queued)
            .field("closed", &s.closed)
            .finish_non_exhaustive()
    }
}

/// Submits tasks under one [`Key`]; see [`Pool::key`].
#[derive(Debug, Clone)]
pub struct Keyed<'a> {
    pool: &'a Pool,
    key: Key,
}

impl<'a> Keyed<'a> {
    fn via(&self) -> Via<'a> {
        let pool: &'a Pool = self.pool;
        Via::new(&pool.shared, Some(self.key.clone()), None)
    }

    /// The key these submissions go under.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Like [`Pool::submit`], under this key. The future borrows the pool,
    /// not this `Keyed`, so it may be stored.
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

    /// Like [`Pool::try_submit`], under this key.
    pub fn try_submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_submit(task)
    }

    /// Like [`Pool::execute`], under this key. The future borrows the pool,
    /// not this `Keyed`.
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

    /// Takes a running slot under this key's limits (concurrency and pace)
    /// for work you run inline, waiting for one: nothing is spawned. The
    /// key's queued tasks go first; waiting callers are woken one at a time
    /// as the key frees up, and sleep (no polling) while its pace holds them.
    /// Cancel-safe: dropped mid-wait, it holds nothing and hands any turn it
    /// was woken for to the next caller. Fails only once the pool is closed,
    /// waiting callers included.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sluice_pool::{KeyLimit, Pool};
    ///
    /// let pool = Pool::builder().concurrency(8).per_key(KeyLimit::concurrency(1)).build();
    /// async fn request(pool: &Pool, host: &str) -> Result<String, sluice_pool::Closed> {
    ///     let _slot = pool.key(host).acquire().await?; // at most 1 per host
    ///     Ok(format!("answer from {host}")) // the request, here, inline
    /// } // the slot is given back here, even if this future is dropped
    /// let (a, b) = tokio::join!(request(&pool, "a.example"), request(&pool, "a.example"));
    /// assert!(a.is_ok() && b.is_ok());
    /// assert_eq!(pool.stats().completed, 2);
    /// pool.close();
    /// assert!(request(&pool, "a.example").await.is_err());
    /// # }
    /// ```
    pub fn acquire(&self) -> impl Future<Output = Result<Slot, Closed>> + Send + use<'a> {
        let pool: &'a Pool = self.pool;
        let key = self.key.clone();
        async move { pool.shared.acquire(Some(key)).await }
    }

    /// Like [`Pool::try_execute`], under this key.
    pub fn try_execute<T>(&self, task: T) -> Result<(), TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        self.via().try_execute(task)
    }
}

/// One way into the pool: with or without a key and a group. Every public
/// submit method ends here.
pub(crate) struct Via<'a> {
    shared: &'a Arc<Shared>,
    key: Option<Key>,
    group: Option<&'a Arc<GroupInner>>,
}

impl<'a> Via<'a> {
    pub(crate) fn new(
        shared: &'a Arc<Shared>,
        key: Option<Key>,
        group: Option<&'a Arc<GroupInner>>,
    ) -> Via<'a> {
        Via { shared, key, group }
    }

    fn guard(&self) -> Option<GroupGuard> {
        self.group.map(GroupGuard::new)
    }

    pub(crate) async fn submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task::boxed(task, Reply(tx), self.guard());
        match self.shared.admit(self.key.clone(), task).await {
            Ok(()) => Ok(TaskHandle::new(rx)),
            Err(task) => Err(SubmitError(downcast(task))),
        }
    }

    pub(crate) fn try_submit<T>(&self, task: T) -> Result<TaskHandle<T::Output>, TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task::boxed(task, Reply(tx), self.guard());
        match self.shared.try_admit(self.key.clone(), task, false) {
            Ok(()) => Ok(TaskHandle::new(rx)),
            Err((task, why)) => Err(refused(downcast(task), why)),
        }
    }

    pub(crate) async fn execute<T>(&self, task: T) -> Result<(), SubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let task = Task::boxed(task, Detached, self.guard());
        self.shared
            .admit(self.key.clone(), task)
            .await
            .map_err(|task| SubmitError(downcast(task)))
    }

    pub(crate) fn try_execute<T>(&self, task: T) -> Result<(), TrySubmitError<T>>
    where
        T: IntoFuture + Send + 'static,
        T::IntoFuture: Send,
        T::Output: Send + 'static,
    {
        let task = Task::boxed(task, Detached, self.guard());
        self.shared
            .try_admit(self.key.clone(), task, false)
            .map_err(|(task, why)| refused(downcast(task), why))
    }
}

fn refused<T>(task: T, why: Refusal) -> TrySubmitError<T> {
    match why {
        Refusal::Full => TrySubmitError::Full(task),
        Refusal::Closed => TrySubmitError::Closed(task),
    }
}
