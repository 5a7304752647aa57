//! The SQS source against a real SQS + S3 emulator (moto, started by
//! `scripts/services`): Laravel jobs from SQS -> extract -> S3 -> template ->
//! HTTP -> delete. Each test makes its own queues and bucket, and asserts on
//! what the queues hold afterwards: nothing lost, nothing left in flight.
//!
//! Tests that assert "delivered exactly once" use one poller: moto's
//! ReceiveMessage is not atomic, and two receives racing can both return
//! the same message (seen: 2 duplicates in 600 with 4 pollers); and its
//! DeleteMessage rewrites the queue without a lock, so concurrent delete
//! batches can bring a deleted message back. Those tests also send one
//! delete batch at a time. Real SQS has neither race.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use common::aws::{
    REPORT_STEPS, bucket, counts, create_queue, drain, laravel_job, moto, send, sqs, unique,
};
use sluice::config;
use sluice::config::RunOptions;
use sluice::runtime::{Progress, RunReport, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

struct Env {
    queue: String,
    dlq: String,
    bucket: String,
    receiver: Receiver,
}

impl Env {
    fn config(&self, concurrency: usize, extra_source: &str, steps: &str) -> String {
        format!(
            r#"
shutdown_timeout_secs = 10
[[pipeline]]
name = "reports"
concurrency = {concurrency}
[pipeline.source]
type = "sqs"
queue_url = "{queue}"
dead_letter_queue_url = "{dlq}"
format = "laravel"
endpoint = "{moto}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
wait_time_secs = 1
{extra_source}
{steps}
"#,
            queue = self.queue,
            dlq = self.dlq,
            moto = moto(),
        )
        .replace("@URL@", &self.receiver.url())
        .replace("@BUCKET@", &self.bucket)
        .replace("@MOTO@", &moto())
    }
}

/// For the exactly-once assertions (see the module docs).
const ONE_POLLER: &str = "pollers = 1\ndelete_batches_in_flight = 1";

async fn env(receiver: ReceiverConfig, visibility_secs: u32, fifo: bool) -> Env {
    let client = sqs().await;
    let suffix = if fifo { ".fifo" } else { "" };
    let queue = create_queue(
        &client,
        &format!("{}{suffix}", unique("reports")),
        visibility_secs,
    )
    .await;
    let dlq = create_queue(&client, &format!("{}{suffix}", unique("reports-dlq")), 30).await;
    Env {
        queue,
        dlq,
        bucket: unique("bucket"),
        receiver: Receiver::start(receiver).await.unwrap(),
    }
}

/// Runs `text` until `done` resolves, then stops it as SIGTERM would.
async fn run_until(text: &str, done: impl std::future::Future<Output = ()>) -> RunReport {
    let loaded = config::parse("sqs-test.toml", text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = Shutdown::new();
    let run = config::run(
        &loaded,
        RunOptions {
            shutdown: shutdown.clone(),
            progress: Progress::Off,
            stop_when_empty: false,
            admin: None,
        },
    );
    let stop = async {
        tokio::time::timeout(Duration::from_secs(300), done)
            .await
            .expect("the run got there within five minutes");
        shutdown.request();
    };
    let (report, ()) = tokio::join!(run, stop);
    report.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `url` holds nothing, visible or in flight.
/// Fails the test if that takes over a minute.
async fn until_empty(client: &Client, url: &str) {
    let empty = async {
        loop {
            let now = counts(client, url).await;
            if now == (0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), empty)
        .await
        .is_err()
    {
        panic!(
            "{url} still holds {:?} (visible, in flight) after a minute",
            counts(client, url).await
        );
    }
}

/// The motivating job, end to end, for 1,000 messages at concurrency 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_jobs_from_sqs_through_s3_to_http() {
    let e = env(
        ReceiverConfig {
            latency: (Duration::from_millis(5), Duration::from_millis(20)),
            ..ReceiverConfig::default()
        },
        30,
        false,
    )
    .await;
    // moto's operations are O(queue) and drain only tens of messages a
    // second here once a queue holds a thousand: the largest count that
    // keeps this test near a minute.
    let n = 1000;
    let objects: Vec<_> = (0..n)
        .map(|i| (format!("report-{i}.json"), format!(r#"{{"rows": {i}}}"#)))
        .collect();
    bucket(&e.bucket, &objects).await;
    let client = sqs().await;
    let bodies: Vec<_> = (0..n)
        .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
        .collect();
    send(&client, &e.queue, &bodies).await;

    let report = run_until(
        &e.config(200, ONE_POLLER, REPORT_STEPS),
        e.receiver.wait_for_accepted(n as u64),
    )
    .await;
    assert!(
        report.settled_everything(),
        "{}",
        sluice::runtime::summary(&report)
    );
    let p = &report.pipelines[0];
    assert_eq!((p.succeeded, p.dead_lettered), (n as u64, 0), "{p:?}");
    let mut seen = BTreeMap::new();
    for r in e.receiver.requests() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id: u64 = body["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(body["report"]["rows"], id, "the S3 object's content");
        assert_eq!(body["job"], "App\\Jobs\\SendReport");
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n, "every job delivered");
    assert!(seen.values().all(|&c| c == 1), "and once");
    assert_eq!(
        counts(&client, &e.queue).await,
        (0, 0),
        "nothing left, nothing in flight"
    );
    assert_eq!(counts(&client, &e.dlq).await, (0, 0));
}

/// A failing receiver: retried through visibility with the job's own
/// backoff, up to its maxTries, then sent to the DLQ with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_via_visibility_then_go_to_the_dlq() {
    let e = env(ReceiverConfig::default(), 30, false).await;
    let n = 10;
    bucket(
        &e.bucket,
        &(0..n)
            .map(|i| (format!("report-{i}.json"), "{}".to_owned()))
            .collect::<Vec<_>>(),
    )
    .await;
    let client = sqs().await;
    send(
        &client,
        &e.queue,
        &(0..n)
            .map(|i| (laravel_job(&i.to_string(), 2, "1"), None))
            .collect::<Vec<_>>(),
    )
    .await;
    let steps = REPORT_STEPS.replace("@URL@/reports/{{ id }}", "@URL@/status/503");
    let dlq = e.dlq.clone();
    let c2 = client.clone();
    let report = run_until(&e.config(20, "", &steps), async move {
        while counts(&c2, &dlq).await.0 < n as u64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let p = &report.pipelines[0];
    assert_eq!((p.dead_lettered, p.retried), (n as u64, n as u64), "{p:?}");
    assert_eq!(
        e.receiver.total(),
        2 * n as u64,
        "maxTries = 2 requests per job"
    );
    until_empty(&client, &e.queue).await;
    let dead = drain(&client, &e.dlq).await;
    assert_eq!(dead.len(), n);
    for m in &dead {
        let reason = m.message_attributes().unwrap()["sluice_dead_letter_reason"]
            .string_value()
            .unwrap();
        assert!(
            reason.contains("gave up after 2 attempts (the job's maxTries)")
                && reason.contains("503"),
            "{reason}"
        );
        assert!(
            m.body().unwrap().contains("SendReport"),
            "the original body"
        );
    }
}

/// Jobs slower than the visibility timeout keep their lease: no message is
/// handed out twice while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jobs_keep_their_messages_invisible() {
    let e = env(
        ReceiverConfig {
            latency: (Duration::from_secs(5), Duration::from_secs(5)),
            ..ReceiverConfig::default()
        },
        2,
        false,
    )
    .await;
    let n = 6;
    bucket(
        &e.bucket,
        &(0..n)
            .map(|i| (format!("report-{i}.json"), "{}".to_owned()))
            .collect::<Vec<_>>(),
    )
    .await;
    let client = sqs().await;
    send(
        &client,
        &e.queue,
        &(0..n)
            .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
            .collect::<Vec<_>>(),
    )
    .await;
    let report = run_until(
        &e.config(20, "", REPORT_STEPS),
        e.receiver.wait_for_accepted(n as u64),
    )
    .await;
    assert_eq!(report.pipelines[0].succeeded, n as u64);
    assert_eq!(
        e.receiver.total(),
        n as u64,
        "each job ran once although it outlived the visibility timeout"
    );
    assert_eq!(counts(&client, &e.queue).await, (0, 0));
}

/// Bodies that are not Laravel payloads go to the DLQ with the reason, and
/// the good ones around them go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_dead_lettered_with_the_reason() {
    let e = env(ReceiverConfig::default(), 30, false).await;
    bucket(&e.bucket, &[("report-ok.json".to_owned(), "{}".to_owned())]).await;
    let client = sqs().await;
    let bodies = vec![
        (laravel_job("ok", 3, ""), None),
        ("{not json".to_owned(), None),
        (r#"{"id": 1}"#.to_owned(), None),
        (laravel_job("missing", 3, ""), None),
    ];
    send(&client, &e.queue, &bodies).await;
    let dlq = e.dlq.clone();
    let c2 = client.clone();
    let report = run_until(&e.config(10, "", REPORT_STEPS), async move {
        while counts(&c2, &dlq).await.0 < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let p = &report.pipelines[0];
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (1, 3, 0),
        "{p:?}"
    );
    let mut reasons: Vec<String> = drain(&client, &e.dlq)
        .await
        .iter()
        .map(|m| {
            m.message_attributes().unwrap()["sluice_dead_letter_reason"]
                .string_value()
                .unwrap()
                .to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a Laravel job payload: missing `displayName`")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("report-missing.json") && r.contains("not found")),
        "{reasons:?}"
    );
    until_empty(&client, &e.queue).await;
}

/// A FIFO queue keeps each group's order: one job per group in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_their_order() {
    let e = env(
        ReceiverConfig {
            latency: (Duration::from_millis(1), Duration::from_millis(30)),
            ..ReceiverConfig::default()
        },
        30,
        true,
    )
    .await;
    let client = sqs().await;
    let mut bodies = Vec::new();
    for seq in 0..8 {
        for g in ["a", "b", "c"] {
            bodies.push((
                format!(r#"{{"group": "{g}", "seq": {seq}}}"#),
                Some(g.to_owned()),
            ));
        }
    }
    send(&client, &e.queue, &bodies).await;
    let steps = r#"
[[pipeline.step]]
type = "http"
url = "@URL@/{{ body.group }}/{{ body.seq }}"
"#;
    // One poller: two of moto's receives racing can return the same message
    // (see the module docs), and a duplicate breaks a group's sequence.
    let text = e
        .config(20, ONE_POLLER, steps)
        .replace("format = \"laravel\"", "format = \"json\"");
    let report = run_until(&text, e.receiver.wait_for_accepted(bodies.len() as u64)).await;
    assert_eq!(report.pipelines[0].succeeded, bodies.len() as u64);
    let mut order: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in e.receiver.requests() {
        let mut parts = r.path.trim_start_matches('/').split('/');
        let g = parts.next().unwrap().to_owned();
        order
            .entry(g)
            .or_default()
            .push(parts.next().unwrap().parse().unwrap());
    }
    for (g, seqs) in &order {
        assert_eq!(seqs, &(0..8).collect::<Vec<_>>(), "group {g} in order");
    }
    assert_eq!(counts(&client, &e.queue).await, (0, 0));
}

/// Stopping mid-run: in-flight jobs finish and are deleted; every message
/// received but not started is made visible again at once, so the next run
/// (or another worker) gets it without waiting out the visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_mid_run_releases_the_rest_at_once() {
    // A long visibility timeout: anything not released would stay hidden.
    let e = env(
        ReceiverConfig {
            latency: (Duration::from_millis(20), Duration::from_millis(40)),
            ..ReceiverConfig::default()
        },
        600,
        false,
    )
    .await;
    let n = 300;
    bucket(
        &e.bucket,
        &(0..n)
            .map(|i| (format!("report-{i}.json"), "{}".to_owned()))
            .collect::<Vec<_>>(),
    )
    .await;
    let client = sqs().await;
    send(
        &client,
        &e.queue,
        &(0..n)
            .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
            .collect::<Vec<_>>(),
    )
    .await;
    let first = run_until(
        &e.config(50, ONE_POLLER, REPORT_STEPS),
        e.receiver.wait_for_accepted(60),
    )
    .await;
    assert!(
        first.settled_everything(),
        "{}",
        sluice::runtime::summary(&first)
    );
    let done = first.pipelines[0].succeeded;
    assert!(
        done >= 60 && done < n as u64,
        "stopped mid-run after {done}"
    );
    let (visible, in_flight) = counts(&client, &e.queue).await;
    let delivered = e.receiver.requests().len();
    println!(
        "first run: succeeded {done}, receiver got {delivered}, queue visible {visible}, in flight {in_flight}"
    );
    assert_eq!(in_flight, 0, "nothing left invisible after the stop");
    assert_eq!(
        visible,
        n as u64 - done,
        "every undelivered message is back"
    );
    let second = run_until(
        &e.config(50, ONE_POLLER, REPORT_STEPS),
        e.receiver.wait_for_accepted(n as u64),
    )
    .await;
    assert!(second.settled_everything());
    let mut ids: Vec<String> = e
        .receiver
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every message delivered");
    assert_eq!(total, n, "none twice");
    assert_eq!(counts(&client, &e.queue).await, (0, 0));
}

/// An idle queue shows in the metrics as empty receives; `--stop-when-empty`
/// ends the run on it.
#[test]
fn empty_receives_are_counted_and_stop_when_empty_ends_the_run() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime keeps every task on this thread, where the
    // local recorder is installed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let e = env(ReceiverConfig::default(), 30, false).await;
            let loaded = config::parse("idle.toml", &e.config(10, "", REPORT_STEPS), |_| None)
                .unwrap_or_else(|err| panic!("{err}"));
            let run = config::run(
                &loaded,
                RunOptions {
                    shutdown: Shutdown::new(),
                    progress: Progress::Off,
                    stop_when_empty: true,
                    admin: None,
                },
            );
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("an empty queue ends a --stop-when-empty run")
                .unwrap()
        })
    });
    assert_eq!(report.pipelines[0].received, 0);
    let snapshot = snapshotter.snapshot().into_vec();
    let count = |op: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| {
                k.key().name() == "sluice_sqs_requests_total"
                    && k.key().labels().any(|l| l.key() == "op" && l.value() == op)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    let empty = count("empty_receive");
    assert!(empty >= 1, "empty receives counted: {empty}");
    // Every call counts: the attributes read at open, for the backlog and
    // for the drain check too.
    let attributes = count("attributes");
    assert!(attributes >= 2, "GetQueueAttributes counted: {attributes}");
}

/// The source reports the queue's depth as its backlog (the admin API's
/// `backlog`, `sluice_source_backlog`), read from the queue itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_the_queues_depth() {
    let client = sqs().await;
    let queue = create_queue(&client, &unique("backlog"), 30).await;
    let dlq = create_queue(&client, &unique("backlog-dlq"), 30).await;
    let bodies: Vec<(String, Option<String>)> = (0..7).map(|i| (format!("m{i}"), None)).collect();
    send(&client, &queue, &bodies).await;
    let cfg: sluice::sources::sqs::SqsSourceConfig = toml::from_str(&format!(
        "queue_url = '{queue}'\nendpoint = '{}'\nregion = 'us-east-1'\n\
         access_key_id = 'test'\nsecret_access_key = 'test'\n\
         dead_letter_queue_url = '{dlq}'\nwait_time_secs = 1\npollers = 1",
        moto()
    ))
    .unwrap();
    use sluice::sources::SourceConfig;
    let source = cfg
        .build(&sluice::SourceContext::new("backlog", 4))
        .await
        .unwrap();
    let backlog = source.backlog().expect("the SQS source reports a backlog");
    let read = async {
        loop {
            if let Some(n) = backlog.get() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let n = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the depth is read when the source opens");
    assert_eq!(n, 7, "nothing was received yet: all 7 are visible");
}

/// Pausing an SQS pipeline through the admin API: jobs in flight finish,
/// and nothing received stays hidden in the process (the visibility
/// timeout is 30 s; everything is visible again well before); resumed,
/// every message runs, once, and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_holds_nothing_out_of_sight() {
    use axum::body::Body;
    use tower::ServiceExt;

    let e = env(
        ReceiverConfig {
            latency: (Duration::from_millis(30), Duration::from_millis(30)),
            ..ReceiverConfig::default()
        },
        30,
        false,
    )
    .await;
    let n = 60;
    let client = sqs().await;
    let bodies: Vec<_> = (0..n)
        .map(|i| (laravel_job(&i.to_string(), 3, ""), None))
        .collect();
    send(&client, &e.queue, &bodies).await;
    let steps = "[[pipeline.step]]\ntype = \"http\"\nurl = \"@URL@/jobs\"\n";
    let text = e.config(4, ONE_POLLER, steps);
    let loaded = config::parse("sqs-test.toml", &text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let admin = std::sync::Arc::new(sluice::admin::AdminState::new(None));
    let app = sluice::admin::router(admin.clone());
    let call = |method: &'static str, path: &'static str| {
        let app = app.clone();
        async move {
            let res = app
                .oneshot(
                    axum::http::Request::builder()
                        .method(method)
                        .uri(path)
                        .header("content-type", "application/json")
                        .body(Body::from("{}"))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(
                res.status().is_success(),
                "{method} {path}: {}",
                res.status()
            );
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            config::run(
                &loaded,
                RunOptions {
                    shutdown,
                    progress: Progress::Off,
                    stop_when_empty: false,
                    admin: Some(admin),
                },
            )
            .await
        }
    });
    let bound = Duration::from_secs(60);
    tokio::time::timeout(bound, e.receiver.wait_for_accepted(10))
        .await
        .expect("jobs run");
    call("POST", "/api/pipelines/reports/pause").await;
    let settled = async {
        loop {
            let p = call("GET", "/api/pipelines/reports").await;
            let hidden = counts(&client, &e.queue).await.1;
            if p["in_flight"] == 0 && hidden == 0 {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Well inside the 30 s visibility timeout: what was held went back.
    let paused = tokio::time::timeout(Duration::from_secs(15), settled)
        .await
        .expect("paused: nothing in flight, nothing invisible in the queue");
    assert_eq!(paused["state"], "paused");
    assert!(e.receiver.accepted() < n as u64, "paused before the end");
    call("POST", "/api/pipelines/reports/resume").await;
    tokio::time::timeout(bound, e.receiver.wait_for_accepted(n as u64))
        .await
        .expect("every job runs once resumed");
    until_empty(&client, &e.queue).await;
    shutdown.request();
    let report = run.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.settled_everything(),
        "{}",
        sluice::runtime::summary(&report)
    );
    assert_eq!(e.receiver.accepted(), n as u64, "once each (one poller)");
}

/// A Laravel job allowed one try (`maxTries: 1`) that a worker received
/// and never settled (it crashed: the receive count is 1) is dead-lettered
/// without running when it comes back, as Laravel's SQS worker fails it;
/// one allowed three runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laravel_job_past_its_tries_is_dead_lettered_unrun() {
    let e = env(ReceiverConfig::default(), 30, false).await;
    bucket(
        &e.bucket,
        &[
            ("report-once.json".to_owned(), "{}".to_owned()),
            ("report-thrice.json".to_owned(), "{}".to_owned()),
        ],
    )
    .await;
    let client = sqs().await;
    send(
        &client,
        &e.queue,
        &[
            (laravel_job("once", 1, ""), None),
            (laravel_job("thrice", 3, ""), None),
        ],
    )
    .await;
    // A worker receives both and dies holding them; visible again at once.
    let mut taken = 0;
    while taken < 2 {
        let got = client
            .receive_message()
            .queue_url(&e.queue)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        taken += got.messages().len();
    }
    let report = run_until(&e.config(4, "", REPORT_STEPS), async {
        while counts(&client, &e.dlq).await.0 < 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        e.receiver.wait_for_accepted(1).await;
    })
    .await;
    let p = &report.pipelines[0];
    assert_eq!((p.succeeded, p.dead_lettered), (1, 1), "{p:?}");
    let paths: Vec<String> = e
        .receiver
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.iter().all(|p| !p.contains("once")),
        "the job past its tries ran: {paths:?}"
    );
    let dead = drain(&client, &e.dlq).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].message_attributes().unwrap()["sluice_dead_letter_reason"]
        .string_value()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with("App\\Jobs\\SendReport has been attempted too many times"),
        "{reason}"
    );
}
