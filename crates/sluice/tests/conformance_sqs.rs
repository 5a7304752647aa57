//! The source conformance suite (tests/conformance/mod.rs) on the SQS
//! source, against the emulator `scripts/services` starts: a fresh queue
//! (FIFO when the check uses ordering keys) and dead-letter queue per check.

mod common;
mod conformance;

use common::aws::{counts, create_queue, drain, moto, send, sqs, unique};
use sluice::SourceContext;
use sluice::sources::Source;
use sluice::sources::SourceConfig;
use sluice::sources::sqs::SqsSourceConfig;

/// Short enough that a crashed consumer's messages come back soon, long
/// enough that the heartbeat is what keeps a long job's.
const VISIBILITY_SECS: u32 = 3;

struct SqsHarness {
    client: aws_sdk_sqs::Client,
    queue: String,
    dlq: String,
}

impl SqsHarness {
    async fn new() -> SqsHarness {
        SqsHarness {
            client: sqs().await,
            queue: String::new(),
            dlq: String::new(),
        }
    }
}

impl conformance::Harness for SqsHarness {
    async fn seed(&mut self, msgs: &[(String, Option<String>)]) {
        let fifo = if msgs.iter().any(|m| m.1.is_some()) {
            ".fifo"
        } else {
            ""
        };
        self.queue = create_queue(
            &self.client,
            &format!("{}{fifo}", unique("conformance")),
            VISIBILITY_SECS,
        )
        .await;
        self.dlq = create_queue(
            &self.client,
            &format!("{}{fifo}", unique("conformance-dlq")),
            30,
        )
        .await;
        send(&self.client, &self.queue, msgs).await;
    }

    async fn open(&self, concurrency: usize) -> Box<dyn Source> {
        // One poller and one delete batch: moto's receives and deletes race
        // when concurrent (see tests/sqs.rs).
        let cfg: SqsSourceConfig = toml::from_str(&format!(
            "queue_url = '{}'\nendpoint = '{}'\nregion = 'us-east-1'\n\
             access_key_id = 'test'\nsecret_access_key = 'test'\n\
             dead_letter_queue_url = '{}'\nwait_time_secs = 1\npollers = 1\n\
             delete_batches_in_flight = 1",
            self.queue,
            moto(),
            self.dlq
        ))
        .unwrap();
        let cx = SourceContext::new("conformance", concurrency);
        cfg.build(&cx).await.unwrap()
    }

    async fn unsettled(&self) -> usize {
        let (visible, hidden) = counts(&self.client, &self.queue).await;
        (visible + hidden) as usize
    }

    async fn dead_letters(&self) -> Vec<String> {
        drain(&self.client, &self.dlq)
            .await
            .into_iter()
            .filter_map(|m| m.body)
            .collect()
    }
}

all_checks!(SqsHarness::new().await);
