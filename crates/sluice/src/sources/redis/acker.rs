//! Settling a job of Laravel's Redis queue, and the dead-letter list.
//!
//! Every call names the job by its reserved member, the exact bytes the
//! pop script stored in `:reserved`: that is how Laravel's `RedisJob`
//! deletes and releases it, and how a PHP worker and sluice can share a
//! queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::scripts::{Keys, RELEASE, RETRY};
use crate::sources::common::{BatchOptions, Batcher};
use crate::sources::{Acker, DeadLetter, DeadLetterTarget, SourceError};

/// What the source and its ackers share.
pub struct Shared {
    /// Commands (pops, settlements); reconnects by itself, with backoff.
    pub conn: ConnectionManager,
    pub keys: Keys,
    /// Deliveries handed out and not yet being settled.
    pub out: Arc<AtomicUsize>,
    /// Deletes, pipelined: one round trip for many jobs' `ZREM`s.
    pub deletes: Batcher<Delete>,
}

/// One job's delete: its reserved member, and whether this is a second
/// try (a `ZREM` that then finds nothing most likely ran the first time).
pub struct Delete {
    pub member: Bytes,
    pub again: bool,
}

/// What the delete batcher answers for a `ZREM` that failed: the
/// connection's error, worth trying again.
const DELETE_FAILED: &str = "redis: deleting a reserved job (ZREM) failed";

/// Starts the delete batcher: up to 128 `ZREM`s in one pipeline, sent
/// when full, when every job handed out is settling (`out` is 0), or
/// after 1 ms; 4 pipelines in flight.
pub fn delete_batcher(
    conn: ConnectionManager,
    keys: Keys,
    out: Arc<dyn Fn() -> bool + Send + Sync>,
) -> (Batcher<Delete>, tokio::task::JoinHandle<()>) {
    let opts = BatchOptions {
        max_batch: 128,
        linger: Duration::from_millis(1),
        in_flight: 4,
        flush_now: Some(out),
    };
    Batcher::spawn(opts, move |batch: Vec<Delete>| {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            let mut pipe = redis::pipe();
            for d in &batch {
                pipe.zrem(&keys.reserved, d.member.as_ref());
            }
            match pipe.query_async::<Vec<i64>>(&mut conn).await {
                Ok(removed) => batch
                    .iter()
                    .zip(removed.into_iter().chain(std::iter::repeat(1)))
                    .map(|(d, removed)| {
                        if removed == 0 && !d.again {
                            // Its reservation expired and it was migrated
                            // back: another consumer has it now, and will
                            // run it again.
                            tracing::warn!(queue = %keys.queue, "a job's reservation had expired before it was deleted; it will run again (raise retry_after_secs?)");
                        }
                        Ok(())
                    })
                    .collect(),
                Err(e) => {
                    let why = format!("{DELETE_FAILED}: {e}");
                    batch.iter().map(|_| Err(why.clone())).collect()
                }
            }
        }
    })
}

/// Unix time in seconds, with the milliseconds, as a score.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
        / 1000.0
}

/// A score `d` from now, to the millisecond.
pub fn score_in(d: Duration) -> f64 {
    now_secs() + (d.as_millis() as f64 / 1000.0)
}

/// A Redis failure as the runtime should treat it: a lost or refused
/// connection, or a timeout, is worth retrying (the connection manager
/// reconnects with backoff meanwhile); anything else (a key of the wrong
/// type, a script error, a refused login) needs the operator.
pub fn error(what: &str, e: redis::RedisError) -> SourceError {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || !matches!(e.retry_method(), redis::RetryMethod::NoRetry);
    // The message quotes `e`: attached as the source too, it would print
    // twice in an error chain.
    if transient {
        SourceError::transient(format!("redis: {what} failed: {e}"))
    } else {
        SourceError::fatal(format!(
            "redis: {what} failed: {e}; check that `queue` and `prefix` name the Laravel queue's keys and that nothing else writes them"
        ))
    }
}

/// Runs a settlement command, again while it fails with a transient error
/// (a connection lost mid-command, Redis restarting), for up to about 15 s
/// with backoff from 100 ms to 2 s, while the connection manager
/// reconnects. Safe because every settlement is idempotent: `ZREM` of a
/// member, and scripts that act only while the job is still reserved. A
/// command whose reply was lost may have run: `f` learns, by its argument,
/// that this is a second try. Other errors, and the last transient one,
/// are returned.
async fn settling<T, F, Fut>(mut f: F) -> Result<T, SourceError>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, SourceError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    let mut again = false;
    loop {
        match f(again).await {
            Err(e) if e.is_transient() && waited < Duration::from_secs(15) => {
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(2));
                again = true;
            }
            other => return other,
        }
    }
}

/// Settles one reserved job.
pub struct RedisAcker {
    pub shared: Arc<Shared>,
    /// The reserved member, byte for byte.
    pub reserved: Bytes,
    /// The job as it stood in the list before the pop.
    pub original: Bytes,
    /// A settlement began: nothing to do when dropped.
    pub begun: AtomicBool,
}

impl RedisAcker {
    fn begin(&self) {
        if !self.begun.swap(true, Relaxed) {
            self.shared.out.fetch_sub(1, Relaxed);
        }
    }

    /// Removes the reserved member: Laravel's `deleteReserved`, pipelined
    /// with other jobs' deletes.
    async fn delete(self: Box<Self>) -> Result<(), SourceError> {
        self.begin();
        settling(|again| {
            let deletes = self.shared.deletes.clone();
            let member = self.reserved.clone();
            async move {
                match deletes.submit(Delete { member, again }).await {
                    Ok(Ok(())) => Ok(()),
                    // Only the connection fails a pipelined ZREM.
                    Ok(Err(why)) => Err(SourceError::transient(why)),
                    Err(closed) => Err(SourceError::fatal(format!(
                        "redis: deleting a reserved job: {closed}"
                    ))),
                }
            }
        })
        .await
    }
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        // Dropped unsettled (revoked): its reservation expires and the
        // next migration hands it out again.
        self.begin();
    }
}

impl Acker for RedisAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(self.delete())
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            let this = &*self;
            let keys = &this.shared.keys;
            // The delay counts from the first try.
            let due = score_in(delay);
            settling(|_| {
                let mut conn = this.shared.conn.clone();
                async move {
                    let _was_reserved: i64 = RETRY
                        .key(&keys.delayed)
                        .key(&keys.reserved)
                        .arg(this.reserved.as_ref())
                        .arg(due)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(|e| error("releasing a job to :delayed", e))?;
                    Ok(())
                }
            })
            .await
        })
    }

    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(self.delete())
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            let this = &*self;
            let keys = &this.shared.keys;
            settling(|_| {
                let mut conn = this.shared.conn.clone();
                async move {
                    let _was_reserved: i64 = RELEASE
                        .key(&keys.queue)
                        .key(&keys.reserved)
                        .key(&keys.notify)
                        .arg(this.reserved.as_ref())
                        .arg(this.original.as_ref())
                        .invoke_async(&mut conn)
                        .await
                        .map_err(|e| error("handing a job back to the queue", e))?;
                    Ok(())
                }
            })
            .await
        })
    }

    fn extend(&self, lease: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        let shared = self.shared.clone();
        let reserved = self.reserved.clone();
        Box::pin(async move {
            let mut conn = shared.conn.clone();
            // XX: only while still reserved; a job already migrated back
            // is not reserved again.
            let _: i64 = redis::cmd("ZADD")
                .arg(&shared.keys.reserved)
                .arg("XX")
                .arg(score_in(lease))
                .arg(reserved.as_ref())
                .query_async(&mut conn)
                .await
                .map_err(|e| error("extending a reservation (ZADD XX)", e))?;
            Ok(())
        })
    }
}

/// The dead-letter list: each failed job is `RPUSH`ed as one JSON record,
/// `{"payload", "reason", "pipeline", "attempts", "failed_at"}` (`payload`
/// the job as pushed, as text, as Laravel's `failed_jobs` keeps it;
/// `failed_at` Unix seconds). Laravel's
/// `failed_jobs` table is the next target.
pub struct DeadLetterList {
    pub conn: ConnectionManager,
    pub key: String,
}

impl DeadLetterTarget for DeadLetterList {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let record = serde_json::json!({
                "payload": String::from_utf8_lossy(&letter.message.body),
                "reason": letter.reason,
                "pipeline": letter.pipeline,
                "attempts": letter.attempts,
                "failed_at": now_secs().floor() as u64,
            });
            let mut conn = self.conn.clone();
            let _: i64 = conn
                .rpush(&self.key, record.to_string())
                .await
                .map_err(|e| error("storing a dead letter (RPUSH)", e))?;
            Ok(())
        })
    }

    fn name(&self) -> String {
        format!("redis list {}", self.key)
    }
}
