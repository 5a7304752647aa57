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

mod common;
mod conformance;

use common::kafka::{
    FAST_GROUP_OPTIONS, Record, brokers, committed, create_topic, produce, read_all, unique,
};
use sluice::SourceContext;
use sluice::sources::Source;
use sluice::sources::kafka::{KafkaSource, KafkaSourceConfig, Ordering};

const PARTITIONS: i32 = 3;

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
        // Among them `max.poll.interval.ms = 7000`: a member nobody polls
        // leaves the group, as a dead process's member would be timed out
        // (see the module docs).
        let mut options: std::collections::BTreeMap<String, String> = FAST_GROUP_OPTIONS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // The eager protocol here, not sluice's cooperative-sticky: the
        // crash check's dead member (its runtime dropped, librdkafka still
        // alive) leaves only by max.poll.interval.ms, and tansu 0.6.0 then
        // hands its partitions to the new member only in an eager
        // rebalance (see the module docs).
        options.insert("partition.assignment.strategy".into(), "range".into());
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
        let records: Vec<Record> = msgs
            .iter()
            .enumerate()
            .map(|(i, (body, key))| Record {
                key: key.clone(),
                // Without a key, spread the messages over the partitions.
                partition: key.is_none().then_some(i as i32 % PARTITIONS),
                payload: body.clone().into_bytes(),
            })
            .collect();
        self.seeded = produce(&self.topic, &records).await;
    }

    async fn open(&self, concurrency: usize) -> Box<dyn Source> {
        let cx = SourceContext::new("conformance", concurrency);
        Box::new(KafkaSource::open(&self.config(), &cx).expect("the Kafka source opens"))
    }

    async fn unsettled(&self) -> usize {
        let committed = committed(&self.group, &self.topic, PARTITIONS).await;
        self.seeded
            .iter()
            .filter(|(p, o)| committed[*p as usize].is_none_or(|c| *o >= c))
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
        read_all(&self.dlq, 1)
            .await
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }
}

all_checks!(KafkaHarness::new());
