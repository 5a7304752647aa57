//! `--stop-when-empty` on SQS against the emulator (moto, started by
//! `scripts/services`): a run ends only once the queue holds nothing, in
//! sight or out of it. Messages held by another consumer, waiting out a
//! retry delay, or sent with a delay are waited for and delivered; when
//! they outlast `stop_when_empty_wait_secs` the run says it did not drain
//! the queue.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use common::aws::{REPORT_STEPS, bucket, create_queue, laravel_job, moto, send, sqs, unique};
use sluice::config;
use sluice::config::RunOptions;
use sluice::runtime::{End, Progress, RunReport, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

struct Env {
    client: Client,
    queue: String,
    dlq: String,
    bucket: String,
    receiver: Receiver,
}

/// A fresh queue (visibility 30 s) and DLQ, a bucket with `report-<i>.json`
/// for i in 0..n, and a receiver.
async fn env(n: usize, receiver: ReceiverConfig) -> Env {
    let client = sqs().await;
    let queue = create_queue(&client, &unique("drain"), 30).await;
    let dlq = create_queue(&client, &unique("drain-dlq"), 30).await;
    let bucket_name = unique("bucket");
    let objects: Vec<_> = (0..n)
        .map(|i| (format!("report-{i}.json"), format!(r#"{{"rows": {i}}}"#)))
        .collect();
    bucket(&bucket_name, &objects).await;
    Env {
        client,
        queue,
        dlq,
        bucket: bucket_name,
        receiver: Receiver::start(receiver).await.unwrap(),
    }
}

impl Env {
    /// One poller, one delete batch at a time (moto's races: see
    /// tests/sqs.rs), the long poll at its longest: a stopping run must
    /// not sit through it.
    fn config(&self, extra_source: &str) -> String {
        format!(
            r#"
shutdown_timeout_secs = 10
[[pipeline]]
name = "reports"
concurrency = 10
[pipeline.source]
type = "sqs"
queue_url = "{queue}"
dead_letter_queue_url = "{dlq}"
format = "laravel"
endpoint = "{moto}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
wait_time_secs = 20
pollers = 1
delete_batches_in_flight = 1
{extra_source}
{REPORT_STEPS}
"#,
            queue = self.queue,
            dlq = self.dlq,
            moto = moto(),
        )
        .replace("@URL@", &self.receiver.url())
        .replace("@BUCKET@", &self.bucket)
        .replace("@MOTO@", &moto())
    }

    /// Runs `text` with `--stop-when-empty`; fails the test after `bound`.
    async fn run(&self, text: &str, bound: Duration) -> RunReport {
        let loaded = config::parse("drain.toml", text, |_| None).unwrap_or_else(|e| panic!("{e}"));
        let run = config::run(
            &loaded,
            RunOptions {
                shutdown: Shutdown::new(),
                progress: Progress::Off,
                stop_when_empty: true,
                admin: None,
            },
        );
        tokio::time::timeout(bound, run)
            .await
            .expect("the --stop-when-empty run ended")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// (visible, not visible, delayed).
    async fn held(&self) -> (u64, u64, u64) {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap();
        let a = out.attributes().unwrap();
        let n = |k| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    /// Another consumer receives `n` messages and keeps them for
    /// `visibility_secs` without deleting them, as a crashed one would.
    async fn hold(&self, n: i32, visibility_secs: i32) {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue)
            .max_number_of_messages(n)
            .visibility_timeout(visibility_secs)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.messages().len(),
            n as usize,
            "the other consumer got them"
        );
    }

    /// Report ids the receiver accepted, with how often.
    fn accepted(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in self.receiver.requests() {
            if r.status / 100 == 2 {
                *m.entry(r.path.clone()).or_insert(0) += 1;
            }
        }
        m
    }
}

/// Two messages held invisible (3 s) by another consumer and one sent with
/// a 4 s delay: the run waits for them, delivers all of them once, and
/// ends as soon as the queue is empty, not after a 20 s long poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_delayed_messages_are_waited_for_and_delivered() {
    let n = 6;
    let e = env(n, ReceiverConfig::default()).await;
    let bodies: Vec<_> = (0..n - 1)
        .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
        .collect();
    send(&e.client, &e.queue, &bodies).await;
    e.hold(2, 3).await;
    e.client
        .send_message()
        .queue_url(&e.queue)
        .message_body(laravel_job(&(n - 1).to_string(), 3, ""))
        .delay_seconds(4)
        .send()
        .await
        .unwrap();
    assert_eq!(e.held().await, (3, 2, 1));

    let started = Instant::now();
    let report = e.run(&e.config(""), Duration::from_secs(60)).await;
    let took = started.elapsed();
    let p = &report.pipelines[0];
    assert_eq!(p.end, End::Exhausted, "{p:?}");
    assert!(report.settled_everything(), "{p:?}");
    assert_eq!((p.succeeded, p.dead_lettered), (n as u64, 0), "{p:?}");
    let accepted = e.accepted();
    assert_eq!(accepted.len(), n, "every job delivered: {accepted:?}");
    assert!(accepted.values().all(|&c| c == 1), "once: {accepted:?}");
    assert_eq!(e.held().await, (0, 0, 0), "the queue is drained");
    assert!(
        took >= Duration::from_secs(3),
        "the held messages came back after 3 s, yet the run ended after {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the run sat through a long poll: {took:?}"
    );
}

/// A job retried with a 4 s delay (its Laravel `backoff`) is invisible
/// while it waits: the run waits for it and delivers it, though the wait
/// (1 s) is shorter than the delay, since the run knows the delay it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_delay_is_waited_out() {
    let n = 3;
    let e = env(
        n,
        ReceiverConfig {
            fail_first: 1,
            ..ReceiverConfig::default()
        },
    )
    .await;
    let bodies: Vec<_> = (0..n)
        .map(|i| (laravel_job(&i.to_string(), 3, "4"), None))
        .collect();
    send(&e.client, &e.queue, &bodies).await;
    let report = e
        .run(
            &e.config("stop_when_empty_wait_secs = 1"),
            Duration::from_secs(60),
        )
        .await;
    let p = &report.pipelines[0];
    assert_eq!(p.end, End::Exhausted, "{p:?}");
    assert_eq!(
        (p.succeeded, p.retried, p.dead_lettered),
        (n as u64, n as u64, 0),
        "{p:?}"
    );
    assert_eq!(e.accepted().len(), n);
    assert_eq!(e.held().await, (0, 0, 0));
}

/// A message held for longer than `stop_when_empty_wait_secs`: the run
/// ends after the wait, reports the source failed naming what the queue
/// still holds (exit 3), and the message is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_past_the_wait_fail_the_run() {
    let n = 3;
    let e = env(n, ReceiverConfig::default()).await;
    let bodies: Vec<_> = (0..n)
        .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
        .collect();
    send(&e.client, &e.queue, &bodies).await;
    e.hold(1, 120).await;

    let started = Instant::now();
    let report = e
        .run(
            &e.config("stop_when_empty_wait_secs = 2"),
            Duration::from_secs(60),
        )
        .await;
    let took = started.elapsed();
    let p = &report.pipelines[0];
    assert_eq!(p.succeeded, 2, "{p:?}");
    let End::Failed(why) = &p.end else {
        panic!("the run claimed the queue was drained: {p:?}");
    };
    assert!(why.contains("still holds 1 message(s)"), "{why}");
    assert!(why.contains("1 in flight"), "{why}");
    assert!(why.contains("stop_when_empty_wait_secs"), "{why}");
    assert!(!report.settled_everything());
    assert_eq!(report.exit_code(), 3);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(e.held().await, (0, 1, 0), "the held message is not lost");
}

/// An empty queue ends a stopping run at once, even with a 20 s long poll
/// configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_ends_without_a_long_poll() {
    let e = env(0, ReceiverConfig::default()).await;
    let started = Instant::now();
    let report = e.run(&e.config(""), Duration::from_secs(60)).await;
    assert_eq!(report.pipelines[0].end, End::Exhausted);
    assert_eq!(report.pipelines[0].received, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
