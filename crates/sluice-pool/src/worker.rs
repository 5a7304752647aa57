//! A worker: one tokio task that runs pool tasks one after another while
//! there are any, then exits. An idle pool has no workers at all.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use atomic_waker::AtomicWaker;
use pin_project_lite::pin_project;

use crate::event::{TaskEvent, TaskOutcome};
use crate::key::Key;
use crate::shared::Shared;
use crate::task::{BoxTask, CatchUnwind, RawTask};

/// A task handed to a worker, not yet started.
pub(crate) struct Started {
    pub(crate) task: BoxTask,
    pub(crate) key: Option<Key>,
    pub(crate) queued_at: Instant,
    /// When a worker got it: its start time unless the pace holds it back.
    pub(crate) handed_at: Instant,
    /// The pool's pace lets it start no earlier than this.
    pub(crate) not_before: Option<tokio::time::Instant>,
}

/// Lets a shutdown deadline reach a worker that waits on I/O.
#[derive(Debug, Default)]
pub(crate) struct WorkerCtl {
    waker: AtomicWaker,
}

impl WorkerCtl {
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }
}

struct Running {
    task: Pin<Box<dyn RawTask>>,
    key: Option<Key>,
    queued_at: Instant,
    started_at: Instant,
}

enum Holding {
    /// Spawned for a ready entry, not yet popped.
    PendingPop,
    Nothing,
    Ready(Started),
    Running(Running),
}

/// The state a worker must settle if it is dropped half-way; see `Drop`.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    id: usize,
    holding: Holding,
    /// Set once the worker has released its slot itself.
    exited: bool,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, id: usize, first: Option<Started>) -> Worker {
        Worker {
            shared,
            id,
            holding: first.map_or(Holding::PendingPop, Holding::Ready),
            exited: false,
        }
    }

    pub(crate) fn into_future(self, ctl: Arc<WorkerCtl>) -> impl Future<Output = ()> + Send {
        let shared = self.shared.clone();
        Cancellable {
            inner: self.run(),
            ctl,
            shared,
        }
    }

    async fn run(mut self) {
        if matches!(self.holding, Holding::PendingPop) {
            match self.shared.first_pop(self.id) {
                Some(s) => self.holding = Holding::Ready(s),
                None => {
                    self.exited = true;
                    return;
                }
            }
        }
        loop {
            let Holding::Ready(started) = std::mem::replace(&mut self.holding, Holding::Nothing)
            else {
                unreachable!("a worker loops only with a task in hand");
            };
            if let Some(at) = started.not_before {
                // Held, not started: a deadline hands it back unstarted.
                self.holding = Holding::Ready(started);
                tokio::time::sleep_until(at).await;
                let Holding::Ready(s) = std::mem::replace(&mut self.holding, Holding::Nothing)
                else {
                    unreachable!();
                };
                self.holding = Holding::Ready(Started {
                    not_before: None,
                    handed_at: Instant::now(),
                    ..s
                });
                continue;
            }
            let Started {
                task,
                key,
                queued_at,
                handed_at: started_at,
                ..
            } = started;
            self.holding = Holding::Running(Running {
                task: Box::into_pin(task),
                key,
                queued_at,
                started_at,
            });
            let result = {
                let Holding::Running(r) = &mut self.holding else {
                    unreachable!();
                };
                CatchUnwind {
                    task: r.task.as_mut(),
                }
                .await
            };
            let Holding::Running(mut r) = std::mem::replace(&mut self.holding, Holding::Nothing)
            else {
                unreachable!();
            };
            let panicked = result.is_err();
            if let Err(payload) = result {
                r.task.as_mut().set_panicked(payload);
            }
            let ended = Instant::now();
            let run_time = ended - r.started_at;
            let (next, wake_submitters) =
                self.shared
                    .finish(r.key.as_ref(), panicked, r.started_at, ended);
            if next.is_none() {
                // Keep the slot until delivered, so `join` returns only after
                // every handle has its output; release it below.
                self.exited = true;
            }
            // Outside the lock: user code (the output's drop, the hook) may
            // call back into the pool. A panic there must not leak the slot.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                r.task.as_mut().deliver();
                self.shared.task_ended(&TaskEvent {
                    key: r.key.as_ref(),
                    queue_wait: r.started_at.saturating_duration_since(r.queued_at),
                    run_time,
                    outcome: if panicked {
                        TaskOutcome::Panicked
                    } else {
                        TaskOutcome::Completed
                    },
                });
                drop(r);
            }));
            match next {
                Some(s) => {
                    self.holding = Holding::Ready(s);
                    if wake_submitters {
                        self.shared.signal_space();
                    }
                }
                None => {
                    self.shared.release_slot(self.id);
                    return;
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let holding = std::mem::replace(&mut self.holding, Holding::Nothing);
        let (pending_pop, unstarted, running) = match holding {
            Holding::PendingPop => (true, None, None),
            Holding::Nothing => (false, None, None),
            Holding::Ready(s) => (false, Some(s), None),
            Holding::Running(r) => (false, None, Some(r)),
        };
        let cancelled = running
            .as_ref()
            .map(|r| (r.key.as_ref(), r.started_at.elapsed()));
        self.shared
            .worker_dropped(self.id, pending_pop, unstarted, cancelled);
        if let Some(r) = &running {
            self.shared.task_ended(&TaskEvent {
                key: r.key.as_ref(),
                queue_wait: r.started_at.saturating_duration_since(r.queued_at),
                run_time: r.started_at.elapsed(),
                outcome: TaskOutcome::Cancelled,
            });
        }
        // The cancelled task (user code) drops here, after the lock.
        drop(running);
    }
}

pin_project! {
    /// Stops the worker at its next poll once the pool's deadline passed.
    struct Cancellable<F> {
        #[pin]
        inner: F,
        ctl: Arc<WorkerCtl>,
        shared: Arc<Shared>,
    }
}

impl<F: Future<Output = ()>> Future for Cancellable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // Register before checking, so a deadline set in between still wakes us.
        this.ctl.waker.register(cx.waker());
        if this.shared.cancel.load(Ordering::SeqCst) {
            // The runtime drops `inner` now: `Worker::drop` settles what it held.
            return Poll::Ready(());
        }
        this.inner.poll(cx)
    }
}
