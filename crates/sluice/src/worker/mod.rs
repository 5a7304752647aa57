//! The library entry point: a [`Worker`] drains one source through one
//! [handler](Handler), with bounded concurrency, a retry policy, a
//! dead-letter target and a shutdown signal, and reports what it did.
//!
//! A config file only builds workers ([`crate::config`]); in code you build
//! one with your own handler:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice::sources::file::{FileSource, FileSourceConfig};
//! use sluice::{Job, JobError, Shutdown, SourceContext, Worker};
//!
//! let cx = SourceContext::new("emails", 100);
//! let source = FileSource::open(&FileSourceConfig::new("users.ndjson"), &cx)?;
//! let report = Worker::builder("emails")
//!     .source(source)
//!     .concurrency(100)
//!     .shutdown(Shutdown::new())
//!     .handler(|job: Job| async move {
//!         let _user = job.body_text()?; // send the email here
//!         Ok::<(), JobError>(())
//!     })
//!     .build()?
//!     .run()
//!     .await;
//! assert!(report.settled_everything());
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::handler::{Handler, ServiceHandler, service};
use crate::retry::{Retry, RetryPolicy};
use crate::runtime::{self, Control, Destinations, PipelineReport, Shutdown};
use crate::sources::{Backlog, DeadLetterTarget, Source, SourceProgress};
use crate::telemetry::PipelineCounts;

/// Why a worker cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker `{0}` has no source: call .source(...)")]
    NoSource(String),
    #[error("worker `{0}` has no handler: call .handler(...)")]
    NoHandler(String),
    #[error(
        "worker `{0}` has nowhere to put dead letters: its source has no dead-letter target of \
         its own, so call .dead_letters(...)"
    )]
    NoDeadLetters(String),
    #[error("worker `{0}`: concurrency must be at least 1")]
    NoConcurrency(String),
}

/// Failed attempts in a row after which a worker pauses its intake.
pub const DEFAULT_PAUSE_AFTER_FAILURES: u32 = 20;

/// One source, one handler, run until the source ends or a stop.
pub struct Worker {
    name: String,
    source: Box<dyn Source>,
    handler: Arc<dyn Handler>,
    retry: Arc<dyn RetryPolicy>,
    dead_letters: Arc<dyn DeadLetterTarget>,
    control: Arc<Control>,
    job_timeout: Option<Duration>,
    max_body_bytes: u64,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    pause_after_failures: u32,
    counts: Arc<PipelineCounts>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("concurrency", &self.control.concurrency())
            .field("retry", &self.retry)
            .field("dead_letters", &self.dead_letters.name())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker; `name` names it in logs and metrics.
    pub fn builder(name: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            name: name.into(),
            source: None,
            handler: None,
            retry: Arc::new(Retry::default()),
            dead_letters: None,
            concurrency: 100,
            job_timeout: None,
            max_body_bytes: 1 << 20,
            shutdown: Shutdown::new(),
            shutdown_timeout: Duration::from_secs(30),
            pause_after_failures: DEFAULT_PAUSE_AFTER_FAILURES,
            destinations: None,
            files_per_job: 0,
        }
    }

    /// The worker's switches: resize, pause, resume, destinations; they
    /// work before and while it runs ([`crate::runtime::control`]).
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// How many messages wait in the source's broker, where it says.
    pub fn backlog(&self) -> Option<Arc<Backlog>> {
        self.source.backlog()
    }

    /// The worker's live counts (what the report will say), for a progress
    /// display or an admin endpoint.
    pub fn counts(&self) -> Arc<PipelineCounts> {
        self.counts.clone()
    }

    /// How far through a finite input the source is.
    pub fn progress(&self) -> Option<Arc<SourceProgress>> {
        self.source.progress()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs until the source ends (every message settled) or a stop was
    /// requested and handled; see [`crate::runtime`] for the shutdown.
    pub async fn run(self) -> PipelineReport {
        runtime::drive(runtime::Parts {
            name: self.name,
            source: self.source,
            handler: self.handler,
            retry: self.retry,
            dead_letters: self.dead_letters,
            control: self.control,
            job_timeout: self.job_timeout,
            max_body_bytes: self.max_body_bytes,
            shutdown: self.shutdown,
            shutdown_timeout: self.shutdown_timeout,
            counts: self.counts,
            pause_after_failures: self.pause_after_failures,
        })
        .await
    }
}

/// Builds a [`Worker`]; see [`Worker::builder`].
pub struct WorkerBuilder {
    name: String,
    source: Option<Box<dyn Source>>,
    handler: Option<Arc<dyn Handler>>,
    retry: Arc<dyn RetryPolicy>,
    dead_letters: Option<Arc<dyn DeadLetterTarget>>,
    concurrency: usize,
    job_timeout: Option<Duration>,
    max_body_bytes: u64,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    pause_after_failures: u32,
    destinations: Option<Arc<Destinations>>,
    files_per_job: u64,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Where messages come from.
    pub fn source(self, source: impl Source) -> WorkerBuilder {
        self.boxed_source(Box::new(source))
    }

    /// Like [`source`](Self::source), for a source already boxed.
    pub fn boxed_source(mut self, source: Box<dyn Source>) -> WorkerBuilder {
        self.source = Some(source);
        self
    }

    /// What each job does: an `async fn(Job) -> Result<(), JobError>`, a
    /// closure, or a `tower::Service` through [`service`].
    pub fn handler(self, handler: impl Handler) -> WorkerBuilder {
        self.shared_handler(Arc::new(handler))
    }

    /// Like [`handler`](Self::handler), for a handler already shared.
    pub fn shared_handler(mut self, handler: Arc<dyn Handler>) -> WorkerBuilder {
        self.handler = Some(handler);
        self
    }

    /// Jobs in flight at once, settling included. Default 100.
    pub fn concurrency(mut self, n: usize) -> WorkerBuilder {
        self.concurrency = n;
        self
    }

    /// What happens after a job fails. Default [`Retry::default`].
    pub fn retry(self, policy: impl RetryPolicy) -> WorkerBuilder {
        self.shared_retry(Arc::new(policy))
    }

    /// Like [`retry`](Self::retry), for a policy already shared.
    pub fn shared_retry(mut self, policy: Arc<dyn RetryPolicy>) -> WorkerBuilder {
        self.retry = policy;
        self
    }

    /// Where messages that failed for good are stored. Default: the
    /// source's own target ([`Source::dead_letters`]).
    pub fn dead_letters(mut self, target: Arc<dyn DeadLetterTarget>) -> WorkerBuilder {
        self.dead_letters = Some(target);
        self
    }

    /// A job running longer is stopped and retried. Default: no limit.
    pub fn job_timeout(mut self, timeout: Duration) -> WorkerBuilder {
        self.job_timeout = Some(timeout);
        self
    }

    /// Named in the reason of a job whose body was over the source's limit.
    pub fn max_body_bytes(mut self, n: u64) -> WorkerBuilder {
        self.max_body_bytes = n;
        self
    }

    /// The stop switch; wire it to signals with [`Shutdown::on_signals`].
    pub fn shutdown(mut self, shutdown: Shutdown) -> WorkerBuilder {
        self.shutdown = shutdown;
        self
    }

    /// After a stop request, how long running jobs get to finish before
    /// their messages are released. Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> WorkerBuilder {
        self.shutdown_timeout = timeout;
        self
    }

    /// After this many attempts in a row failed with a retryable error,
    /// the worker stops taking messages and holds its retries, trying one
    /// probe at a time until an attempt succeeds; 0 never pauses. Default
    /// [`DEFAULT_PAUSE_AFTER_FAILURES`].
    pub fn pause_after_failures(mut self, n: u32) -> WorkerBuilder {
        self.pause_after_failures = n;
        self
    }

    /// The destinations the handler's steps send to, for the worker's
    /// [`Control`] to list and pause (the configured `http` steps share
    /// theirs). Default: a list of its own, which a handler may not use.
    pub fn destinations(mut self, destinations: Arc<Destinations>) -> WorkerBuilder {
        self.destinations = Some(destinations);
        self
    }

    /// Open files one job may hold, so a resize the open-files limit
    /// cannot hold is refused (the config's pipelines).
    pub(crate) fn files_per_job(mut self, n: u64) -> WorkerBuilder {
        self.files_per_job = n;
        self
    }

    /// Checks the parts and builds the worker.
    pub fn build(self) -> Result<Worker, WorkerError> {
        let name = self.name;
        let source = self
            .source
            .ok_or_else(|| WorkerError::NoSource(name.clone()))?;
        let handler = self
            .handler
            .ok_or_else(|| WorkerError::NoHandler(name.clone()))?;
        let dead_letters = self
            .dead_letters
            .or_else(|| source.dead_letters())
            .ok_or_else(|| WorkerError::NoDeadLetters(name.clone()))?;
        if self.concurrency == 0 {
            return Err(WorkerError::NoConcurrency(name));
        }
        let destinations = self
            .destinations
            .unwrap_or_else(|| Arc::new(Destinations::new(&name)));
        Ok(Worker {
            control: Arc::new(Control::new(
                &name,
                self.concurrency,
                self.files_per_job,
                destinations,
            )),
            counts: Arc::new(PipelineCounts::new(&name)),
            name,
            source,
            handler,
            retry: self.retry,
            dead_letters,
            job_timeout: self.job_timeout,
            max_body_bytes: self.max_body_bytes,
            shutdown: self.shutdown,
            shutdown_timeout: self.shutdown_timeout,
            pause_after_failures: self.pause_after_failures,
        })
    }
}
