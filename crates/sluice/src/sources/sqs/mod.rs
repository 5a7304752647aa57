//! The `sqs` source: Amazon SQS (or an emulator) through the official AWS
//! SDK, with the standard credential chain and region.
//!
//! ```toml
//! [pipeline.source]
//! type = "sqs"
//! queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/reports"
//! format = "laravel"
//! # dead_letter_queue_url = "...reports-dlq"  (else the queue's redrive policy)
//! # endpoint = "http://127.0.0.1:5055"        (an emulator)
//! ```
//!
//! - Long polling (`wait_time_secs`, default 20) in batches of up to 10, by
//!   up to `pollers` concurrent receives, never asking for more messages
//!   than there are free slots. After an empty receive only one poller
//!   runs until messages come back, so an idle queue costs about three
//!   requests a minute.
//! - Deletes go in batches of 10 (`DeleteMessageBatch`), sent when full,
//!   when nothing else is running, or after a second; an entry that fails in
//!   a batch is retried alone and never reported as deleted. Visibility
//!   changes are batched the same way.
//! - The lease is the visibility timeout: the runtime's heartbeat extends
//!   it every third of it while sluice holds the message, so it is never handed to a second
//!   worker.
//! - Retries set the message's visibility to the backoff delay; the attempt
//!   number is SQS's `ApproximateReceiveCount`.
//! - Dead letters go to `dead_letter_queue_url`, or else to the queue its
//!   redrive policy names, sent by sluice itself (with the reason in the
//!   `sluice_dead_letter_reason` attribute, the pipeline and the attempts);
//!   only once stored is the message deleted. A pipeline with a target of
//!   its own (`[pipeline.dead_letter]`, e.g. Laravel's `failed_jobs`
//!   table) needs neither.
//! - At shutdown (release) a message is made visible again at once.
//! - `--stop-when-empty` ends the run only once the queue holds nothing,
//!   in sight or out of it (`drain.rs` says how): it waits, up to
//!   `stop_when_empty_wait_secs`, for messages in flight elsewhere, waiting
//!   out a retry delay or delayed, and fails when they outlast the wait.
//!   Its receives wait 1 s at most, so ending costs no long poll.
//! - FIFO queues (`.fifo`): the `MessageGroupId` is the ordering key, so one
//!   message per group runs at a time, in order; when one is retried, the
//!   ones received behind it are released to stay behind it.

mod drain;
mod settle;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde::Deserialize;

use super::common::{BatchOptions, Batcher};
use super::{
    Backlog, Capabilities, DeadLetterTarget, Delivery, FieldError, Message, Received, Source,
    SourceConfig, SourceContext, SourceError,
};
use crate::formats::Format;
use drain::Drain;
pub use settle::describe as describe_error;
use settle::{DeadLetterQueue, Shared, SqsAcker, describe};

/// How long `close` waits for receives in flight to answer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// `type = "sqs"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// The queue's URL.
    pub queue_url: String,
    /// The envelope of each message. Default `json`.
    #[serde(default)]
    pub format: Format,
    /// The region; default from the standard chain (`AWS_REGION`...).
    pub region: Option<String>,
    /// A custom endpoint, for emulators (`http://127.0.0.1:5055`).
    pub endpoint: Option<String>,
    /// Static credentials, for emulators; use the standard chain (env,
    /// profile, instance role) for AWS. Both or neither.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Long-poll wait, 0 to 20 s. Default 20.
    #[serde(default = "default_wait_time_secs")]
    pub wait_time_secs: u32,
    /// Concurrent receives at most. Default 4.
    #[serde(default = "default_pollers")]
    pub pollers: usize,
    /// The visibility timeout for received messages; default the queue's.
    pub visibility_timeout_secs: Option<u32>,
    /// Where dead letters go; default: the queue's own redrive policy
    /// (which must then exist).
    pub dead_letter_queue_url: Option<String>,
    /// `DeleteMessageBatch` calls in flight at most. Default 8; 1 for
    /// emulators whose deletes race (moto 5.2 loses concurrent ones).
    #[serde(default = "default_delete_batches_in_flight")]
    pub delete_batches_in_flight: usize,
    /// With `--stop-when-empty`: how long to wait, at most, for messages
    /// the queue still holds out of sight (received and not deleted by
    /// another or a crashed consumer, waiting out a retry delay, delayed)
    /// once a receive finds nothing, before giving up and failing the run.
    /// Counted from when the queue first looked empty, or from the end of
    /// the latest retry delay this run set, whichever is later. Default:
    /// the visibility timeout in use plus the queue's `DelaySeconds` plus
    /// 60 s. `0` does not wait: the first look decides.
    pub stop_when_empty_wait_secs: Option<u32>,
}

fn default_wait_time_secs() -> u32 {
    20
}
fn default_pollers() -> usize {
    4
}
fn default_delete_batches_in_flight() -> usize {
    8
}

impl SourceConfig for SqsSourceConfig {
    fn format(&self) -> Format {
        self.format
    }

    fn check(&self) -> Result<(), FieldError> {
        SqsSourceConfig::check(self)
    }

    fn build<'a>(
        &'a self,
        cx: &'a SourceContext,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move { Ok(Box::new(SqsSource::open(self, cx).await?) as Box<dyn Source>) })
    }

    fn laravel_queue(&self) -> Option<(String, String)> {
        // SqsJob's getQueue(): the queue's URL.
        Some(("sqs".into(), self.queue_url.clone()))
    }
}

impl SqsSourceConfig {
    /// Checks what can be checked without connecting.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.queue_url.is_empty() {
            return Err(FieldError::new("queue_url", "empty: give the queue's URL"));
        }
        if self.wait_time_secs > 20 {
            return Err(FieldError::new("wait_time_secs", "SQS allows 0 to 20"));
        }
        if self.delete_batches_in_flight == 0 {
            return Err(FieldError::new(
                "delete_batches_in_flight",
                "must be at least 1",
            ));
        }
        if self.pollers == 0 {
            return Err(FieldError::new("pollers", "must be at least 1"));
        }
        if matches!(self.visibility_timeout_secs, Some(v) if v == 0 || v > 43_200) {
            return Err(FieldError::new(
                "visibility_timeout_secs",
                "SQS allows 1 to 43200",
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(FieldError::new(
                "access_key_id",
                "set both access_key_id and secret_access_key, or neither",
            ));
        }
        Ok(())
    }
}

/// Builds an SQS client from the config and the standard chain.
pub async fn client(cfg: &SqsSourceConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &cfg.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "sluice-config",
        ));
    }
    Client::new(&loader.load().await)
}

/// One receive in flight: how many it asked for, and what it got.
type Poll = BoxFuture<'static, (usize, Result<Vec<aws_sdk_sqs::types::Message>, SourceError>)>;

/// The running source.
pub struct SqsSource {
    shared: Arc<Shared>,
    /// None when the pipeline has a target of its own.
    dead_letters: Option<Arc<DeadLetterQueue>>,
    wait_time_secs: i32,
    pollers: usize,
    /// Pollers allowed now: one after an empty receive, all after a full one.
    active_pollers: usize,
    fifo: bool,
    max_body: u64,
    polls: FuturesUnordered<Poll>,
    /// Messages asked for by the polls in flight.
    asked: usize,
    /// Received beyond what the last call could take.
    extra: VecDeque<Delivery>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Set by `--stop-when-empty`.
    stop_when_empty: Option<Drain>,
    /// How long `--stop-when-empty` waits for messages held out of sight.
    drain_wait: Duration,
    /// The queue's visible messages, read every [`BACKLOG_INTERVAL`].
    backlog: Arc<Backlog>,
}

/// How often the queue's depth is read for the backlog: 4 requests a
/// minute, next to the receives' 3 on an idle queue (about 7 in all).
const BACKLOG_INTERVAL: Duration = Duration::from_secs(15);

/// Reads the queue's `ApproximateNumberOfMessages` into `backlog` until
/// the source is dropped.
async fn watch_backlog(api: Arc<settle::Api>, backlog: Arc<Backlog>) {
    let mut warned = false;
    loop {
        match drain::held(&api).await {
            Ok(held) => backlog.set(held.visible),
            // Once, not every 15 s: the run goes on without a backlog.
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(queue = %api.queue_url, error = %e, "reading the queue's depth failed, so the backlog is unknown; does the role allow sqs:GetQueueAttributes?");
            }
            Err(e) => {
                tracing::debug!(queue = %api.queue_url, error = %e, "reading the queue's depth failed")
            }
        }
        tokio::time::sleep(BACKLOG_INTERVAL).await;
    }
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("queue_url", &self.shared.api.queue_url)
            .finish_non_exhaustive()
    }
}

/// The queue a redrive policy sends to, as a URL.
async fn redrive_target(client: &Client, policy: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(policy).map_err(|e| format!("unreadable RedrivePolicy: {e}"))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or("the RedrivePolicy has no deadLetterTargetArn")?;
    // arn:aws:sqs:<region>:<account>:<name>
    let parts: Vec<&str> = arn.split(':').collect();
    let [_, _, _, _, account, name] = parts[..] else {
        return Err(format!("`{arn}` is not an SQS queue ARN"));
    };
    let out = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot find the redrive policy's queue `{arn}`: {}",
                describe(&e)
            )
        })?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| format!("no URL for the redrive policy's queue `{arn}`"))
}

impl SqsSource {
    /// Connects, reads the queue's attributes, finds the dead-letter queue
    /// and starts the batchers.
    pub async fn open(cfg: &SqsSourceConfig, cx: &SourceContext) -> Result<SqsSource, SourceError> {
        let client = client(cfg).await;
        let attrs = client
            .get_queue_attributes()
            .queue_url(&cfg.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .attribute_names(QueueAttributeName::DelaySeconds)
            .send()
            .await
            .map_err(|e| {
                SourceError::fatal(format!(
                    "cannot read the attributes of `{}`: {}; check queue_url, region, endpoint and credentials",
                    cfg.queue_url,
                    describe(&e)
                ))
            })?;
        let attrs = attrs.attributes().cloned().unwrap_or_default();
        let queue_visibility = attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        let visibility = Duration::from_secs(
            cfg.visibility_timeout_secs
                .map_or(queue_visibility, u64::from),
        );
        let queue_delay = attrs
            .get(&QueueAttributeName::DelaySeconds)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let drain_wait = match cfg.stop_when_empty_wait_secs {
            Some(s) => Duration::from_secs(s.into()),
            None => visibility + Duration::from_secs(queue_delay) + drain::SLACK,
        };
        let dlq = match (
            &cfg.dead_letter_queue_url,
            attrs.get(&QueueAttributeName::RedrivePolicy),
        ) {
            (Some(dlq), _) => Some(dlq.clone()),
            // The pipeline's own target takes them.
            (None, _) if cx.dead_letters_elsewhere => None,
            (None, Some(policy)) => Some(redrive_target(&client, policy).await.map_err(|e| {
                SourceError::fatal(format!(
                    "`{}`: {e}; set dead_letter_queue_url instead",
                    cfg.queue_url
                ))
            })?),
            (None, None) => {
                return Err(SourceError::fatal(format!(
                    "`{}` has no redrive policy and no dead_letter_queue_url is set, so failed \
                     messages would have nowhere to go: set dead_letter_queue_url, or give the \
                     queue a redrive policy",
                    cfg.queue_url
                )));
            }
        };
        let out = Arc::new(AtomicUsize::new(0));
        let batch = |in_flight: usize, linger: Duration| {
            let out = out.clone();
            BatchOptions {
                max_batch: 10,
                linger,
                in_flight,
                // Every message handed out is settling: nothing else is coming.
                flush_now: Some(Arc::new(move || out.load(Relaxed) == 0)),
            }
        };
        let requests = settle::Requests::new(&cfg.queue_url);
        // The calls made at open: the attributes, and the redrive policy's
        // queue.
        requests.attributes.add();
        if cfg.dead_letter_queue_url.is_none() && dlq.is_some() {
            requests.queue_url.add();
        }
        let api = Arc::new(settle::Api {
            client,
            queue_url: cfg.queue_url.clone(),
            requests,
        });
        let (deletes, deleter) = Batcher::spawn(
            batch(cfg.delete_batches_in_flight, Duration::from_secs(1)),
            {
                let api = api.clone();
                move |receipts| settle::delete_batch(api.clone(), receipts)
            },
        );
        // Lease extensions cannot wait long: a visibility change lingers
        // 50 ms at most for company.
        let (visibilities, changer) = Batcher::spawn(batch(8, Duration::from_millis(50)), {
            let api = api.clone();
            move |changes| settle::visibility_batch(api.clone(), changes)
        });
        let shared = Arc::new(Shared {
            api,
            visibility,
            out,
            deletes,
            visibilities,
            originals: Default::default(),
            retry_due: Default::default(),
        });
        let backlog = Arc::new(Backlog::new(&cx.pipeline));
        let watcher = tokio::spawn(watch_backlog(shared.api.clone(), backlog.clone()));
        let tasks = vec![deleter, changer, watcher];
        Ok(SqsSource {
            backlog,
            dead_letters: dlq.map(|url| {
                Arc::new(DeadLetterQueue {
                    shared: shared.clone(),
                    url,
                })
            }),
            shared,
            wait_time_secs: cfg.wait_time_secs as i32,
            pollers: cfg.pollers,
            active_pollers: cfg.pollers,
            fifo: cfg.queue_url.ends_with(".fifo"),
            max_body: cx.max_body_bytes,
            polls: FuturesUnordered::new(),
            asked: 0,
            extra: VecDeque::new(),
            tasks,
            stop_when_empty: None,
            drain_wait,
        })
    }

    fn poll(&self, n: usize) -> Poll {
        let shared = self.shared.clone();
        // A run that stops when empty must not sit through a long poll to
        // learn that it is.
        let wait = match self.stop_when_empty {
            Some(_) => self.wait_time_secs.min(1),
            None => self.wait_time_secs,
        };
        let visibility = shared.visibility.as_secs().clamp(1, 43_200) as i32;
        Box::pin(async move {
            shared.api.requests.receive.add();
            let r = shared
                .api
                .client
                .receive_message()
                .queue_url(&shared.api.queue_url)
                .max_number_of_messages(n as i32)
                .wait_time_seconds(wait)
                .visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .message_attribute_names("All")
                .send()
                .await
                .map(|out| out.messages.unwrap_or_default())
                .map_err(|e| {
                    SourceError::transient(format!("ReceiveMessage failed: {}", describe(&e)))
                });
            (n, r)
        })
    }

    fn delivery(&self, m: aws_sdk_sqs::types::Message) -> Option<Delivery> {
        let id = m.message_id?;
        let receipt = m.receipt_handle?;
        let body = Bytes::from(m.body.unwrap_or_default());
        let system = m.attributes.unwrap_or_default();
        let attempt = system
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let group = system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned();
        let message_attributes = m.message_attributes.unwrap_or_default();
        let mut attributes: std::collections::BTreeMap<String, String> = message_attributes
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
            .collect();
        if let Some(g) = &group {
            attributes.insert("MessageGroupId".into(), g.clone());
        }
        // SQS bodies are at most 256 KiB: the whole body is kept, for the
        // dead-letter queue, and the job refuses to run an oversize one.
        let len = body.len() as u64;
        let oversize = (len > self.max_body).then_some(len);
        if !message_attributes.is_empty() {
            self.shared
                .originals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), message_attributes);
        }
        Some(Delivery::new(
            Message {
                id: id.clone(),
                body,
                attributes,
                attempt,
                oversize,
                key: if self.fifo { group } else { None },
                fields: Default::default(),
            },
            Box::new(SqsAcker {
                shared: self.shared.clone(),
                id,
                receipt,
                begun: Default::default(),
            }),
        ))
    }

    /// Nothing received is waiting or running.
    fn is_idle(&self) -> bool {
        self.extra.is_empty() && self.shared.out.load(Relaxed) == 0
    }

    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let n = max.min(self.extra.len());
        let out: Vec<Delivery> = self.extra.drain(..n).collect();
        self.shared.out.fetch_add(out.len(), Relaxed);
        out
    }

    async fn next(&mut self, max: usize) -> Result<Received, SourceError> {
        loop {
            let got = self.take(max);
            if !got.is_empty() {
                return Ok(Received::Deliveries(got));
            }
            let budget = max.saturating_sub(self.extra.len());
            while self.polls.len() < self.active_pollers && self.asked < budget {
                let n = (budget - self.asked).min(10);
                self.asked += n;
                let poll = self.poll(n);
                self.polls.push(poll);
            }
            let Some((n, r)) = self.polls.next().await else {
                continue;
            };
            self.asked -= n;
            let msgs = r?;
            if msgs.is_empty() {
                self.shared.api.requests.empty_receive.add();
                self.active_pollers = 1;
                if self.is_idle() {
                    if let Some(drain) = &mut self.stop_when_empty {
                        let due = *self
                            .shared
                            .retry_due
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if drain.is_drained(&self.shared.api, due).await? {
                            return Ok(Received::End);
                        }
                    }
                }
                continue;
            }
            if let Some(drain) = &mut self.stop_when_empty {
                drain.received();
            }
            if msgs.len() == n {
                self.active_pollers = self.pollers;
            }
            for m in msgs {
                if let Some(d) = self.delivery(m) {
                    self.extra.push_back(d);
                }
            }
        }
    }
}

impl Source for SqsSource {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(self.next(max.max(1)))
    }

    fn backlog(&self) -> Option<Arc<Backlog>> {
        Some(self.backlog.clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            delayed_retry: true,
            lease: Some(self.shared.visibility),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        self.dead_letters
            .clone()
            .map(|d| d as Arc<dyn DeadLetterTarget>)
    }

    fn stop_when_empty(&mut self) {
        self.stop_when_empty = Some(Drain::new(self.drain_wait));
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        // Nothing renews the lease of a message received and not handed
        // out: give them all back now, rather than let them come back to
        // another consumer (an attempt spent) while paused.
        Box::pin(self.release_held())
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            let released = self.release_held().await;
            let r = &self.shared.api.requests;
            tracing::info!(
                queue = %self.shared.api.queue_url,
                receive = r.receive.get(),
                empty_receive = r.empty_receive.get(),
                delete = r.delete.get(),
                visibility = r.visibility.get(),
                send = r.send.get(),
                "sqs requests"
            );
            released
        })
    }
}

impl SqsSource {
    /// Releases (visibility 0) every message received and not handed out,
    /// those of the receives still in flight included.
    async fn release_held(&mut self) -> Result<(), SourceError> {
        // A receive still in flight may already hold messages: give it
        // a moment to answer so they can be released with the rest.
        // One that does not answer in time is dropped; what it took
        // comes back after the visibility timeout.
        let mut polls = std::mem::take(&mut self.polls);
        self.asked = 0;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some((_, r)) = polls.next().await {
                for m in r.unwrap_or_default() {
                    if let Some(d) = self.delivery(m) {
                        self.extra.push_back(d);
                    }
                }
            }
        })
        .await;
        let held: Vec<Delivery> = self.extra.drain(..).collect();
        self.shared.out.fetch_add(held.len(), Relaxed);
        let releases = held.into_iter().map(|d| d.acker.release());
        let released: Result<Vec<()>, SourceError> = futures::future::join_all(releases)
            .await
            .into_iter()
            .collect();
        released.map(|_| ())
    }
}

impl Drop for SqsSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
