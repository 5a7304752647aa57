//! What a run did, read from the same counts its events kept.

use std::time::Duration;

use sluice_pool::Histogram;

use crate::telemetry::PipelineCounts;

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

/// What one pipeline did.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    pub name: String,
    pub received: u64,
    pub succeeded: u64,
    /// Failed attempts that were to be tried again.
    pub retried: u64,
    pub dead_lettered: u64,
    /// Handed back to the source unsettled (shutdown).
    pub released: u64,
    /// Of `released`, those that were waiting to retry.
    pub released_waiting_retry: u64,
    /// Taken back by the source (another consumer settles them).
    pub revoked: u64,
    /// Handed back to keep an ordering key's order.
    pub deferred: u64,
    /// Settlements the source or the dead-letter target refused.
    pub settle_errors: u64,
    /// Handed back to the broker for a retry and not received again before
    /// the run ended: with the broker, not succeeded.
    pub pending_retry: u64,
    /// One attempt of a job, from start to settled.
    pub latency: Histogram,
    pub elapsed: Duration,
    pub end: End,
}

impl PipelineReport {
    pub(crate) fn new(c: &PipelineCounts, elapsed: Duration, end: End) -> PipelineReport {
        PipelineReport {
            name: c.pipeline.clone(),
            received: c.received.get(),
            succeeded: c.succeeded.get(),
            retried: c.retried.get(),
            dead_lettered: c.dead_lettered.get(),
            released: c.released.get(),
            released_waiting_retry: c
                .released_waiting_retry
                .load(std::sync::atomic::Ordering::Relaxed),
            revoked: c.revoked.get(),
            deferred: c.deferred.get(),
            settle_errors: c.settle_errors.get(),
            pending_retry: c.pending_retry(),
            latency: c.latency(),
            elapsed,
            end,
        }
    }

    /// True when every message received was settled here or handed to
    /// another consumer by its source (none released, none waiting in the
    /// broker for a retry, no settlement refused, the source did not fail).
    pub fn settled_everything(&self) -> bool {
        self.released == 0
            && self.pending_retry == 0
            && self.settle_errors == 0
            && !matches!(self.end, End::Failed(_))
    }

    /// This pipeline's exit code, by the rules of [`RunReport::exit_code`].
    pub fn exit_code(&self) -> i32 {
        if !self.settled_everything() {
            EXIT_UNSETTLED
        } else if self.dead_lettered > 0 {
            EXIT_DEAD_LETTERED
        } else {
            0
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub pipelines: Vec<PipelineReport>,
    pub elapsed: Duration,
}

impl RunReport {
    /// True when every pipeline settled everything it received.
    pub fn settled_everything(&self) -> bool {
        self.pipelines
            .iter()
            .all(PipelineReport::settled_everything)
    }

    /// Jobs that failed for good and went to their dead-letter target.
    pub fn dead_lettered(&self) -> u64 {
        self.pipelines.iter().map(|p| p.dead_lettered).sum()
    }

    /// The process exit code, checked in this order:
    ///
    /// - [`EXIT_UNSETTLED`] (3): some messages were handed back unsettled
    ///   (a stop during a job or its backoff, the shutdown timeout, a forced
    ///   stop), some wait in their broker for a retry (pending retry: their
    ///   jobs have not succeeded), a settlement failed (an ack, a dead letter, the final
    ///   checkpoint write), or a source failed;
    /// - [`EXIT_DEAD_LETTERED`] (4): everything was settled, but some jobs
    ///   failed for good and were dead-lettered;
    /// - 0: every job succeeded.
    ///
    /// (1 is a config or start-up error, before any message is taken.)
    pub fn exit_code(&self) -> i32 {
        if !self.settled_everything() {
            EXIT_UNSETTLED
        } else if self.dead_lettered() > 0 {
            EXIT_DEAD_LETTERED
        } else {
            0
        }
    }
}

/// Exit code: not everything received was settled.
pub const EXIT_UNSETTLED: i32 = 3;
/// Exit code: everything settled, some jobs dead-lettered.
pub const EXIT_DEAD_LETTERED: i32 = 4;
