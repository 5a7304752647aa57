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
//! **Rebalances.** When partitions are revoked, nothing more of theirs is
//! handed out, and the jobs already running get `rebalance_grace_ms`
//! (default 5000) to settle. Then what is settled is committed, and every
//! delivery still running is [revoked](super::Revocation) (its job stops,
//! unsettled: the new owner runs it). Assigned partitions resume from their
//! committed offset (`auto.offset.reset = earliest` when there is none).
//!
//! **Pausing.** One task polls librdkafka and hands messages over through
//! a buffer of 256. When the runtime takes none for a second (every slot is
//! busy, or its intake is paused because the destination keeps failing:
//! `[pipeline.retry] pause_after_failures`), the task pauses the assigned
//! partitions and keeps polling, so the process stays in its group; it
//! resumes them once the runtime has taken half the buffer.
//!
//! **Ordering** (`ordering`): `none` (default), `key` (one job per message
//! key at a time, in offset order, through the contract's ordering key) or
//! `partition` (one job per partition at a time).
//!
//! **Bounded memory.** librdkafka's prefetch is capped by
//! `queued.max.messages.kbytes` (4096 here, for the consumer's one queue)
//! and `fetch.max.bytes` (librdkafka's default); the source itself holds
//! at most the hand-off buffer (256 messages) besides what the runtime
//! runs. Any librdkafka property can be set under `options`.
//!
//! **`--stop-when-empty`** ends the run once the source is caught up:
//! partitions are assigned to it, every assigned partition's messages are
//! settled up to its high watermark (asked of the broker each time the
//! source has been idle for [`CAUGHT_UP_CHECK`]), and none is waiting to
//! be handed out. What other members hold is theirs to finish.
//!
//! **Templates** see `topic`, `partition`, `offset`, `key` (null without
//! one), `timestamp` (ms since the epoch, or null) and `headers` (a map,
//! lossy UTF-8) at the top level ([`Message::fields`](super::Message));
//! `message.attributes` holds the headers too.
//!
//! **Metrics**: `sluice_kafka_consumer_lag` (per `topic` and `partition`:
//! the partition's end minus the committed offset, or minus its start when
//! nothing is committed yet, from librdkafka's
//! statistics every `statistics.interval.ms`, default 5000),
//! `sluice_kafka_commits_total` (`result` = `ok` | `failed`),
//! `sluice_kafka_rebalances_total` (`kind` = `assign` | `revoke`) and
//! `sluice_kafka_paused` (1 while the partitions are paused), each with a
//! `pipeline` label.

mod dead_letters;
mod partition;
mod poll;
mod read;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use metrics::{Counter, counter, gauge};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use self::dead_letters::KafkaDeadLetters;
use self::partition::{Partition, Released, Shared, Tp};
use self::poll::{HANDOFF, Item, Poller};
use self::read::Reader;
use super::{
    Acker, Backlog, DeadLetterTarget, Delivery, FieldError, Received, Source, SourceConfig,
    SourceContext, SourceError,
};
use crate::formats::Format;
use crate::telemetry::{KAFKA_COMMITS, KAFKA_LAG, KAFKA_PAUSED, KAFKA_REBALANCES};

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
    /// How long the jobs of revoked partitions get to settle before they
    /// are revoked. Default 5000.
    pub rebalance_grace_ms: Option<u64>,
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

/// The source's metrics, labelled with its pipeline.
struct Metrics {
    pipeline: String,
    commits_ok: Counter,
    commits_failed: Counter,
    assigns: Counter,
    revokes: Counter,
    /// The assigned partitions' lag, summed.
    backlog: Arc<Backlog>,
}

impl Metrics {
    fn new(pipeline: &str) -> Metrics {
        let p = pipeline.to_owned();
        Metrics {
            commits_ok: counter!(KAFKA_COMMITS, "pipeline" => p.clone(), "result" => "ok"),
            commits_failed: counter!(KAFKA_COMMITS, "pipeline" => p.clone(), "result" => "failed"),
            assigns: counter!(KAFKA_REBALANCES, "pipeline" => p.clone(), "kind" => "assign"),
            revokes: counter!(KAFKA_REBALANCES, "pipeline" => p.clone(), "kind" => "revoke"),
            backlog: Arc::new(Backlog::new(&p)),
            pipeline: p,
        }
    }

    fn lag(&self, (topic, partition): &Tp, lag: i64) {
        gauge!(KAFKA_LAG, "pipeline" => self.pipeline.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
            .set(lag as f64);
    }
}

/// librdkafka's callbacks: revocations let running jobs finish, commit
/// what is settled and revoke the rest; statistics give the lag.
struct Callbacks {
    shared: Arc<Shared>,
    metrics: Metrics,
    grace: Duration,
}

impl ClientContext for Callbacks {
    fn stats(&self, stats: Statistics) {
        let mut backlog = None::<u64>;
        let mut unknown = false;
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *id < 0 || !p.desired {
                    continue;
                }
                // Its watermarks are known once it fetches. A partition with
                // nothing committed yet (librdkafka's lag is -1 then) lags
                // by all it holds: from its start.
                if p.fetch_state != "active" || p.hi_offset < 0 {
                    unknown = true;
                    continue;
                }
                let from = if p.committed_offset >= 0 {
                    p.committed_offset
                } else if p.lo_offset >= 0 {
                    p.lo_offset
                } else {
                    continue;
                };
                let lag = (p.hi_offset - from).max(0);
                self.metrics.lag(&(topic.clone(), *id), lag);
                backlog = Some(backlog.unwrap_or(0).saturating_add(lag as u64));
            }
        }
        // Some assigned partition's lag not known yet (not fetching), or
        // nothing assigned: the backlog stays as it was, not a part of it
        // nor 0.
        if let (Some(n), false) = (backlog, unknown) {
            self.metrics.backlog.set(n);
        }
    }
}

impl Callbacks {
    /// Runs `f`, which blocks, on this thread: moved off the runtime's
    /// worker first where the runtime allows it.
    fn blocking<R>(f: impl FnOnce() -> R) -> R {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(f)
            }
            _ => f(),
        }
    }

    /// Stops handing out the revoked partitions' messages and waits for
    /// their running jobs, up to the grace. Runs on the thread polling
    /// librdkafka (the poll task's, or the one closing the consumer), which
    /// is blocked meanwhile. True when none is left running.
    fn drain(&self, revoked: &[Tp]) -> bool {
        if self.shared.stop_handing_out(revoked) {
            return true;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.shared.drained(revoked, self.grace)))
            }
            // No other thread could run the jobs meanwhile.
            _ => false,
        }
    }
}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        self.metrics.revokes.increment(1);
        let revoked: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let drained = self.drain(&revoked);
        // Blocking: the partitions must be committed before the next owner
        // starts reading them.
        let committed = Self::blocking(|| {
            self.shared
                .commit_settled(Some(&revoked), |tpl| consumer.commit(tpl, CommitMode::Sync))
        });
        match committed {
            Ok(false) => {}
            Ok(true) => self.metrics.commits_ok.increment(1),
            Err(e) => {
                self.metrics.commits_failed.increment(1);
                tracing::warn!(pipeline = %self.metrics.pipeline, error = %e, "committing the revoked partitions failed; their new owner may run some settled events again")
            }
        }
        self.shared.revoke(&revoked);
        for tp in &revoked {
            // Reported by the partition's new owner from now on.
            self.metrics.lag(tp, 0);
        }
        if drained {
            tracing::info!(pipeline = %self.metrics.pipeline, partitions = ?revoked, "partitions revoked");
        } else {
            tracing::warn!(pipeline = %self.metrics.pipeline, partitions = ?revoked, grace_ms = self.grace.as_millis() as u64, "partitions revoked with jobs still running after the grace; their new owner runs them again");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.metrics.assigns.increment(1);
            // A partition paused while it was ours before stays paused in
            // librdkafka through a revocation: resume it. If the poll task
            // is holding, it pauses again on the partition's first message.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(pipeline = %self.metrics.pipeline, error = %e, "resuming the assigned partitions failed");
            }
            let assigned: Vec<Tp> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            tracing::info!(pipeline = %self.metrics.pipeline, partitions = ?assigned, "partitions assigned");
        }
    }
}

/// The running source.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<Callbacks>>,
    shared: Arc<Shared>,
    messages: mpsc::Receiver<Item>,
    taken: Arc<Notify>,
    poller: Option<tokio::task::JoinHandle<()>>,
    dead_letters: Arc<KafkaDeadLetters>,
    committer: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    pipeline: String,
    /// `brokers …, group …`, for errors.
    describe: String,
    backlog: Arc<Backlog>,
    /// `--stop-when-empty`: end once caught up.
    stop_when_empty: bool,
}

/// How long the source waits idle before asking whether it is caught up
/// (`--stop-when-empty`).
pub const CAUGHT_UP_CHECK: Duration = Duration::from_millis(500);

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Joins the group and subscribes; must be called inside a tokio
    /// runtime (the poll and commit tasks).
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
            // Bounded prefetch: at most this many KiB of payload queued for
            // the consumer. Against 8192, 4096 cut peak RSS from 150 to 130
            // MB on 200k small events for 0.37 of wrk against 0.39; 2048
            // saved 10 MB more but fell to 0.34-0.36 (BENCHMARKS.md).
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.wait.max.ms", "50")
            // Incremental rebalancing: a member joining or leaving moves
            // only the partitions that change hands; the others keep
            // running (the eager protocol stops every member's every
            // partition for the whole rebalance).
            .set("partition.assignment.strategy", "cooperative-sticky")
            // The lag metric.
            .set("statistics.interval.ms", "5000")
            .set("client.id", format!("sluice-{}", cx.pipeline));
        for (k, v) in &cfg.options {
            client.set(k, v);
        }
        let shared = Arc::new(Shared::default());
        let metrics = Metrics::new(&cx.pipeline);
        let backlog = metrics.backlog.clone();
        let consumer: StreamConsumer<Callbacks> = client
            .create_with_context(Callbacks {
                shared: shared.clone(),
                metrics,
                grace: Duration::from_millis(cfg.rebalance_grace_ms.unwrap_or(5000)),
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
        let stop = CancellationToken::new();
        let (tx, messages) = mpsc::channel(HANDOFF);
        let taken = Arc::new(Notify::new());
        let poller = tokio::spawn(
            Poller {
                consumer: consumer.clone(),
                reader: Reader {
                    ordering: cfg.ordering,
                    max_body: cx.max_body_bytes,
                    shared: shared.clone(),
                },
                tx,
                taken: taken.clone(),
                stop: stop.clone(),
                pipeline: cx.pipeline.clone(),
                paused: gauge!(KAFKA_PAUSED, "pipeline" => cx.pipeline.clone()),
            }
            .run(),
        );
        let committer = tokio::spawn(commit_loop(
            consumer.clone(),
            shared.clone(),
            Duration::from_millis(cfg.commit_interval_ms.unwrap_or(1000)),
            stop.clone(),
        ));
        Ok(KafkaSource {
            backlog,
            consumer,
            shared,
            messages,
            taken,
            poller: Some(poller),
            dead_letters: Arc::new(KafkaDeadLetters {
                producer,
                topic: cfg.dead_letter_topic.clone().unwrap_or_default(),
            }),
            committer: Some(committer),
            stop,
            pipeline: cx.pipeline.clone(),
            describe: format!("brokers {}, group {}", cfg.brokers, cfg.group_id),
            stop_when_empty: false,
        })
    }

    fn deliver(&self, r: Released) -> Delivery {
        let revocation = r.partition.revoked.clone();
        r.partition.handed_out();
        let mut d = Delivery::new(
            r.message.clone(),
            Box::new(KafkaAcker {
                shared: self.shared.clone(),
                partition: r.partition,
                offset: r.offset,
                message: Some(r.message),
            }),
        );
        d.revocation = Some(revocation);
        d
    }

    fn receive_error(&self, e: rdkafka::error::KafkaError) -> SourceError {
        SourceError::transient(format!(
            "receiving from Kafka ({}) failed: {e}; check `brokers` and the \
             `security.*`/`sasl.*` options",
            self.describe
        ))
        .with_source(e)
    }

    /// Caught up: partitions are assigned, and each one's messages are
    /// settled up to its high watermark, none waiting to be handed out.
    async fn caught_up(&self) -> Result<bool, SourceError> {
        if !self.messages.is_empty() || !self.shared.released().is_empty() {
            return Ok(false);
        }
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| self.receive_error(e))?;
        if assigned.count() == 0 {
            return Ok(false);
        }
        let tps: Vec<Tp> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // Settled below, for the partitions read from; the group's
        // committed offset (or the start) for the others.
        let ours: Vec<Option<i64>> = tps
            .iter()
            .map(|tp| self.shared.get(tp).and_then(|p| p.settled_below()))
            .collect();
        let consumer = self.consumer.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(10);
            let committed = consumer.committed(timeout)?;
            tps.iter()
                .map(|(topic, partition)| {
                    let (low, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
                    let committed = committed
                        .find_partition(topic, *partition)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0);
                    Ok((low, high, committed))
                })
                .collect::<Result<Vec<_>, rdkafka::error::KafkaError>>()
        })
        .await
        .map_err(|e| SourceError::transient(format!("the caught-up check panicked: {e}")))?
        .map_err(|e| self.receive_error(e))?;
        Ok(ours
            .iter()
            .zip(asked)
            .all(|(ours, (low, high, committed))| ours.or(committed).unwrap_or(low) >= high))
    }

    async fn next(&mut self, max: usize) -> Result<Received, SourceError> {
        loop {
            let mut out: Vec<Released> = Vec::new();
            {
                let mut released = self.shared.released();
                while out.len() < max {
                    let Some(r) = released.pop_front() else { break };
                    if r.partition.is_live() {
                        out.push(r);
                    }
                }
            }
            if out.is_empty() {
                let mut items = Vec::new();
                let woken = self.shared.wake.notified();
                let idle = async {
                    if self.stop_when_empty {
                        tokio::time::sleep(CAUGHT_UP_CHECK).await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    n = self.messages.recv_many(&mut items, max) => if n == 0 {
                        return Err(SourceError::fatal(format!(
                            "the Kafka poll task ({}) ended", self.describe
                        )));
                    },
                    () = woken => continue,
                    () = idle => {
                        if self.caught_up().await? {
                            return Ok(Received::End);
                        }
                        continue;
                    }
                }
                self.taken.notify_one();
                let mut items = items.into_iter();
                for item in items.by_ref() {
                    match item {
                        Ok(r) if r.partition.is_live() => out.push(r),
                        // Revoked, or being revoked: the next owner reads it.
                        Ok(_) => {}
                        Err(e) if out.is_empty() => {
                            // Put back what came after it for the next call.
                            let rest: Vec<Released> = items.filter_map(Result::ok).collect();
                            self.shared.released().extend(rest);
                            return Err(self.receive_error(e));
                        }
                        Err(e) => {
                            tracing::warn!(pipeline = %self.pipeline, error = %e, "Kafka receive error")
                        }
                    }
                }
                if out.is_empty() {
                    continue;
                }
            }
            let deliveries = out.into_iter().map(|r| self.deliver(r)).collect();
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
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let commit = {
        let (consumer, shared) = (consumer.clone(), shared.clone());
        tokio::task::spawn_blocking(move || {
            shared.commit_settled(None, |tpl| consumer.commit(tpl, CommitMode::Sync))
        })
    };
    let metrics = &consumer.context().metrics;
    let r = match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
        Ok(Ok(Ok(false))) => return Ok(()),
        Ok(Ok(Ok(true))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("the commit panicked: {e}")),
        Err(_) => Err(format!("no answer within {COMMIT_TIMEOUT:?}")),
    };
    match &r {
        Ok(()) => metrics.commits_ok.increment(1),
        Err(_) => metrics.commits_failed.increment(1),
    }
    r
}

async fn commit_loop(
    consumer: Arc<StreamConsumer<Callbacks>>,
    shared: Arc<Shared>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = commit_settled(&consumer, &shared).await {
            let pipeline = &consumer.context().metrics.pipeline;
            tracing::warn!(pipeline = %pipeline, error = %e, "committing offsets failed; the next commit tries again");
        }
    }
}

impl Source for KafkaSource {
    fn backlog(&self) -> Option<Arc<Backlog>> {
        Some(self.backlog.clone())
    }

    fn stop_when_empty(&mut self) {
        self.stop_when_empty = true;
    }

    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(self.next(max.max(1)))
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            self.stop.cancel();
            for task in [self.poller.take(), self.committer.take()]
                .into_iter()
                .flatten()
            {
                let _ = task.await;
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
    message: Option<crate::sources::Message>,
}

impl Drop for KafkaAcker {
    /// Settled, released, or let go (revoked): the runtime holds it no more.
    fn drop(&mut self) {
        self.partition.returned();
    }
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
            if self.partition.is_live() {
                self.shared.released().push_back(Released {
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
}
