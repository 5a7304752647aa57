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
            let attr = |k: &str| m.attributes.get(k).map(String::as_str).unwrap_or("");
            let headers = [
                ("sluice_dead_letter_reason", letter.reason),
                ("sluice_pipeline", letter.pipeline),
                ("sluice_attempts", attempts.as_str()),
                ("sluice_topic", attr("kafka.topic")),
                ("sluice_partition", attr("kafka.partition")),
                ("sluice_offset", attr("kafka.offset")),
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
            if let Some(k) = m.attributes.get("kafka.key") {
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
