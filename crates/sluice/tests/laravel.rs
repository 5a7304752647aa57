//! sluice and a real Laravel 8 on one Redis queue: jobs an app dispatches
//! (Laravel's own Bus dispatcher and RedisQueue, through the PHP scripts in
//! `tests/interop/laravel/`) run under the `sluice` binary; jobs sluice
//! releases run under Laravel's own `Worker` with the attempts Laravel
//! expects; Laravel's and sluice's reservations of one payload are the
//! same bytes; a job Laravel abandoned comes back to sluice after
//! `retry_after`.
//!
//! Needs PHP with Laravel 8 (`scripts/laravel` installs it) and the Redis
//! `scripts/services` starts; a test fails, saying so, when either is
//! missing. Each test has queues of its own and deletes their keys.

#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::laravel::{Laravel, PREFIX};
use common::process::{self, Running};
use serde_json::json;
use sluice::testkit::{Receiver, ReceiverConfig};
use tempfile::TempDir;

/// The bound on every wait; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(60);

async fn receiver(config: ReceiverConfig) -> Receiver {
    common::recording_receiver(config).await
}

/// A `sluice run` config for `queue`: each job's report id, decoded from
/// the PHP command, in the path; the command's properties and the
/// attempt in the body. `extra` is appended (a `[pipeline.retry]`).
fn config(
    dir: &TempDir,
    queue: &str,
    retry_after_secs: u64,
    rx: &Receiver,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"shutdown_timeout_secs = 5
[[pipeline]]
name = "reports"
concurrency = 4
job_timeout_secs = 30
[pipeline.source]
type = "redis"
url = "{redis}"
queue = "{queue}"
prefix = "{PREFIX}"
retry_after_secs = {retry_after_secs}
block_for_secs = 1
format = "laravel"
[[pipeline.step]]
type = "http"
url = "{url}/reports/{{{{ job.command.reportId }}}}"
body = '{{"uuid": {{{{ job.uuid | tojson }}}}, "attempt": {{{{ message.attempt }}}}, "command": {{{{ job.command | tojson }}}}}}'
{extra}
"#,
        redis = common::redis::url(),
        url = rx.url(),
    );
    let path = dir.path().join(format!("{queue}.toml"));
    std::fs::write(&path, text).expect("write the config");
    path
}

/// What the receiver accepted, by report id: each request's JSON body.
fn accepted(rx: &Receiver) -> BTreeMap<u64, Vec<serde_json::Value>> {
    let mut by_id: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
    for r in rx.requests().iter().filter(|r| r.status / 100 == 2) {
        let id = r
            .path
            .strip_prefix("/reports/")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected path {}", r.path));
        let body = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("body of {} is not JSON ({e}): {:?}", r.path, r.body));
        by_id.entry(id).or_default().push(body);
    }
    by_id
}

fn json_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Polls `cond` every 10 ms; fails the test with `what` (and sluice's log)
/// after [`WAIT`], or when sluice exits first.
async fn wait_until(what: &str, run: &mut Running, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        if let Some(status) = run.exited() {
            panic!(
                "sluice exited ({status}) before {what}; its log:\n{}",
                run.log()
            );
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what}; sluice's log:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run_until_empty(dir: &TempDir, n: usize, config: &Path) -> Running {
    let mut run = process::start(dir.path(), n, config, &["--stop-when-empty"]);
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "sluice's log:\n{}", run.log());
    run
}

/// The properties of `ProcessReport` (tests/interop/laravel/jobs.php) for
/// `id`, as the `laravel` format decodes them from `serialize()`.
fn process_report(id: u64, queue: &str) -> serde_json::Value {
    json!({
        "__class": "App\\Jobs\\ProcessReport",
        "reportId": id,
        "format": "pdf",
        "options": {"locale": "fr", "pages": [1, 2]},
        "ratio": 0.75,
        "urgent": true,
        "note": null,
        "filters": {
            "region": ["eu", "us"],
            "range": {"from": 1, "to": 31},
            "tags": [],
            "label": "caf\u{e9} \"quoted\" / slashed",
        },
        "job": null,
        "connection": null,
        "queue": queue,
        "chainConnection": null,
        "chainQueue": null,
        "chainCatchCallbacks": null,
        "delay": null,
        "afterCommit": null,
        "middleware": [],
        "chained": [],
    })
}

#[tokio::test]
async fn jobs_laravel_dispatches_run_under_sluice() {
    let laravel = Laravel::new("dispatch");
    let q = laravel.queue.as_str();
    let rx = receiver(ReceiverConfig::default()).await;
    let dir = tempfile::tempdir().expect("a temp dir");

    // Three now, one delayed 1 s, as `ProcessReport::dispatch($id)` writes them.
    let mut payloads = laravel.dispatch(q, 3, &["--start=1"]).await;
    payloads.extend(laravel.dispatch(q, 1, &["--start=4", "--delay=1"]).await);
    assert_eq!(payloads.len(), 4);
    assert_eq!(Laravel::held(q), (3, 0, 1), "three ready, one in :delayed");
    let uuids: Vec<String> = payloads
        .iter()
        .map(|p| json_of(p)["uuid"].as_str().expect("a uuid").to_owned())
        .collect();

    let config = config(&dir, q, 90, &rx, "");
    run_until_empty(&dir, 1, &config).await;

    // Each once, its command decoded: public, protected and private
    // properties, float, bool, null, nested and empty arrays, UTF-8.
    let got = accepted(&rx);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (id, bodies) in &got {
        assert_eq!(bodies.len(), 1, "report {id} delivered once: {bodies:?}");
        let body = &bodies[0];
        assert_eq!(body["uuid"], uuids[*id as usize - 1], "report {id}");
        assert_eq!(body["attempt"], 1, "report {id}");
        let mut expected = process_report(*id, q);
        if *id == 4 {
            expected["delay"] = 1.into();
        }
        assert_eq!(body["command"], expected, "report {id}");
    }
    assert_eq!(
        Laravel::held(q),
        (0, 0, 0),
        "Redis holds nothing of the queue"
    );
}

#[tokio::test]
async fn a_job_sluice_released_completes_under_laravels_worker() {
    let laravel = Laravel::new("release");
    let q = laravel.queue.as_str();
    // The first POST of each path fails with a retryable 503.
    let rx = receiver(ReceiverConfig {
        fail_first: 1,
        error_status: 503,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    // tries 3, backoff [1, 2]: maxTries 3 and backoff "1,2" in the payload.
    let payload = laravel
        .dispatch(q, 1, &["--class=RetriedReport", "--start=9"])
        .await
        .remove(0);
    let dispatched = json_of(&payload);
    assert_eq!(dispatched["maxTries"], 3);
    assert_eq!(dispatched["backoff"], "1,2");

    // sluice's retry waits 3 s in :delayed (the config outranks the job's
    // backoff, so the test has time to stop sluice before it is due).
    let backoff =
        "[pipeline.retry]\nbackoff = { initial_ms = 3000, max_ms = 3000, jitter = false }";
    let config = config(&dir, q, 90, &rx, backoff);
    let mut run = process::start(dir.path(), 1, &config, &[]);
    wait_until("sluice released the job into :delayed", &mut run, || {
        let (ready, reserved, delayed) = Laravel::held(q);
        ready == 0 && reserved == 0 && delayed == 1
    })
    .await;
    run.signal("TERM");
    let status = run.wait(WAIT).await;
    // The job waits in :delayed for its retry: not succeeded, so not 0.
    assert_eq!(status.code(), Some(3), "sluice's log:\n{}", run.log());
    assert!(
        run.log().contains("pending retry in the source 1"),
        "{}",
        run.log()
    );
    assert_eq!(rx.total(), 1, "one attempt, answered 503");
    assert!(accepted(&rx).is_empty());

    // Laravel's release: the reserved member (attempts counted) in
    // :delayed, due in about 3 s.
    let delayed = Laravel::delayed(q);
    let (member, due) = &delayed[0];
    let released = json_of(member);
    assert_eq!(released["uuid"], dispatched["uuid"]);
    assert_eq!(released["attempts"], 1, "sluice's run counted");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        *due > now - 1.0 && *due < now + 4.0,
        "due at {due}, now {now}"
    );

    // Laravel's worker waits for it to fall due and runs it: its second
    // attempt of three.
    let out = laravel.work(q, &["--max-jobs=1", "--sleep=1"]).await;
    assert!(
        out.text().contains("Processed:  App\\Jobs\\RetriedReport"),
        "{}",
        out.text()
    );
    let handled = laravel.handled();
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0]["job"], "App\\Jobs\\RetriedReport");
    assert_eq!(handled[0]["uuid"], dispatched["uuid"]);
    assert_eq!(handled[0]["reportId"], 9);
    assert_eq!(
        handled[0]["attempts"], 2,
        "Laravel's attempts(): sluice's run and its own"
    );
    assert_eq!(Laravel::held(q), (0, 0, 0), "deleted by Laravel");
}

/// A Laravel 8 payload as a non-PHP producer writes it, by hand: the
/// command serialized with only the property `handle()` reads.
fn hand_made_payload(uuid: &str, report_id: u64) -> String {
    format!(
        r#"{{"uuid":"{uuid}","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"data":{{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{{s:8:\"reportId\";i:{report_id};}}"}},"id":"{uuid}","attempts":0}}"#
    )
}

#[tokio::test]
async fn jobs_a_non_php_producer_pushes_run_under_laravels_worker() {
    let laravel = Laravel::new("producer");
    let q = laravel.queue.as_str();
    for (uuid, id) in [("made-in-rust-1", 77), ("made-in-rust-2", 78)] {
        Laravel::push_raw(q, hand_made_payload(uuid, id).as_bytes());
    }
    let out = laravel.work(q, &["--stop-when-empty", "--sleep=1"]).await;
    let handled = laravel.handled();
    let runs: Vec<(&str, u64, u64)> = handled
        .iter()
        .map(|h| {
            (
                h["uuid"].as_str().unwrap(),
                h["reportId"].as_u64().unwrap(),
                h["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [("made-in-rust-1", 77, 1), ("made-in-rust-2", 78, 1)],
        "worker output:\n{}\n{}",
        out.text(),
        out.stderr
    );
    assert_eq!(Laravel::held(q), (0, 0, 0));
}

#[tokio::test]
async fn laravel_and_sluice_reserve_the_same_bytes() {
    let laravel = Laravel::new("bytes");
    let (a, b) = (laravel.queue.as_str(), laravel.other.as_str());
    // The receiver holds each request, so sluice's reservation lasts.
    let rx = receiver(ReceiverConfig {
        latency: (WAIT, WAIT),
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");

    // One payload as Laravel pushed it onto `a`, and the same bytes onto `b`.
    let payload = laravel.dispatch(a, 1, &["--start=5"]).await.remove(0);
    Laravel::push_raw(b, &payload);

    // Laravel reserves `a`'s, and hands back exactly what Redis holds.
    let by_laravel = laravel.pop(a, 90).await;
    assert_eq!(Laravel::reserved(a), std::slice::from_ref(&by_laravel));
    assert_eq!(json_of(&by_laravel)["attempts"], 1);
    assert_ne!(by_laravel, payload, "the pop script re-encodes it");

    // sluice reserves `b`'s while its job hangs.
    let config = config(&dir, b, 90, &rx, "");
    let mut run = process::start(dir.path(), 1, &config, &[]);
    wait_until("sluice reserved the job", &mut run, || {
        Laravel::reserved(b).len() == 1 && rx.total() == 1
    })
    .await;
    let by_sluice = Laravel::reserved(b).remove(0);
    assert!(
        by_sluice == by_laravel,
        "the reserved members differ:\nLaravel: {}\nsluice:  {}",
        String::from_utf8_lossy(&by_laravel),
        String::from_utf8_lossy(&by_sluice)
    );
    drop(run);
}

#[tokio::test]
async fn a_job_laravel_abandoned_comes_back_to_sluice_after_retry_after() {
    let laravel = Laravel::new("abandoned");
    let q = laravel.queue.as_str();
    let rx = receiver(ReceiverConfig::default()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let payload = laravel.dispatch(q, 1, &["--start=6"]).await.remove(0);
    let uuid = json_of(&payload)["uuid"].clone();

    // A Laravel worker pops it with retry_after 1 and dies holding it.
    let reserved = laravel.pop(q, 1).await;
    assert_eq!(Laravel::held(q), (0, 1, 0));

    // sluice (retry_after 2) waits for the reservation to expire, migrates
    // it back, and runs it: Laravel's attempt counted, and its own.
    let config = config(&dir, q, 2, &rx, "");
    run_until_empty(&dir, 1, &config).await;
    let got = accepted(&rx);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [6], "{got:?}");
    assert_eq!(got[&6].len(), 1);
    let body = &got[&6][0];
    assert_eq!(body["uuid"], uuid);
    assert_eq!(body["attempt"], 2, "the abandoned run counts");
    assert_eq!(body["command"], process_report(6, q));
    assert_eq!(json_of(&reserved)["attempts"], 1);
    assert_eq!(
        Laravel::held(q),
        (0, 0, 0),
        "Redis holds nothing of the queue"
    );
}

/// `sluice send ARGS`, with `stdin` fed in; its stdout. Fails the test
/// when it exits non-zero.
fn sluice_send(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("send")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sluice send");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sluice send {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Given the command, uuid and id Laravel chose, `sluice send` writes the
/// payload Laravel wrote, byte for byte, and pushes it as Laravel does:
/// for a plain job class and for one with its own retry rules.
#[tokio::test]
async fn sluice_send_writes_the_payload_laravel_writes() {
    let laravel = Laravel::new("send-bytes");
    for (class, flags) in [
        ("ProcessReport", vec![]),
        ("RetriedReport", vec!["--tries", "3", "--backoff", "1,2"]),
    ] {
        let class_arg = format!("--class={class}");
        let pushed = laravel.dispatch(&laravel.queue, 1, &[&class_arg]).await;
        let by_laravel = json_of(&pushed[0]);
        let mut args = vec![
            "--to",
            "redis",
            "--url",
            &common::redis::url(),
            "--queue",
            &laravel.other,
            "--prefix",
            PREFIX,
            "--print",
            "payload",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for (flag, field) in [("--uuid", "uuid"), ("--id", "id")] {
            args.push(flag.into());
            args.push(by_laravel[field].as_str().unwrap().into());
        }
        // Protected and private property names hold NUL bytes, which no
        // command line carries: the command goes in a file.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), by_laravel["data"]["command"].as_str().unwrap()).unwrap();
        args.push("--command-file".into());
        args.push(file.path().to_str().unwrap().into());
        args.extend(flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let printed = sluice_send(&args, "");
        assert_eq!(
            printed.trim_end().as_bytes(),
            &pushed[0][..],
            "{class}: sluice send's payload is Laravel's"
        );
        let on_redis: Vec<Vec<u8>> = redis::Commands::lrange(
            &mut common::redis::connection(),
            Laravel::keys(&laravel.other).queue,
            0,
            -1,
        )
        .unwrap();
        assert_eq!(on_redis, [pushed[0].clone()], "{class}");
        let _: () = redis::Commands::del(
            &mut common::redis::connection(),
            Laravel::keys(&laravel.other).queue,
        )
        .unwrap();
    }
}

/// What `sluice send` pushes, Laravel's own worker runs: string jobs with
/// JSON data, one per line of stdin, and a job class described in JSON.
#[tokio::test]
async fn jobs_sluice_send_pushes_run_under_laravels_worker() {
    let laravel = Laravel::new("send-run");
    let q = laravel.queue.as_str();
    let url = common::redis::url();
    let base = [
        "--to", "redis", "--url", &url, "--queue", q, "--prefix", PREFIX,
    ];
    let mut string_jobs = base.to_vec();
    string_jobs.extend([
        "--job",
        "App\\Handlers\\RecordData@handle",
        "--stdin",
        "data",
    ]);
    let uuids = sluice_send(
        &string_jobs,
        "{\"user\": 1, \"url\": \"https://example.com/a\"}\n{\"user\": 2, \"name\": \"Zoë\"}\n",
    );
    let mut object_job = base.to_vec();
    object_job.extend([
        "--command-json",
        r#"{"__class": "App\\Jobs\\ProcessReport", "reportId": 91}"#,
    ]);
    let uuid = sluice_send(&object_job, "");
    let out = laravel.work(q, &["--stop-when-empty", "--sleep=1"]).await;
    let handled = laravel.handled();
    assert_eq!(handled.len(), 3, "{}\n{}", out.text(), out.stderr);
    let uuids: Vec<&str> = uuids.lines().collect();
    assert_eq!(handled[0]["uuid"], uuids[0]);
    assert_eq!(
        handled[0]["data"],
        json!({"user": 1, "url": "https://example.com/a"})
    );
    assert_eq!(handled[1]["uuid"], uuids[1]);
    assert_eq!(handled[1]["data"], json!({"user": 2, "name": "Zoë"}));
    assert_eq!(handled[2]["uuid"], uuid.trim());
    assert_eq!(handled[2]["reportId"], 91);
    assert!(handled.iter().all(|h| h["attempts"] == 1));
    assert_eq!(Laravel::held(q), (0, 0, 0));
}

/// `sluice send --to sqs` writes what Laravel's SqsQueue sends (no `id`
/// or `attempts`), and sluice's SQS source runs it, reading the command.
#[tokio::test]
async fn jobs_sluice_send_pushes_to_sqs_run_under_sluice() {
    let moto = common::aws::moto();
    let client = common::aws::sqs().await;
    let url = common::aws::create_queue(&client, &common::aws::unique("send"), 30).await;
    let lines: String = (1..=3)
        .map(|id| {
            format!("{{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": {id}}}\n")
        })
        .collect();
    let send = [
        "--to",
        "sqs",
        "--queue-url",
        &url,
        "--endpoint",
        &moto,
        "--region",
        "us-east-1",
        "--stdin",
        "command-json",
        "--tries",
        "2",
    ];
    // The emulator takes any key; the standard chain needs one.
    let uuids = {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("send")
            .args(send)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(uuids.lines().count(), 3);
    let rx = receiver(ReceiverConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sqs.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[pipeline]]
name = "reports"
{source}dead_letter_queue_url = "{url}"
[[pipeline.step]]
type = "http"
url = "{rx}/reports/{{{{ job.command.reportId }}}}"
body = '{{"uuid": {{{{ job.uuid | tojson }}}}, "maxTries": {{{{ job.maxTries }}}}, "fields": {{{{ job | list | tojson }}}}}}'
"#,
            source = common::aws::laravel_source(&url),
            rx = rx.url()
        ),
    )
    .unwrap();
    let mut run = process::start(dir.path(), 0, &config, &["--stop-when-empty"]);
    let status = run.wait(WAIT).await;
    assert!(status.success(), "{}", run.log());
    let got = accepted(&rx);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{}",
        run.log()
    );
    for bodies in got.values() {
        assert_eq!(bodies[0]["maxTries"], 2);
        let fields = bodies[0]["fields"].as_array().unwrap();
        assert!(!fields.contains(&json!("id")) && !fields.contains(&json!("attempts")));
        assert!(uuids.contains(bodies[0]["uuid"].as_str().unwrap()));
    }
}

/// Two sluice processes and Laravel's own worker share one queue: every
/// job runs exactly once (no fault, so no second run), all three did some
/// of the work, and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sluice_processes_and_a_laravel_worker_share_a_queue() {
    const JOBS: u64 = 400;
    let laravel = Laravel::new("shared");
    let q = laravel.queue.as_str();
    // sluice send writes what dispatch() writes, and much faster than
    // a PHP process dispatching one by one.
    let lines: String = (1..=JOBS)
        .map(|id| {
            format!("{{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": {id}}}\n")
        })
        .collect();
    let url = common::redis::url();
    sluice_send(
        &[
            "--to",
            "redis",
            "--url",
            &url,
            "--queue",
            q,
            "--prefix",
            PREFIX,
            "--stdin",
            "command-json",
        ],
        &lines,
    );
    let rx = receiver(ReceiverConfig {
        latency: (Duration::from_millis(5), Duration::from_millis(15)),
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = config(&dir, q, 60, &rx, "");
    let php_url = format!("{}/php", rx.url());
    let (args, env) = (
        [q, "--stop-when-empty", "--sleep=1"],
        [("POST_URL", php_url.as_str())],
    );
    let php = laravel.php("work.php", &args, &env);
    let sluices = async {
        // Laravel's worker first, so that it has a share however fast the
        // two sluices are.
        common::wait_until("Laravel's worker to run a job", WAIT, || {
            !laravel.handled().is_empty()
        })
        .await;
        let mut a = process::start(dir.path(), 1, &config, &["--stop-when-empty"]);
        let mut b = process::start(dir.path(), 2, &config, &["--stop-when-empty"]);
        for run in [&mut a, &mut b] {
            let status = run.wait(WAIT).await;
            assert_eq!(status.code(), Some(0), "sluice's log:\n{}", run.log());
        }
    };
    let (out, ()) = tokio::join!(php, sluices);
    let mut runs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_php = 0;
    for r in rx.requests().iter().filter(|r| r.status / 100 == 2) {
        let body = json_of(&r.body);
        let id = match r.path.as_str() {
            "/php" => {
                by_php += 1;
                body["report"].as_u64()
            }
            p => p.strip_prefix("/reports/").and_then(|n| n.parse().ok()),
        };
        *runs.entry(id.expect("a report id")).or_default() += 1;
    }
    assert_eq!(runs.len() as u64, JOBS, "every job ran");
    assert!(
        runs.values().all(|n| *n == 1),
        "a job ran twice: {:?}\nLaravel's worker:\n{}",
        runs.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>(),
        out.text()
    );
    assert!(by_php > 0 && by_php < JOBS, "Laravel ran {by_php}");
    assert_eq!(laravel.handled().len() as u64, by_php);
    assert_eq!(Laravel::held(q), (0, 0, 0));
}

/// A bad line half-way through stdin stops `sluice send`, and it says
/// what was already sent: stdout lists exactly the jobs on the queue.
#[tokio::test]
async fn sluice_send_stopped_by_a_bad_line_says_what_it_had_sent() {
    use std::io::Write;
    let laravel = Laravel::new("send-bad-line");
    let q = laravel.queue.as_str();
    let mut lines: String = (1..=600)
        .map(|id| {
            format!("{{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": {id}}}\n")
        })
        .collect();
    lines.push_str("{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": \n");
    let url = common::redis::url();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "send", "--to", "redis", "--url", &url, "--queue", q, "--prefix", PREFIX,
        ])
        .args(["--stdin", "command-json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let queued: Vec<Vec<u8>> = redis::Commands::lrange(
        &mut common::redis::connection(),
        Laravel::keys(q).queue,
        0,
        -1,
    )
    .unwrap();
    // Full batches of 500 go at once; a partial one after a pause in the
    // input (a slow pipe): at least the first 500, never the bad line.
    let sent = printed.len();
    assert!((500..=600).contains(&sent), "{sent} printed");
    assert!(
        stderr.contains("stdin line 601") && stderr.contains(&format!("{sent} job(s) were sent")),
        "{stderr}"
    );
    assert_eq!(queued.len(), sent);
    for (uuid, job) in printed.iter().zip(&queued) {
        assert_eq!(json_of(job)["uuid"], uuid.as_str());
    }
}

/// sluice killed with `kill -9` while it holds jobs: Laravel's own worker,
/// migrating expired reservations as its pop does, runs them once their
/// `retry_after` has passed. Every job runs; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_killed_sluice_held_are_run_by_laravels_worker() {
    const JOBS: u32 = 12;
    let laravel = Laravel::new("killed");
    let q = laravel.queue.as_str();
    laravel.dispatch(q, JOBS, &[]).await;
    // Requests that never get an answer: what sluice takes, it holds.
    let rx = receiver(ReceiverConfig {
        hang_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = config(&dir, q, 2, &rx, ""); // concurrency 4
    let mut run = process::start(dir.path(), 0, &config, &[]);
    wait_until("sluice to hold 4 jobs", &mut run, || {
        Laravel::held(q).1 == 4 && rx.total() == 4
    })
    .await;
    run.signal("KILL");
    run.wait(WAIT).await;
    assert_eq!(Laravel::held(q), (u64::from(JOBS) - 4, 4, 0));
    // Laravel's worker drains the list, then finds the dead process's
    // reservations expired (2 s) and runs them too. The attempt sluice
    // made counts, as a crashed PHP worker's would: with queue:work's
    // default --tries=1 Laravel would fail those four as having had
    // their try.
    let out = laravel
        .php(
            "work.php",
            &[q, "--sleep=1", "--tries=3", &format!("--max-jobs={JOBS}")],
            &[("RETRY_AFTER", "2")],
        )
        .await;
    let handled = laravel.handled();
    let mut ids: Vec<u64> = handled
        .iter()
        .map(|h| h["reportId"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=u64::from(JOBS)).collect::<Vec<_>>(),
        "{}",
        out.text()
    );
    // The four sluice held ran under Laravel as their second attempt.
    assert_eq!(handled.iter().filter(|h| h["attempts"] == 2).count(), 4);
    assert_eq!(Laravel::held(q), (0, 0, 0));
}

/// `sluice send --stdin` pushes a partial batch once its input pauses, not
/// at EOF: a producer writing a line now and then sees each job queued
/// while stdin is still open. A `--delay` past ten years is refused rather
/// than wrapped round to "due now".
#[tokio::test]
async fn sluice_send_pushes_a_pausing_stdin_and_refuses_a_wrapping_delay() {
    use std::io::Write;
    let laravel = Laravel::new("send-linger");
    let q = laravel.queue.as_str();
    let url = common::redis::url();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "send", "--to", "redis", "--url", &url, "--queue", q, "--prefix", PREFIX,
        ])
        .args(["--stdin", "command-json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": 1}\n")
        .unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while Laravel::held(q).0 < 1 {
        if started.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the one line was not pushed while stdin stayed open");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(Laravel::held(q), (1, 0, 0));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "send",
            "--to",
            "redis",
            "--url",
            &url,
            "--queue",
            q,
            "--prefix",
            PREFIX,
            "--job",
            "App\\Handlers\\Import@handle",
            "--data",
            "{}",
            "--delay",
            "18446744073709551615",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("at most 315360000 s"), "{stderr}");
    assert_eq!(Laravel::held(q), (1, 0, 0), "nothing more was pushed");
}
