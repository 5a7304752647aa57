//! The receive loop: source -> pool slot -> steps -> settle, per pipeline.
//!
//! Each pipeline asks its source for at most as many messages as it has free
//! slots, so nothing waits in memory that could not run. A slot is held from
//! receipt until the message is settled (acked, retried, dead-lettered or
//! released), so "in flight" counts settling too.
//!
//! Shutdown ([`Shutdown::request`], wired to SIGTERM/SIGINT by the binary):
//! stop receiving, let running jobs finish for `shutdown_timeout_secs`, then
//! cancel the rest and release their messages to the source at once. A
//! second request cuts the wait short.

pub mod job;
pub mod pipeline;
mod progress;
pub mod retry;
mod shutdown;

pub use progress::{Progress, summary};
pub use shutdown::Shutdown;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_pool::{Histogram, Pool};
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

use crate::config::{ConfigError, FieldPath, Loaded, SourceConfig};
use crate::sources::{Acker, Delivery, Received, Source, SourceError, file, sqs};
use crate::telemetry::PipelineMetrics;
use pipeline::{Pipeline, Settle};

/// How a run is driven.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub shutdown: Shutdown,
    pub progress: Progress,
    /// Stop each pipeline once its source is empty and nothing is in
    /// flight (see [`Source::stop_when_empty`]).
    pub stop_when_empty: bool,
}

/// Why a pipeline stopped receiving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Its source was exhausted and everything settled.
    Exhausted,
    /// A stop was requested.
    Stopped,
    /// Its source failed for good.
    Failed(String),
}

/// Live counts of one pipeline, shared with the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub released: AtomicU64,
    pub settle_errors: AtomicU64,
    latency: Mutex<Histogram>,
}

impl Counters {
    fn record_latency(&self, d: Duration) {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(d);
    }
}

/// What one pipeline did.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    pub name: String,
    pub received: u64,
    pub succeeded: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub released: u64,
    pub settle_errors: u64,
    /// One attempt of a job, from receipt to settled.
    pub latency: Histogram,
    pub elapsed: Duration,
    pub end: End,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub pipelines: Vec<PipelineReport>,
    pub elapsed: Duration,
}

impl RunReport {
    /// True when every message received was settled (none released, no
    /// source refused a settlement, no source failed).
    pub fn settled_everything(&self) -> bool {
        self.pipelines
            .iter()
            .all(|p| p.released == 0 && p.settle_errors == 0 && !matches!(p.end, End::Failed(_)))
    }

    /// The process exit code: 0 when everything settled, 3 when messages
    /// were handed back unsettled or a source failed.
    pub fn exit_code(&self) -> i32 {
        if self.settled_everything() { 0 } else { 3 }
    }
}

/// Opens the source `config` describes for `pipeline`.
pub async fn open_source(
    config: &SourceConfig,
    pipeline: &Pipeline,
) -> Result<Box<dyn Source>, SourceError> {
    match config {
        SourceConfig::File(c) => Ok(Box::new(file::FileSource::open(c, pipeline)?)),
        SourceConfig::Sqs(c) => Ok(Box::new(sqs::SqsSource::open(c, pipeline).await?)),
    }
}

/// Runs every pipeline of `loaded` until their sources end or a stop is
/// requested. Config errors come back before anything starts.
pub async fn run(loaded: &Loaded, opts: RunOptions) -> Result<RunReport, ConfigError> {
    let pipelines = loaded.build()?;
    let mut sources = Vec::new();
    for (i, p) in pipelines.iter().enumerate() {
        let cfg = &loaded.config.pipelines[i].source;
        let mut source = open_source(cfg, p).await.map_err(|e| {
            loaded.error_at(
                &FieldPath::default().key("pipeline").index(i).key("source"),
                e.to_string(),
            )
        })?;
        if opts.stop_when_empty {
            source.stop_when_empty();
        }
        sources.push(source);
    }
    crate::telemetry::describe();
    let started = Instant::now();
    let timeout = Duration::from_secs(loaded.config.shutdown_timeout_secs);
    let mut tasks = Vec::new();
    let mut display = Vec::new();
    for (p, source) in pipelines.into_iter().zip(sources) {
        let counters = Arc::new(Counters::default());
        display.push((p.name.clone(), counters.clone(), source.progress()));
        let shutdown = opts.shutdown.clone();
        tasks.push(tokio::spawn(drive(
            Arc::new(p),
            source,
            shutdown,
            timeout,
            counters,
        )));
    }
    let progress = progress::start(opts.progress, display);
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.expect("a pipeline's driver does not panic"));
    }
    progress.finish().await;
    Ok(RunReport {
        pipelines: reports,
        elapsed: started.elapsed(),
    })
}

/// After the shutdown deadline, how long settlements already under way get
/// to finish before they too are cancelled.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// Most messages asked of a source in one call.
const MAX_BATCH: usize = 256;

/// One pipeline's receive loop and shutdown.
async fn drive(
    p: Arc<Pipeline>,
    mut source: Box<dyn Source>,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
) -> PipelineReport {
    let started = Instant::now();
    let metrics = Arc::new(PipelineMetrics::new(&p.name, &p.step_kinds()));
    let slots = Arc::new(Semaphore::new(p.concurrency));
    // Slots are taken before a message is received, so the pool never has
    // to queue more than a moment.
    let pool = Pool::builder()
        .concurrency(p.concurrency)
        .queue_capacity(p.concurrency)
        .build();
    let (release_tx, mut release_rx) = mpsc::unbounded_channel::<Box<dyn Acker>>();
    let releaser = {
        let counters = counters.clone();
        let metrics = metrics.clone();
        let name = p.name.clone();
        tokio::spawn(async move {
            while let Some(acker) = release_rx.recv().await {
                counters.released.fetch_add(1, Relaxed);
                metrics.released.increment(1);
                if let Err(e) = acker.release().await {
                    counters.settle_errors.fetch_add(1, Relaxed);
                    metrics.settle_errors.increment(1);
                    warn!(pipeline = %name, error = %e, "could not release a message; the source will redeliver it when its lease ends");
                }
            }
        })
    };
    let mut end = End::Stopped;
    let mut pause = Duration::from_millis(100);
    info!(pipeline = %p.name, concurrency = p.concurrency, "pipeline started");
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            s = slots.clone().acquire_owned() => s.expect("the slot semaphore is never closed"),
        };
        let mut held = vec![first];
        while held.len() < MAX_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        let got = tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            r = source.receive(held.len()) => r,
        };
        let deliveries = match got {
            Ok(Received::Deliveries(d)) => d,
            Ok(Received::End) => {
                end = End::Exhausted;
                break;
            }
            Err(SourceError::Transient(e)) => {
                warn!(pipeline = %p.name, error = %e, pause_ms = pause.as_millis() as u64, "receive failed; trying again");
                drop(held);
                tokio::select! {
                    _ = shutdown.requested() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(SourceError::Fatal(e)) => {
                error!(pipeline = %p.name, error = %e, "the source failed; stopping this pipeline");
                end = End::Failed(e);
                break;
            }
        };
        pause = Duration::from_millis(100);
        assert!(
            deliveries.len() <= held.len(),
            "source returned {} messages when asked for at most {}",
            deliveries.len(),
            held.len()
        );
        counters
            .received
            .fetch_add(deliveries.len() as u64, Relaxed);
        metrics.received.increment(deliveries.len() as u64);
        for d in deliveries {
            let slot = held.pop().expect("checked above");
            // The guard exists before the task is queued: a task the pool
            // hands back unstarted at shutdown still releases its message.
            let Delivery { message, acker } = d;
            let guard = Unsettled::new(acker, release_tx.clone(), metrics.clone());
            let task = settle_one(
                shutdown.clone(),
                p.clone(),
                message,
                guard,
                slot,
                counters.clone(),
                metrics.clone(),
            );
            if pool.execute(task).await.is_err() {
                unreachable!("the job pool is closed only after the receive loop ends");
            }
        }
    }
    drop(release_tx);
    // Let running jobs finish: unbounded when the source simply ended, until
    // the deadline once a stop was requested, not at all once forced.
    pool.close();
    tokio::select! {
        _ = pool.join() => {}
        _ = async {
            shutdown.requested().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => warn!(pipeline = %p.name, "shutdown timeout reached; releasing unfinished jobs"),
        _ = shutdown.forced() => {}
    }
    // Cancel the jobs still running: each releases its message. A job that
    // began settling after the stop request settles in a task of its own
    // (cutting it short would send a finished job round again); it holds
    // its slot, so taking every slot back waits for those.
    let cut = pool.shutdown(Duration::ZERO).await;
    let unstarted = cut.unstarted.len();
    if cut.cancelled > 0 {
        warn!(pipeline = %p.name, cancelled = cut.cancelled, "stopped jobs still running; their messages are released");
    }
    // Dropping the unstarted tasks releases their messages (their guards)
    // and lets the releaser's channel close.
    drop(cut);
    if unstarted > 0 {
        warn!(pipeline = %p.name, unstarted, "jobs that never started are released");
    }
    let all = u32::try_from(p.concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(SETTLE_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(pipeline = %p.name, "settlements still running after {SETTLE_GRACE:?}; closing anyway");
    }
    releaser.await.expect("the releaser does not panic");
    if let Err(e) = source.close().await {
        error!(pipeline = %p.name, error = %e, "closing the source failed");
        counters.settle_errors.fetch_add(1, Relaxed);
    }
    let latency = counters
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let report = PipelineReport {
        name: p.name.clone(),
        received: counters.received.load(Relaxed),
        succeeded: counters.succeeded.load(Relaxed),
        retried: counters.retried.load(Relaxed),
        dead_lettered: counters.dead_lettered.load(Relaxed),
        released: counters.released.load(Relaxed),
        settle_errors: counters.settle_errors.load(Relaxed),
        latency,
        elapsed: started.elapsed(),
        end,
    };
    info!(pipeline = %p.name, end = ?report.end, "pipeline stopped");
    report
}

/// Hands a message to the releaser if its job is dropped before it
/// settled (cancelled at shutdown), and keeps the in-flight gauge honest.
struct Unsettled {
    acker: Option<Box<dyn Acker>>,
    release: mpsc::UnboundedSender<Box<dyn Acker>>,
    metrics: Arc<PipelineMetrics>,
}

impl Unsettled {
    fn new(
        acker: Box<dyn Acker>,
        release: mpsc::UnboundedSender<Box<dyn Acker>>,
        metrics: Arc<PipelineMetrics>,
    ) -> Unsettled {
        metrics.in_flight.increment(1.0);
        Unsettled {
            acker: Some(acker),
            release,
            metrics,
        }
    }

    fn take(&mut self) -> Box<dyn Acker> {
        self.acker.take().expect("taken once")
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
        if let Some(acker) = self.acker.take() {
            // The releaser outlives every job; if it is gone the process is
            // exiting and the source redelivers after its lease.
            let _ = self.release.send(acker);
        }
    }
}

/// One message: run the job, then settle it exactly once.
async fn settle_one(
    shutdown: Shutdown,
    p: Arc<Pipeline>,
    message: crate::sources::Message,
    mut guard: Unsettled,
    slot: tokio::sync::OwnedSemaphorePermit,
    counters: Arc<Counters>,
    metrics: Arc<PipelineMetrics>,
) {
    let started = Instant::now();
    let (result, hints) = p.process(&message, &metrics).await;
    let decision = p.decide(message.attempt, result, hints.as_ref());
    let acker = guard.take();
    drop(guard);
    let settle = async move {
        let _slot = slot;
        let settled = match &decision {
            Settle::Ack => {
                counters.succeeded.fetch_add(1, Relaxed);
                metrics.succeeded.increment(1);
                acker.ack().await
            }
            Settle::Retry { delay, reason } => {
                counters.retried.fetch_add(1, Relaxed);
                metrics.retried.increment(1);
                warn!(
                    pipeline = %p.name, message_id = %message.id, attempt = message.attempt,
                    retry_in_ms = delay.as_millis() as u64, reason = %reason, "job failed; will retry"
                );
                acker.retry(*delay).await
            }
            Settle::DeadLetter { reason } => {
                counters.dead_lettered.fetch_add(1, Relaxed);
                metrics.dead_lettered.increment(1);
                warn!(
                    pipeline = %p.name, message_id = %message.id, attempt = message.attempt,
                    reason = %reason, "job dead-lettered"
                );
                acker.dead_letter(reason.clone()).await
            }
        };
        if let Err(e) = settled {
            counters.settle_errors.fetch_add(1, Relaxed);
            metrics.settle_errors.increment(1);
            error!(
                pipeline = %p.name, message_id = %message.id, attempt = message.attempt,
                error = %e, "could not settle the message; the source will deliver it again"
            );
        }
        let took = started.elapsed();
        metrics.job_duration.record(took);
        counters.record_latency(took);
    };
    if shutdown.is_requested() {
        // Shutting down: the pool may cancel this job any moment now, and
        // a settlement must not be cut in half.
        let _ = tokio::spawn(settle).await;
    } else {
        settle.await;
    }
}
