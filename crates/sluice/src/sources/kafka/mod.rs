//! `type = "kafka"`: a consumer group on Kafka topics, through librdkafka.
//!
//! **Commits below what is settled.** Jobs finish out of order; for each
//! partition the source keeps a [`Watermark`] of the offsets handed out and
//! not yet settled, and commits (every `commit_interval_ms`, at a
//! revocation and at close) only the offset below which every message is
//! settled. A crash replays at most what was in flight or settled and not
//! yet committed; it never skips one. Offsets are never committed by
//! librdkafka itself (`enable.auto.commit` and `enable.auto.offset.store`
//! are off).
//!
//! **No per-message nack.** Kafka cannot redeliver one message later, so
//! the capabilities say no delayed retry: a retry waits in process, in its
//! job's slot, and the partition's commit waits for it. A release (at
//! shutdown) leaves the offset uncommitted, so the next owner of the
//! partition runs it; a release while running (to keep an ordering key's
//! order) hands the message back to this source, which delivers it again.
//! Failed events go to `dead_letter_topic`, with headers saying why
//! (`sluice_dead_letter_reason`, `sluice_pipeline`, `sluice_attempts`) and
//! where from (`sluice_topic`, `sluice_partition`, `sluice_offset`), and
//! only then count as settled.
//!
//! **Rebalances.** When partitions are revoked, every delivery from them is
//! [revoked](super::Revocation) (its job stops, unsettled: the new owner
//! runs it) and what is settled is committed at once. Assigned partitions
//! resume from their committed offset (`auto.offset.reset = earliest` when
//! there is none).
//!
//! **Ordering** (`ordering`): `none` (default), `key` (one job per message
//! key at a time, in offset order, through the contract's ordering key) or
//! `partition` (one job per partition at a time).
//!
//! **Bounded memory.** librdkafka's prefetch is capped by
//! `queued.max.messages.kbytes` (8192 here, for the consumer's one queue)
//! and `fetch.max.bytes` (librdkafka's default); the source itself holds
//! only what the runtime asked for. Any librdkafka property can be set under
//! `options`.
//!
//! Each message's `message.attributes` hold its headers (lossy UTF-8) and
//! `kafka.topic`, `kafka.partition`, `kafka.offset`, `kafka.key` (when it
//! has one) and `kafka.timestamp` (ms since the epoch, when it has one).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::Notify;

use super::common::Watermark;
use super::{
    Acker, DeadLetter, DeadLetterTarget, Delivery, FieldError, Message, Received, Revocation,
    Source, SourceConfig, SourceContext, SourceError,
};
use crate::formats::Format;

/// How messages of one partition may run at once.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Any number at once: the most throughput.
    #[default]
    None,
    /// One per message key at a time, in offset order.
    Key,
    /// One per partition at a time, in offset order.
    Partition,
}

/// `type = "kafka"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// The topics to consume.
    pub topics: Vec<String>,
    /// The consumer group: processes with the same group share the
    /// topics' partitions.
    pub group_id: String,
    /// The envelope of each message. Default `json`.
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub ordering: Ordering,
    /// Where failed events go (a topic on the same cluster).
    pub dead_letter_topic: Option<String>,
    /// How often settled offsets are committed. Default 1000.
    pub commit_interval_ms: Option<u64>,
    /// librdkafka properties, over sluice's defaults
    /// (`session.timeout.ms`, `queued.max.messages.kbytes`, `security.protocol`...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl SourceConfig for KafkaSourceConfig {
    fn format(&self) -> Format {
        self.format
    }

    fn check(&self) -> Result<(), FieldError> {
        if self.brokers.trim().is_empty() {
            return Err(FieldError::new(
                "brokers",
                "empty: give the bootstrap servers, like \"127.0.0.1:9092\"",
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(FieldError::new(
                "topics",
                "name at least one topic, and no empty names",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(FieldError::new(
                "group_id",
                "empty: processes with the same group share the partitions",
            ));
        }
        match self.dead_letter_topic.as_deref() {
            None | Some("") => {
                return Err(FieldError::new(
                    "dead_letter_topic",
                    "required: Kafka cannot set one failed event aside, so failed events go \
                     to a topic (e.g. \"events-dlq\")",
                ));
            }
            Some(t) if self.topics.iter().any(|x| x == t) => {
                return Err(FieldError::new(
                    "dead_letter_topic",
                    "is one of the consumed topics: failed events would come round again",
                ));
            }
            Some(_) => {}
        }
        if self.commit_interval_ms == Some(0) {
            return Err(FieldError::new("commit_interval_ms", "must be at least 1"));
        }
        for key in ["enable.auto.commit", "enable.auto.offset.store", "group.id"] {
            if self.options.contains_key(key) {
                return Err(FieldError::new(
                    "options",
                    format!(
                        "`{key}` is set by sluice (offsets are committed below what is settled); remove it"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn build<'a>(
        &'a self,
        cx: &'a SourceContext,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move { Ok(Box::new(KafkaSource::open(self, cx)?) as Box<dyn Source>) })
    }
}

/// One assigned partition's progress.
#[derive(Debug)]
struct Partition {
    /// Offsets handed out and not settled; `None` until the first message.
    marks: Mutex<Option<Watermark>>,
    /// The last offset committed (the next to read).
    committed: Mutex<Option<i64>>,
    /// Cancelled when the partition is revoked.
    revoked: Revocation,
}

impl Partition {
    fn new() -> Partition {
        Partition {
            marks: Mutex::new(None),
            committed: Mutex::new(None),
            revoked: Revocation::new(),
        }
    }

    /// The offset to commit, when it moved past the last commit.
    fn to_commit(&self) -> Option<i64> {
        let low = self
            .marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .low() as i64;
        let committed = *self.committed.lock().unwrap_or_else(|p| p.into_inner());
        (committed.is_none_or(|c| low > c)).then_some(low)
    }

    fn committed(&self, offset: i64) {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        *c = Some(c.map_or(offset, |c| c.max(offset)));
    }

    fn settled(&self, offset: i64) {
        if let Some(w) = self
            .marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            w.settled(offset as u64);
        }
    }
}

type Tp = (String, i32);

/// What the source, its ackers, the commit task and the rebalance
/// callbacks share.
#[derive(Debug, Default)]
struct Shared {
    partitions: Mutex<HashMap<Tp, Arc<Partition>>>,
    /// Messages handed back while running, to deliver again first.
    released: Mutex<VecDeque<Released>>,
    wake: Notify,
}

impl Shared {
    fn partition(&self, tp: &Tp) -> Arc<Partition> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(Partition::new()))
            .clone()
    }

    /// The offsets to commit: of every partition, or of `only`.
    fn commits(&self, only: Option<&[Tp]>) -> (TopicPartitionList, Vec<(Arc<Partition>, i64)>) {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for (tp, part) in parts.iter() {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            if let Some(offset) = part.to_commit() {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
                done.push((part.clone(), offset));
            }
        }
        (tpl, done)
    }
}

/// A message handed back while the source runs.
#[derive(Debug)]
struct Released {
    message: Message,
    partition: Arc<Partition>,
    offset: i64,
}

/// librdkafka's callbacks: revocations commit what is settled and revoke
/// the rest.
struct Callbacks {
    shared: Arc<Shared>,
    pipeline: String,
}

impl ClientContext for Callbacks {}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let (commit, done) = self.shared.commits(Some(&revoked));
        if commit.count() > 0 {
            // Blocking, on the thread polling the consumer (a tokio worker):
            // rebalances are rare, and the partitions must be committed
            // before the next owner starts reading them.
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => done.iter().for_each(|(p, o)| p.committed(*o)),
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline, error = %e, "committing the revoked partitions failed; their new owner may run some settled events again")
                }
            }
        }
        drop(commit);
        let mut parts = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for tp in &revoked {
            if let Some(p) = parts.remove(tp) {
                p.revoked.cancel();
            }
        }
        drop(parts);
        self.shared
            .released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| !r.partition.revoked.is_cancelled());
        tracing::info!(pipeline = %self.pipeline, partitions = ?revoked, "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<Tp> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            tracing::info!(pipeline = %self.pipeline, partitions = ?assigned, "partitions assigned");
        }
    }
}

/// The running source.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<Callbacks>>,
    shared: Arc<Shared>,
    ordering: Ordering,
    max_body: u64,
    dead_letters: Arc<KafkaDeadLetters>,
    committer: Option<tokio::task::JoinHandle<()>>,
    stop_committer: Arc<Notify>,
    pipeline: String,
    /// `brokers …, group …`, for errors.
    describe: String,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Joins the group and subscribes; must be called inside a tokio
    /// runtime (the commit task).
    pub fn open(cfg: &KafkaSourceConfig, cx: &SourceContext) -> Result<KafkaSource, SourceError> {
        cfg.check()
            .map_err(|e| SourceError::fatal(format!("kafka source: {e}")))?;
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Bounded prefetch: at most this many KiB queued for the consumer.
            .set("queued.max.messages.kbytes", "8192")
            .set("fetch.wait.max.ms", "50")
            .set("client.id", format!("sluice-{}", cx.pipeline));
        for (k, v) in &cfg.options {
            client.set(k, v);
        }
        let shared = Arc::new(Shared::default());
        let consumer: StreamConsumer<Callbacks> = client
            .create_with_context(Callbacks {
                shared: shared.clone(),
                pipeline: cx.pipeline.clone(),
            })
            .map_err(|e| {
                SourceError::fatal(format!("creating the Kafka consumer failed: {e}"))
                    .with_source(e)
            })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            SourceError::fatal(format!("subscribing to {topics:?} failed: {e}")).with_source(e)
        })?;
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &cfg.brokers)
            .set("client.id", format!("sluice-{}-dlq", cx.pipeline))
            .set("message.timeout.ms", "30000");
        for (k, v) in &cfg.options {
            // Connection settings (security, SASL) apply to both clients.
            if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
                producer.set(k, v);
            }
        }
        let producer: FutureProducer = producer.create().map_err(|e| {
            SourceError::fatal(format!("creating the dead-letter producer failed: {e}"))
                .with_source(e)
        })?;
        let consumer = Arc::new(consumer);
        let stop_committer = Arc::new(Notify::new());
        let committer = tokio::spawn(commit_loop(
            consumer.clone(),
            shared.clone(),
            Duration::from_millis(cfg.commit_interval_ms.unwrap_or(1000)),
            stop_committer.clone(),
            cx.pipeline.clone(),
        ));
        Ok(KafkaSource {
            consumer,
            shared,
            ordering: cfg.ordering,
            max_body: cx.max_body_bytes,
            dead_letters: Arc::new(KafkaDeadLetters {
                producer,
                topic: cfg.dead_letter_topic.clone().unwrap_or_default(),
            }),
            committer: Some(committer),
            stop_committer,
            pipeline: cx.pipeline.clone(),
            describe: format!("brokers {}, group {}", cfg.brokers, cfg.group_id),
        })
    }

    fn convert(&self, m: &BorrowedMessage<'_>) -> (Message, Arc<Partition>, i64) {
        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
        let payload = m.payload().unwrap_or_default();
        let mut attributes = BTreeMap::new();
        if let Some(h) = m.headers() {
            for Header { key, value } in h.iter() {
                let v = value.map(String::from_utf8_lossy).unwrap_or_default();
                attributes.insert(key.to_owned(), v.into_owned());
            }
        }
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        attributes.insert("kafka.topic".into(), topic.clone());
        attributes.insert("kafka.partition".into(), partition.to_string());
        attributes.insert("kafka.offset".into(), offset.to_string());
        if let Some(k) = &key {
            attributes.insert("kafka.key".into(), k.clone());
        }
        if let Some(ts) = m.timestamp().to_millis() {
            attributes.insert("kafka.timestamp".into(), ts.to_string());
        }
        let ordering_key = match self.ordering {
            Ordering::None => None,
            // One key's events are in one partition (the default
            // partitioner), in offset order.
            Ordering::Key => key,
            Ordering::Partition => Some(format!("{topic}/{partition}")),
        };
        let len = payload.len() as u64;
        let message = Message {
            id: format!("{topic}/{partition}/{offset}"),
            // Kept whole even when over the limit: the dead letter gets
            // the whole event (the broker bounds its size).
            body: Bytes::copy_from_slice(payload),
            attributes,
            attempt: 1,
            oversize: (len > self.max_body).then_some(len),
            key: ordering_key,
        };
        let part = self.shared.partition(&(topic, partition));
        {
            let mut marks = part.marks.lock().unwrap_or_else(|p| p.into_inner());
            marks
                .get_or_insert_with(|| Watermark::new(offset as u64))
                .received([offset as u64], offset as u64 + 1);
        }
        (message, part, offset)
    }

    fn deliver(&self, message: Message, partition: Arc<Partition>, offset: i64) -> Delivery {
        let revocation = partition.revoked.clone();
        let mut d = Delivery::new(
            message.clone(),
            Box::new(KafkaAcker {
                shared: self.shared.clone(),
                partition,
                offset,
                message: Some(message),
            }),
        );
        d.revocation = Some(revocation);
        d
    }

    async fn next(&mut self, max: usize) -> Result<Received, SourceError> {
        loop {
            let mut out = Vec::new();
            {
                let mut released = self
                    .shared
                    .released
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                while out.len() < max {
                    let Some(r) = released.pop_front() else { break };
                    if !r.partition.revoked.is_cancelled() {
                        out.push((r.message, r.partition, r.offset));
                    }
                }
            }
            if out.is_empty() {
                let notified = self.shared.wake.notified();
                let first = tokio::select! {
                    m = self.consumer.recv() => m.map_err(|e| {
                        SourceError::transient(format!(
                            "receiving from Kafka ({}) failed: {e}; check `brokers` and the \
                             `security.*`/`sasl.*` options",
                            self.describe
                        ))
                        .with_source(e)
                    })?,
                    () = notified => continue,
                };
                out.push(self.convert(&first));
                drop(first);
                // More, without waiting, up to `max`.
                while out.len() < max {
                    match self.consumer.recv().now_or_never() {
                        Some(Ok(m)) => out.push(self.convert(&m)),
                        Some(Err(e)) => {
                            tracing::warn!(pipeline = %self.pipeline, error = %e, "Kafka receive error");
                            break;
                        }
                        None => break,
                    }
                }
            }
            let deliveries = out
                .into_iter()
                .map(|(m, p, o)| self.deliver(m, p, o))
                .collect();
            return Ok(Received::Deliveries(deliveries));
        }
    }
}

/// A commit that has not finished by then is given up (and retried by the
/// next tick); librdkafka's own sync commit has no deadline.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Commits every partition's settled prefix, synchronously on a blocking
/// thread: a partition is marked committed only once the broker said so.
async fn commit_settled(
    consumer: &Arc<StreamConsumer<Callbacks>>,
    shared: &Shared,
) -> Result<(), String> {
    let (tpl, done) = shared.commits(None);
    if tpl.count() == 0 {
        return Ok(());
    }
    let consumer = consumer.clone();
    let commit = tokio::task::spawn_blocking(move || {
        let r = consumer.commit(&tpl, CommitMode::Sync);
        // librdkafka's lists go before the consumer does.
        drop(tpl);
        r
    });
    match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
        Ok(Ok(Ok(()))) => {
            done.iter().for_each(|(p, o)| p.committed(*o));
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("the commit panicked: {e}")),
        Err(_) => Err(format!("no answer within {COMMIT_TIMEOUT:?}")),
    }
}

async fn commit_loop(
    consumer: Arc<StreamConsumer<Callbacks>>,
    shared: Arc<Shared>,
    every: Duration,
    stop: Arc<Notify>,
    pipeline: String,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.notified() => return,
        }
        if let Err(e) = commit_settled(&consumer, &shared).await {
            tracing::warn!(pipeline = %pipeline, error = %e, "committing offsets failed; the next commit tries again");
        }
    }
}

impl Source for KafkaSource {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(self.next(max.max(1)))
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            self.stop_committer.notify_one();
            if let Some(h) = self.committer.take() {
                let _ = h.await;
            }
            let result = commit_settled(&self.consumer, &self.shared)
                .await
                .map_err(|e| {
                    SourceError::fatal(format!(
                        "the final offset commit ({}) failed: {e}; the settled events above \
                         the last commit will run again",
                        self.describe
                    ))
                });
            self.consumer.unsubscribe();
            result
        })
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        Some(self.dead_letters.clone())
    }
}

/// Settles one event in its partition's watermark.
struct KafkaAcker {
    shared: Arc<Shared>,
    partition: Arc<Partition>,
    offset: i64,
    /// Kept to hand back on a release.
    message: Option<Message>,
}

impl Acker for KafkaAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        self.partition.settled(self.offset);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        // The dead letter is stored already: the event is settled.
        self.partition.settled(self.offset);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        // Its offset stays unsettled, so no commit passes it; while the
        // source runs it is delivered again from here.
        if let Some(message) = self.message.take() {
            if !self.partition.revoked.is_cancelled() {
                self.shared
                    .released
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Released {
                        message,
                        partition: self.partition.clone(),
                        offset: self.offset,
                    });
                self.shared.wake.notify_one();
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The dead-letter topic.
struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterTarget for KafkaDeadLetters {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let m = letter.message;
            let attempts = letter.attempts.to_string();
            let attr = |k: &str| m.attributes.get(k).map(String::as_str).unwrap_or("");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "sluice_dead_letter_reason",
                    value: Some(letter.reason),
                })
                .insert(Header {
                    key: "sluice_pipeline",
                    value: Some(letter.pipeline),
                })
                .insert(Header {
                    key: "sluice_attempts",
                    value: Some(attempts.as_str()),
                })
                .insert(Header {
                    key: "sluice_topic",
                    value: Some(attr("kafka.topic")),
                })
                .insert(Header {
                    key: "sluice_partition",
                    value: Some(attr("kafka.partition")),
                })
                .insert(Header {
                    key: "sluice_offset",
                    value: Some(attr("kafka.offset")),
                });
            let key = m.attributes.get("kafka.key");
            let mut record = FutureRecord::to(&self.topic)
                .payload(m.body.as_ref())
                .headers(headers);
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| {
                    SourceError::transient(format!(
                        "sending the dead letter to topic `{}` failed: {e}",
                        self.topic
                    ))
                    .with_source(e)
                })
        })
    }

    fn name(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaSourceConfig {
        toml::from_str(
            "brokers = '127.0.0.1:9092'\ntopics = ['events']\ngroup_id = 'g'\n\
             dead_letter_topic = 'events-dlq'",
        )
        .unwrap()
    }

    #[test]
    fn check_refuses_what_would_lose_or_loop_events() {
        assert!(config().check().is_ok());
        let mut c = config();
        c.dead_letter_topic = None;
        assert_eq!(c.check().unwrap_err().field, "dead_letter_topic");
        let mut c = config();
        c.dead_letter_topic = Some("events".into());
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("come round again")
        );
        let mut c = config();
        c.options.insert("enable.auto.commit".into(), "true".into());
        assert!(c.check().unwrap_err().to_string().contains("set by sluice"));
        let mut c = config();
        c.topics.clear();
        assert_eq!(c.check().unwrap_err().field, "topics");
    }

    #[test]
    fn commits_only_below_what_is_settled() {
        let p = Partition::new();
        assert_eq!(p.to_commit(), None, "nothing received yet");
        *p.marks.lock().unwrap() = Some(Watermark::new(5));
        p.marks
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .received([5, 6, 7], 8);
        p.settled(6);
        p.settled(7);
        assert_eq!(
            p.to_commit(),
            Some(5),
            "5 still runs: commit nothing past it"
        );
        p.committed(5);
        assert_eq!(p.to_commit(), None);
        p.settled(5);
        assert_eq!(p.to_commit(), Some(8));
        p.committed(8);
        assert_eq!(p.to_commit(), None, "committed already");
    }
}
