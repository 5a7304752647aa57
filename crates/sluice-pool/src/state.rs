//! The pool's bookkeeping: one `State` behind one mutex, and every decision
//! about admitting, queueing, handing over and settling tasks.
//!
//! Nothing here runs user code, spawns or drops a task: callers collect what
//! to spawn in [`State::spawns`] and act on it after unlocking, so a task's
//! `Drop` can never re-enter the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use crate::key::{Key, KeyLimit, KeyState};
use crate::queue::{Entry, Queued};
use crate::rate::Pacer;
use crate::shutdown::Unstarted;
use crate::stats::{Histogram, Stats};
use crate::worker::{Started, WorkerCtl};

/// How keys get their limits.
pub(crate) enum KeyLimits {
    Fixed(KeyLimit),
    With(Box<dyn Fn(&Key) -> KeyLimit + Send + Sync>),
}

impl KeyLimits {
    fn for_key(&self, key: &Key) -> KeyLimit {
        match self {
            KeyLimits::Fixed(limit) => *limit,
            KeyLimits::With(f) => f(key),
        }
    }
}

/// Why a submission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    Closed,
}

/// Why a [`Slot`](crate::Slot) cannot be taken now.
#[derive(Debug)]
pub(crate) enum Acquire {
    Closed,
    /// No slot (or no place) free: wait on `space`.
    Busy,
    /// The key is not open: wait on its wake (the caller is counted among
    /// its acquirers until it calls back with `returning`, or leaves).
    KeyBusy(Arc<tokio::sync::Notify>),
    /// The key's pace allows the next start at this time.
    PacedUntil(tokio::time::Instant),
}

/// A worker to spawn once the lock is released.
pub(crate) struct WorkerSpec {
    pub(crate) id: usize,
    pub(crate) ctl: Arc<WorkerCtl>,
    pub(crate) first: Option<Started>,
}

/// Work to start once the lock is released.
#[derive(Default)]
pub(crate) struct Spawns {
    pub(crate) workers: Vec<WorkerSpec>,
    pub(crate) key_timers: Vec<(Key, tokio::time::Instant)>,
}

impl Spawns {
    pub(crate) fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.key_timers.is_empty()
    }
}

#[derive(Default)]
struct Counters {
    submitted: u64,
    completed: u64,
    panicked: u64,
    cancelled: u64,
    returned: u64,
    rejected: u64,
}

pub(crate) struct State {
    capacity: usize,
    queue_capacity: usize,
    /// Slots held by workers, including workers spawned to pop a ready entry
    /// that have not popped yet (`pending_pops`).
    running: usize,
    pending_pops: usize,
    /// Places held by unspent [`Permit`](crate::Permit)s.
    reserved: usize,
    /// Tasks admitted and not handed to a worker: in `ready` or in a key's
    /// waiting list.
    queued: usize,
    closed: bool,
    /// Entries that may start now, oldest first. Invariant: when it holds more
    /// entries than `pending_pops`, every slot is in use.
    ready: VecDeque<Entry>,
    keys: HashMap<Key, KeyState>,
    key_limits: KeyLimits,
    next_key_sweep: usize,
    pacer: Option<Pacer>,
    workers: Slab<Arc<WorkerCtl>>,
    counters: Counters,
    queue_wait: Histogram,
    run_time: Histogram,
    /// Tasks that aborted workers held without having started them.
    pub(crate) handed_back: Vec<Unstarted>,
    pub(crate) spawns: Spawns,
}

const MIN_KEY_SWEEP: usize = 1024;

impl State {
    pub(crate) fn new(
        capacity: usize,
        queue_capacity: usize,
        pacer: Option<Pacer>,
        key_limits: KeyLimits,
    ) -> State {
        State {
            capacity,
            queue_capacity,
            running: 0,
            pending_pops: 0,
            reserved: 0,
            queued: 0,
            closed: false,
            ready: VecDeque::new(),
            keys: HashMap::new(),
            key_limits,
            next_key_sweep: MIN_KEY_SWEEP,
            pacer,
            workers: Slab::new(),
            counters: Counters::default(),
            queue_wait: Histogram::default(),
            run_time: Histogram::default(),
            handed_back: Vec::new(),
            spawns: Spawns::default(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.running == 0 && self.queued == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Changes the concurrency limit. Growing hands waiting entries to new
    /// workers at once; shrinking takes effect as running tasks finish.
    pub(crate) fn resize(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.fill_slots();
    }

    pub(crate) fn workers(&self) -> impl Iterator<Item = &Arc<WorkerCtl>> {
        self.workers.iter().map(|(_, ctl)| ctl)
    }

    /// Places taken: slots in use, tasks waiting, permits unspent.
    fn occupied(&self) -> usize {
        self.running + self.queued.saturating_sub(self.pending_pops) + self.reserved
    }

    /// Whether a place is free for one more task, reserved or not.
    pub(crate) fn has_room(&self) -> bool {
        self.occupied() < self.capacity + self.queue_capacity
    }

    /// Takes a place for a [`Permit`](crate::Permit).
    pub(crate) fn reserve(&mut self) -> Result<(), Refusal> {
        if self.closed {
            return Err(Refusal::Closed);
        }
        if !self.has_room() {
            return Err(Refusal::Full);
        }
        self.reserved += 1;
        Ok(())
    }

    /// Gives back an unspent permit's place.
    pub(crate) fn unreserve(&mut self) {
        self.reserved -= 1;
    }

    /// Admits a task into the place a permit reserved: it starts at once if
    /// it may, else waits in the queue whatever the queue's room.
    pub(crate) fn admit_reserved(&mut self, q: Queued) -> Result<(), (Queued, Refusal)> {
        self.reserved -= 1;
        if self.closed {
            self.counters.rejected += 1;
            return Err((q, Refusal::Closed));
        }
        self.counters.submitted += 1;
        let slot_free = self.running < self.capacity;
        let Some(key) = q.key.clone() else {
            if slot_free {
                self.running += 1;
                let now = q.queued_at;
                let started = self.hand_over(q, now);
                self.spawn_worker(Some(started));
            } else {
                self.queued += 1;
                self.ready.push_back(Entry::Task(q));
                self.fill_slots();
            }
            return Ok(());
        };
        let q = match self.start_keyed(&key, q, slot_free) {
            Ok(()) => return Ok(()),
            Err(q) => q,
        };
        let ks = self.key_state(&key);
        ks.waiting.push_back(q);
        self.queued += 1;
        self.schedule_key(&key);
        Ok(())
    }

    /// Takes a running slot for work the caller runs inline (a
    /// [`Slot`](crate::Slot)), under `key`'s limits if any. `returning`: the
    /// caller was waiting on the key's wake and is back.
    ///
    /// On success, `Some(at)`: the pool's own pace books this start for
    /// `at`; the slot is held meanwhile, as a worker holds a paced task, and
    /// counted as submitted only once [`slot_began`](Self::slot_began).
    pub(crate) fn try_acquire(
        &mut self,
        key: Option<&Key>,
        returning: bool,
    ) -> Result<Option<tokio::time::Instant>, Acquire> {
        if let (true, Some(ks)) = (returning, key.and_then(|k| self.keys.get_mut(k))) {
            ks.acquirers -= 1;
        }
        if let Err(why) = self.acquire_refusal(key) {
            // Woken with the key open but the pool busy or the pace closed,
            // the caller keeps the key's turn: the others would find the
            // same. It passes the turn on when it takes a slot, or leaves.
            if let Some(key) = key {
                self.forget_key_if_idle(key);
            }
            return Err(why);
        }
        if let Some(ks) = key.and_then(|k| self.keys.get_mut(k)) {
            ks.active += 1;
            ks.pass_turn();
        }
        self.running += 1;
        let not_before = self.pacer.as_mut().and_then(|p| {
            let now = tokio::time::Instant::now();
            let at = p.reserve(now);
            (at > now).then_some(at)
        });
        if not_before.is_none() {
            self.counters.submitted += 1;
        }
        Ok(not_before)
    }

    /// Why a slot (of `key`) cannot be taken now; books the key's pace when
    /// it can. Registers the caller among the key's acquirers on `KeyBusy`.
    fn acquire_refusal(&mut self, key: Option<&Key>) -> Result<(), Acquire> {
        if self.closed {
            return Err(Acquire::Closed);
        }
        if let Some(key) = key {
            let ks = self.key_state(key);
            if !ks.is_open() {
                ks.acquirers += 1;
                let wake = ks.wake.get_or_insert_with(Default::default).clone();
                return Err(Acquire::KeyBusy(wake));
            }
        }
        if self.running >= self.capacity || !self.has_room() {
            return Err(Acquire::Busy);
        }
        if let Some(p) = key.and_then(|k| self.keys.get_mut(k)?.pacer.as_mut()) {
            p.try_start(tokio::time::Instant::now())
                .map_err(Acquire::PacedUntil)?;
        }
        Ok(())
    }

    /// A slot held through the pool's pace is handed to its caller.
    pub(crate) fn slot_began(&mut self) {
        self.counters.submitted += 1;
    }

    /// A caller of `acquire` went away mid-wait (`registered`: among `key`'s
    /// acquirers). It may have taken a wake meant to open the key to someone:
    /// it passes it on.
    pub(crate) fn leave_acquire(&mut self, key: &Key, registered: bool) {
        if let Some(ks) = self.keys.get_mut(key) {
            if registered {
                ks.acquirers -= 1;
            }
            ks.pass_turn();
        }
        self.forget_key_if_idle(key);
    }

    /// A [`Slot`](crate::Slot) was dropped: `began` when it was handed to its
    /// caller (not dropped while held through the pool's pace).
    pub(crate) fn release_acquired(&mut self, key: Option<&Key>, began: Option<Instant>) {
        if let Some(began) = began {
            self.counters.completed += 1;
            self.run_time
                .record(Instant::now().saturating_duration_since(began));
        }
        if let Some(key) = key {
            self.settle_key(key);
        }
        self.running -= 1;
        self.fill_slots();
    }

    /// Admits a task: straight to a new worker when a slot is free and the
    /// task may start, else into the queue when it has room.
    /// `waits`: the caller will wait and retry on `Full`, so that refusal is
    /// not counted as a rejection.
    pub(crate) fn admit(&mut self, q: Queued, waits: bool) -> Result<(), (Queued, Refusal)> {
        if self.closed {
            self.counters.rejected += 1;
            return Err((q, Refusal::Closed));
        }
        if self.reserved > 0 && !self.has_room() {
            // The only room left is held by permits.
            self.count_full(waits);
            return Err((q, Refusal::Full));
        }
        let slot_free = self.running < self.capacity;
        let room = self.queued.saturating_sub(self.pending_pops) < self.queue_capacity;
        let Some(key) = q.key.clone() else {
            if slot_free {
                self.counters.submitted += 1;
                self.running += 1;
                let now = q.queued_at;
                let started = self.hand_over(q, now);
                self.spawn_worker(Some(started));
                return Ok(());
            }
            if room {
                self.counters.submitted += 1;
                self.queued += 1;
                self.ready.push_back(Entry::Task(q));
                self.fill_slots();
                return Ok(());
            }
            self.count_full(waits);
            return Err((q, Refusal::Full));
        };

        let q = match self.start_keyed(&key, q, slot_free) {
            Ok(()) => {
                self.counters.submitted += 1;
                return Ok(());
            }
            Err(q) => q,
        };
        if room {
            let ks = self.key_state(&key);
            ks.waiting.push_back(q);
            self.counters.submitted += 1;
            self.queued += 1;
            self.schedule_key(&key);
            return Ok(());
        }
        self.forget_key_if_idle(&key);
        self.count_full(waits);
        Err((q, Refusal::Full))
    }

    /// Starts a keyed task at once when a slot is free (`slot_free`) and its
    /// key may start now (nothing of the key waiting, under its limit and
    /// pace); else hands it back.
    fn start_keyed(&mut self, key: &Key, q: Queued, slot_free: bool) -> Result<(), Queued> {
        let ks = self.key_state(key);
        if !slot_free || !ks.is_open() {
            return Err(q);
        }
        if let Some(p) = ks.pacer.as_mut() {
            if p.try_start(tokio::time::Instant::now()).is_err() {
                return Err(q);
            }
        }
        ks.active += 1;
        self.running += 1;
        let now = q.queued_at;
        let started = self.hand_over(q, now);
        self.spawn_worker(Some(started));
        Ok(())
    }

    fn count_full(&mut self, waits: bool) {
        if !waits {
            self.counters.rejected += 1;
        }
    }

    /// The state of `key`, created on first use. Creation now and then sweeps
    /// out idle keys, so memory follows the keys in use, not every key seen.
    fn key_state(&mut self, key: &Key) -> &mut KeyState {
        if !self.keys.contains_key(key) {
            if self.keys.len() >= self.next_key_sweep {
                let now = tokio::time::Instant::now();
                self.keys.retain(|_, ks| !ks.is_forgettable(now));
                self.next_key_sweep = (self.keys.len() * 2).max(MIN_KEY_SWEEP);
            }
            let limit = self.key_limits.for_key(key);
            self.keys.insert(key.clone(), KeyState::new(limit));
        }
        self.keys.get_mut(key).expect("inserted above")
    }

    fn forget_key_if_idle(&mut self, key: &Key) {
        if let Some(ks) = self.keys.get(key) {
            let busy = ks.active > 0
                || ks.acquirers > 0
                || !ks.waiting.is_empty()
                || ks.in_ready
                || ks.timer_armed;
            // Only a paced key needs the clock: it is kept until its pace has
            // recovered, so forgetting it cannot let a start through early.
            if !busy && ks.is_forgettable(tokio::time::Instant::now()) {
                self.keys.remove(key);
            }
        }
    }

    /// Gives `key` a turn in the ready queue if its oldest waiting task may
    /// start now, or arms a timer for when its pace will allow it.
    fn schedule_key(&mut self, key: &Key) {
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        if ks.waiting.is_empty() || ks.in_ready || ks.timer_armed || ks.active >= ks.concurrency {
            return;
        }
        let blocked = ks
            .pacer
            .as_ref()
            .and_then(|p| p.blocked_until(tokio::time::Instant::now()));
        match blocked {
            None => {
                ks.in_ready = true;
                self.ready.push_back(Entry::Key(key.clone()));
                self.fill_slots();
            }
            Some(at) => {
                ks.timer_armed = true;
                self.spawns.key_timers.push((key.clone(), at));
            }
        }
    }

    /// A key's pace timer fired.
    pub(crate) fn key_timer_fired(&mut self, key: &Key) {
        if let Some(ks) = self.keys.get_mut(key) {
            ks.timer_armed = false;
            self.schedule_key(key);
            self.forget_key_if_idle(key);
        }
    }

    /// Starts workers for ready entries while slots are free.
    fn fill_slots(&mut self) {
        while self.running < self.capacity && self.ready.len() > self.pending_pops {
            self.running += 1;
            self.pending_pops += 1;
            self.spawn_worker(None);
        }
    }

    /// Books a worker (its slot is already counted in `running`).
    fn spawn_worker(&mut self, first: Option<Started>) {
        let ctl = Arc::new(WorkerCtl::default());
        let id = self.workers.insert(ctl.clone());
        self.spawns.workers.push(WorkerSpec { id, ctl, first });
    }

    /// A task leaves the queue for a worker.
    fn hand_over(&mut self, q: Queued, now: Instant) -> Started {
        self.queue_wait
            .record(now.saturating_duration_since(q.queued_at));
        let not_before = self.pacer.as_mut().and_then(|p| {
            let now = tokio::time::Instant::now();
            let at = p.reserve(now);
            (at > now).then_some(at)
        });
        Started {
            task: q.task,
            key: q.key,
            queued_at: q.queued_at,
            handed_at: now,
            not_before,
        }
    }

    /// The next task for a worker, oldest ready entry first.
    fn pop_next(&mut self, now: Instant) -> Option<Started> {
        loop {
            match self.ready.pop_front()? {
                Entry::Task(q) => {
                    self.queued -= 1;
                    return Some(self.hand_over(q, now));
                }
                Entry::Key(key) => {
                    let Some(ks) = self.keys.get_mut(&key) else {
                        continue;
                    };
                    ks.in_ready = false;
                    if ks.waiting.is_empty() || ks.active >= ks.concurrency {
                        self.reschedule_key(&key);
                        continue;
                    }
                    if let Some(p) = ks.pacer.as_mut() {
                        if p.try_start(tokio::time::Instant::now()).is_err() {
                            self.reschedule_key(&key);
                            continue;
                        }
                    }
                    let q = ks.waiting.pop_front().expect("checked non-empty");
                    ks.active += 1;
                    self.queued -= 1;
                    // The key's last queued task is off: it may be open to
                    // waiting `acquire`s.
                    self.reschedule_key(&key);
                    return Some(self.hand_over(q, now));
                }
            }
        }
    }

    /// A worker spawned for a ready entry takes its first task; `None` means
    /// it has nothing to do and its slot is released.
    pub(crate) fn first_pop(&mut self, id: usize) -> Option<Started> {
        self.pending_pops -= 1;
        let next = if self.running > self.capacity {
            None
        } else {
            self.pop_next(Instant::now())
        };
        if next.is_none() {
            self.release_slot(id);
        }
        next
    }

    /// Settles a task that ran (completed or panicked) and picks the worker's
    /// next task. `None` means the worker exits; it keeps its slot until it
    /// calls [`release_slot`](Self::release_slot), after delivering.
    pub(crate) fn finish(
        &mut self,
        key: Option<&Key>,
        panicked: bool,
        started_at: Instant,
        ended: Instant,
    ) -> Option<Started> {
        if panicked {
            self.counters.panicked += 1;
        } else {
            self.counters.completed += 1;
        }
        self.run_time
            .record(ended.saturating_duration_since(started_at));
        if let Some(key) = key {
            self.settle_key(key);
        }
        if self.running > self.capacity {
            return None;
        }
        self.pop_next(ended)
    }

    /// Whether blocked submitters should be woken: there is a free slot, or
    /// the queue is at most half full. Waking them per dequeued task would
    /// ping-pong the submitter for every single task.
    pub(crate) fn wants_submissions(&self) -> bool {
        self.running < self.capacity
            || self.queued.saturating_sub(self.pending_pops) <= self.queue_capacity / 2
    }

    fn settle_key(&mut self, key: &Key) {
        if let Some(ks) = self.keys.get_mut(key) {
            ks.active -= 1;
            // Queued tasks of the key first; then a waiting `acquire`.
            self.reschedule_key(key);
            self.forget_key_if_idle(key);
        }
    }

    /// Gives `key`'s queued tasks their turn, else a waiting `acquire` its.
    fn reschedule_key(&mut self, key: &Key) {
        self.schedule_key(key);
        if let Some(ks) = self.keys.get(key) {
            ks.pass_turn();
        }
    }

    /// A worker gives its slot back and leaves.
    pub(crate) fn release_slot(&mut self, id: usize) {
        self.running -= 1;
        self.workers.try_remove(id);
        // Entries queued while this worker was finishing need a worker now.
        self.fill_slots();
    }

    /// A worker was dropped before it settled what it held (cancelled at a
    /// deadline, or its runtime went away).
    pub(crate) fn worker_dropped(
        &mut self,
        id: usize,
        pending_pop: bool,
        unstarted: Option<Started>,
        cancelled: Option<(Option<&Key>, std::time::Duration)>,
    ) {
        if pending_pop {
            self.pending_pops -= 1;
        }
        if let Some(s) = unstarted {
            if let Some(key) = &s.key {
                self.settle_key(key);
            }
            self.counters.returned += 1;
            self.handed_back.push(Unstarted::new(s.task, s.key));
        }
        if let Some((key, run_time)) = cancelled {
            self.counters.cancelled += 1;
            self.run_time.record(run_time);
            if let Some(key) = key {
                self.settle_key(key);
            }
        }
        self.release_slot(id);
    }

    /// Takes every queued task out, oldest first.
    pub(crate) fn take_queued(&mut self) -> Vec<Unstarted> {
        let mut out: Vec<Queued> = Vec::with_capacity(self.queued);
        for entry in self.ready.drain(..) {
            if let Entry::Task(q) = entry {
                out.push(q);
            }
        }
        for ks in self.keys.values_mut() {
            out.extend(ks.waiting.drain(..));
            ks.in_ready = false;
            // `acquire`s waited behind those tasks.
            ks.pass_turn();
        }
        let now = tokio::time::Instant::now();
        self.keys.retain(|_, ks| !ks.is_forgettable(now));
        self.queued = 0;
        self.counters.returned += out.len() as u64;
        out.sort_by_key(|q| q.queued_at);
        out.into_iter()
            .map(|q| Unstarted::new(q.task, q.key))
            .collect()
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            capacity: self.capacity,
            running: self.running,
            queued: self.queued,
            reserved: self.reserved,
            queue_capacity: self.queue_capacity,
            keys: self.keys.len(),
            closed: self.closed,
            submitted: c.submitted,
            completed: c.completed,
            panicked: c.panicked,
            cancelled: c.cancelled,
            returned: c.returned,
            rejected: c.rejected,
            queue_wait: self.queue_wait.clone(),
            run_time: self.run_time.clone(),
        }
    }
}
