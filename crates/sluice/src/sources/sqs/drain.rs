//! `--stop-when-empty` on SQS: an empty receive does not mean an empty
//! queue. Messages received by another consumer (or by one that crashed)
//! and not deleted, messages waiting out a retry delay, and delayed
//! messages are all invisible to a receive, and come back later.
//!
//! So once a receive comes back empty with nothing in flight here, the
//! source asks the queue what it still holds (`GetQueueAttributes`:
//! `ApproximateNumberOfMessages`, `...NotVisible`, `...Delayed`). All three
//! zero: the queue is drained and the source ends. Otherwise it keeps
//! receiving (1-second polls) and asking, for at most the wait, counted
//! from when the queue first looked empty, or from the end of the latest
//! retry delay this run set itself, whichever is later. A message received
//! starts the count again. When the wait passes with messages still held,
//! the source fails with what the queue holds: the run did not drain it.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use tokio::time::Instant;

use super::settle::{Api, describe};
use crate::sources::SourceError;

/// The default wait beyond the visibility timeout and the queue's delay:
/// SQS's approximate counts can lag by about a minute, and sluice's
/// default retry backoff is at most 60 s.
pub const SLACK: Duration = Duration::from_secs(60);

/// What the queue holds that a receive did not return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Visible, yet not returned (a FIFO group held by an unsettled
    /// message, or counts that lag).
    pub visible: u64,
    /// Received and not deleted: by another consumer, a crashed one, or
    /// waiting out a retry delay.
    pub not_visible: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl Held {
    fn total(&self) -> u64 {
        self.visible + self.not_visible + self.delayed
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} message(s): {} in flight (received by another or a crashed consumer, or \
             waiting out a retry delay), {} delayed, {} visible",
            self.total(),
            self.not_visible,
            self.delayed,
            self.visible
        )
    }
}

/// Whether a queue that looks empty is drained.
#[derive(Debug)]
pub struct Drain {
    wait: Duration,
    /// When the queue first looked empty, nothing received since.
    since: Option<Instant>,
    /// What the last look found, to log only changes.
    last: Option<Held>,
}

impl Drain {
    pub fn new(wait: Duration) -> Drain {
        Drain {
            wait,
            since: None,
            last: None,
        }
    }

    /// A message was received: the queue was not empty after all.
    pub fn received(&mut self) {
        self.since = None;
        self.last = None;
    }

    /// Called on an empty receive with nothing in flight here. `Ok(true)`:
    /// drained, end. `Ok(false)`: keep receiving. An error once the wait
    /// passed with messages still held.
    pub async fn is_drained(
        &mut self,
        api: &Api,
        retry_due: Option<Instant>,
    ) -> Result<bool, SourceError> {
        let held = held(api).await?;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if held.total() == 0 {
            return Ok(true);
        }
        let from = retry_due.map_or(since, |due| due.max(since));
        let deadline = from + self.wait;
        if now >= deadline {
            return Err(SourceError::fatal(format!(
                "--stop-when-empty: `{}` still holds {held} after waiting {} s for them, so \
                 they were not processed; run again later, or raise stop_when_empty_wait_secs",
                api.queue_url,
                (now - since).as_secs()
            )));
        }
        if self.last != Some(held) {
            tracing::info!(
                queue = %api.queue_url,
                in_flight = held.not_visible,
                delayed = held.delayed,
                visible = held.visible,
                wait_secs = (deadline - now).as_secs(),
                "the queue looks empty but still holds messages; waiting for them \
                 (stop_when_empty_wait_secs)"
            );
            self.last = Some(held);
        }
        Ok(false)
    }
}

/// Asks the queue what it holds.
pub(super) async fn held(api: &Api) -> Result<Held, SourceError> {
    api.requests.attributes.add();
    let out = api
        .client
        .get_queue_attributes()
        .queue_url(&api.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| {
            SourceError::transient(format!(
                "GetQueueAttributes (is the queue drained?) failed: {}",
                describe(&e)
            ))
        })?;
    let attrs = out.attributes();
    let count = |name: QueueAttributeName| -> Result<u64, SourceError> {
        attrs
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                SourceError::transient(format!(
                    "GetQueueAttributes did not return {name}, so sluice cannot tell whether \
                     the queue is drained"
                ))
            })
    };
    Ok(Held {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
        not_visible: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
    })
}
