//! What every handle, worker and timer of one pool shares: the locked
//! [`State`], the runtime to spawn on, and the wake-ups around them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::error::Closed;
use crate::event::{Hook, TaskEvent};
use crate::key::Key;
use crate::queue::Queued;
use crate::shutdown::{ShutdownReport, Unstarted};
use crate::slot::Slot;
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
    /// Of those, submitters of keyed tasks and callers of `acquire`: they
    /// need a specific key's slot, or a running slot rather than any place,
    /// so they are all woken rather than one who may not use the room.
    waiting_keyed: AtomicUsize,
    /// The pool closed: wakes `acquire`s that wait on a key's turn or a pace
    /// rather than on `space`.
    closed: Notify,
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
            closed: Notify::new(),
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
    /// key's limits and pace, and the pool's pace); refuses only when closed.
    /// Cancel-safe: dropped mid-wait, it holds nothing and passes on any turn
    /// of the key it was woken for.
    pub(crate) async fn acquire(self: &Arc<Self>, key: Option<Key>) -> Result<Slot, Closed> {
        // Enabled first: a close from now on wakes every wait below.
        let closed = self.closed.notified();
        let mut closed = std::pin::pin!(closed);
        closed.as_mut().enable();
        let mut guard = AcquireGuard {
            shared: self,
            key: key.as_ref(),
            registered: false,
            done: false,
        };
        let mut waiting: Option<WaitingSubmitter<'_>> = None;
        let space = None;
        let mut space = std::pin::pin!(space);
        loop {
            // Registered before the try: room that appears after it wakes us.
            space.set(Some(self.space.notified()));
            if let Some(s) = space.as_mut().as_pin_mut() {
                s.enable();
            }
            let returning = std::mem::take(&mut guard.registered);
            let tried = self.with(|st| st.try_acquire(guard.key, returning));
            match tried {
                Ok(not_before) => {
                    guard.done = true;
                    let mut slot = Slot::new(self.clone(), key.clone(), not_before.is_none());
                    if let Some(at) = not_before {
                        // Held through the pool's pace, as a worker holds a
                        // task; dropped meanwhile, the slot is given back.
                        drop(waiting);
                        tokio::time::sleep_until(at).await;
                        slot.begin();
                    }
                    return Ok(slot);
                }
                Err(Acquire::Closed) => {
                    guard.done = true;
                    return Err(Closed);
                }
                Err(Acquire::Busy) => {
                    if waiting.is_none() {
                        // Counted now, then tried again: a slot freed since
                        // the try signals us.
                        waiting = Some(WaitingSubmitter::new(self, true));
                        continue;
                    }
                    let space = space.as_mut().as_pin_mut().expect("set above");
                    either(space, closed.as_mut()).await;
                }
                Err(Acquire::KeyBusy(wake)) => {
                    // Woken one at a time, as the key opens; a wake that
                    // reaches a waiter gone meanwhile is passed on.
                    guard.registered = true;
                    waiting = None;
                    space.set(None);
                    either(wake.notified(), closed.as_mut()).await;
                }
                Err(Acquire::PacedUntil(at)) => {
                    waiting = None;
                    space.set(None);
                    either(tokio::time::sleep_until(at), closed.as_mut()).await;
                }
            }
        }
    }

    /// A [`Slot`] is given back (`began`: when its caller got it).
    pub(crate) fn release_acquired(self: &Arc<Self>, key: Option<&Key>, began: Option<Instant>) {
        let idle = self.with(|st| {
            st.release_acquired(key, began);
            st.is_idle()
        });
        self.signal_space();
        self.signal_idle(idle);
    }

    /// A slot held through the pool's pace is handed to its caller.
    pub(crate) fn slot_began(self: &Arc<Self>) {
        self.with(State::slot_began);
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
        self.closed.notify_waiters();
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

/// An `acquire` under way. Dropped before it is done, it leaves its key's
/// waiters (`registered`) and passes on a turn it may have been woken for.
struct AcquireGuard<'a> {
    shared: &'a Arc<Shared>,
    key: Option<&'a Key>,
    registered: bool,
    done: bool,
}

impl Drop for AcquireGuard<'_> {
    fn drop(&mut self) {
        if let (false, Some(key)) = (self.done, self.key) {
            let registered = self.registered;
            self.shared.with(|st| st.leave_acquire(key, registered));
        }
    }
}

/// Resolves when either of two futures does.
async fn either(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}
