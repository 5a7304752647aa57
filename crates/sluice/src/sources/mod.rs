//! Where jobs come from: the [`Source`] contract (v2) and its
//! implementations, one folder each, each behind a cargo feature.
//!
//! # The contract
//!
//! A source is pull-based. The runtime calls [`Source::receive`] with the
//! number of free job slots and never more, so a source never holds a
//! message the pipeline could not run. Each [`Delivery`] carries its
//! [`Message`] and an [`Acker`] that settles that one message exactly once:
//!
//! | call | when | what the broker does |
//! |---|---|---|
//! | [`Acker::ack`] | the job succeeded | forgets the message (SQS delete, Kafka: the offset may be committed, file: checkpointed) |
//! | [`Acker::retry`] | the job failed and may succeed later; only where [`Capabilities::delayed_retry`] | delivers it again after the delay, counting an attempt (SQS: visibility set to the delay) |
//! | [`Acker::remove`] | the dead-letter target has stored the message | forgets it, like `ack` |
//! | [`Acker::release`] | shutdown, or another message of its ordering key was retried | delivers it again at once, as if never received |
//! | [`Acker::extend`] | the job runs long, where [`Capabilities::lease`] | keeps the message invisible to other consumers (SQS visibility) |
//!
//! Where a broker cannot delay a redelivery (files, Kafka), the runtime
//! waits in process: the message keeps its slot (and its ordering key)
//! through the backoff, then runs again with `attempt + 1`. At shutdown a
//! message waiting so runs its retry if it is due within half the shutdown
//! timeout; otherwise it is released, and the run reports it as not
//! settled. A message retried through the broker ([`Acker::retry`]) is
//! *pending retry* until it is received again: a run that ends with any
//! pending has not settled everything (exit code 3).
//!
//! A message released at shutdown blocks its ordering key: the key's later
//! messages, already received, are handed back unrun rather than run in
//! the drain ahead of it.
//!
//! **Dead letters** go to a pipeline-level [`DeadLetterTarget`]: the
//! source's own ([`Source::dead_letters`]: the SQS dead-letter queue, the
//! file source's failures file, the Redis list) or another the worker is
//! given (a config's `[pipeline.dead_letter]`, such as Laravel's
//! `failed_jobs` table: [`crate::dead_letters`]). A source opened with
//! [`SourceContext::dead_letters_elsewhere`] set must not refuse to open for
//! want of a target of its own. The target stores the message first; only
//! then is it [removed](Acker::remove). If storing fails, the message is not
//! removed and comes back.
//!
//! **Ordering keys**: a [`Message::key`] (an SQS FIFO `MessageGroupId`, a
//! Kafka key or partition) runs one at a time per key, in the order
//! received, through the pool's per-key limit.
//!
//! **Revocation**: a delivery may carry a [`Revocation`] token. When the
//! source cancels it (a Kafka rebalance took the partition, an AMQP channel
//! died), the runtime stops the job and does not settle the message: the
//! broker hands it to its new owner. Revoked jobs are counted.
//!
//! **Attempts** are the broker's delivery count where it keeps one (SQS
//! `ApproximateReceiveCount`); elsewhere the source counts from 1 and the
//! runtime adds one per in-process retry.
//!
//! **What release does**, per source:
//!
//! | source | release | a retry |
//! |---|---|---|
//! | `file` | the line is delivered again first in this run; if the run ends, it stays unsettled in the checkpoint and runs on the next start | waits in process (no broker delay) |
//! | `sqs` | visibility set to 0: visible at once to every consumer; SQS counts the next receive as another attempt (it has no uncounted redelivery) | visibility set to the delay |
//! | `redis` | the job as it stood before the pop goes back to the head of the list (its reservation removed): it runs next, its `attempts` not counted | Laravel's release: into `:delayed` at now + delay, counted; with an `ordering_key`, waits in process |
//! | `kafka` | the offset stays uncommitted: delivered again first while the source runs; at shutdown or revocation, the partition's next owner reads it from the committed offset | waits in process; the partition's commit waits for it |
//!
//! **Fields**: a source may give each message [`Message::fields`], which
//! templates see at the top level (Kafka: `topic`, `partition`, `offset`,
//! `key`, `timestamp`, `headers`). Those names are reserved: no step may
//! set a variable of the same name.
//!
//! **Pausing**: while the runtime's breaker is open (the destination keeps
//! failing: `pause_after_failures`), it calls [`Source::receive`] only for
//! one message to probe with, now and then; while an operator paused the
//! pipeline ([`crate::runtime::Control::pause`]) it calls it not at all,
//! and drops a receive under way (receives are cancel-safe). A source
//! whose broker drops a consumer that stops polling (Kafka) keeps polling
//! on its own meanwhile.
//!
//! **Resizing**: the `max` of each receive follows the pipeline's current
//! concurrency, which an operator may change while it runs; a source
//! sizes nothing by the concurrency it was opened with (the file source's
//! default window follows `unsettled + max`).
//!
//! **Backlog**: a source whose broker says how many messages wait returns
//! a [`Backlog`] from [`Source::backlog`] and keeps it current (SQS: the
//! queue's `ApproximateNumberOfMessages`, read every 15 s; Kafka: the
//! assigned partitions' lag from librdkafka's statistics, summed). The
//! admin API and `sluice_source_backlog` read it.
//!
//! # Building blocks
//!
//! [`common`] holds what several sources share: the contiguous-offset
//! [watermark](common::Watermark) (files, Kafka partitions) and the
//! [batcher](common::Batcher) that turns single settlements into batch calls
//! (SQS deletes and visibility changes).
//!
//! # Adding a source
//!
//! A folder `sources/<name>/` with a config struct (serde,
//! `deny_unknown_fields`, doc comment per field) that implements
//! [`SourceConfig`], the source, and its acker; then one line in the
//! `sources!` list in `config/registry.rs` and a cargo feature.

pub mod common;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqs")]
pub mod sqs;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use crate::component::{FieldError, LocalFile, SourceContext};
use crate::formats::Format;
pub use tokio_util::sync::CancellationToken as Revocation;

/// One message as a source received it.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The broker's id for the message (a line's byte offset for files).
    pub id: String,
    /// The body. When `oversize` is set it may hold only a prefix.
    pub body: Bytes,
    /// Broker attributes/headers, exposed to templates as `message.attributes`.
    pub attributes: BTreeMap<String, String>,
    /// Which delivery this is: 1 the first time.
    pub attempt: u32,
    /// Set when the body was longer than `max_body_bytes`: its real length.
    /// Such a job is dead-lettered without running.
    pub oversize: Option<u64>,
    /// Messages with the same key run one at a time, in order.
    pub key: Option<String>,
    /// The source's own fields, which templates see at the top level
    /// (Kafka's `topic`, `partition`, `offset`, `key`, `timestamp`,
    /// `headers`). Their names are reserved: no step may set a variable
    /// of the same name.
    pub fields: BTreeMap<&'static str, serde_json::Value>,
}

/// A received message and the means to settle it.
pub struct Delivery {
    pub message: Message,
    pub acker: Box<dyn Acker>,
    /// Cancelled by the source when the message is no longer its to settle.
    pub revocation: Option<Revocation>,
}

impl Delivery {
    pub fn new(message: Message, acker: Box<dyn Acker>) -> Delivery {
        Delivery {
            message,
            acker,
            revocation: None,
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// Settles one message. The settling methods consume the acker: a message
/// is settled once.
pub trait Acker: Send + 'static {
    /// The job succeeded: remove the message for good.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Deliver the message again after `delay`, counting an attempt. Called
    /// only when the source's [`Capabilities::delayed_retry`] is set.
    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        let _ = delay;
        Box::pin(async { Err(SourceError::unsupported("delayed retry")) })
    }
    /// The dead-letter target stored the message: remove it for good.
    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Hand the message back untouched: it is delivered again as soon as
    /// possible, without counting an attempt where the broker allows.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Keep the message leased for `lease` more (SQS visibility). Called by
    /// the runtime's heartbeat when [`Capabilities::lease`] is set.
    fn extend(&self, lease: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        let _ = lease;
        Box::pin(async { Ok(()) })
    }
}

/// What a broker can do, which decides what the runtime does for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The broker redelivers a message after a delay ([`Acker::retry`]).
    /// Without it, retries wait in process, holding their slot.
    pub delayed_retry: bool,
    /// A received message is leased for this long; the runtime extends
    /// the lease every third of it while the runtime holds the message.
    pub lease: Option<Duration>,
}

/// What one call to [`Source::receive`] produced.
#[derive(Debug)]
pub enum Received {
    /// Up to `max` deliveries; never empty.
    Deliveries(Vec<Delivery>),
    /// The source is exhausted and every message it gave out is settled
    /// (a file read to its end; a queue found drained under
    /// [`Source::stop_when_empty`]: for SQS, its approximate counts of
    /// visible, in-flight and delayed messages all read 0).
    End,
}

/// A queue, topic or file that jobs are read from.
pub trait Source: Send + 'static {
    /// Waits for at least one and returns at most `max` deliveries.
    ///
    /// Must be cancel-safe: the runtime drops this future when it shuts down,
    /// and no message may be lost by that.
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>>;

    /// Called once after every delivery was settled or released: flush what
    /// must be flushed (checkpoints, batched deletes).
    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>>;

    /// The pipeline was paused: `receive` will not be called until it is
    /// resumed (or closed). Hand back what the source holds and has not
    /// delivered, where nothing would renew its lease meanwhile (SQS:
    /// messages received ahead, made visible again at once). Default:
    /// nothing to do.
    fn pause(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }

    /// What the broker can do; see [`Capabilities`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The source's own place for dead letters, if it has one.
    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        None
    }

    /// End (return [`Received::End`]) once the source has nothing to give
    /// and nothing is in flight, instead of waiting for more: Laravel's
    /// `queue:work --stop-when-empty`. Finite sources end anyway. A broker
    /// that may still hold messages out of sight (SQS: in flight with
    /// another consumer, delayed) waits a bounded time for them; if they
    /// outlast it, `receive` returns a [fatal](SourceErrorKind::Fatal)
    /// error saying what is left, never `End`, so the run does not report
    /// the queue drained.
    fn stop_when_empty(&mut self) {}

    /// How far through a finite input the source is, for progress display.
    fn progress(&self) -> Option<Arc<SourceProgress>> {
        None
    }

    /// How many messages wait in the broker, where it says (Kafka: the
    /// lag of the assigned partitions, summed), for the admin API and
    /// `sluice_source_backlog`.
    fn backlog(&self) -> Option<Arc<Backlog>> {
        None
    }
}

/// Messages waiting in the broker for one pipeline, set by its source as
/// the broker reports it (`sluice_source_backlog`).
#[derive(Debug)]
pub struct Backlog {
    /// `u64::MAX` until the broker first says.
    messages: AtomicU64,
    pipeline: String,
    /// Registered at the first count: `/metrics` shows no backlog until
    /// the broker said one, rather than a 0 that reads as "caught up".
    gauge: std::sync::OnceLock<metrics::Gauge>,
}

impl Backlog {
    /// The backlog of `pipeline`'s source, not known yet.
    pub fn new(pipeline: &str) -> Backlog {
        Backlog {
            messages: AtomicU64::new(u64::MAX),
            pipeline: pipeline.to_owned(),
            gauge: std::sync::OnceLock::new(),
        }
    }

    /// The broker says `n` messages wait.
    pub fn set(&self, n: u64) {
        self.messages
            .store(n.min(u64::MAX - 1), std::sync::atomic::Ordering::Relaxed);
        self.gauge
            .get_or_init(|| {
                metrics::gauge!(crate::telemetry::SOURCE_BACKLOG, "pipeline" => self.pipeline.clone())
            })
            .set(n as f64);
    }

    /// The last count, if the broker said one.
    pub fn get(&self) -> Option<u64> {
        let n = self.messages.load(std::sync::atomic::Ordering::Relaxed);
        (n != u64::MAX).then_some(n)
    }
}

/// A message that failed for good, on its way to a [`DeadLetterTarget`].
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// The pipeline whose job failed.
    pub pipeline: &'a str,
    /// The message as received (the body may be a prefix when `oversize`).
    pub message: &'a Message,
    /// Attempts made, the last one included.
    pub attempts: u32,
    /// Why it failed.
    pub reason: &'a str,
}

/// Where a pipeline's dead letters are stored. `store` returns only once the
/// message is durably stored; the runtime removes it from the source after.
pub trait DeadLetterTarget: Send + Sync + 'static {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>>;
    /// Names the target in logs (`sqs://...-dlq`, `users.ndjson.failures`).
    fn name(&self) -> String;
}

/// Bytes read of a finite input, updated by the source.
#[derive(Debug, Default)]
pub struct SourceProgress {
    pub read_bytes: AtomicU64,
    /// Zero when unknown (stdin).
    pub total_bytes: AtomicU64,
}

/// A source's failure, saying what the runtime should do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What the runtime does about a [`SourceError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// A network blip or a broker hiccup: try again after a pause.
    Transient,
    /// Misconfiguration or a broken input: stop the pipeline.
    Fatal,
}

impl SourceError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> SourceError {
        SourceError {
            kind: SourceErrorKind::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that stops the pipeline.
    pub fn fatal(message: impl Into<String>) -> SourceError {
        SourceError {
            kind: SourceErrorKind::Fatal,
            message: message.into(),
            source: None,
        }
    }

    /// The same error with its cause attached.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SourceError {
        self.source = Some(Box::new(source));
        self
    }

    fn unsupported(what: &str) -> SourceError {
        SourceError::fatal(format!("this source does not support {what}"))
    }

    pub fn is_transient(&self) -> bool {
        self.kind == SourceErrorKind::Transient
    }
}

/// A `[pipeline.source]` table's type: checks itself and opens the source.
/// Implemented by each source's config, in its own folder.
pub trait SourceConfig: fmt::Debug + Send + Sync {
    /// The envelope of the source's messages (its `format` field).
    fn format(&self) -> Format;
    /// Checks what can be checked without connecting; names the field.
    fn check(&self) -> Result<(), FieldError>;
    /// Connects and opens the source.
    fn build<'a>(
        &'a self,
        cx: &'a SourceContext,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>>;
    /// Laravel's names for this queue, `(connection, queue)`, as its
    /// worker writes them to `failed_jobs` (`("redis", "reports")`,
    /// `("sqs", queue URL)`): the defaults of the `failed_jobs`
    /// dead-letter target. Default none.
    fn laravel_queue(&self) -> Option<(String, String)> {
        None
    }
    /// The local files the source reads and writes. The config refuses
    /// any two uses of one file (through symlinks, `..` and hard links
    /// too) unless both only read it. Default none.
    fn files(&self) -> Vec<LocalFile> {
        Vec::new()
    }
}
