//! The type-erased task the pool queues and runs.
//!
//! A submitted value `T: IntoFuture` is boxed once, together with where its
//! output goes. It stays a `T` until a worker starts it, so a task that never
//! started can be handed back to the caller as the very value it submitted.

use std::any::{Any, TypeId};
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use crate::group::GroupGuard;
use crate::handle::TaskError;

pub(crate) type Payload = Box<dyn Any + Send>;

/// What the pool needs of a task, whatever its type.
pub(crate) trait RawTask: Send + 'static {
    /// Drives the task; on `Ready` its outcome is stored, not yet delivered.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// Records that a poll panicked.
    fn set_panicked(self: Pin<&mut Self>, payload: Payload);
    /// Sends the stored outcome to the handle and releases the group, if any.
    fn deliver(self: Pin<&mut Self>);
    /// The type of the value that was submitted.
    fn submitted_type(&self) -> TypeId;
    /// The submitted value back, for a task that never started.
    fn into_submitted(self: Box<Self>) -> Box<dyn Any + Send>;
}

pub(crate) type BoxTask = Box<dyn RawTask>;

/// Where a task's output goes.
pub(crate) trait Deliver<O>: Send + 'static {
    fn output(self, out: O);
    fn panicked(self, payload: Payload);
}

/// Fire-and-forget: the output is dropped, nothing is allocated for it.
#[derive(Debug)]
pub(crate) struct Detached;

impl<O> Deliver<O> for Detached {
    fn output(self, _out: O) {}
    fn panicked(self, _payload: Payload) {}
}

/// The sending half behind a [`TaskHandle`](crate::TaskHandle).
#[derive(Debug)]
pub(crate) struct Reply<O>(pub(crate) oneshot::Sender<Result<O, TaskError>>);

impl<O: Send + 'static> Deliver<O> for Reply<O> {
    fn output(self, out: O) {
        // The caller may have dropped its handle: that detaches, it is no error.
        let _ = self.0.send(Ok(out));
    }
    fn panicked(self, payload: Payload) {
        let _ = self.0.send(Err(TaskError::Panicked(payload)));
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<T>
    where
        T: IntoFuture,
    {
        Pending { task: Option<T> },
        Running { #[pin] fut: T::IntoFuture },
        Finished,
    }
}

pin_project! {
    pub(crate) struct Task<T, D>
    where
        T: IntoFuture,
    {
        #[pin]
        stage: Stage<T>,
        outcome: Option<Result<T::Output, Payload>>,
        deliver: Option<D>,
        group: Option<GroupGuard>,
    }
}

impl<T, D> Task<T, D>
where
    T: IntoFuture + Send + 'static,
    T::IntoFuture: Send,
    T::Output: Send,
    D: Deliver<T::Output>,
{
    pub(crate) fn boxed(task: T, deliver: D, group: Option<GroupGuard>) -> BoxTask {
        Box::new(Task {
            stage: Stage::Pending { task: Some(task) },
            outcome: None,
            deliver: Some(deliver),
            group,
        })
    }
}

impl<T, D> RawTask for Task<T, D>
where
    T: IntoFuture + Send + 'static,
    T::IntoFuture: Send,
    T::Output: Send,
    D: Deliver<T::Output>,
{
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.stage.as_mut().project() {
                StageProj::Pending { task } => {
                    let fut = task
                        .take()
                        .expect("a pending task holds its value")
                        .into_future();
                    this.stage.set(Stage::Running { fut });
                }
                StageProj::Running { fut } => {
                    let out = ready!(fut.poll(cx));
                    this.stage.set(Stage::Finished);
                    *this.outcome = Some(Ok(out));
                    return Poll::Ready(());
                }
                StageProj::Finished => return Poll::Ready(()),
            }
        }
    }

    fn set_panicked(self: Pin<&mut Self>, payload: Payload) {
        let mut this = self.project();
        // The future may be in any state after a panic: drop it now.
        this.stage.set(Stage::Finished);
        *this.outcome = Some(Err(payload));
    }

    fn deliver(self: Pin<&mut Self>) {
        let this = self.project();
        if let (Some(outcome), Some(deliver)) = (this.outcome.take(), this.deliver.take()) {
            match outcome {
                Ok(out) => deliver.output(out),
                Err(payload) => deliver.panicked(payload),
            }
        }
        // After the output: whoever waits on the group then finds it delivered.
        *this.group = None;
    }

    fn submitted_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn into_submitted(self: Box<Self>) -> Box<dyn Any + Send> {
        match self.stage {
            Stage::Pending { task: Some(task) } => Box::new(task),
            _ => unreachable!("only a task that never started is handed back"),
        }
    }
}

/// Polls a task with panics caught, so one task cannot take its worker down.
pub(crate) struct CatchUnwind<'a> {
    pub(crate) task: Pin<&'a mut dyn RawTask>,
}

impl Future for CatchUnwind<'_> {
    type Output = Result<(), Payload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let task = self.task.as_mut();
        match catch_unwind(AssertUnwindSafe(|| task.poll_run(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Hands the submitted value back out of a boxed task that never started.
pub(crate) fn downcast<T: 'static>(task: BoxTask) -> T {
    *task
        .into_submitted()
        .downcast::<T>()
        .expect("a task hands back the type it was submitted as")
}
