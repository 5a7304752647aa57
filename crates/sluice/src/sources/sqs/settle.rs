//! Settling SQS messages: batched deletes and batched visibility changes
//! (retries, releases, lease extensions), and the dead-letter queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
};
use futures::future::BoxFuture;

use crate::sources::common::Batcher;
use crate::sources::{Acker, DeadLetter, DeadLetterTarget, SourceError};

/// SQS calls by kind: `sluice_sqs_requests_total{queue, op}` through the
/// metrics facade, and a local count for the log line at close (the
/// requests-per-message figure). `empty_receive` counts the receives that
/// came back empty, on top of `receive`.
#[derive(Debug)]
pub struct Requests {
    pub receive: Tally,
    pub empty_receive: Tally,
    pub delete: Tally,
    pub visibility: Tally,
    pub send: Tally,
    /// GetQueueAttributes: at open, for the backlog every 15 s, and while
    /// `--stop-when-empty` waits.
    pub attributes: Tally,
    /// GetQueueUrl: at open, for a redrive policy's dead-letter queue.
    pub queue_url: Tally,
}

impl Requests {
    pub fn new(queue_url: &str) -> Requests {
        let tally = |op: &'static str| Tally {
            n: AtomicU64::new(0),
            metric: metrics::counter!(crate::telemetry::SQS_REQUESTS, "queue" => queue_url.to_owned(), "op" => op),
        };
        Requests {
            receive: tally("receive"),
            empty_receive: tally("empty_receive"),
            delete: tally("delete"),
            visibility: tally("visibility"),
            send: tally("send"),
            attributes: tally("attributes"),
            queue_url: tally("queue_url"),
        }
    }
}

/// One kind of request: the metric, and the same count kept for the
/// summary line at close.
#[derive(Debug)]
pub struct Tally {
    n: AtomicU64,
    metric: metrics::Counter,
}

impl Tally {
    pub fn add(&self) {
        self.n.fetch_add(1, Relaxed);
        self.metric.increment(1);
    }

    pub fn get(&self) -> u64 {
        self.n.load(Relaxed)
    }
}

/// A visibility change: the receipt, and the seconds from now.
pub type Visibility = (String, i32);

/// The queue's client, URL and request counts: what a batch call needs.
#[derive(Debug)]
pub struct Api {
    pub client: Client,
    pub queue_url: String,
    pub requests: Requests,
}

/// What the source, its ackers and its dead-letter queue share.
pub struct Shared {
    pub api: Arc<Api>,
    pub visibility: Duration,
    /// Delivered and not yet being settled.
    pub out: Arc<AtomicUsize>,
    pub deletes: Batcher<String>,
    pub visibilities: Batcher<Visibility>,
    /// The typed message attributes of messages in flight, by message id,
    /// so a dead letter carries them as they came.
    pub originals: Mutex<HashMap<String, HashMap<String, MessageAttributeValue>>>,
    /// When the latest retry delay this run set ends: `--stop-when-empty`
    /// waits for it.
    pub retry_due: Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    fn retrying_until(&self, due: tokio::time::Instant) {
        let mut latest = self.retry_due.lock().unwrap_or_else(|p| p.into_inner());
        *latest = Some(latest.map_or(due, |l| l.max(due)));
    }

    pub fn forget(&self, id: &str) {
        self.originals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn delete(&self, receipt: String) -> Result<(), SourceError> {
        match self.deletes.submit(receipt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SourceError::transient(e)),
            Err(e) => Err(SourceError::fatal("the SQS deleter stopped").with_source(e)),
        }
    }

    pub async fn change_visibility(&self, receipt: String, secs: i32) -> Result<(), SourceError> {
        match self.visibilities.submit((receipt, secs)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SourceError::transient(e)),
            Err(e) => Err(SourceError::fatal("the SQS visibility batcher stopped").with_source(e)),
        }
    }
}

/// Sends one `DeleteMessageBatch`; an entry that fails is retried alone
/// and never reported deleted.
pub async fn delete_batch(shared: Arc<Api>, receipts: Vec<String>) -> Vec<Result<(), String>> {
    let entries: Vec<_> = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
                .expect("id and receipt are set")
        })
        .collect();
    shared.requests.delete.add();
    let sent = shared
        .client
        .delete_message_batch()
        .queue_url(&shared.queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    let failed: Vec<usize> = match &sent {
        Ok(out) => out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse().ok())
            .collect(),
        Err(_) => (0..receipts.len()).collect(),
    };
    let mut results = Vec::with_capacity(receipts.len());
    for (i, receipt) in receipts.iter().enumerate() {
        if !failed.contains(&i) {
            results.push(Ok(()));
            continue;
        }
        let mut last = String::new();
        let mut ok = false;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            shared.requests.delete.add();
            match shared
                .client
                .delete_message()
                .queue_url(&shared.queue_url)
                .receipt_handle(receipt)
                .send()
                .await
            {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(e) => last = describe(&e),
            }
        }
        results.push(if ok {
            Ok(())
        } else {
            Err(format!(
                "DeleteMessage failed 3 times: {last}; SQS will deliver the message again"
            ))
        });
    }
    results
}

/// Sends one `ChangeMessageVisibilityBatch`.
pub async fn visibility_batch(
    shared: Arc<Api>,
    changes: Vec<Visibility>,
) -> Vec<Result<(), String>> {
    let entries: Vec<_> = changes
        .iter()
        .enumerate()
        .map(|(i, (receipt, secs))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(*secs)
                .build()
                .expect("id and receipt are set")
        })
        .collect();
    shared.requests.visibility.add();
    let sent = shared
        .client
        .change_message_visibility_batch()
        .queue_url(&shared.queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    match sent {
        Err(e) => {
            let why = format!("ChangeMessageVisibilityBatch failed: {}", describe(&e));
            vec![Err(why); changes.len()]
        }
        Ok(out) => {
            let mut results = vec![Ok(()); changes.len()];
            for f in out.failed() {
                if let Some(r) = f
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| results.get_mut(i))
                {
                    *r = Err(format!(
                        "ChangeMessageVisibility: {}: {}",
                        f.code(),
                        f.message().unwrap_or("")
                    ));
                }
            }
            results
        }
    }
}

/// Settles one SQS message.
pub struct SqsAcker {
    pub shared: Arc<Shared>,
    pub id: String,
    pub receipt: String,
    /// A settlement began: nothing to do when dropped.
    pub begun: std::sync::atomic::AtomicBool,
}

impl SqsAcker {
    fn begin(&self) {
        if !self.begun.swap(true, Relaxed) {
            self.shared.out.fetch_sub(1, Relaxed);
            self.shared.forget(&self.id);
        }
    }
}

impl Drop for SqsAcker {
    fn drop(&mut self) {
        // Dropped unsettled (revoked): SQS redelivers it after its
        // visibility timeout; stop counting it as out.
        self.begin();
    }
}

/// SQS counts visibility in whole seconds, at most 12 hours.
fn secs(d: Duration) -> i32 {
    d.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32
}

impl Acker for SqsAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            self.shared.delete(self.receipt.clone()).await
        })
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            let secs = secs(delay);
            self.shared
                .retrying_until(tokio::time::Instant::now() + Duration::from_secs(secs as u64));
            self.shared
                .change_visibility(self.receipt.clone(), secs)
                .await
        })
    }

    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        self.ack()
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            self.shared.change_visibility(self.receipt.clone(), 0).await
        })
    }

    fn extend(&self, lease: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        let shared = self.shared.clone();
        let receipt = self.receipt.clone();
        Box::pin(async move { shared.change_visibility(receipt, secs(lease).max(1)).await })
    }
}

/// A dead-letter queue: the message is sent there as it came (body and
/// attributes) with the reason in `sluice_dead_letter_reason`, and only then
/// deleted from the source queue.
pub struct DeadLetterQueue {
    pub shared: Arc<Shared>,
    pub url: String,
}

impl DeadLetterTarget for DeadLetterQueue {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let m = letter.message;
            let text = std::str::from_utf8(&m.body).map_err(|_| {
                SourceError::fatal("the message body is not UTF-8 and SQS bodies must be")
            })?;
            let mut send = self
                .shared
                .api
                .client
                .send_message()
                .queue_url(&self.url)
                .message_body(text);
            let originals = self
                .shared
                .originals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&m.id)
                .cloned();
            match originals {
                Some(attrs) => {
                    for (k, v) in attrs {
                        send = send.message_attributes(k, v);
                    }
                }
                None => {
                    for (k, v) in m.attributes.iter().filter(|(k, _)| *k != "MessageGroupId") {
                        send = send.message_attributes(k, string_attribute(v));
                    }
                }
            }
            send = send.message_attributes(
                "sluice_dead_letter_reason",
                string_attribute(truncate(letter.reason, 4096)),
            );
            send = send.message_attributes("sluice_pipeline", string_attribute(letter.pipeline));
            send = send.message_attributes(
                "sluice_attempts",
                MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(letter.attempts.to_string())
                    .build()
                    .expect("data type is set"),
            );
            if self.url.ends_with(".fifo") {
                let group = m.key.as_deref().unwrap_or("sluice-dead-letters");
                send = send.message_group_id(group).message_deduplication_id(&m.id);
            }
            self.shared.api.requests.send.add();
            send.send().await.map(|_| ()).map_err(|e| {
                SourceError::transient(format!(
                    "sending to the dead-letter queue failed: {}",
                    describe(&e)
                ))
            })
        })
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}

fn string_attribute(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .expect("data type is set")
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An SDK error with its service message, without debug noise.
pub fn describe<E: std::error::Error + 'static>(e: &aws_sdk_sqs::error::SdkError<E>) -> String {
    crate::error_chain(e)
}
