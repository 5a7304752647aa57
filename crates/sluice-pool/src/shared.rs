//! What every handle, worker and timer of one pool shares: the locked
//! [`State`], the runtime to spawn on, and the wake-ups around them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::event::{Hook, TaskEvent};
use crate::key::Key;
use crate::queue::Queued;
use crate::shutdown::{ShutdownReport, Unstarted};
use crate::state::{Acquire, Refusal, Spawns, State};
use crate::stats::Stats;
use crate::task::BoxTask;
use crate::worker::{Started, Worker};

pub(crate) struct Shared {
    state: Mutex<State>,
    runtime: Handle,
    /// Room for a submission may have appeared.
    space: Notify,
    /// The pool became idle: nothing running, nothing queued.
    idle: Notify,
    /// Submitters blocked in `submit`; completions skip the notify when zero.
    waiting_submitters: AtomicUsize,
    /// Callers waiting in `reserve`: completions wake them whenever a place
    /// frees, not only when the queue has drained to half.
    waiting_reservers: AtomicUsize,
    /// Of those, submitters of keyed tasks: they may need a specific key's
    /// slot, so they are all woken rather than one.
    waiting_keyed: AtomicUsize,
    /// Set once, at a shutdown deadline: every worker stops at its next poll.
    pub(crate) cancel: AtomicBool,
    /// Live `Pool` handles (groups hold one); the last one closes the pool.
    pub(crate) handles: AtomicUsize,
    on_task_end: Option<Hook>,
}

impl Shared {
    pub(crate) fn new(state: State, runtime: Handle, on_task_end: Option<Hook>) -> Shared {
        Shared {
            state: Mutex::new(state),
            runtime,
            space: Notify::new(),
            idle: Notify::new(),
            waiting_submitters: AtomicUsize::new(0),
            waiting_keyed: AtomicUsize::new(0),
            waiting_reservers: AtomicUsize::new(0),
            cancel: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
            on_task_end,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so it cannot be poisoned by one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then spawns what it booked, unlocked.
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        let spawns = (!st.spawns.is_empty()).then(|| std::mem::take(&mut st.spawns));
        drop(st);
        if let Some(spawns) = spawns {
            self.launch(spawns);
        }
        r
    }

    fn launch(self: &Arc<Self>, spawns: Spawns) {
        for spec in spawns.workers {
            let worker = Worker::new(self.clone(), spec.id, spec.first);
            // Detached: the worker settles its own bookkeeping, even if the
            // runtime drops it unpolled.
            drop(self.runtime.spawn(worker.into_future(spec.ctl)));
        }
        for (key, at) in spawns.key_timers {
            let shared = Arc::downgrade(self);
            drop(self.runtime.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = shared.upgrade() {
                    shared.with(|st| st.key_timer_fired(&key));
                    // A worker may now be on its way for a queued task.
                    shared.signal_space();
                }
            }));
        }
    }

    pub(crate) fn try_admit(
        self: &Arc<Self>,
        key: Option<Key>,
        task: BoxTask,
        waits: bool,
    ) -> Result<(), (BoxTask, Refusal)> {
        let q = Queued {
            task,
            key,
            queued_at: Instant::now(),
        };
        self.with(|st| st.admit(q, waits))
            .map_err(|(q, why)| (q.task, why))
    }

    /// Admits a task, waiting for room; refuses only when closed.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        key: Option<Key>,
        task: BoxTask,
    ) -> Result<(), BoxTask> {
        // Fast path: no bookkeeping of waiters when there is room.
        let mut task = match self.try_admit(key.clone(), task, true) {
            Ok(()) => return Ok(()),
            Err((task, Refusal::Closed)) => return Err(task),
            Err((task, Refusal::Full)) => task,
        };
        let _waiting = WaitingSubmitter::new(self, key.is_some());
        loop {
            let space = self.space.notified();
            let mut space = std::pin::pin!(space);
            // Registered before the retry: room that appears after it wakes us.
            space.as_mut().enable();
            task = match self.try_admit(key.clone(), task, true) {
                Ok(()) => return Ok(()),
                Err((task, Refusal::Closed)) => return Err(task),
                Err((task, Refusal::Full)) => task,
            };
            space.await;
        }
    }

    /// Takes a place for a permit if one is free now.
    pub(crate) fn try_reserve(self: &Arc<Self>) -> Result<(), Refusal> {
        self.with(State::reserve)
    }

    /// Takes a place for a permit, waiting for one; refuses only when closed.
    pub(crate) async fn reserve(self: &Arc<Self>) -> Result<(), Refusal> {
        match self.try_reserve() {
            Err(Refusal::Full) => {}
            r => return r,
        }
        let _waiting = WaitingSubmitter::new(self, false);
        self.waiting_reservers.fetch_add(1, Ordering::SeqCst);
        let _reserver = Decrement(&self.waiting_reservers);
        loop {
            let space = self.space.notified();
            let mut space = std::pin::pin!(space);
            space.as_mut().enable();
            match self.try_reserve() {
                Err(Refusal::Full) => {}
                r => return r,
            }
            space.await;
        }
    }

    /// An unspent permit gives its place back.
    pub(crate) fn unreserve(self: &Arc<Self>) {
        self.with(State::unreserve);
        self.signal_space();
    }

    /// Spends a permit on `task`.
    pub(crate) fn admit_reserved(
        self: &Arc<Self>,
        key: Option<Key>,
        task: BoxTask,
    ) -> Result<(), BoxTask> {
        let q = Queued {
            task,
            key,
            queued_at: Instant::now(),
        };
        self.with(|st| st.admit_reserved(q))
            .map_err(|(q, _)| q.task)
    }

    /// Takes a running slot for inline work, waiting for one (and for the
    /// key's limits); refuses only when closed.
    pub(crate) async fn acquire(self: &Arc<Self>, key: Option<&Key>) -> Result<(), Refusal> {
        let mut waiting = None;
        let mut on_key = KeyWait {
            shared: self,
            key,
            registered: false,
        };
        loop {
            let space = self.space.notified();
            let mut space = std::pin::pin!(space);
            space.as_mut().enable();
            let returning = std::mem::take(&mut on_key.registered);
            match self.with(|st| st.try_acquire(key, returning)) {
                Ok(()) => return Ok(()),
                Err(Acquire::Closed) => return Err(Refusal::Closed),
                Err(Acquire::Busy) => {
                    waiting.get_or_insert_with(|| WaitingSubmitter::new(self, false));
                    space.await;
                }
                Err(Acquire::KeyBusy(wake)) => {
                    // Woken one at a time by the key's settlements; a wake
                    // that reaches a dropped waiter passes to the next.
                    on_key.registered = true;
                    wake.notified().await;
                }
                Err(Acquire::PacedUntil(at)) => {
                    waiting.get_or_insert_with(|| WaitingSubmitter::new(self, false));
                    // Whichever comes first: the pace allows a start, or a
                    // settlement frees something.
                    let sleep = tokio::time::sleep_until(at);
                    let mut sleep = std::pin::pin!(sleep);
                    std::future::poll_fn(|cx| {
                        use std::future::Future;
                        if sleep.as_mut().poll(cx).is_ready() || space.as_mut().poll(cx).is_ready()
                        {
                            std::task::Poll::Ready(())
                        } else {
                            std::task::Poll::Pending
                        }
                    })
                    .await;
                }
            }
        }
    }

    /// A slot taken by `acquire` at `started` is given back.
    pub(crate) fn release_acquired(self: &Arc<Self>, key: Option<&Key>, started: Instant) {
        let idle = self.with(|st| {
            st.release_acquired(key, started);
            st.is_idle()
        });
        self.signal_space();
        self.signal_idle(idle);
    }

    /// Wakes blocked submitters, if any, after room may have appeared.
    pub(crate) fn signal_space(&self) {
        if self.waiting_submitters.load(Ordering::SeqCst) > 0 {
            if self.waiting_keyed.load(Ordering::SeqCst) > 0 {
                self.space.notify_waiters();
            } else {
                self.space.notify_one();
            }
        }
    }

    fn signal_idle(&self, idle: bool) {
        if idle {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn first_pop(self: &Arc<Self>, id: usize) -> Option<Started> {
        let (next, idle) = self.with(|st| {
            let next = st.first_pop(id);
            (next, st.is_idle())
        });
        if next.is_none() {
            self.signal_space();
            self.signal_idle(idle);
        }
        next
    }

    /// Settles a task that ran; returns the worker's next task, and whether
    /// blocked submitters should be woken.
    pub(crate) fn finish(
        self: &Arc<Self>,
        key: Option<&Key>,
        panicked: bool,
        started_at: Instant,
        ended: Instant,
    ) -> (Option<Started>, bool) {
        let reservers = self.waiting_reservers.load(Ordering::SeqCst) > 0;
        self.with(|st| {
            let next = st.finish(key, panicked, started_at, ended);
            (next, st.wants_submissions() || (reservers && st.has_room()))
        })
    }

    pub(crate) fn release_slot(self: &Arc<Self>, id: usize) {
        let idle = self.with(|st| {
            st.release_slot(id);
            st.is_idle()
        });
        self.signal_space();
        self.signal_idle(idle);
    }

    pub(crate) fn worker_dropped(
        self: &Arc<Self>,
        id: usize,
        pending_pop: bool,
        unstarted: Option<Started>,
        cancelled: Option<(Option<&Key>, Duration)>,
    ) {
        let idle = self.with(|st| {
            st.worker_dropped(id, pending_pop, unstarted, cancelled);
            st.is_idle()
        });
        self.signal_space();
        self.signal_idle(idle);
    }

    pub(crate) fn task_ended(&self, event: &TaskEvent<'_>) {
        if let Some(hook) = &self.on_task_end {
            hook(event);
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    pub(crate) fn close(self: &Arc<Self>) {
        self.with(State::close);
        self.space.notify_waiters();
    }

    pub(crate) fn resize(self: &Arc<Self>, capacity: usize) {
        self.with(|st| st.resize(capacity));
        self.space.notify_waiters();
    }

    pub(crate) fn take_queued(self: &Arc<Self>) -> Vec<Unstarted> {
        let (taken, idle) = self.with(|st| {
            let taken = st.take_queued();
            (taken, st.is_idle())
        });
        self.space.notify_waiters();
        self.signal_idle(idle);
        taken
    }

    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.lock().is_idle() {
                return;
            }
            idle.await;
        }
    }

    pub(crate) async fn shutdown(self: &Arc<Self>, timeout: Duration) -> ShutdownReport {
        self.close();
        if tokio::time::timeout(timeout, self.wait_idle())
            .await
            .is_ok()
        {
            return ShutdownReport {
                drained: true,
                unstarted: Vec::new(),
                cancelled: 0,
            };
        }
        let cancelled_before = self.lock().stats().cancelled;
        let queued = self.with(|st| {
            let queued = st.take_queued();
            self.cancel.store(true, Ordering::SeqCst);
            for ctl in st.workers() {
                ctl.wake();
            }
            queued
        });
        self.space.notify_waiters();
        self.wait_idle().await;
        let (handed_back, cancelled) = self.with(|st| {
            (
                std::mem::take(&mut st.handed_back),
                st.stats().cancelled - cancelled_before,
            )
        });
        // Workers held theirs longer than the queue did: oldest first.
        let mut unstarted = handed_back;
        unstarted.extend(queued);
        ShutdownReport {
            drained: false,
            unstarted,
            cancelled,
        }
    }
}

/// Counts a blocked submitter for as long as it waits, even if its future is
/// dropped mid-wait.
struct WaitingSubmitter<'a> {
    shared: &'a Shared,
    keyed: bool,
}

impl<'a> WaitingSubmitter<'a> {
    fn new(shared: &'a Shared, keyed: bool) -> WaitingSubmitter<'a> {
        if keyed {
            shared.waiting_keyed.fetch_add(1, Ordering::SeqCst);
        }
        shared.waiting_submitters.fetch_add(1, Ordering::SeqCst);
        WaitingSubmitter { shared, keyed }
    }
}

impl Drop for WaitingSubmitter<'_> {
    fn drop(&mut self) {
        self.shared
            .waiting_submitters
            .fetch_sub(1, Ordering::SeqCst);
        if self.keyed {
            self.shared.waiting_keyed.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Decrements a waiter count when the waiter goes, even mid-wait.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A caller counted among a key's acquirers; uncounted if it goes mid-wait.
struct KeyWait<'a> {
    shared: &'a Arc<Shared>,
    key: Option<&'a Key>,
    registered: bool,
}

impl Drop for KeyWait<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.shared.with(|st| st.stop_waiting(self.key));
        }
    }
}
