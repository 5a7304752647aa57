//! What a job does: any `async fn(Job) -> Result<(), JobError>`, a
//! `tower::Service<Job>`, or the configured steps.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::job::{Job, JobError};

/// Runs one job. The [`JobError`] says what happens next: retry (after a
/// delay if it names one) or fail for good (dead letter).
///
/// Closures and `async fn`s are handlers as they are:
///
/// ```
/// use sluice::{Job, JobError};
///
/// async fn send(job: Job) -> Result<(), JobError> {
///     let text = job.body_text()?;
///     if text.is_empty() {
///         return Err(JobError::fail("empty message"));
///     }
///     Ok(())
/// }
/// fn takes<H: sluice::Handler>(_: H) {}
/// takes(send);
/// ```
///
/// A `tower::Service<Job>` becomes one with [`service`].
pub trait Handler: Send + Sync + 'static {
    /// Runs `job`. A panic is caught and treated as a retryable failure.
    fn call(&self, job: Job) -> BoxFuture<'_, Result<(), JobError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn call(&self, job: Job) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self(job))
    }
}

/// A handler from a `tower::Service<Job>` whose error is a [`JobError`].
/// Each job calls a clone of the service once it is ready, so its
/// `poll_ready` backpressure (a rate limit, a load shedder) applies.
pub fn service<S>(svc: S) -> ServiceHandler<S>
where
    S: tower::Service<Job, Response = (), Error = JobError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    ServiceHandler { svc }
}

/// See [`service`].
#[derive(Clone)]
pub struct ServiceHandler<S> {
    svc: S,
}

impl<S> fmt::Debug for ServiceHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandler").finish_non_exhaustive()
    }
}

impl<S> Handler for ServiceHandler<S>
where
    S: tower::Service<Job, Response = (), Error = JobError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, job: Job) -> BoxFuture<'_, Result<(), JobError>> {
        let mut svc = self.svc.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx: &mut Context<'_>| -> Poll<Result<(), JobError>> {
                svc.poll_ready(cx)
            })
            .await?;
            svc.call(job).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn closures_and_services_are_handlers() {
        let h = |job: Job| async move {
            match job.attempt {
                1 => Err(JobError::retry("first time")),
                _ => Ok(()),
            }
        };
        assert!(
            Handler::call(&h, Job::new("a", 1, Bytes::new()))
                .await
                .is_err()
        );
        assert!(
            Handler::call(&h, Job::new("a", 2, Bytes::new()))
                .await
                .is_ok()
        );

        let svc = tower::service_fn(|job: Job| async move {
            if job.body.is_empty() {
                Err(JobError::fail("empty"))
            } else {
                Ok(())
            }
        });
        let h = service(svc);
        assert!(h.call(Job::new("a", 1, Bytes::new())).await.is_err());
        assert!(h.call(Job::new("a", 1, Bytes::from("x"))).await.is_ok());
    }
}
