//! The daemon's behaviour, in-process: file source -> steps -> the real
//! test receiver over loopback HTTP, asserting on what the receiver got and
//! what the failures files hold.

mod common;

use std::time::{Duration, Instant};

use common::{Setup, single};
use sluice::steps::http::SigningKey;
use sluice::testkit::ReceiverConfig;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Retries counted exactly: the breaker, which holds retries while the
/// receiver is down, is off.
fn quick_retries(max_attempts: u32) -> String {
    format!(
        "[pipeline.retry]\nmax_attempts = {max_attempts}\nbackoff = {{ initial_ms = 10, max_ms = 50, jitter = true }}\npause_after_failures = 0\n"
    )
}

/// The whole chain: extract -> fetch (file://) -> template -> signed POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_goes_through_every_step() {
    let s = Setup::new(ReceiverConfig::default()).await;
    std::fs::create_dir(s.path("objects")).unwrap();
    for k in 0..5 {
        std::fs::write(
            s.path(&format!("objects/report-{k}.json")),
            format!(r#"{{"total": {}}}"#, k * 10),
        )
        .unwrap();
    }
    let n = 200;
    s.jobs(
        &(0..n)
            .map(|i| format!(r#"{{"id": {i}, "note": "see report-{}.json"}}"#, i % 5).into_bytes())
            .collect::<Vec<_>>(),
    );
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "full"
concurrency = 20
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "extract"
regex = 'report-(?P<report_id>\d+)\.json'
[[pipeline.step]]
type = "fetch"
url = 'file://@DIR@/objects/report-{{{{ report_id }}}}.json'
into = "report"
decode = "json"
[[pipeline.step]]
type = "template"
into = "payload"
template = '{{"id": {{{{ body.id }}}}, "total": {{{{ report.total }}}}}}'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
body = "{{{{ payload }}}}"
headers = {{ x-attempt = "{{{{ message.attempt }}}}" }}
[pipeline.step.signing]
secret = "{SECRET}"
"#
        ))
        .await;
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (n as u64, 0, 0),
        "{p:?}"
    );
    assert!(report.settled_everything());
    let key = SigningKey::parse(SECRET).unwrap();
    let requests = s.receiver.requests();
    assert_eq!(requests.len(), n);
    for r in &requests {
        let id: u64 = r.path.trim_start_matches("/jobs/").parse().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], id);
        assert_eq!(body["total"], (id % 5) * 10, "the fetched object's data");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-attempt"), Some("1"));
        let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let wid = r.header("webhook-id").unwrap();
        assert_eq!(
            r.header("webhook-signature").unwrap(),
            key.sign(wid, ts, &r.body)
        );
    }
    assert_eq!(s.accepted_ids().len(), n, "each job exactly once");
}

/// 503 twice per job, then 200: every job succeeds on its third attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_receiver_recovers() {
    let s = Setup::new(ReceiverConfig {
        fail_first: 2,
        ..ReceiverConfig::default()
    })
    .await;
    let n = 50;
    s.numbered_jobs(n);
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "flaky"
concurrency = 10
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
body = '{{"attempt": {{{{ message.attempt }}}}}}'
{}"#,
            quick_retries(5)
        ))
        .await;
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (n as u64, 0, 2 * n as u64)
    );
    let ok: Vec<_> = s
        .receiver
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert_eq!(ok.len(), n);
    assert!(
        ok.iter().all(|r| r.body.as_ref() == br#"{"attempt": 3}"#),
        "the third attempt succeeded"
    );
    assert!(s.failures("jobs.ndjson").is_empty());
}

/// The receiver is down far longer than three attempts with a 10 ms
/// backoff allow: after 5 failures in a row the pipeline pauses, retries
/// wait for the probes, and once the receiver is back every job succeeds,
/// none dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_the_pipeline_instead_of_burning_retries() {
    let s = Setup::new(ReceiverConfig {
        error_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    let n = 40;
    s.numbered_jobs(n);
    let config = r#"
[[pipeline]]
name = "outage"
concurrency = 4
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
[pipeline.retry]
max_attempts = 3
backoff = { initial_ms = 10, max_ms = 10, jitter = false }
pause_after_failures = 5
"#;
    let run = s.run(config);
    let outage = async {
        // 4 first attempts and up to 4 second ones (the fifth failure
        // pauses; of the other three, those already running fail too),
        // then probes one at a time, 1 s, 2 s, 4 s... apart. The outage
        // lasts until 10 requests, or 5 s after the fifth: either way far
        // past what 3 attempts 10 ms apart would have taken, and short of
        // the doubling probe intervals outrunning the run's time limit
        // when fewer second attempts got out before the pause.
        let mut fifth = None;
        while s.receiver.total() < 10 {
            if s.receiver.total() >= 5 {
                let at = *fifth.get_or_insert_with(std::time::Instant::now);
                if at.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let during = s.receiver.total();
        s.receiver.set_config(ReceiverConfig::default());
        during
    };
    let (report, during) = tokio::join!(run, outage);
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered),
        (n as u64, 0),
        "nothing dead-lettered during the outage ({during} requests while down)"
    );
    assert_eq!(s.accepted_ids().len(), n);
    assert!(
        during <= 12,
        "while paused only probes reach the receiver: {during} requests"
    );
}

/// A message the receiver always refuses with a 503, alone in the only
/// slot, opens the breaker by itself. Its probes spend no attempt three
/// times, then do: it is dead-lettered, and the rest run, rather than the
/// pipeline probing with it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_cannot_hold_a_paused_pipeline() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let mut lines = vec![br#"{"code": 503, "id": 0}"#.to_vec()];
    lines.extend((1..6).map(|i| format!(r#"{{"code": 200, "id": {i}}}"#).into_bytes()));
    s.jobs(&lines);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "poison"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/status/{{ body.code }}/{{ body.id }}"
[pipeline.retry]
max_attempts = 3
backoff = { initial_ms = 10, max_ms = 10, jitter = false }
pause_after_failures = 2
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (5, 1), "{p:?}");
    let why = s.reasons("jobs.ndjson")[0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("gave up after 3 attempts"), "{why}");
}

/// Always 503: give up after max_attempts, dead-letter with the reason, and
/// the failures file feeds back in once the receiver is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_max_attempts_and_the_failures_feed_back_in() {
    let s = Setup::new(ReceiverConfig {
        error_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    let n = 20;
    s.numbered_jobs(n);
    let config = |input: &str| {
        format!(
            r#"
[[pipeline]]
name = "down"
concurrency = 5
[pipeline.source]
type = "file"
path = '@DIR@/{input}'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
{}"#,
            quick_retries(3)
        )
    };
    let report = s.run(&config("jobs.ndjson")).await;
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (0, n as u64, 2 * n as u64)
    );
    assert!(
        report.settled_everything(),
        "dead-lettered counts as settled"
    );
    assert_eq!(
        s.receiver.total(),
        3 * n as u64,
        "exactly max_attempts requests per job"
    );
    let reasons = s.reasons("jobs.ndjson");
    assert_eq!(reasons.len(), n);
    for r in &reasons {
        let why = r["reason"].as_str().unwrap();
        assert!(
            why.contains("gave up after 3 attempts") && why.contains("503"),
            "{why}"
        );
        assert_eq!(r["attempts"], 3);
    }
    let mut failed = s.failures("jobs.ndjson");
    failed.sort();
    let mut original = common::read_lines(&s.path("jobs.ndjson"));
    original.sort();
    assert_eq!(failed, original, "failed lines are kept as they were");

    s.receiver.set_config(ReceiverConfig::default());
    let report = s.run(&config("jobs.ndjson.failures")).await;
    assert_eq!(single(&report).succeeded, n as u64);
    assert_eq!(s.accepted_ids().len(), n);
}

/// 404 is permanent: one request, dead-lettered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_statuses_dead_letter_at_once() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.numbered_jobs(10);
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "gone"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/status/404"
{}"#,
            quick_retries(5)
        ))
        .await;
    let p = single(&report);
    assert_eq!((p.dead_lettered, p.retried), (10, 0));
    assert_eq!(s.receiver.total(), 10);
    for r in s.reasons("jobs.ndjson") {
        let why = r["reason"].as_str().unwrap();
        assert!(
            why.contains("404 Not Found") && why.contains("/status/404"),
            "{why}"
        );
    }
}

/// A 429's Retry-After wins over the pipeline's (here very long) backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_retry_after() {
    let s = Setup::new(ReceiverConfig {
        fail_first: 1,
        error_status: 429,
        retry_after_secs: 1,
        ..ReceiverConfig::default()
    })
    .await;
    s.numbered_jobs(3);
    let started = Instant::now();
    let report = s
        .run(
            r#"
[[pipeline]]
name = "throttled"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
[pipeline.retry]
backoff = { initial_ms = 3600000, max_ms = 3600000 }
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.retried), (3, 3));
    // The hour-long backoff was not used (the run would not have ended), and
    // the second attempt waited for the Retry-After second.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// Bad input of every kind is dead-lettered with a reason naming what is
/// wrong, while the good jobs around it go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_dead_lettered_with_clear_reasons() {
    let s = Setup::new(ReceiverConfig::default()).await;
    std::fs::create_dir(s.path("objects")).unwrap();
    std::fs::write(s.path("objects/a.json"), r#"{"v": 1}"#).unwrap();
    let good = br#"{"file": "a.json", "user": {"name": "ann"}}"#.to_vec();
    let mut oversize = br#"{"file": "a.json", "pad": ""#.to_vec();
    oversize.extend(std::iter::repeat_n(b'x', 5000));
    oversize.extend_from_slice(br#""}"#);
    let lines = vec![
        good.clone(),
        br#"{"file": "a.json", "#.to_vec(),
        good.clone(),
        br#"{"file": "NOPE", "user": {"name": "bob"}}"#.to_vec(),
        br#"{"file": "missing.json", "user": {"name": "cy"}}"#.to_vec(),
        oversize,
        b"{\"file\": \"a.json\", \"user\": {\"name\": \"\xff\"}}".to_vec(),
        br#"{"file": "a.json"}"#.to_vec(),
        good,
    ];
    s.jobs(&lines);
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "mixed"
max_body_bytes = 1024
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "extract"
regex = '"file": "(?P<file>[a-z0-9-]+\.json)"'
[[pipeline.step]]
type = "fetch"
url = 'file://@DIR@/objects/{{{{ file }}}}'
into = "obj"
decode = "json"
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/x"
body = '{{"name": {{{{ body.user.name | tojson }}}}, "v": {{{{ obj.v }}}}}}'
{}"#,
            quick_retries(3)
        ))
        .await;
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (3, 6, 0),
        "{p:?}"
    );
    assert_eq!(s.receiver.accepted(), 3);
    let reasons = s.reasons("jobs.ndjson");
    let mut by_offset: Vec<_> = reasons
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_offset.sort();
    let expect = [
        "not valid JSON",
        "does not match the body",
        "not found",
        "over max_body_bytes (1024)",
        "not valid UTF-8",
        "undefined",
    ];
    assert_eq!(by_offset.len(), expect.len(), "{by_offset:#?}");
    for ((_, why), want) in by_offset.iter().zip(expect) {
        assert!(why.contains(want), "expected {want:?} in {why:?}");
    }
    assert!(by_offset[2].1.contains("missing.json"), "the key is named");
    // Every failed line is copied as it was, the oversize one too.
    let failures = s.failures("jobs.ndjson");
    assert_eq!(failures.len(), 6);
    for f in &failures {
        assert!(lines.contains(f));
    }
}

/// max_in_flight caps concurrent requests to one destination even when
/// the pipeline could run many more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_max_in_flight_holds() {
    let s = Setup::new(ReceiverConfig {
        latency: (Duration::from_millis(10), Duration::from_millis(20)),
        ..ReceiverConfig::default()
    })
    .await;
    s.numbered_jobs(60);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "capped"
concurrency = 50
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
max_in_flight = 3
"#,
        )
        .await;
    assert_eq!(single(&report).succeeded, 60);
    let peak = s.receiver.peak_in_flight();
    assert!((1..=3).contains(&peak), "peak in flight {peak}");
}

/// rate paces request starts per destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_rate_paces_starts() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.numbered_jobs(11);
    let started = Instant::now();
    let report = s
        .run(
            r#"
[[pipeline]]
name = "paced"
concurrency = 50
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
rate = "20/s"
"#,
        )
        .await;
    assert_eq!(single(&report).succeeded, 11);
    // 11 starts at 20/s, no burst: at least 10 intervals of 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// A request that never gets an answer times out and is retried; a job
/// over job_timeout_secs is stopped and retried; both end dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_requests_time_out_and_are_retried() {
    let s = Setup::new(ReceiverConfig {
        hang_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    s.numbered_jobs(4);
    let step_timeout = format!(
        r#"
[[pipeline]]
name = "hang"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
timeout_ms = 100
{}"#,
        quick_retries(2)
    );
    let report = s.run(&step_timeout).await;
    let p = single(&report);
    assert_eq!((p.dead_lettered, p.retried), (4, 4));
    for r in s.reasons("jobs.ndjson") {
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("timed out after 100 ms"),
            "{r}"
        );
    }
    std::fs::remove_file(s.path("jobs.ndjson.failures.reasons")).unwrap();
    std::fs::remove_file(s.path("jobs.ndjson.checkpoint")).unwrap();
    let job_timeout = step_timeout
        .replace("timeout_ms = 100", "timeout_ms = 60000")
        .replace("name = \"hang\"", "name = \"hang\"\njob_timeout_secs = 1");
    let report = s.run(&job_timeout).await;
    assert_eq!(single(&report).dead_lettered, 4);
    for r in s.reasons("jobs.ndjson") {
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("job_timeout_secs (1 s)"),
            "{r}"
        );
    }
}

/// A Laravel job's own `timeout` outranks job_timeout_secs; with
/// `failOnTimeout` the first attempt that runs out of it fails the job
/// for good, without it the job is retried up to its `maxTries`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laravel_jobs_own_timeout_and_fail_on_timeout_apply() {
    let s = Setup::new(ReceiverConfig {
        hang_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    let job = |id: u32, fail_on_timeout: bool| {
        serde_json::json!({
            "uuid": format!("u-{id}"), "displayName": "App\\Jobs\\Slow",
            "job": "Illuminate\\Queue\\CallQueuedHandler@call",
            "maxTries": 2, "backoff": "0", "timeout": 1, "failOnTimeout": fail_on_timeout,
            "data": {"commandName": "App\\Jobs\\Slow", "command": format!("O:13:\"App\\Jobs\\Slow\":1:{{s:2:\"id\";i:{id};}}")},
        })
        .to_string()
        .into_bytes()
    };
    s.jobs(&[job(1, true), job(2, false)]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "slow"
job_timeout_secs = 60
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
format = "laravel"
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ job.command.id }}"
timeout_ms = 60000
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.dead_lettered, p.retried), (2, 1), "{p:?}");
    let reasons = s.reasons("jobs.ndjson");
    let reason = |uuid: &str| {
        let failures = s.failures("jobs.ndjson");
        let i = failures
            .iter()
            .position(|l| String::from_utf8_lossy(l).contains(uuid))
            .expect("the job is in the failures file");
        reasons[i]["reason"].as_str().unwrap().to_owned()
    };
    let first = reason("u-1");
    assert!(
        first.contains("its own timeout (1 s)") && first.contains("failOnTimeout"),
        "{first}"
    );
    let second = reason("u-2");
    assert!(
        second.contains("its own timeout (1 s)") && second.contains("maxTries"),
        "{second}"
    );
    assert_eq!(s.receiver.total(), 3, "u-1 once, u-2 twice");
}

/// A dropped connection is a retryable failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried() {
    let s = Setup::new(ReceiverConfig {
        reset_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    s.numbered_jobs(5);
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "reset"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
{}"#,
            quick_retries(2)
        ))
        .await;
    let p = single(&report);
    assert_eq!((p.dead_lettered, p.retried), (5, 5));
    for r in s.reasons("jobs.ndjson") {
        let why = r["reason"].as_str().unwrap();
        assert!(
            why.contains("gave up after 2 attempts") && why.contains("failed"),
            "{why}"
        );
    }
}

/// A second run over a finished input re-sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_input_is_not_sent_twice() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.numbered_jobs(30);
    let config = r#"
[[pipeline]]
name = "once"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
"#;
    assert_eq!(single(&s.run(config).await).succeeded, 30);
    let again = s.run(config).await;
    assert_eq!(single(&again).received, 0);
    assert_eq!(s.receiver.total(), 30);
}

/// fetch over HTTP: a 200 object is read; a 5xx is retried then given up;
/// an object over max_bytes fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_over_http_retries_server_errors_and_caps_size() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.jobs(&[
        br#"{"obj": "ok/1.txt"}"#.to_vec(),
        br#"{"obj": "status/503/2.txt"}"#.to_vec(),
    ]);
    let config = |max_bytes: u64| {
        format!(
            r#"
[[pipeline]]
name = "fetch-http"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "fetch"
url = "@URL@/{{{{ body.obj }}}}"
into = "text"
max_bytes = {max_bytes}
[pipeline.step.options]
allow_http = "true"
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ text }}}}"
{}"#,
            quick_retries(2)
        )
    };
    let report = s.run(&config(1024)).await;
    let p = single(&report);
    assert_eq!(
        (p.succeeded, p.dead_lettered, p.retried),
        (1, 1, 1),
        "{p:?}"
    );
    assert!(
        s.receiver.requests().iter().any(|r| r.path == "/jobs/ok"),
        "the object's text was used"
    );
    let reasons = s.reasons("jobs.ndjson");
    let why = reasons[0]["reason"].as_str().unwrap();
    assert!(
        why.contains("gave up after 2 attempts") && why.contains("status/503/2.txt"),
        "{why}"
    );

    std::fs::remove_file(s.path("jobs.ndjson.checkpoint")).unwrap();
    std::fs::remove_file(s.path("jobs.ndjson.failures.reasons")).unwrap();
    s.jobs(&[br#"{"obj": "ok/1.txt"}"#.to_vec()]);
    let report = s.run(&config(1)).await;
    assert_eq!(single(&report).dead_lettered, 1);
    let why = s.reasons("jobs.ndjson")[0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("over max_bytes (1)"), "{why}");
}

/// Telemetry goes through the `metrics` facade: the jobs counter by outcome.
#[test]
fn metrics_count_jobs_by_outcome() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime keeps every task on this thread, where the
    // local recorder is installed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let s = Setup::new(ReceiverConfig::default()).await;
            s.jobs(&[
                br#"{"id": 1}"#.to_vec(),
                b"not json".to_vec(),
                br#"{"id": 2}"#.to_vec(),
            ]);
            s.run(
                r#"
[[pipeline]]
name = "counted"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
"#,
            )
            .await;
        })
    });
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        if k.name() == "sluice_jobs_total" {
            let outcome = k
                .labels()
                .find(|l| l.key() == "outcome")
                .unwrap()
                .value()
                .to_owned();
            if let DebugValue::Counter(n) = value {
                seen.insert(outcome, n);
            }
        }
    }
    assert_eq!(seen.get("succeeded"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("dead_lettered"), Some(&1), "{seen:?}");
}
