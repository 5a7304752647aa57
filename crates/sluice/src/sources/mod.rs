//! Where jobs come from: the [`Source`] contract and its implementations,
//! one folder each.
//!
//! A source is pull-based. The runtime calls [`Source::receive`] with the
//! number of free job slots and never more, so a source never buffers more
//! than the pipeline can run. Each [`Delivery`] carries its own [`Acker`],
//! which settles that one message exactly once: [`Acker::ack`] after success,
//! [`Acker::retry`] to see it again after a delay, [`Acker::dead_letter`] to
//! park it durably with a reason, or [`Acker::release`] to hand it back
//! untouched at shutdown.

pub mod file;
pub mod sqs;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// One message as a source received it.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The broker's id for the message (a line's byte offset for files).
    pub id: String,
    /// The body, at most the pipeline's `max_body_bytes`.
    pub body: Bytes,
    /// Broker attributes/headers, exposed to templates as `message.attributes`.
    pub attributes: BTreeMap<String, String>,
    /// Which delivery this is: 1 the first time.
    pub attempt: u32,
    /// Set when the body was longer than `max_body_bytes`: its real length.
    /// The body then holds only a prefix and the job is dead-lettered.
    pub oversize: Option<u64>,
}

/// A received message and the means to settle it.
pub struct Delivery {
    pub message: Message,
    pub acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// Settles one message. Every method consumes the acker: a message is
/// settled once.
pub trait Acker: Send + 'static {
    /// The job succeeded: remove the message for good.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Deliver the message again after `delay`, counting an attempt.
    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Park the message durably with `reason`; return only once it is stored.
    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Hand the message back untouched (shutdown): it is delivered again as
    /// soon as possible, without counting an attempt.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>>;
}

/// What one call to [`Source::receive`] produced.
#[derive(Debug)]
pub enum Received {
    /// Up to `max` deliveries; never empty.
    Deliveries(Vec<Delivery>),
    /// The source is exhausted and every message it gave out is settled
    /// (a file read to its end). Brokers never end.
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

    /// End (return [`Received::End`]) once the source has nothing to give
    /// and nothing is in flight, instead of waiting for more: Laravel's
    /// `queue:work --stop-when-empty`. Finite sources end anyway.
    fn stop_when_empty(&mut self) {}

    /// How far through a finite input the source is, for progress display.
    fn progress(&self) -> Option<Arc<SourceProgress>> {
        None
    }
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
pub enum SourceError {
    /// A network blip or a broker hiccup: try again after a pause.
    #[error("{0}")]
    Transient(String),
    /// Misconfiguration or a broken input: stop the pipeline.
    #[error("{0}")]
    Fatal(String),
}
