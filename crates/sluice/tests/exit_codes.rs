//! Every way a run ends, and the exit code and summary it ends with: 0 only
//! when every job succeeded, 4 when everything settled but some jobs were
//! dead-lettered, 3 whenever something was not settled (a failed final
//! checkpoint write, a source that failed, a stop; the second signal and
//! the stop during a backoff are in tests/process.rs).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process;
use futures::future::BoxFuture;
use sluice::runtime::{EXIT_DEAD_LETTERED, EXIT_UNSETTLED, End};
use sluice::sources::{
    Acker, DeadLetter, DeadLetterTarget, Delivery, Message, Received, Source, SourceError,
};
use sluice::testkit::{Receiver, ReceiverConfig};
use sluice::{Job, JobError, Shutdown, Worker};

const WAIT: Duration = Duration::from_secs(60);

/// A config posting each `{"id": N}` line of `input` to the receiver.
fn config(dir: &Path, input: &Path, extra_source: &str, rx: &Receiver) -> PathBuf {
    let config = dir.join("sluice.toml");
    let text = format!(
        r#"[[pipeline]]
name = "t"
concurrency = 4
[pipeline.source]
type = "file"
path = '{input}'
format = "json"
{extra_source}
[[pipeline.step]]
type = "http"
url = "{url}/jobs/{{{{ body.id }}}}"
[pipeline.retry]
max_attempts = 2
backoff = {{ initial_ms = 1, jitter = false }}
"#,
        input = input.display(),
        url = rx.url(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn jobs(dir: &Path, lines: &[String]) -> PathBuf {
    let input = dir.join("jobs.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    input
}

async fn receiver(config: ReceiverConfig) -> Receiver {
    common::recording_receiver(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_dead_lettered_exits_4_and_says_how_many() {
    let rx = receiver(ReceiverConfig {
        error_rate: 1.0,
        error_status: 422,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..12).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    let input = jobs(dir.path(), &lines);
    let cfg = config(dir.path(), &input, "", &rx);
    let mut run = process::start(dir.path(), 1, &cfg, &[]);
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(EXIT_DEAD_LETTERED), "{log}");
    assert!(log.contains("succeeded 0, dead-lettered 12"), "{log}");
    assert!(
        log.contains("but 12 job(s) failed for good and were dead-lettered (exit code 4)"),
        "{log}"
    );
    let failures = std::fs::read_to_string(dir.path().join("jobs.ndjson.failures")).unwrap();
    assert_eq!(failures.lines().count(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_bad_lines_among_good_ones_exit_4_and_a_clean_rerun_exits_0() {
    let rx = receiver(ReceiverConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..20).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    lines.insert(3, "{not json".into());
    lines.insert(11, r#"["an", "array"]"#.into());
    let input = jobs(dir.path(), &lines);
    let cfg = config(dir.path(), &input, "", &rx);
    let mut run = process::start(dir.path(), 1, &cfg, &[]);
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(EXIT_DEAD_LETTERED), "{log}");
    assert!(log.contains("succeeded 20, dead-lettered 2"), "{log}");
    assert_eq!(rx.accepted(), 20);

    // Everything is settled now: the rerun has nothing to do, and says so
    // with 0.
    let mut rerun = process::start(dir.path(), 2, &cfg, &[]);
    let status = rerun.wait(WAIT).await;
    let log = rerun.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("every job succeeded"), "{log}");
}

/// The checkpoint's directory disappears mid-run: the journal still takes
/// appends (its file is open), but the final snapshot at close cannot be
/// written. The run must not call that settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_final_checkpoint_write_exits_3() {
    let rx = receiver(ReceiverConfig {
        latency: (Duration::from_millis(30), Duration::from_millis(60)),
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("state");
    std::fs::create_dir(&cp_dir).unwrap();
    let checkpoint = cp_dir.join("jobs.checkpoint");
    let lines: Vec<String> = (0..200).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    let input = jobs(dir.path(), &lines);
    let cfg = config(
        dir.path(),
        &input,
        &format!("checkpoint = '{}'", checkpoint.display()),
        &rx,
    );
    let mut run = process::start(dir.path(), 1, &cfg, &[]);
    let started = Instant::now();
    while !(checkpoint.exists() && rx.accepted() >= 4) {
        assert!(started.elapsed() < WAIT, "no checkpoint was written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        rx.accepted() < 200,
        "the run finished before the test could act"
    );
    std::fs::remove_dir_all(&cp_dir).unwrap();
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(EXIT_UNSETTLED), "{log}");
    assert!(log.contains("NOT every message was settled"), "{log}");
    assert!(
        log.contains("checkpoint"),
        "the log names the checkpoint: {log}"
    );
}

/// A source that hands out `n` messages, then fails for good.
struct FailingSource {
    left: usize,
    acked: Arc<AtomicUsize>,
}

struct CountingAcker(Arc<AtomicUsize>);

impl Acker for CountingAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Source for FailingSource {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(async move {
            if self.left == 0 {
                return Err(SourceError::fatal("the broker said the queue is gone"));
            }
            let n = max.min(self.left);
            self.left -= n;
            let d = (0..n)
                .map(|i| {
                    let message = Message {
                        id: format!("m{}-{i}", self.left),
                        body: Bytes::from_static(b"{}"),
                        attributes: Default::default(),
                        attempt: 1,
                        oversize: None,
                        key: None,
                        fields: Default::default(),
                    };
                    Delivery::new(message, Box::new(CountingAcker(self.acked.clone())))
                })
                .collect();
            Ok(Received::Deliveries(d))
        })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Every job here succeeds: nothing is ever stored.
struct Nowhere;

impl DeadLetterTarget for Nowhere {
    fn store<'a>(&'a self, _: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async { Err(SourceError::fatal("not expected")) })
    }
    fn name(&self) -> String {
        "nowhere".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fails_for_good_exits_3_even_with_every_job_acked() {
    let acked = Arc::new(AtomicUsize::new(0));
    let source = FailingSource {
        left: 5,
        acked: acked.clone(),
    };
    let report = Worker::builder("failing")
        .source(source)
        .handler(|_job: Job| async { Ok::<(), JobError>(()) })
        .concurrency(2)
        .dead_letters(Arc::new(Nowhere))
        .shutdown(Shutdown::new())
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(acked.load(Ordering::SeqCst), 5);
    assert_eq!(report.succeeded, 5, "{report:?}");
    assert!(matches!(report.end, End::Failed(ref why) if why.contains("queue is gone")));
    assert_eq!(report.exit_code(), EXIT_UNSETTLED, "{report:?}");
}

/// A downstream that fails every job: a few lines one by one, then one line
/// that sums up the rest, not a line per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_failing_every_job_is_summed_up_not_logged_per_job() {
    let rx = receiver(ReceiverConfig {
        error_rate: 1.0,
        error_status: 400,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..300).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    let input = jobs(dir.path(), &lines);
    let cfg = config(dir.path(), &input, "", &rx);
    let mut run = process::start(dir.path(), 1, &cfg, &[]);
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(EXIT_DEAD_LETTERED), "{log}");
    let one_by_one = log.matches("job dead-lettered").count();
    assert!((1..=10).contains(&one_by_one), "{one_by_one} lines: {log}");
    let held_back: u64 = log
        .lines()
        .filter_map(|l| l.split_once(" more job failures"))
        .map(|(before, _)| before.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(one_by_one as u64 + held_back, 300, "{log}");
}

/// `--log-format json`: every log line is one JSON object; job lines carry
/// the pipeline, the message id and the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_job_lines_say_which_job() {
    let rx = receiver(ReceiverConfig {
        error_rate: 1.0,
        error_status: 422,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..3).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    let input = jobs(dir.path(), &lines);
    let cfg = config(dir.path(), &input, "", &rx);
    let mut run = process::start(dir.path(), 1, &cfg, &["--log-format", "json"]);
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(EXIT_DEAD_LETTERED), "{log}");
    // The summary follows the log lines, as plain text.
    let json_lines: Vec<serde_json::Value> = log
        .lines()
        .take_while(|l| !l.starts_with("pipeline t:"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let jobs: Vec<_> = json_lines
        .iter()
        .filter(|v| v["message"] == "job dead-lettered")
        .collect();
    assert_eq!(jobs.len(), 3, "{log}");
    for j in jobs {
        assert_eq!(j["pipeline"], "t");
        assert_eq!(j["attempt"], 1);
        assert!(j["message_id"].is_string(), "{j}");
        assert!(j["reason"].as_str().unwrap().contains("422"), "{j}");
    }
}
