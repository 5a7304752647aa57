//! A Kafka record as a [`Message`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Header, Headers};
use serde_json::Value;

use super::Ordering;
use super::partition::{Released, Shared};
use crate::sources::Message;

#[derive(Clone)]
pub(super) struct Reader {
    pub(super) ordering: Ordering,
    pub(super) max_body: u64,
    pub(super) shared: Arc<Shared>,
}

impl Reader {
    /// The record as a message, its offset counted as read (and unsettled)
    /// in its partition.
    pub(super) fn read(&self, m: &BorrowedMessage<'_>) -> Released {
        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
        let payload = m.payload().unwrap_or_default();
        // The headers, as `message.attributes` (text) and the `headers`
        // field; the rest is in the fields only (no copies per event).
        let mut attributes = BTreeMap::new();
        let mut headers = serde_json::Map::new();
        if let Some(h) = m.headers() {
            for Header { key, value } in h.iter() {
                let v = value.map(String::from_utf8_lossy).unwrap_or_default();
                headers.insert(key.to_owned(), Value::String(v.clone().into_owned()));
                attributes.insert(key.to_owned(), v.into_owned());
            }
        }
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let timestamp = m.timestamp().to_millis();
        let fields = BTreeMap::from([
            ("topic", Value::from(topic.as_str())),
            ("partition", Value::from(partition)),
            ("offset", Value::from(offset)),
            ("key", key.as_deref().map_or(Value::Null, Value::from)),
            ("timestamp", timestamp.map_or(Value::Null, Value::from)),
            ("headers", Value::Object(headers)),
        ]);
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
            fields,
        };
        let partition = self.shared.partition(&(topic, partition));
        partition.read(offset);
        Released {
            message,
            partition,
            offset,
        }
    }
}
