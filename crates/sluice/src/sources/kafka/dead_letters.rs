//! The dead-letter topic.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::sources::{DeadLetter, DeadLetterTarget, SourceError};

/// Failed events go here, with headers saying why, from which pipeline,
/// after how many attempts, and where they came from.
pub(super) struct KafkaDeadLetters {
    pub(super) producer: FutureProducer,
    pub(super) topic: String,
}

impl DeadLetterTarget for KafkaDeadLetters {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let m = letter.message;
            let attempts = letter.attempts.to_string();
            // Where it came from: the source's fields (`read.rs`).
            let field = |k: &str| match m.fields.get(k) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            let (topic, partition, offset) = (field("topic"), field("partition"), field("offset"));
            let headers = [
                ("sluice_dead_letter_reason", letter.reason),
                ("sluice_pipeline", letter.pipeline),
                ("sluice_attempts", attempts.as_str()),
                ("sluice_topic", topic.as_str()),
                ("sluice_partition", partition.as_str()),
                ("sluice_offset", offset.as_str()),
            ]
            .into_iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            });
            let mut record = FutureRecord::to(&self.topic)
                .payload(m.body.as_ref())
                .headers(headers);
            if let Some(serde_json::Value::String(k)) = m.fields.get("key") {
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
