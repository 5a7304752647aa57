//! Settling SQS messages: batched deletes, visibility changes for retries
//! and releases, the visibility heartbeat, and dead letters.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::sources::{Acker, Message, SourceError};

/// Where dead letters go.
#[derive(Clone, Debug)]
pub enum DeadLetters {
    /// Send to this queue, then delete from the source queue.
    Queue(String),
    /// Make the message visible again; the queue's redrive policy moves it
    /// to its dead-letter queue after `maxReceiveCount` receives.
    Redrive,
}

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
}

impl Requests {
    fn new(queue_url: &str) -> Requests {
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
        }
    }
}

/// One kind of request, counted twice.
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

/// A message's lease, keyed by its receipt handle (unique per receive, so
/// a message delivered twice has two leases): extended while its job runs.
struct Lease {
    extend_at: Instant,
}

/// What the source, its ackers and its background tasks share.
pub struct Shared {
    pub client: Client,
    pub queue_url: String,
    pub visibility: Duration,
    pub dead_letters: DeadLetters,
    pub requests: Requests,
    /// DeleteMessageBatch calls in flight at most.
    pub delete_batches_in_flight: usize,
    /// Delivered and not yet being settled.
    pub out: AtomicUsize,
    leases: Mutex<HashMap<String, Lease>>,
    deletes: mpsc::UnboundedSender<PendingDelete>,
    /// Receipts to make visible again at once (released at shutdown).
    to_release: Mutex<Vec<String>>,
    /// FIFO: groups with a message in flight, and the messages received
    /// behind it, waiting their turn.
    pub groups: Mutex<HashMap<String, VecDeque<Pending>>>,
    /// FIFO: followers whose turn came, for the next receive.
    pub ready: Mutex<VecDeque<Pending>>,
    pub wake: Notify,
}

/// A received message not yet handed to the runtime.
pub struct Pending {
    pub message: Message,
    pub acker: SqsAcker,
}

pub struct PendingDelete {
    receipt: String,
    done: oneshot::Sender<Result<(), String>>,
}

impl Shared {
    pub fn new(
        client: Client,
        queue_url: String,
        visibility: Duration,
        dead_letters: DeadLetters,
        delete_batches_in_flight: usize,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<PendingDelete>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let requests = Requests::new(&queue_url);
        let shared = Arc::new(Shared {
            client,
            queue_url,
            visibility,
            dead_letters,
            requests,
            delete_batches_in_flight,
            out: AtomicUsize::new(0),
            leases: Mutex::default(),
            deletes: tx,
            to_release: Mutex::default(),
            groups: Mutex::default(),
            ready: Mutex::default(),
            wake: Notify::new(),
        });
        (shared, rx)
    }

    /// Starts the lease on a received message.
    pub fn lease(&self, receipt: &str) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                receipt.to_owned(),
                Lease {
                    extend_at: Instant::now() + self.visibility / 2,
                },
            );
    }

    fn end_lease(&self, receipt: &str) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(receipt);
    }

    /// Makes `receipt` visible again at the next flush (close, or a FIFO
    /// group giving way).
    pub fn release_later(&self, receipt: String) {
        self.end_lease(&receipt);
        self.to_release
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(receipt);
    }

    /// Sets visibility 0 on every receipt waiting for release, 10 a call.
    pub async fn flush_releases(&self) -> Result<(), SourceError> {
        let all = std::mem::take(&mut *self.to_release.lock().unwrap_or_else(|p| p.into_inner()));
        let calls = all.chunks(10).map(|chunk| self.change_visibility(chunk, 0));
        let results = futures::future::join_all(calls).await;
        results
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(|_| ())
    }

    async fn change_visibility(&self, receipts: &[String], secs: i32) -> Result<(), SourceError> {
        let entries: Vec<_> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(secs)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        self.requests.visibility.add();
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                SourceError::Transient(format!(
                    "ChangeMessageVisibilityBatch failed: {}",
                    describe(&e)
                ))
            })?;
        match out.failed().first() {
            None => Ok(()),
            Some(f) => Err(SourceError::Transient(format!(
                "ChangeMessageVisibilityBatch: {} of {} entries failed, e.g. {}: {}",
                out.failed().len(),
                receipts.len(),
                f.code(),
                f.message().unwrap_or("")
            ))),
        }
    }

    async fn change_one(&self, receipt: &str, secs: i32) -> Result<(), SourceError> {
        self.requests.visibility.add();
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                SourceError::Transient(format!("ChangeMessageVisibility failed: {}", describe(&e)))
            })
    }

    async fn delete(&self, receipt: String) -> Result<(), SourceError> {
        let (done, deleted) = oneshot::channel();
        self.deletes
            .send(PendingDelete { receipt, done })
            .map_err(|_| SourceError::Fatal("the SQS deleter stopped".into()))?;
        match deleted.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SourceError::Transient(e)),
            Err(_) => Err(SourceError::Fatal("the SQS deleter stopped".into())),
        }
    }

    /// FIFO: the message of `group` ahead of the others settled; `next`
    /// says whether its followers may go on (ack, dead letter) or must be
    /// made visible again to keep their order behind it (retry, release).
    fn group_done(&self, group: &str, next: bool) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(waiting) = groups.get_mut(group) else {
            return;
        };
        if next {
            match waiting.pop_front() {
                Some(d) => {
                    self.ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(d);
                    self.wake.notify_one();
                }
                None => {
                    groups.remove(group);
                }
            }
        } else if let Some(waiting) = groups.remove(group) {
            for p in waiting {
                self.end_lease(&p.acker.receipt);
                self.release_later(p.acker.receipt);
            }
        }
    }
}

/// Deletes in batches of up to 10: a batch goes when full, when every
/// message handed out is already waiting to be deleted (nothing else will
/// come soon), or a second after its first entry, whichever is first.
pub async fn run_deleter(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PendingDelete>) {
    const LINGER: Duration = Duration::from_secs(1);
    let in_flight = shared.delete_batches_in_flight.max(1);
    let mut pending: Vec<PendingDelete> = Vec::new();
    let mut first_at = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let full = pending.len() >= 10;
        let nothing_else = !pending.is_empty() && shared.out.load(Relaxed) == 0;
        let lingered = !pending.is_empty() && first_at.elapsed() >= LINGER;
        if (full || nothing_else || lingered) && requests.len() < in_flight {
            let batch: Vec<_> = pending.drain(..pending.len().min(10)).collect();
            first_at = Instant::now();
            requests.spawn(delete_batch(shared.clone(), batch));
            continue;
        }
        let saturated = requests.len() >= in_flight;
        let linger = async {
            if pending.is_empty() || saturated {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(first_at + LINGER).await
            }
        };
        tokio::select! {
            got = rx.recv() => match got {
                Some(p) => {
                    if pending.is_empty() {
                        first_at = Instant::now();
                    }
                    pending.push(p);
                }
                None if pending.is_empty() => break,
                None => first_at = Instant::now() - LINGER,
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            _ = linger => {}
        }
    }
    while requests.join_next().await.is_some() {}
}

async fn delete_batch(shared: Arc<Shared>, batch: Vec<PendingDelete>) {
    let entries: Vec<_> = batch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&p.receipt)
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
        Err(_) => (0..batch.len()).collect(),
    };
    for (i, p) in batch.into_iter().enumerate() {
        if !failed.contains(&i) {
            let _ = p.done.send(Ok(()));
            continue;
        }
        // A partial failure is retried entry by entry, never reported done.
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
                .receipt_handle(&p.receipt)
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
        let _ = p.done.send(if ok {
            Ok(())
        } else {
            Err(format!(
                "DeleteMessage failed 3 times: {last}; SQS will deliver the message again"
            ))
        });
    }
}

/// Extends the visibility of every message whose job has run half its
/// visibility timeout, so a slow job is never handed to a second worker.
pub async fn run_heartbeat(shared: Arc<Shared>) {
    let tick = (shared.visibility / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let secs = shared.visibility.as_secs().clamp(1, 43_200) as i32;
    loop {
        interval.tick().await;
        let now = Instant::now();
        let due: Vec<String> = {
            let mut leases = shared.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases
                .iter_mut()
                .filter(|(_, l)| l.extend_at <= now)
                .map(|(receipt, l)| {
                    l.extend_at = now + shared.visibility / 2;
                    receipt.clone()
                })
                .collect()
        };
        for receipts in due.chunks(10) {
            if let Err(e) = shared.change_visibility(receipts, secs).await {
                tracing::warn!(error = %e, "could not extend message visibility; a slow job may be delivered twice");
            }
        }
    }
}

/// Settles one SQS message.
pub struct SqsAcker {
    pub shared: Arc<Shared>,
    pub id: String,
    pub receipt: String,
    pub group: Option<String>,
    pub body: Bytes,
    pub attributes: HashMap<String, MessageAttributeValue>,
}

impl SqsAcker {
    /// Sends the message, as received, to the dead-letter queue with the
    /// reason in an attribute.
    async fn send_to(&self, dlq: &str, reason: &str) -> Result<(), SourceError> {
        let text = std::str::from_utf8(&self.body).map_err(|_| {
            SourceError::Transient("the message body is not UTF-8 and SQS bodies must be".into())
        })?;
        let mut send = self
            .shared
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(text);
        for (k, v) in &self.attributes {
            send = send.message_attributes(k, v.clone());
        }
        let reason_value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(truncate(reason, 4096))
            .build()
            .expect("data type is set");
        send = send.message_attributes("sluice_dead_letter_reason", reason_value);
        if let Some(g) = &self.group {
            if dlq.ends_with(".fifo") {
                send = send.message_group_id(g).message_deduplication_id(&self.id);
            }
        }
        self.shared.requests.send.add();
        send.send().await.map(|_| ()).map_err(|e| {
            SourceError::Transient(format!(
                "sending to the dead-letter queue failed: {}",
                describe(&e)
            ))
        })
    }

    fn begin(&self) {
        self.shared.out.fetch_sub(1, Relaxed);
        self.shared.end_lease(&self.receipt);
    }

    fn group_done(&self, next: bool) {
        if let Some(g) = &self.group {
            self.shared.group_done(g, next);
        }
    }
}

impl Acker for SqsAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            let r = self.shared.delete(self.receipt.clone()).await;
            self.group_done(true);
            r
        })
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            // SQS counts in whole seconds, at most 12 hours.
            let secs = delay.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32;
            self.group_done(false);
            let r = self.shared.change_one(&self.receipt, secs).await;
            if self.group.is_some() {
                self.shared.flush_releases().await?;
            }
            r
        })
    }

    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            self.begin();
            match self.shared.dead_letters.clone() {
                DeadLetters::Queue(dlq) => {
                    match self.send_to(&dlq, &reason).await {
                        Ok(()) => {
                            let r = self.shared.delete(self.receipt.clone()).await;
                            self.group_done(true);
                            r
                        }
                        Err(e) => {
                            // Not parked: the message comes back after its
                            // visibility timeout; its group's followers go
                            // back too, to stay behind it.
                            self.group_done(false);
                            if self.group.is_some() {
                                let _ = self.shared.flush_releases().await;
                            }
                            Err(e)
                        }
                    }
                }
                DeadLetters::Redrive => {
                    self.group_done(false);
                    let r = self.shared.change_one(&self.receipt, 0).await;
                    if self.group.is_some() {
                        self.shared.flush_releases().await?;
                    }
                    r
                }
            }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        self.begin();
        self.group_done(false);
        self.shared.release_later(self.receipt.clone());
        Box::pin(std::future::ready(Ok(())))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// An SDK error with its service message, without debug noise.
pub fn describe<E: std::error::Error + 'static>(e: &aws_sdk_sqs::error::SdkError<E>) -> String {
    crate::error_chain(e)
}
