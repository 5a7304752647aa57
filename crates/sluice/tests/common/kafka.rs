//! Helpers for the tests that need a Kafka-protocol broker (tansu, started
//! by `scripts/kafka` on 127.0.0.1:9092; `SLUICE_KAFKA_BROKERS` names
//! another): fresh topics, producing, and reading back what the broker
//! holds (committed offsets, a topic's records with their headers).
//!
//! A missing broker fails the test that needs it, naming `scripts/kafka`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

/// The bound on one broker operation.
pub const BROKER_WAIT: Duration = Duration::from_secs(30);

/// librdkafka options for a consumer group that notices a vanished member
/// in seconds (librdkafka's defaults take 45 s); the assignment is
/// sluice's own default (cooperative-sticky). `max.poll.interval.ms` is
/// also the classic protocol's rebalance timeout, so a member that stopped
/// polling holds a rebalance up for at most that long.
pub const FAST_GROUP_OPTIONS: [(&str, &str); 3] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("max.poll.interval.ms", "7000"),
];

pub fn brokers() -> String {
    std::env::var("SLUICE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run: tansu keeps topics until it
/// stops) has used.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

/// Fails the test, naming `scripts/kafka`, when nothing listens at the
/// first broker (rather than waiting out librdkafka's timeouts).
pub fn require_broker() {
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(first)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka broker answers at {first}: run scripts/kafka (it installs and starts tansu), \
         or set SLUICE_KAFKA_BROKERS"
    );
}

pub async fn create_topic(name: &str, partitions: i32) {
    require_broker();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("an admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(BROKER_WAIT));
    let out = admin
        .create_topics([&topic], &options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating topic {name} on {} failed: {e} (is the broker up? run scripts/kafka)",
                brokers()
            )
        });
    for r in out {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// One record to produce.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub key: Option<String>,
    /// None: the producer's partitioner picks (by key).
    pub partition: Option<i32>,
    pub payload: Vec<u8>,
}

/// Produces `records` in order and returns where each landed
/// (partition, offset). They are sent without waiting for each other
/// (batched), one request per broker at a time, so a partition holds its
/// records in the order given.
pub async fn produce(topic: &str, records: &[Record]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.timeout.ms", "30000")
        // One record per batch: tansu 0.6.0 counts a partition's high
        // watermark in batches and fetches only batches that start at or
        // after the offset asked for, so a consumer resuming inside a
        // batch of several records never gets the rest of it.
        .set("batch.num.messages", "1")
        // Order within a partition survives a retried request.
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("a producer");
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(r.payload.as_slice());
        if let Some(k) = &r.key {
            record = record.key(k.as_str());
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        let sent = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("queueing a record for {topic}: {e}"));
        pending.push(sent);
    }
    let mut placed = Vec::with_capacity(records.len());
    for sent in pending {
        let delivered = sent
            .await
            .expect("the producer lives until every delivery is reported")
            .unwrap_or_else(|(e, _)| {
                panic!(
                    "producing to {topic} on {} failed: {e} (is the broker up? run scripts/kafka)",
                    brokers()
                )
            });
        placed.push((delivered.partition, delivered.offset));
    }
    placed
}

/// Each partition's committed offset for `group` (None: nothing committed).
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let (group, topic, brokers) = (group.to_owned(), topic.to_owned(), brokers());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", &group)
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let out = consumer
            .committed_offsets(tpl, BROKER_WAIT)
            .unwrap_or_else(|e| panic!("reading group {group}'s committed offsets: {e}"));
        let offsets = (0..partitions)
            .map(
                |p| match out.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect();
        // librdkafka's lists go before the consumer does.
        drop(out);
        offsets
    })
    .await
    .expect("reading the committed offsets does not panic")
}

/// One record read back.
#[derive(Clone, Debug)]
pub struct Stored {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Headers, values as lossy UTF-8.
    pub headers: BTreeMap<String, String>,
}

/// Every record of `topic`'s `partitions`, read to the end each partition
/// had when it was reached: librdkafka's partition-EOF event, not
/// `fetch_watermarks` (tansu's high watermark can undercount a batch, while
/// a fetch returns all of it).
pub async fn read_all(topic: &str, partitions: i32) -> Vec<Stored> {
    let (topic, brokers) = (topic.to_owned(), brokers());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let mut out = Vec::new();
        let mut at_end = vec![false; partitions as usize];
        let started = Instant::now();
        while at_end.contains(&false) {
            assert!(
                started.elapsed() < BROKER_WAIT,
                "reading {topic} timed out; partitions at their end: {at_end:?}"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let mut headers = BTreeMap::new();
                    if let Some(h) = m.headers() {
                        for h in h.iter() {
                            let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                            headers.insert(h.key.to_owned(), v.into_owned());
                        }
                    }
                    out.push(Stored {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_end[p as usize] = true;
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    })
    .await
    .expect("reading the topic does not panic")
}
