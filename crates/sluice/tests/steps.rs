//! What the steps do to a message on its way out, through the real test
//! receiver: values escaped for where they land in a URL, numbers passed
//! through unchanged, `Retry-After` values that ask for no wait, and
//! failure reasons that name the template and the variable.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Setup, single};
use sluice::testkit::ReceiverConfig;

/// Hostile ids and query values stay inside the path segment or query value
/// they were put in; an id that would climb out of the path is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_values_are_escaped_for_their_part() {
    let s = Setup::new(ReceiverConfig::default()).await;
    // (id, query value, what the receiver sees: path and query, or None
    // when the job is refused)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
    let cases: &[Case<'_>] = &[
        (
            "../../a?b=c#d",
            "x&admin=1",
            Some(("/json/..%2F..%2Fa%3Fb%3Dc%23d", "q=x%26admin%3D1&n=1")),
        ),
        ("a/b", "1+1=2", Some(("/json/a%2Fb", "q=1%2B1%3D2&n=1"))),
        (
            "%2e%2e%2f",
            "#frag",
            Some(("/json/%252e%252e%252f", "q=%23frag&n=1")),
        ),
        (
            "back\\slash",
            "a b",
            Some(("/json/back%5Cslash", "q=a%20b&n=1")),
        ),
        ("ünï", "..", Some(("/json/%C3%BCn%C3%AF", "q=..&n=1"))),
        ("..", "x", None),
        (".", "x", None),
    ];
    let lines: Vec<Vec<u8>> = cases
        .iter()
        .map(|(id, q, _)| serde_json::to_vec(&serde_json::json!({"id": id, "q": q})).unwrap())
        .collect();
    s.jobs(&lines);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "escaped"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/json/{{ body.id }}?q={{ body.q }}&n=1"
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (5, 2), "{p:?}");
    let got: Vec<(String, Option<String>)> = s
        .receiver
        .requests()
        .into_iter()
        .map(|r| (r.path, r.query))
        .collect();
    let want: Vec<(String, Option<String>)> = cases
        .iter()
        .filter_map(|(_, _, w)| w.map(|(p, q)| (p.to_owned(), Some(q.to_owned()))))
        .collect();
    assert_eq!(got, want);
    let reasons = s.reasons("jobs.ndjson");
    assert_eq!(reasons.len(), 2);
    for r in &reasons {
        let why = r["reason"].as_str().unwrap();
        assert!(
            why.contains("template `url`") && why.contains("path segment"),
            "{why}"
        );
    }
}

/// `raw_url` opts out: the value is inserted as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_url_opts_out_of_escaping() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.jobs(&[br#"{"path": "a/b/c", "id": "a/b"}"#.to_vec()]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "raw"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/{{ body.path | raw_url }}/{{ body.id }}"
"#,
        )
        .await;
    assert_eq!(single(&report).succeeded, 1);
    assert_eq!(s.receiver.requests()[0].path, "/a/b/c/a%2Fb");
}

/// Numbers reach the receiver as they were written: through `tojson` of
/// the body, a pointer `extract`, a `fetch` decoded as JSON and plain
/// `{{ }}` printing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_pass_through_unchanged() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let numbers = [
        "123456789012345678901234567890",
        "-98765432109876543210987654321098765432109876543210",
        "1e-400",
        "1.7976931348623157e+309",
        "-0",
        "1.0",
        "1",
        "0.1",
        "3.14159265358979323846264338327950288",
        "18446744073709551616",
    ];
    std::fs::create_dir(s.path("objects")).unwrap();
    let list = format!("[{}]", numbers.join(", "));
    std::fs::write(s.path("objects/n.json"), format!(r#"{{"n": {list}}}"#)).unwrap();
    let lines: Vec<Vec<u8>> = numbers
        .iter()
        .map(|n| format!(r#"{{"v": {n}, "all": {list}}}"#).into_bytes())
        .collect();
    s.jobs(&lines);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "numbers"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "extract"
pointers = { v = "/v" }
[[pipeline.step]]
type = "fetch"
url = 'file://@DIR@/objects/n.json'
into = "obj"
decode = "json"
[[pipeline.step]]
type = "template"
into = "payload"
template = '{"v": {{ v }}, "t": {{ v | tojson }}, "all": {{ body.all | tojson }}, "obj": {{ obj | tojson }}}'
[[pipeline.step]]
type = "http"
url = "@URL@/n"
body = "{{ payload }}"
"#,
        )
        .await;
    assert_eq!(single(&report).succeeded, numbers.len() as u64);
    let list_out = format!("[{}]", numbers.join(","));
    let mut bodies: Vec<String> = s
        .receiver
        .requests()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = numbers
        .iter()
        .map(|n| format!(r#"{{"v": {n}, "t": {n}, "all": {list_out}, "obj": {{"n":{list_out}}}}}"#))
        .collect();
    want.sort();
    assert_eq!(bodies, want);
}

/// A `Retry-After` that asks for no wait (a date that has passed, `0`,
/// `-1`, garbage) falls back to the pipeline's backoff instead of retrying
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_without_a_wait_uses_the_backoff() {
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    for value in [past.as_str(), "0", "-1", "soon"] {
        let s = Setup::new(ReceiverConfig {
            fail_first: 2,
            error_status: 429,
            retry_after: Some(value.to_owned()),
            ..ReceiverConfig::default()
        })
        .await;
        s.numbered_jobs(1);
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
backoff = { initial_ms = 300, max_ms = 300, jitter = false }
"#,
            )
            .await;
        let p = single(&report);
        assert_eq!((p.succeeded, p.retried), (1, 2), "{value}: {p:?}");
        // Two backoffs of 300 ms, not two retries a millisecond apart.
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "{value}: {:?}",
            started.elapsed()
        );
    }
}

/// A template that fails names the template and the variable; a header's
/// template is named by its header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_failures_name_the_template_and_the_variable() {
    let s = Setup::new(ReceiverConfig::default()).await;
    s.jobs(&[
        br#"{"id": 1, "user": {}}"#.to_vec(),
        br#"{"user": {"name": "ann"}}"#.to_vec(),
        br#"{"id": 2, "user": {"name": "bo"}}"#.to_vec(),
    ]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "holes"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
headers = { X-User = "{{ body.user.name }}" }
body = '{"id": {{ body.id }}}'
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (1, 2), "{p:?}");
    let mut reasons: Vec<(u64, String)> = s
        .reasons("jobs.ndjson")
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    let (header, url) = (&reasons[0].1, &reasons[1].1);
    assert!(
        header.contains("template `headers.X-User`") && header.contains("`body.user.name`"),
        "{header}"
    );
    assert!(
        url.contains("template `url`") && url.contains("`body.id` is undefined"),
        "{url}"
    );
}

/// A Laravel job's serialized command read with `extract`'s `from`; a
/// payload whose `data.command` is not a string is dead-lettered saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_commands_are_read_as_text_or_refused() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let job = |command: &str| {
        format!(
            r#"{{"uuid":"u","displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","data":{{"commandName":"App\\Jobs\\SendReport","command":{command}}}}}"#
        )
        .into_bytes()
    };
    s.jobs(&[
        job(r#""O:19:\"App\\Jobs\\SendReport\":1:{s:4:\"file\";s:13:\"report-7.json\";}""#),
        job(r#"{"file": "report-8.json"}"#),
        job(r#"["report-9.json"]"#),
        job(r#""O:19:\"App\\Jobs\\SendReport\":0:{}""#),
    ]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "laravel"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
format = "laravel"
[[pipeline.step]]
type = "extract"
from = "job.data.command"
regex = '"file";s:\d+:"report-(?P<id>\d+)\.json"'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ id }}"
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (1, 3), "{p:?}");
    assert_eq!(s.receiver.requests()[0].path, "/jobs/7");
    let mut reasons: Vec<(u64, String)> = s
        .reasons("jobs.ndjson")
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    let want = [
        "`data.command` is an object",
        "`data.command` is a list",
        "does not match the `job.data.command`",
    ];
    assert_eq!(reasons.len(), want.len(), "{reasons:?}");
    for ((_, why), want) in reasons.iter().zip(want) {
        assert!(why.contains(want), "expected {want:?} in {why:?}");
    }
}

/// A `fetch` URL's values cannot climb out of the object path either:
/// `../` in a value reaches no file outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_values_cannot_climb_out_of_the_path() {
    let s = Setup::new(ReceiverConfig::default()).await;
    std::fs::create_dir(s.path("objects")).unwrap();
    std::fs::write(s.path("objects/a b%.json"), r#"{"v": "inside"}"#).unwrap();
    std::fs::write(s.path("secret.json"), r#"{"v": "outside"}"#).unwrap();
    s.jobs(&[
        br#"{"f": "a b%.json"}"#.to_vec(),
        br#"{"f": "../secret.json"}"#.to_vec(),
        br#"{"f": ".."}"#.to_vec(),
        br#"{"f": "%2e%2e/secret.json"}"#.to_vec(),
    ]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "fetch-escaped"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "fetch"
url = 'file://@DIR@/objects/{{ body.f }}'
into = "obj"
decode = "json"
[[pipeline.step]]
type = "http"
url = "@URL@/got/{{ obj.v }}"
"#,
        )
        .await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (1, 3), "{p:?}");
    let paths: Vec<String> = s.receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/got/inside"]);
}

/// A Laravel job's command, decoded from PHP's `serialize()`, in a
/// template (`job.command.*`) and a JSON pointer (`/command/...`), no
/// regex; the model a job carries shows its class and id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_command_properties_reach_templates_and_pointers() {
    let s = Setup::new(ReceiverConfig::default()).await;
    // SendReport { public $reportId = 7; protected $user = ModelIdentifier(App\Models\User, 42) }
    let command = concat!(
        r#"O:19:\"App\\Jobs\\SendReport\":2:{s:8:\"reportId\";i:7;s:7:\"\u0000*\u0000user\";"#,
        r#"O:45:\"Illuminate\\Contracts\\Database\\ModelIdentifier\":2:{"#,
        r#"s:5:\"class\";s:15:\"App\\Models\\User\";s:2:\"id\";i:42;}}"#
    );
    let line = format!(
        r#"{{"uuid":"u","displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","data":{{"commandName":"App\\Jobs\\SendReport","command":"{command}"}}}}"#
    );
    s.jobs(&[line.into_bytes()]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "laravel"
concurrency = 1
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
format = "laravel"
[[pipeline.step]]
type = "extract"
pointers = { report = "/command/reportId" }
[[pipeline.step]]
type = "http"
url = "@URL@/reports/{{ report }}/users/{{ job.command.user.id }}"
body = '{"model": {{ job.command.user.class | tojson }}}'
"#,
        )
        .await;
    let p = &report.pipelines[0];
    assert_eq!((p.succeeded, p.dead_lettered), (1, 0), "{p:?}");
    let requests = s.receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/reports/7/users/42");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["model"], "App\\Models\\User");
}

/// A CPU-bound template over a large message (a nested `{% for %}` over a
/// 300 KB list) runs out of its instructions and is dead-lettered with a
/// reason naming the limit, well inside the job timeout; the other job is
/// delivered and the run ends by itself (exit code 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_template_is_stopped_by_its_limit() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let items: Vec<String> = (0..60_000).map(|i| i.to_string()).collect();
    s.jobs(&[
        format!(r#"{{"id": 0, "items": [{}]}}"#, items.join(",")).into_bytes(),
        br#"{"id": 1, "items": [1]}"#.to_vec(),
    ]);
    let report = s
        .run(
            r#"
[[pipeline]]
name = "t"
max_body_bytes = 1048576
job_timeout_secs = 300
[pipeline.source]
type = "file"
path = "@DIR@/jobs.ndjson"
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{ body.id }}"
body = '{% for a in body["items"] %}{% for b in body["items"] %}.{% endfor %}{% endfor %}'
"#,
        )
        .await;
    assert_eq!(report.exit_code(), 4, "{report:?}");
    assert_eq!(s.accepted_ids().keys().copied().collect::<Vec<_>>(), [1]);
    let reasons = s.reasons("jobs.ndjson");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let reason = reasons[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("template `body` failed to render")
            && reason.contains("ran out of instructions"),
        "{reason}"
    );
}

/// A response kept with `into` is never cut silently: over the step's
/// `max_response_bytes` the job fails, naming the limit; at the limit it
/// is kept whole. (The test receiver answers `ok`, 2 bytes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_response_over_its_limit_fails_the_job() {
    for (max, delivered) in [(1, false), (2, true)] {
        let s = Setup::new(ReceiverConfig::default()).await;
        s.numbered_jobs(1);
        let report = s
            .run(&format!(
                r#"
[[pipeline]]
name = "t"
[pipeline.source]
type = "file"
path = "@DIR@/jobs.ndjson"
[[pipeline.step]]
type = "http"
url = "@URL@/first/{{{{ body.id }}}}"
into = "answer"
max_response_bytes = {max}
[[pipeline.step]]
type = "http"
url = "@URL@/second/{{{{ answer }}}}"
"#
            ))
            .await;
        let second: Vec<String> = s
            .receiver
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .filter(|p| p.starts_with("/second/"))
            .collect();
        if delivered {
            assert_eq!(report.exit_code(), 0, "{report:?}");
            assert_eq!(second, ["/second/ok"]);
        } else {
            assert_eq!(report.exit_code(), 4, "{report:?}");
            assert!(second.is_empty(), "{second:?}");
            let reason = s.reasons("jobs.ndjson")[0]["reason"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(reason.contains("over max_response_bytes (1)"), "{reason}");
        }
    }
}
