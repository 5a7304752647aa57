//! The receive loop: source -> pool slot -> handler -> settle, for one
//! worker. [`crate::worker::Worker`] is the way in; this module is how it
//! runs.
//!
//! Slots are the pool's: the loop reserves free places in the pool first
//! ([`sluice_pool::Pool::reserve`]), asks the source for exactly that many
//! messages, and spends one place per message, so nothing waits in memory
//! that could not run. A message holds its place until it is settled
//! (acked, dead-lettered, retried through the broker, released), and
//! through an in-process retry's wait. Messages with an ordering key run
//! one at a time per key, through the pool's per-key limit.
//!
//! Shutdown ([`Shutdown::request`], wired to SIGTERM/SIGINT by the binary):
//! stop receiving; release at once the messages waiting to retry; let
//! running jobs finish for the shutdown timeout; then stop the handlers
//! still running and release their messages. A settlement under way is
//! never cut, unless it is still going after a further grace period. A
//! second request cuts the wait short.

mod attempt;
mod breaker;
pub mod control;
mod heartbeat;
mod order;
mod progress;
mod report;
mod shutdown;

pub use control::{Control, Destinations};
pub use progress::{Progress, Running, Shown, start as start_progress, summary};
pub use report::{EXIT_DEAD_LETTERED, EXIT_UNSETTLED, End, PipelineReport, RunReport};
pub use shutdown::Shutdown;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_pool::{KeyLimit, Pool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::handler::Handler;
use crate::retry::RetryPolicy;
use crate::sources::{Acker, DeadLetterTarget, Received, Source, SourceErrorKind};
use crate::telemetry::events::Health;
use crate::telemetry::events::{JobReleased, Received as ReceivedEvent, SettleFailed};
use crate::telemetry::{Event, PipelineCounts};

/// Everything one worker runs with.
pub(crate) struct Parts {
    pub name: String,
    pub source: Box<dyn Source>,
    pub handler: Arc<dyn Handler>,
    pub retry: Arc<dyn RetryPolicy>,
    pub dead_letters: Arc<dyn DeadLetterTarget>,
    pub control: Arc<Control>,
    pub job_timeout: Option<Duration>,
    pub max_body_bytes: u64,
    pub shutdown: Shutdown,
    pub shutdown_timeout: Duration,
    pub counts: Arc<PipelineCounts>,
    /// Failed attempts in a row that pause intake (0: never).
    pub pause_after_failures: u32,
}

/// After the shutdown deadline, how long settlements already under way get
/// to finish before they too are cut.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// Most messages asked of a source in one call.
const MAX_BATCH: usize = 256;

/// One worker's receive loop and shutdown.
pub(crate) async fn drive(parts: Parts) -> PipelineReport {
    let Parts {
        name,
        mut source,
        handler,
        retry,
        dead_letters,
        control,
        job_timeout,
        max_body_bytes,
        shutdown,
        shutdown_timeout,
        counts,
        pause_after_failures,
    } = parts;
    let started = Instant::now();
    // No wait queue: a message is received only into a reserved place.
    // Ordering keys run one at a time.
    let pool = Pool::builder()
        .concurrency(control.concurrency())
        .queue_capacity(0)
        .per_key(KeyLimit::concurrency(1))
        .build();
    control.attach(&pool);
    let (orphans, mut orphaned) = mpsc::unbounded_channel::<Box<dyn Acker>>();
    let releaser = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some(acker) = orphaned.recv().await {
                match acker.release().await {
                    Ok(()) => JobReleased {
                        waiting_retry: false,
                    }
                    .emit(&counts),
                    Err(e) => SettleFailed {
                        id: "?",
                        action: "release",
                        error: &e,
                    }
                    .emit(&counts),
                }
            }
        })
    };
    let ctx = Arc::new(attempt::Ctx {
        dead_letters_name: dead_letters.name(),
        name: name.clone(),
        handler,
        retry,
        dead_letters,
        caps: source.capabilities(),
        job_timeout,
        max_body_bytes,
        counts: counts.clone(),
        stopping: CancellationToken::new(),
        cancel: CancellationToken::new(),
        shutdown_timeout,
        order: Default::default(),
        breaker: control.breaker(pause_after_failures),
        orphans,
    });
    let heartbeat = ctx.caps.lease.map(heartbeat::Heartbeat::new);
    if let Some(h) = &heartbeat {
        tokio::spawn(heartbeat::Heartbeat::run(Arc::downgrade(h)));
    }
    let mut end = End::Stopped;
    let mut pause = Duration::from_millis(100);
    info!(pipeline = %name, concurrency = control.concurrency(), "pipeline started");
    counts.set_health(Health::Running);
    loop {
        // Paused by an operator: nothing, until resumed. What the source
        // holds undelivered goes back first (nothing renews its lease).
        if control.is_paused() {
            if let Err(e) = source.pause().await {
                warn!(pipeline = %name, error = %crate::error_chain(&e), "handing back what the source held at the pause failed; those messages come back after their lease");
            }
            tokio::select! {
                biased;
                _ = shutdown.requested() => break,
                () = control.unpaused() => {}
            }
        }
        // While the breaker is open, nothing (or one message to probe with).
        let most = tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            n = ctx.breaker.intake() => n.min(MAX_BATCH),
        };
        let first = tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            p = pool.reserve() => p.expect("the pool is closed only after this loop"),
        };
        if control.is_paused() {
            // Paused while waiting for a place: give it back.
            continue;
        }
        let mut places = vec![first];
        while places.len() < most {
            match pool.try_reserve() {
                Ok(p) => places.push(p),
                Err(_) => break,
            }
        }
        let got = tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            // Receives are cancel-safe: a pause need not wait out a long poll.
            () = control.paused() => continue,
            r = source.receive(places.len()) => r,
        };
        let deliveries = match got {
            Ok(Received::Deliveries(d)) => d,
            Ok(Received::End) => {
                end = End::Exhausted;
                break;
            }
            Err(e) if e.kind == SourceErrorKind::Transient => {
                counts.set_health(Health::Failing);
                warn!(pipeline = %name, error = %crate::error_chain(&e), pause_ms = pause.as_millis() as u64, "receive failed; trying again");
                drop(places);
                tokio::select! {
                    _ = shutdown.requested() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                error!(pipeline = %name, error = %why, "the source failed; stopping this pipeline");
                end = End::Failed(why);
                break;
            }
        };
        if pause > Duration::from_millis(100) {
            counts.set_health(Health::Running);
        }
        pause = Duration::from_millis(100);
        assert!(
            deliveries.len() <= places.len(),
            "source returned {} messages when asked for at most {}",
            deliveries.len(),
            places.len()
        );
        ReceivedEvent {
            count: deliveries.len() as u64,
        }
        .emit(&counts);
        for d in deliveries {
            counts.came_back(&d.message.id);
            let place = places.pop().expect("checked above");
            let key = d.message.key.clone();
            if let Some(k) = &key {
                ctx.order.received(k);
            }
            let lease = heartbeat::Lease::new(d.acker);
            if let Some(h) = &heartbeat {
                h.keep(&lease);
            }
            let held = attempt::Held::new(&ctx, d.message.id.clone(), lease);
            let task = attempt::run(ctx.clone(), d.message, held, d.revocation);
            let spent = match key {
                Some(k) => place.execute_keyed(k, task),
                None => place.execute(task),
            };
            if spent.is_err() {
                unreachable!("the job pool is closed only after the receive loop ends");
            }
        }
    }
    counts.set_health(Health::Stopped);
    // Let running jobs finish: unbounded when the source simply ended, until
    // the deadline once a stop was requested, not at all once forced.
    pool.close();
    tokio::select! {
        _ = pool.join() => {}
        _ = async {
            shutdown.requested().await;
            ctx.stopping.cancel();
            tokio::time::sleep(shutdown_timeout).await;
        } => warn!(pipeline = %name, "shutdown timeout reached; releasing unfinished jobs"),
        _ = shutdown.forced() => {}
    }
    // Stop the handlers still running: each releases its message. A
    // settlement under way finishes, within a grace period.
    ctx.cancel.cancel();
    if tokio::time::timeout(SETTLE_GRACE, pool.join())
        .await
        .is_err()
    {
        warn!(pipeline = %name, "settlements still running after {SETTLE_GRACE:?}; cutting them");
        let cut = pool.shutdown(Duration::ZERO).await;
        // Unstarted tasks release their messages as they are dropped.
        drop(cut);
    }
    drop(ctx);
    drop(heartbeat);
    releaser.await.expect("the releaser does not panic");
    if let Err(e) = source.close().await {
        error!(pipeline = %name, error = %crate::error_chain(&e), "closing the source failed");
        SettleFailed {
            id: "-",
            action: "close",
            error: &e,
        }
        .emit(&counts);
    }
    counts.flush_logs();
    let report = PipelineReport::new(&counts, started.elapsed(), end);
    info!(pipeline = %name, end = ?report.end, "pipeline stopped");
    report
}
