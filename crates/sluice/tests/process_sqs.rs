//! The `sluice` binary as a child process on the SQS source, against the
//! SQS and S3 emulator (moto, started by `scripts/services`): SIGTERM and
//! `kill -9` mid-run, each followed by `--stop-when-empty` reruns, checked
//! against what the receiver got and what the queue holds afterwards.
//!
//! Each job is a Laravel payload naming `report-<id>.json` in the bucket; the
//! pipeline fetches it and posts it to `/reports/<id>`, so the receiver's
//! record says which jobs were delivered and how often.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use common::aws::{REPORT_STEPS, create_queue, laravel_job, moto, sqs, unique};
use common::process::{self, Running};
use sluice::testkit::{Receiver, ReceiverConfig};
use tempfile::TempDir;

/// The bound on every wait; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(120);
/// Jobs per test: moto's operations are O(queue), so keep this modest.
const JOBS: u64 = 300;
const CONCURRENCY: u64 = 50;

/// The SQS source: one receive and one delete batch at a time, because
/// moto's concurrent receives can hand out one message twice and its
/// concurrent deletes can bring a deleted message back.
const SOURCE: &str = r#"
shutdown_timeout_secs = 10
[[pipeline]]
name = "reports"
concurrency = @CONCURRENCY@
[pipeline.source]
type = "sqs"
queue_url = "@QUEUE@"
dead_letter_queue_url = "@DLQ@"
format = "laravel"
endpoint = "@MOTO@"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
wait_time_secs = 1
pollers = 1
delete_batches_in_flight = 1
"#;

/// A fresh queue (and DLQ) holding [`JOBS`] jobs, a bucket with their
/// reports, a receiver answering in 20–40 ms and a config tying them
/// together, in a temporary directory that also holds each run's log.
struct Trial {
    dir: TempDir,
    config: PathBuf,
    runs: usize,
    client: Client,
    queue: String,
    rx: Receiver,
}

impl Trial {
    async fn new(visibility_secs: u32) -> Trial {
        let client = sqs().await;
        let queue = create_queue(&client, &unique("reports"), visibility_secs).await;
        let dlq = create_queue(&client, &unique("reports-dlq"), 30).await;
        // The bucket, with `{"rows": <id>}` in each job's report.
        let (moto, bucket_name) = (moto(), unique("bucket"));
        let http = reqwest::Client::new();
        let r = http.put(format!("{moto}/{bucket_name}")).send().await;
        assert!(r.unwrap().status().is_success(), "create the bucket");
        for i in 0..JOBS {
            let url = format!("{moto}/{bucket_name}/report-{i}.json");
            let r = http
                .put(url)
                .body(format!(r#"{{"rows": {i}}}"#))
                .send()
                .await;
            assert!(r.unwrap().status().is_success(), "put report-{i}.json");
        }
        for ids in (0..JOBS).collect::<Vec<_>>().chunks(10) {
            let entries = ids.iter().map(|id| {
                let e = SendMessageBatchRequestEntry::builder().id(id.to_string());
                e.message_body(laravel_job(&id.to_string(), 3, ""))
                    .build()
                    .unwrap()
            });
            let send = client.send_message_batch().queue_url(&queue);
            let out = send.set_entries(Some(entries.collect())).send().await;
            assert!(out.unwrap().failed().is_empty(), "send the jobs");
        }
        let rx = Receiver::start(ReceiverConfig {
            latency: (Duration::from_millis(20), Duration::from_millis(40)),
            record: true,
            ..ReceiverConfig::default()
        })
        .await
        .expect("the receiver starts");

        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("sluice.toml");
        let text = format!("{SOURCE}{REPORT_STEPS}")
            .replace("@CONCURRENCY@", &CONCURRENCY.to_string())
            .replace("@QUEUE@", &queue)
            .replace("@DLQ@", &dlq)
            .replace("@MOTO@", &moto)
            .replace("@BUCKET@", &bucket_name)
            .replace("@URL@", &rx.url());
        std::fs::write(&config, text).expect("write the config");
        let runs = 0;
        Trial {
            dir,
            config,
            runs,
            client,
            queue,
            rx,
        }
    }

    /// Starts `sluice run` with `extra` arguments; its output goes to
    /// `run-<n>.log`.
    fn start(&mut self, extra: &[&str]) -> Running {
        self.runs += 1;
        process::start(self.dir.path(), self.runs, &self.config, extra)
    }

    /// Runs with `--stop-when-empty` to the end; asserts exit code 0.
    async fn run_until_empty(&mut self) {
        let mut run = self.start(&["--stop-when-empty"]);
        let status = run.wait(WAIT).await;
        assert_eq!(status.code(), Some(0), "the rerun failed:\n{}", run.log());
    }

    /// (visible, in flight) messages of the queue.
    async fn counts(&self) -> (u64, u64) {
        use QueueAttributeName::{
            ApproximateNumberOfMessages as Visible, ApproximateNumberOfMessagesNotVisible as Hidden,
        };
        let req = self.client.get_queue_attributes().queue_url(&self.queue);
        let out = req
            .attribute_names(Visible)
            .attribute_names(Hidden)
            .send()
            .await;
        let out = out.expect("GetQueueAttributes");
        let n = |k| {
            out.attributes()
                .and_then(|a| a.get(&k)?.parse().ok())
                .unwrap_or(u64::MAX)
        };
        (n(Visible), n(Hidden))
    }

    /// Asserts the receiver accepted every job (with its report) and no
    /// other; returns the ids it accepted more than once, with their counts.
    fn repeats(&self) -> Vec<(u64, u64)> {
        let mut by_id = BTreeMap::new();
        for r in self.rx.requests().iter().filter(|r| r.status == 200) {
            let id: u64 = r
                .path
                .strip_prefix("/reports/")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected path {}", r.path));
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
            assert_eq!(body["report"]["rows"], id, "the S3 object of {}", r.path);
            *by_id.entry(id).or_insert(0) += 1;
        }
        let missing: Vec<u64> = (0..JOBS).filter(|id| !by_id.contains_key(id)).collect();
        assert!(
            missing.is_empty(),
            "{} of {JOBS} jobs never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert_eq!(by_id.len() as u64, JOBS, "ids outside 0..{JOBS} delivered");
        by_id.into_iter().filter(|(_, n)| *n > 1).collect()
    }

    async fn wait_for_accepted(&self, n: u64) {
        tokio::time::timeout(WAIT, self.rx.wait_for_accepted(n))
            .await
            .unwrap_or_else(|_| panic!("the receiver accepted only {} of {n}", self.rx.accepted()));
    }
}

/// SIGTERM lets in-flight jobs finish and be deleted, and releases every
/// message received but not started at once (despite a 600 s visibility
/// timeout); the rerun delivers the rest, so each job arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_loses_nothing_and_duplicates_nothing() {
    let mut trial = Trial::new(600).await;

    let mut run = trial.start(&[]);
    trial.wait_for_accepted(60).await;
    run.signal("TERM");
    let took = Instant::now();
    let status = run.wait(WAIT).await;
    let first = trial.rx.accepted();
    let (visible, in_flight) = trial.counts().await;
    let log = run.log();
    let requests = log.lines().find(|l| l.contains("sqs requests"));
    println!(
        "SIGTERM at >= 60 accepted: {status} after {:?}, {first} accepted, \
         queue: {visible} visible, {in_flight} in flight; {}",
        took.elapsed(),
        requests.unwrap_or("no request counts logged")
    );
    assert_eq!(status.code(), Some(0), "graceful stop:\n{log}");
    assert!(first < JOBS, "the run ended before SIGTERM stopped it");
    assert_eq!(in_flight, 0, "messages left hidden:\n{log}");
    assert_eq!(visible, JOBS - first, "every undelivered message is back");

    trial.run_until_empty().await;
    let dups = trial.repeats();
    assert!(
        dups.is_empty(),
        "{} jobs delivered more than once after a graceful stop, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(10)]
    );
    assert_eq!(trial.counts().await, (0, 0), "the queue ends empty");
}

/// After `kill -9` the messages the process held come back after the 3 s
/// visibility timeout; one rerun with `--stop-when-empty` waits for them
/// (it does not end while the queue still holds any) and delivers every
/// job, with duplicates bounded by what was in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_everything_with_bounded_duplicates() {
    let mut trial = Trial::new(3).await;

    let mut run = trial.start(&[]);
    trial.wait_for_accepted(100).await;
    run.signal("KILL");
    let status = run.wait(WAIT).await;
    let first = trial.rx.accepted();
    assert_eq!(status.signal(), Some(9), "not killed:\n{}", run.log());
    assert!(first < JOBS, "the run ended before kill -9 stopped it");
    println!(
        "kill -9 at {first} accepted: queue {:?}",
        trial.counts().await
    );

    trial.run_until_empty().await;
    assert_eq!(
        trial.counts().await,
        (0, 0),
        "the rerun ended before the queue was drained"
    );

    let dups = trial.repeats();
    // Every job was accepted once, and `extra` times more.
    let extra = trial.rx.accepted() - JOBS;
    println!(
        "{extra} duplicate deliveries over {} jobs (concurrency {CONCURRENCY}), \
         {} total 2xx",
        dups.len(),
        trial.rx.accepted()
    );
    assert!(
        extra <= CONCURRENCY,
        "{extra} duplicates exceed the {CONCURRENCY} jobs in flight, e.g. {:?}",
        &dups[..dups.len().min(10)]
    );
    assert_eq!(trial.counts().await, (0, 0), "the queue ends empty");
}
