//! One message, from the pool slot it was given to its settlement: run the
//! handler (timeout, panic, heartbeat, revocation), decide, settle once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::Hold;
use super::heartbeat::Lease;
use super::order::Order;
use crate::handler::Handler;
use crate::job::{Job, JobError};
use crate::retry::{Decision, RetryPolicy};
use crate::sources::{Acker, Capabilities, DeadLetter, DeadLetterTarget, Message, Revocation};
use crate::telemetry::events::{
    AttemptEnded, JobDeadLettered, JobDeferred, JobEnded, JobReleased, JobRetried, JobRevoked,
    JobSucceeded, RetryHandedBack, SettleFailed,
};
use crate::telemetry::{Event, PipelineCounts};

/// What every job of one pipeline shares.
pub(super) struct Ctx {
    pub name: String,
    pub handler: Arc<dyn Handler>,
    pub retry: Arc<dyn RetryPolicy>,
    pub dead_letters: Arc<dyn DeadLetterTarget>,
    pub dead_letters_name: String,
    pub caps: Capabilities,
    pub job_timeout: Option<Duration>,
    pub max_body_bytes: u64,
    pub counts: Arc<PipelineCounts>,
    /// Fired once a stop was requested and the receive loop has ended:
    /// retries waiting in their slot are released. Not before, or the source
    /// could hand a released message straight back to the loop, to be run
    /// again after the stop.
    pub stopping: CancellationToken,
    /// Fired at the shutdown deadline (or a forced stop): running handlers
    /// stop and their messages are released.
    pub cancel: CancellationToken,
    /// How long in-flight jobs get after a stop (`shutdown_timeout_secs`).
    pub shutdown_timeout: Duration,
    pub order: Order,
    /// Pauses intake and retries while the destination keeps failing.
    pub breaker: Arc<super::breaker::Breaker>,
    /// Messages whose job was dropped before it settled (a hard cancel at
    /// the end of the settle grace), to be released.
    pub orphans: mpsc::UnboundedSender<Box<dyn Acker>>,
}

/// Failed probes a job makes without spending its attempts.
const MAX_FREE_PROBES: u32 = 3;

/// How an attempt ended.
enum Ended {
    Done(Result<(), JobError>),
    Revoked,
    Cancelled,
    /// Stopped while the breaker held it back.
    Stopped,
    /// Stopped while a paused destination held it.
    StoppedHeld,
    /// Ran as the breaker's probe and failed to reach the destination.
    ProbeFailed(Result<(), JobError>),
}

/// The acker of a message not yet settled. Dropped while still holding it
/// (the pool cut the job short), it hands the message to the releaser; cut
/// in the middle of a settlement, it counts one that failed.
pub(super) struct Held {
    id: String,
    lease: Arc<Lease>,
    settling: bool,
    ctx: Arc<Ctx>,
}

impl Held {
    /// Holds a received message's acker from before its task is queued: a
    /// task dropped unstarted still releases its message.
    pub(super) fn new(ctx: &Arc<Ctx>, id: String, lease: Arc<Lease>) -> Held {
        Held {
            id,
            lease,
            settling: false,
            ctx: ctx.clone(),
        }
    }

    fn take(&mut self) -> Box<dyn Acker> {
        self.settling = true;
        self.lease.take().expect("a message is settled once")
    }

    /// Lets go of the message without settling it (revoked).
    fn forget(&mut self) {
        drop(self.lease.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(acker) = self.lease.take() {
            // The releaser outlives every job; if it is gone the process is
            // exiting and the source redelivers after its lease.
            let _ = self.ctx.orphans.send(acker);
        } else if self.settling {
            let e = std::io::Error::other("the settlement was cut short at shutdown");
            SettleFailed {
                id: &self.id,
                action: "settle",
                error: &e,
            }
            .emit(&self.ctx.counts);
        }
        JobEnded.emit(&self.ctx.counts);
    }
}

/// Runs a received message's job until it is settled, released or
/// revoked. Its `lease` is already kept by the heartbeat, if any.
pub(super) async fn run(
    ctx: Arc<Ctx>,
    mut message: Message,
    mut held: Held,
    revocation: Option<Revocation>,
) {
    // Most deliveries carry no revocation: they get a future that never
    // resolves rather than a token of their own.
    let revoked = Revoked(revocation);
    let key = message.key.clone();
    if let Some(k) = &key {
        if ctx.order.is_blocked(k) && !revoked.is_cancelled() {
            let id = message.id.clone();
            if settle(&ctx, &mut held, &id, "release", |a| a.release()).await {
                JobDeferred { id: &id, key: k }.emit(&ctx.counts);
            }
            ctx.order.done(k);
            return;
        }
    }
    // Already past its limits (a worker that crashed holding it spent
    // attempts the broker counted): dead-lettered unrun, so a poison
    // message cannot take down every worker for ever.
    if let Some(reason) = ctx.retry.before_attempt(message.attempt, &message.body) {
        if !revoked.is_cancelled() {
            dead_letter(&ctx, &mut held, &message, &reason).await;
            if let Some(k) = &key {
                ctx.order.done(k);
            }
            return;
        }
    }
    let mut probes_failed = 0u32;
    loop {
        let started = Instant::now();
        let hold = Hold::default();
        let ended = if revoked.is_cancelled() {
            Ended::Revoked
        } else {
            tokio::select! {
                biased;
                () = revoked.wait() => Ended::Revoked,
                _ = ctx.cancel.cancelled() => Ended::Cancelled,
                // Held by a paused destination, it has sent nothing: a
                // stop releases it at once, like a job waiting to retry.
                () = async {
                    ctx.stopping.cancelled().await;
                    hold.holding().await;
                } => Ended::StoppedHeld,
                r = async {
                    // Waiting for the breaker is like waiting to retry: a
                    // stop releases the message.
                    let ticket = tokio::select! {
                        // An open breaker only: a job that may run, runs.
                        biased;
                        t = ctx.breaker.admit() => t,
                        _ = ctx.stopping.cancelled() => return Ended::Stopped,
                    };
                    let r = attempt(&ctx, &message, &hold).await;
                    if ticket.record(&r) {
                        Ended::ProbeFailed(r)
                    } else {
                        Ended::Done(r)
                    }
                } => r,
            }
        };
        let outcome = match ended {
            Ended::Revoked => {
                // Not ours to settle any more: the broker hands it on.
                held.forget();
                JobRevoked { id: &message.id }.emit(&ctx.counts);
                break;
            }
            Ended::Cancelled => {
                release(&ctx, &mut held, &message.id, &key, false).await;
                break;
            }
            Ended::Stopped => {
                release(&ctx, &mut held, &message.id, &key, true).await;
                break;
            }
            Ended::StoppedHeld => {
                release(&ctx, &mut held, &message.id, &key, false).await;
                break;
            }
            Ended::ProbeFailed(r) => {
                probes_failed += 1;
                if probes_failed < MAX_FREE_PROBES {
                    // The outage's, not the message's: it waits for the
                    // next probe or the breaker to close, its attempts
                    // untouched.
                    AttemptEnded {
                        took: started.elapsed(),
                    }
                    .emit(&ctx.counts);
                    continue;
                }
                // Or the message's own failure (a body the receiver always
                // refuses): from now on its probes spend attempts, so it
                // cannot hold the pipeline for ever.
                r
            }
            Ended::Done(r) => r,
        };
        let id = message.id.clone();
        let error = match outcome {
            Ok(()) => {
                if settle(&ctx, &mut held, &id, "ack", |a| a.ack()).await {
                    JobSucceeded.emit(&ctx.counts);
                }
                AttemptEnded {
                    took: started.elapsed(),
                }
                .emit(&ctx.counts);
                break;
            }
            Err(e) => e,
        };
        match ctx.retry.on_failure(message.attempt, &message.body, error) {
            Decision::Retry { delay, reason } => {
                JobRetried {
                    id: &id,
                    attempt: message.attempt,
                    delay,
                    reason: &reason,
                }
                .emit(&ctx.counts);
                AttemptEnded {
                    took: started.elapsed(),
                }
                .emit(&ctx.counts);
                if ctx.caps.delayed_retry {
                    if settle(&ctx, &mut held, &id, "retry", |a| a.retry(delay)).await {
                        RetryHandedBack { id: &id, delay }.emit(&ctx.counts);
                    }
                    block(&ctx, &key);
                    break;
                }
                // No broker to hold it: wait here, in this job's slot (and
                // its key's), then run it again.
                let backoff = tokio::time::sleep(delay);
                tokio::pin!(backoff);
                let mut waited = tokio::select! {
                    biased;
                    () = revoked.wait() => Some(false),
                    _ = ctx.stopping.cancelled() => None,
                    _ = ctx.cancel.cancelled() => None,
                    _ = &mut backoff => Some(true),
                };
                // Stopping: a retry due within half the shutdown timeout
                // still runs (the other half is for the attempt), so it
                // settles here rather than pin a Kafka partition's commit
                // and replay all behind it. Later ones are released.
                if waited.is_none()
                    && !ctx.cancel.is_cancelled()
                    && backoff.deadline().saturating_duration_since(Instant::now())
                        <= ctx.shutdown_timeout / 2
                {
                    waited = tokio::select! {
                        biased;
                        () = revoked.wait() => Some(false),
                        _ = ctx.cancel.cancelled() => None,
                        _ = &mut backoff => Some(true),
                    };
                }
                match waited {
                    Some(true) => message.attempt = message.attempt.saturating_add(1),
                    Some(false) => {
                        held.forget();
                        JobRevoked { id: &id }.emit(&ctx.counts);
                        break;
                    }
                    None => {
                        release(&ctx, &mut held, &id, &key, true).await;
                        break;
                    }
                }
            }
            Decision::DeadLetter { reason } => {
                dead_letter(&ctx, &mut held, &message, &reason).await;
                AttemptEnded {
                    took: started.elapsed(),
                }
                .emit(&ctx.counts);
                break;
            }
        }
    }
    if let Some(k) = &key {
        ctx.order.done(k);
    }
}

/// A delivery's revocation, if it has one.
struct Revoked(Option<Revocation>);

impl Revoked {
    fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(Revocation::is_cancelled)
    }

    async fn wait(&self) {
        match &self.0 {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// One attempt of the handler, within the job timeout, a panic caught.
async fn attempt(ctx: &Ctx, message: &Message, hold: &Hold) -> Result<(), JobError> {
    if let Some(len) = message.oversize {
        return Err(JobError::fail(format!(
            "message body is {len} bytes, over max_body_bytes ({}); raise the pipeline's \
             max_body_bytes if such bodies are expected",
            ctx.max_body_bytes
        )));
    }
    let mut job = Job::new(message.id.clone(), message.attempt, message.body.clone())
        .with_attributes(message.attributes.clone());
    job.key = message.key.clone();
    job.fields = message.fields.clone();
    job.hold = hold.clone();
    let run = AssertUnwindSafe(ctx.handler.call(job)).catch_unwind();
    let timeout = ctx.retry.timeout(&message.body, ctx.job_timeout);
    let ran = match timeout.limit {
        None => Ok(run.await),
        Some(t) => within(t, hold, run).await,
    };
    match ran {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            Err(JobError::retry(format!("the job panicked: {what}")))
        }
        Err(_) => {
            let secs = timeout.limit.unwrap_or_default().as_secs();
            let limit = if timeout.from_job {
                format!("its own timeout ({secs} s)")
            } else {
                format!("job_timeout_secs ({secs} s)")
            };
            if timeout.fails_the_job {
                Err(JobError::fail(format!(
                    "the job took longer than {limit} and was stopped; its failOnTimeout \
                     fails it for good"
                )))
            } else {
                Err(JobError::retry(format!(
                    "the job took longer than {limit} and was stopped"
                )))
            }
        }
    }
}

/// Runs `run` for at most `limit`, not counting the time it was held by
/// a paused destination (`hold`). `Err` when it ran out of time.
async fn within<F: std::future::Future>(
    limit: Duration,
    hold: &Hold,
    run: F,
) -> Result<F::Output, ()> {
    let started = Instant::now();
    let mut run = std::pin::pin!(run);
    loop {
        let held = hold.held();
        tokio::select! {
            out = &mut run => return Ok(out),
            timed_out = async {
                let Some(held) = held else {
                    // Held now: no clock runs until the hold ends.
                    hold.released().await;
                    return false;
                };
                // A limit too far off to be an instant never ends.
                let Some(deadline) = limit.checked_add(held).and_then(|d| started.checked_add(d)) else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(deadline).await;
                // A hold that began meanwhile moves the deadline.
                hold.held() == Some(held)
            } => if timed_out {
                return Err(());
            },
        }
    }
}

/// Stores the message with the dead-letter target, then removes it. If it
/// cannot be stored it is not removed: it goes back to the broker (after
/// the backoff where the broker can wait) and comes round again.
async fn dead_letter(ctx: &Arc<Ctx>, held: &mut Held, message: &Message, reason: &str) {
    // The reason is stored (failures files, SQS attributes): no secrets.
    let reason = &*crate::redact::redact(reason);
    let letter = DeadLetter {
        pipeline: &ctx.name,
        message,
        attempts: message.attempt,
        reason,
    };
    if let Err(e) = ctx.dead_letters.store(letter).await {
        SettleFailed {
            id: &message.id,
            action: "dead_letter",
            error: &e,
        }
        .emit(&ctx.counts);
        let acker = held.take();
        let back = if ctx.caps.delayed_retry {
            // Not stored, so not removed: the broker keeps it until a later
            // round, after the policy's backoff.
            let delay = [message.attempt, 1]
                .into_iter()
                .find_map(|attempt| {
                    let e = JobError::retry("the dead letter was not stored");
                    match ctx.retry.on_failure(attempt, &message.body, e) {
                        Decision::Retry { delay, .. } => Some(delay),
                        Decision::DeadLetter { .. } => None,
                    }
                })
                .unwrap_or(Duration::from_secs(5));
            acker.retry(delay).await
        } else {
            acker.release().await
        };
        held.settling = false;
        if let Err(e) = back {
            SettleFailed {
                id: &message.id,
                action: "release",
                error: &e,
            }
            .emit(&ctx.counts);
        }
        block(ctx, &message.key);
        return;
    }
    if settle(ctx, held, &message.id, "remove", |a| a.remove()).await {
        JobDeadLettered {
            id: &message.id,
            attempt: message.attempt,
            reason,
            target: &ctx.dead_letters_name,
        }
        .emit(&ctx.counts);
    }
}

/// Hands the message back unsettled, counted as released. Its ordering
/// key takes nothing more in this run: a later message of the key, already
/// received, would otherwise run (in the drain) before this one runs again.
async fn release(
    ctx: &Arc<Ctx>,
    held: &mut Held,
    id: &str,
    key: &Option<String>,
    waiting_retry: bool,
) {
    block(ctx, key);
    if settle(ctx, held, id, "release", |a| a.release()).await {
        JobReleased { waiting_retry }.emit(&ctx.counts);
    }
}

fn block(ctx: &Ctx, key: &Option<String>) {
    if let Some(k) = key {
        ctx.order.block(k);
    }
}

/// One settlement call; a refusal is counted. True when it went through.
async fn settle<F>(ctx: &Arc<Ctx>, held: &mut Held, id: &str, action: &'static str, f: F) -> bool
where
    F: FnOnce(
        Box<dyn Acker>,
    ) -> futures::future::BoxFuture<'static, Result<(), crate::sources::SourceError>>,
{
    let acker = held.take();
    let r = f(acker).await;
    held.settling = false;
    match r {
        Ok(()) => true,
        Err(e) => {
            SettleFailed {
                id,
                action,
                error: &e,
            }
            .emit(&ctx.counts);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn the_timeout_skips_exactly_the_time_held() {
        // Never held: out at the limit.
        let hold = Hold::default();
        let started = Instant::now();
        assert!(
            within(LIMIT, &hold, std::future::pending::<()>())
                .await
                .is_err()
        );
        assert_eq!(started.elapsed(), LIMIT);

        // Held from 0.5 s to 3 s (across the deadline), then hangs: out at
        // 1 s of its own time, 3.5 s in all.
        let hold = Hold::default();
        let started = Instant::now();
        let job = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let held = hold.start();
            tokio::time::sleep(Duration::from_millis(2500)).await;
            drop(held);
            std::future::pending::<()>().await
        };
        assert!(within(LIMIT, &hold, job).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(3500));

        // Held for longer than the limit, then done in time: not timed out.
        let hold = Hold::default();
        let job = async {
            let held = hold.start();
            tokio::time::sleep(LIMIT * 5).await;
            drop(held);
            tokio::time::sleep(LIMIT / 2).await;
            "done"
        };
        assert_eq!(within(LIMIT, &hold, job).await, Ok("done"));

        // A limit too large to be an instant never ends the job.
        let hold = Hold::default();
        let job = async {
            tokio::time::sleep(Duration::from_secs(7)).await;
            7
        };
        assert_eq!(within(Duration::MAX, &hold, job).await, Ok(7));
    }
}
