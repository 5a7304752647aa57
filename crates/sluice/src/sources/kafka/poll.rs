//! The poll task: the one place that polls librdkafka. It hands messages to
//! the source through a bounded buffer, and when the runtime takes nothing
//! for a while (its slots are busy, or its intake is paused because the
//! destination keeps failing) it pauses the assigned partitions and goes
//! on polling, so the process stays in its group (librdkafka leaves the
//! group when nobody polls for `max.poll.interval.ms`) and rebalances are
//! served. Once the runtime has taken half the buffer it resumes them;
//! librdkafka fetches again from the next offset.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use metrics::Gauge;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Callbacks;
use super::partition::Released;
use super::read::Reader;

/// Messages read and not yet taken by the runtime, at most.
pub(super) const HANDOFF: usize = 256;
/// How long the buffer stays full before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

pub(super) type Item = Result<Released, KafkaError>;

pub(super) struct Poller {
    pub(super) consumer: Arc<StreamConsumer<Callbacks>>,
    pub(super) reader: Reader,
    pub(super) tx: mpsc::Sender<Item>,
    /// Woken by the source each time it takes from the buffer.
    pub(super) taken: Arc<Notify>,
    pub(super) stop: CancellationToken,
    pub(super) pipeline: String,
    pub(super) paused: Gauge,
}

impl Poller {
    pub(super) async fn run(self) {
        loop {
            let got = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            let item = got.map(|m| self.reader.read(&m));
            let item = match self.tx.try_send(item) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(item)) => item,
            };
            let room = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                r = tokio::time::timeout(PAUSE_AFTER, self.tx.reserve()) => r,
            };
            match room {
                Ok(Ok(permit)) => permit.send(item),
                Ok(Err(_)) => return,
                Err(_) => {
                    if !self.hold(item).await {
                        return;
                    }
                }
            }
        }
    }

    /// The runtime takes nothing: pauses the partitions and keeps polling
    /// until it has taken half the buffer. False when stopping.
    async fn hold(&self, first: Item) -> bool {
        self.pause();
        self.paused.set(1.0);
        tracing::info!(
            pipeline = %self.pipeline,
            "partitions paused: the pipeline has taken no events for {PAUSE_AFTER:?} (every slot \
             is busy, or its intake is paused while the destination fails); consumption resumes \
             when it takes events again"
        );
        let mut held = VecDeque::from([first]);
        let resumed = loop {
            while let Some(item) = held.pop_front() {
                match self.tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        held.push_front(item);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            if self.tx.is_closed() {
                break false;
            }
            if held.is_empty() && self.tx.capacity() >= HANDOFF / 2 {
                break true;
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break false,
                () = self.taken.notified() => {}
                m = self.consumer.recv() => match m {
                    // From a partition assigned since the pause (or fetched
                    // before it): kept, and the new assignment paused too.
                    Ok(m) => {
                        held.push_back(Ok(self.reader.read(&m)));
                        drop(m);
                        self.pause();
                    }
                    Err(e) => tracing::warn!(pipeline = %self.pipeline, error = %e, "Kafka receive error while paused"),
                },
            }
        };
        if resumed {
            self.resume();
            tracing::info!(pipeline = %self.pipeline, "partitions resumed");
        }
        self.paused.set(0.0);
        resumed
    }

    fn pause(&self) {
        let r = self
            .consumer
            .assignment()
            .and_then(|tpl| self.consumer.pause(&tpl));
        if let Err(e) = r {
            tracing::warn!(pipeline = %self.pipeline, error = %e, "pausing the partitions failed");
        }
    }

    fn resume(&self) {
        let r = self
            .consumer
            .assignment()
            .and_then(|tpl| self.consumer.resume(&tpl));
        if let Err(e) = r {
            tracing::warn!(pipeline = %self.pipeline, error = %e, "resuming the partitions failed");
        }
    }
}
