//! The bad-input corpus (`tests/corpus/*.toml`, described in
//! `tests/corpus/README.md`), each case followed by a good line, through
//! the file source and through SQS (the emulator, started by
//! `scripts/services`), one pipeline per format, each job ending in a real
//! HTTP call to the test receiver: every good line is delivered exactly
//! once, every bad one is dead-lettered with a reason naming what and why,
//! and the run ends by itself with nothing left behind.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::aws::{counts, create_queue, drain, moto, sqs, unique};
use common::read_lines;
use serde::Deserialize;
use sluice::config;
use sluice::config::RunOptions;
use sluice::runtime::{End, Progress, RunReport, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

const FORMATS: [&str; 3] = ["json", "raw", "laravel"];

#[derive(Debug, Deserialize)]
struct CaseFile {
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    line: Option<String>,
    hex: Option<String>,
    expect: Expect,
    id: Option<String>,
    #[serde(default)]
    reason: Vec<String>,
    #[serde(default)]
    file_only: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Good,
    Bad,
    Skip,
    Either,
}

/// One input line and what must become of it.
#[derive(Debug)]
struct Case {
    format: &'static str,
    name: String,
    line: Vec<u8>,
    expect: Expect,
    /// Where a delivery of it lands: `/<format>/<id>`.
    path: Option<String>,
    reason: Vec<String>,
    file_only: bool,
}

impl Case {
    fn what(&self) -> String {
        format!("{} case {:?}", self.format, self.name)
    }

    /// The line as the file source hands it on (a CR before the newline
    /// is not part of it).
    fn body(&self) -> &[u8] {
        self.line.strip_suffix(b"\r").unwrap_or(&self.line)
    }
}

/// `<<TEXT*N>>` stands for TEXT repeated N times.
fn expand(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(">>").expect("`<<` without `>>`") + start;
        let inner = &rest[start + 2..end];
        let (text, n) = inner.rsplit_once('*').expect("`<<TEXT*N>>`");
        out.push_str(&text.repeat(n.parse().expect("a repeat count")));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load(format: &'static str) -> Vec<Case> {
    let path = format!("{}/tests/corpus/{format}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let file: CaseFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cases: Vec<Case> = file
        .case
        .into_iter()
        .map(|c| {
            let line = match (&c.line, &c.hex) {
                (Some(l), None) => expand(l).into_bytes(),
                (None, Some(h)) => hex(h),
                _ => panic!("{path}: {:?}: give `line` or `hex`", c.name),
            };
            assert!(!line.contains(&b'\n'), "{path}: {:?}: one line", c.name);
            let needs_id = matches!(c.expect, Expect::Good | Expect::Either);
            assert_eq!(
                needs_id,
                c.id.is_some(),
                "{path}: {:?}: `id` for good lines only",
                c.name
            );
            if c.expect == Expect::Bad || c.expect == Expect::Either {
                assert!(!c.reason.is_empty(), "{path}: {:?}: say why", c.name);
            }
            Case {
                format,
                name: c.name,
                line,
                expect: c.expect,
                path: c.id.map(|id| format!("/{format}/{id}")),
                reason: c.reason,
                file_only: c.file_only,
            }
        })
        .collect();
    let mut lines: Vec<&[u8]> = cases.iter().map(|c| c.body()).collect();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), cases.len(), "{path}: every line is different");
    cases
}

/// The good line put after case `i`.
fn filler(format: &str, i: usize) -> (Vec<u8>, String) {
    let id = 90_000 + i;
    let line = match format {
        "json" => format!(r#"{{"id": {id}, "filler": true}}"#),
        "raw" => format!("job-{id} filler"),
        "laravel" => format!(
            r#"{{"uuid":"f-{id}","displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":3,"data":{{"commandName":"App\\Jobs\\SendReport","command":"O:19:\"App\\Jobs\\SendReport\":1:{{s:4:\"file\";s:17:\"report-{id}.json\";}}"}}}}"#
        ),
        _ => unreachable!(),
    };
    (line.into_bytes(), format!("/{format}/{id}"))
}

/// Each format's pipeline: pull out the id, POST to `/<format>/<id>`.
fn steps(format: &str) -> &'static str {
    match format {
        "json" => {
            r#"
[[pipeline.step]]
type = "extract"
pointers = { id = "/id" }
[[pipeline.step]]
type = "http"
url = "@URL@/json/{{ id }}"
body = '{{ body | tojson }}'
"#
        }
        "raw" => {
            r#"
[[pipeline.step]]
type = "extract"
regex = '^job-(?P<id>\d+)\b'
[[pipeline.step]]
type = "http"
url = "@URL@/raw/{{ id }}"
body = '{{ body | tojson }}'
"#
        }
        "laravel" => {
            r#"
[[pipeline.step]]
type = "extract"
regex = 'report-(?P<id>\d+)\.json'
[[pipeline.step]]
type = "http"
url = "@URL@/laravel/{{ id }}"
body = '{"job": {{ job.displayName | tojson }}}'
"#
        }
        _ => unreachable!(),
    }
}

fn pipeline(format: &str, source: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "{format}"
concurrency = 16
max_body_bytes = 65536
[pipeline.retry]
max_attempts = 1
[pipeline.source]
format = "{format}"
{source}
{}"#,
        steps(format)
    )
}

async fn run(text: &str, stop_when_empty: bool) -> RunReport {
    let loaded = config::parse("corpus.toml", text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let run = config::run(
        &loaded,
        RunOptions {
            shutdown: Shutdown::new(),
            progress: Progress::Off,
            stop_when_empty,
            admin: None,
        },
    );
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the run ends by itself")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Deliveries by path, 2xx only.
fn accepted(rx: &Receiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rx.requests() {
        if r.status / 100 == 2 {
            *m.entry(r.path.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// What became of the lines of one format: deliveries, and dead-letter
/// reasons by line. Checks every case, and every filler, against it.
fn judge(
    cases: &[&Case],
    fillers: &[String],
    delivered: &BTreeMap<String, usize>,
    reasons: &BTreeMap<usize, String>,
    failures: &mut Vec<String>,
) {
    let mut expected_paths: Vec<&str> = fillers.iter().map(String::as_str).collect();
    for f in fillers {
        if delivered.get(f) != Some(&1) {
            failures.push(format!("filler {f} delivered {:?} times", delivered.get(f)));
        }
    }
    for (i, c) in cases.iter().enumerate() {
        let times = c.path.as_ref().and_then(|p| delivered.get(p)).copied();
        let reason = reasons.get(&i);
        let good = times == Some(1) && reason.is_none();
        let bad = times.is_none()
            && reason.is_some_and(|r| c.reason.iter().all(|f| r.contains(f.as_str())));
        let ok = match c.expect {
            Expect::Good => good,
            Expect::Bad => bad,
            Expect::Either => good || bad,
            Expect::Skip => times.is_none() && reason.is_none(),
        };
        if let Some(p) = &c.path {
            expected_paths.push(p);
        }
        let outcome = format!("delivered {times:?} times, reason {reason:?}");
        if ok {
            continue;
        }
        failures.push(format!(
            "{}: expected {:?} {:?}, got {outcome}",
            c.what(),
            c.expect,
            c.reason
        ));
    }
    for (path, n) in delivered {
        if path.starts_with(&format!("/{}/", cases[0].format))
            && !expected_paths.contains(&path.as_str())
        {
            failures.push(format!("{path} delivered {n} times, but no line has it"));
        }
    }
}

/// Through the file source: the three formats as three pipelines of one
/// run, the json file starting with a byte order mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_the_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(ReceiverConfig::default()).await.unwrap();
    let mut text = String::new();
    let mut inputs = Vec::new();
    for format in FORMATS {
        let cases = load(format);
        // A BOM is skipped, not part of the first line, which starts at
        // byte 3: the reasons' offsets below say so.
        let mut file = if format == "json" {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        let mut offsets = BTreeMap::new();
        let mut fillers = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            offsets.insert(file.len() as u64, i);
            file.extend_from_slice(&c.line);
            file.push(b'\n');
            let (line, path) = filler(format, i);
            file.extend_from_slice(&line);
            file.push(b'\n');
            fillers.push(path);
        }
        let path = dir.path().join(format!("{format}.ndjson"));
        std::fs::write(&path, &file).unwrap();
        text.push_str(&pipeline(
            format,
            &format!("type = \"file\"\npath = '{}'", path.display()),
        ));
        inputs.push((format, cases, offsets, fillers, path));
    }
    let report = run(&text.replace("@URL@", &rx.url()), false).await;

    let delivered = accepted(&rx);
    let mut failures = Vec::new();
    for (format, cases, offsets, fillers, path) in inputs {
        let p = report.pipelines.iter().find(|p| p.name == format).unwrap();
        assert_eq!(p.end, End::Exhausted, "{p:?}");
        assert_eq!(p.settle_errors, 0, "{p:?}");
        let reasons_file = format!("{}.failures.reasons", path.display());
        let mut reasons = BTreeMap::new();
        for r in read_lines(std::path::Path::new(&reasons_file)) {
            let r: serde_json::Value = serde_json::from_slice(&r).unwrap();
            let at = r["offset"].as_u64().unwrap();
            let Some(&i) = offsets.get(&at) else {
                failures.push(format!("{format}: a filler line at {at} failed: {r}"));
                continue;
            };
            let before = reasons.insert(i, r["reason"].as_str().unwrap().to_owned());
            assert!(before.is_none(), "{format}: line {at} dead-lettered twice");
        }
        let cases: Vec<&Case> = cases.iter().collect();
        judge(&cases, &fillers, &delivered, &reasons, &mut failures);
        // Each dead-lettered line is in the failures file as it was.
        let mut kept = read_lines(std::path::Path::new(&format!(
            "{}.failures",
            path.display()
        )));
        let mut dead: Vec<Vec<u8>> = reasons.keys().map(|&i| cases[i].body().to_vec()).collect();
        kept.sort();
        dead.sort();
        if kept != dead {
            failures.push(format!(
                "{format}: the failures file does not hold exactly the dead-lettered lines"
            ));
        }
        assert_eq!(p.dead_lettered as usize, reasons.len(), "{format}: {p:?}");
        println!(
            "{format}: {} cases, {} dead-lettered, {} delivered",
            cases.len(),
            p.dead_lettered,
            p.succeeded
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Through SQS: each format's cases (those SQS can carry) and fillers in a
/// queue of its own, drained with `--stop-when-empty`; dead letters are
/// read back from each DLQ with their reason attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_sqs() {
    let client = sqs().await;
    let rx = Receiver::start(ReceiverConfig::default()).await.unwrap();
    let mut text = String::from("shutdown_timeout_secs = 10\n");
    let mut queues = Vec::new();
    for format in FORMATS {
        let cases: Vec<Case> = load(format)
            .into_iter()
            .filter(|c| !c.file_only && c.expect != Expect::Skip)
            .collect();
        let queue = create_queue(&client, &unique(&format!("corpus-{format}")), 30).await;
        let dlq = create_queue(&client, &unique(&format!("corpus-{format}-dlq")), 30).await;
        let mut fillers = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let (line, path) = filler(format, i);
            fillers.push(path);
            for body in [&c.line, &line] {
                let body = String::from_utf8(body.clone()).expect("SQS bodies are text");
                client
                    .send_message()
                    .queue_url(&queue)
                    .message_body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{}: send: {e:?}", c.what()));
            }
        }
        text.push_str(&pipeline(
            format,
            &format!(
                r#"type = "sqs"
queue_url = "{queue}"
dead_letter_queue_url = "{dlq}"
endpoint = "{moto}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
wait_time_secs = 1
pollers = 1
delete_batches_in_flight = 1"#,
                moto = moto()
            ),
        ));
        queues.push((format, cases, fillers, queue, dlq));
    }
    let report = run(&text.replace("@URL@", &rx.url()), true).await;

    let delivered = accepted(&rx);
    let mut failures = Vec::new();
    for (format, cases, fillers, queue, dlq) in queues {
        let p = report.pipelines.iter().find(|p| p.name == format).unwrap();
        assert_eq!(p.end, End::Exhausted, "{p:?}");
        assert_eq!(p.settle_errors, 0, "{p:?}");
        assert_eq!(counts(&client, &queue).await, (0, 0), "{format}: drained");
        let mut reasons = BTreeMap::new();
        for m in drain(&client, &dlq).await {
            let body = m.body().unwrap_or_default().as_bytes();
            let reason = m
                .message_attributes()
                .and_then(|a| a.get("sluice_dead_letter_reason"))
                .and_then(|v| v.string_value())
                .unwrap_or("(no reason attribute)")
                .to_owned();
            let Some(i) = cases.iter().position(|c| c.line == body) else {
                failures.push(format!(
                    "{format}: a line no case has was dead-lettered ({reason}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                ));
                continue;
            };
            let before = reasons.insert(i, reason);
            assert!(before.is_none(), "{}: dead-lettered twice", cases[i].what());
        }
        let cases: Vec<&Case> = cases.iter().collect();
        judge(&cases, &fillers, &delivered, &reasons, &mut failures);
        println!(
            "{format}: {} cases over SQS, {} dead-lettered, {} delivered",
            cases.len(),
            p.dead_lettered,
            p.succeeded
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
