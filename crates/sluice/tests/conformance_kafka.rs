//! The source conformance suite (tests/conformance/mod.rs) on the Kafka
//! source, against the broker `scripts/kafka` starts (tansu, a
//! Kafka-protocol broker, on 127.0.0.1:9092; `SLUICE_KAFKA_BROKERS` names
//! another): a fresh 3-partition topic, dead-letter topic and consumer group
//! per check. What is unsettled is read from the group's committed offsets.
//!
//! Needs the broker: feature `kafka-broker-tests`, run by `scripts/test`
//! after `scripts/kafka`.
//!
//! Two things differ from the file and SQS harnesses:
//! - A broker that commits an offset prefix holds every message of a
//!   partition from its lowest unsettled one on
//!   ([`conformance::Harness::held_if_unsettled`]): after the crash check, all
//!   messages behind the three hung ones come back too.
//! - The crash check drops the worker's tokio runtime; librdkafka's own
//!   threads and the group membership outlive that until the consumer is
//!   destroyed, so the new process's join would wait for the old member to
//!   rejoin. `max.poll.interval.ms = 7000` makes librdkafka leave the group
//!   for a member nobody polls, as a dead process's member would be timed
//!   out. (With a real kill -9, tansu 0.6.0 does not reassign a timed-out
//!   member's partitions until another member joins; see the README.)
//!
//! The dead-letter topic is read up to librdkafka's partition-EOF event,
//! not up to `fetch_watermarks`: tansu's high watermark read 1 after three
//! dead letters produced at once, all three of which a reader then gets.

mod conformance;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use sluice::SourceContext;
use sluice::sources::Source;
use sluice::sources::kafka::{KafkaSource, KafkaSourceConfig, Ordering};

const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(30);

fn brokers() -> String {
    std::env::var("SLUICE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn unique(prefix: &str) -> String {
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

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("an admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let out = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT)))
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

struct KafkaHarness {
    topic: String,
    dlq: String,
    group: String,
    /// (partition, offset) of every message seeded.
    seeded: Vec<(i32, i64)>,
}

impl KafkaHarness {
    fn new() -> KafkaHarness {
        KafkaHarness {
            topic: String::new(),
            dlq: String::new(),
            group: String::new(),
            seeded: Vec::new(),
        }
    }

    fn config(&self) -> KafkaSourceConfig {
        let mut options = std::collections::BTreeMap::new();
        // A consumer that vanished is noticed in seconds (librdkafka's
        // default is 45 s).
        options.insert("session.timeout.ms".to_owned(), "6000".to_owned());
        options.insert("heartbeat.interval.ms".to_owned(), "500".to_owned());
        options.insert("max.poll.interval.ms".to_owned(), "7000".to_owned());
        // tansu answers the classic protocol's range assignment best.
        options.insert(
            "partition.assignment.strategy".to_owned(),
            "range".to_owned(),
        );
        KafkaSourceConfig {
            brokers: brokers(),
            topics: vec![self.topic.clone()],
            group_id: self.group.clone(),
            format: Default::default(),
            ordering: Ordering::Key,
            dead_letter_topic: Some(self.dlq.clone()),
            commit_interval_ms: Some(100),
            rebalance_grace_ms: None,
            options,
        }
    }
}

impl conformance::Harness for KafkaHarness {
    async fn seed(&mut self, msgs: &[(String, Option<String>)]) {
        self.topic = unique("conformance");
        self.dlq = unique("conformance-dlq");
        self.group = unique("conformance-group");
        create_topic(&self.topic, PARTITIONS).await;
        create_topic(&self.dlq, 1).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("message.timeout.ms", "30000")
            .create()
            .expect("a producer");
        self.seeded.clear();
        for (i, (body, key)) in msgs.iter().enumerate() {
            let mut record = FutureRecord::to(&self.topic).payload(body.as_str());
            // Without a key, spread the messages over the partitions.
            let partition = (i as i32) % PARTITIONS;
            record = match key {
                Some(k) => record.key(k.as_str()),
                None => record.partition(partition),
            };
            let delivered = producer
                .send(record, WAIT)
                .await
                .unwrap_or_else(|(e, _)| panic!("producing to {}: {e}", self.topic));
            self.seeded.push((delivered.partition, delivered.offset));
        }
    }

    async fn open(&self, concurrency: usize) -> Box<dyn Source> {
        let cx = SourceContext::new("conformance", concurrency);
        Box::new(KafkaSource::open(&self.config(), &cx).expect("the Kafka source opens"))
    }

    async fn unsettled(&self) -> usize {
        let (group, topic, brokers) = (self.group.clone(), self.topic.clone(), brokers());
        let committed: Vec<i64> = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", group)
                .create()
                .expect("a consumer");
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition(&topic, p);
            }
            let out = consumer
                .committed_offsets(tpl, WAIT)
                .expect("the committed offsets");
            let offsets = (0..PARTITIONS)
                .map(
                    |p| match out.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => 0,
                    },
                )
                .collect();
            // librdkafka's lists go before the consumer does.
            drop(out);
            offsets
        })
        .await
        .unwrap();
        self.seeded
            .iter()
            .filter(|(p, o)| *o >= committed[*p as usize])
            .count()
    }

    fn held_if_unsettled(&self, unsettled: &[usize]) -> usize {
        let mut lowest = [i64::MAX; PARTITIONS as usize];
        for &i in unsettled {
            let (p, o) = self.seeded[i];
            lowest[p as usize] = lowest[p as usize].min(o);
        }
        self.seeded
            .iter()
            .filter(|(p, o)| *o >= lowest[*p as usize])
            .count()
    }

    async fn dead_letters(&self) -> Vec<String> {
        let (dlq, brokers) = (self.dlq.clone(), brokers());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", unique("dlq-reader"))
                .set("enable.auto.commit", "false")
                // Reading ends at the partition's end, as the broker says.
                .set("enable.partition.eof", "true")
                .create()
                .expect("a consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&dlq, 0, Offset::Beginning)
                .unwrap();
            consumer.assign(&tpl).unwrap();
            drop(tpl);
            let mut bodies = Vec::new();
            let started = std::time::Instant::now();
            loop {
                assert!(started.elapsed() < WAIT, "reading {dlq} timed out");
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => bodies.push(
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    ),
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => panic!("reading {dlq}: {e}"),
                    None => {}
                }
            }
            bodies
        })
        .await
        .unwrap()
    }
}

all_checks!(KafkaHarness::new());
