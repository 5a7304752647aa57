//! Secrets stay out of everything sluice prints or stores: the real binary
//! is run with credentials in the environment, in the URL and in headers,
//! against a receiver whose error pages echo the request's headers, and
//! every file it leaves (logs, failures, reasons, checkpoints) is searched
//! for each secret in every form it could take.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::{Setup, single};
use sluice::testkit::{Receiver, ReceiverConfig};

const TOKEN: &str = "tok-SECRET-4f9a2c77";
const API_KEY: &str = "key-SECRET-0d1e2f33";
const USER: &str = "bob";
const PASSWORD: &str = "pw-SECRET-77e1b0aa";
const QUERY_TOKEN: &str = "qtok-SECRET-1b2b3c4d";

/// Every form of every secret that must not appear.
fn forbidden() -> Vec<String> {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}").as_bytes());
    [
        TOKEN,
        API_KEY,
        PASSWORD,
        QUERY_TOKEN,
        "SECRET",
        basic.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Each file under `dir` but the config, with its text.
fn outputs(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "sluice.toml") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        out.push((
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_stored_reasons() {
    let rx = Receiver::start(ReceiverConfig {
        echo_headers: true,
        ..ReceiverConfig::default()
    })
    .await
    .expect("the receiver starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Permanent (400) and retried (503) failures; both pages echo the
    // request's headers.
    std::fs::write(
        d.join("echo.ndjson"),
        "{\"id\": 1, \"code\": 400}\n{\"id\": 2, \"code\": 503}\n",
    )
    .unwrap();
    // A port no URL can have: the URL, credentials and all, does not parse.
    std::fs::write(d.join("bad-url.ndjson"), "{\"id\": 3, \"port\": 99999}\n").unwrap();
    let port = rx.addr().port();
    let config = format!(
        r#"
[[pipeline]]
name = "echo"
[pipeline.source]
type = "file"
path = '{dir}/echo.ndjson'
[[pipeline.step]]
type = "http"
url = "http://${{CRED}}@127.0.0.1:{port}/status/{{{{ body.code }}}}/{{{{ body.id }}}}?token=${{QUERY_TOKEN}}"
headers = {{ authorization = "Bearer ${{TOKEN}}", x-api-key = "${{API_KEY}}" }}
body = '{{"id": {{{{ body.id }}}}}}'
[pipeline.retry]
max_attempts = 2
backoff = {{ initial_ms = 10, max_ms = 10 }}

[[pipeline]]
name = "bad-url"
[pipeline.source]
type = "file"
path = '{dir}/bad-url.ndjson'
[[pipeline.step]]
type = "http"
url = "http://${{CRED}}@127.0.0.1:{{{{ body.port }}}}/x"
headers = {{ authorization = "Bearer ${{TOKEN}}" }}
"#,
        dir = d.display(),
    );
    std::fs::write(d.join("sluice.toml"), config).unwrap();
    let cred = format!("{USER}:{PASSWORD}");
    let mut run = common::process::start_env(
        d,
        0,
        &d.join("sluice.toml"),
        &[],
        &[
            ("RUST_LOG", "sluice=trace,info"),
            ("TOKEN", TOKEN),
            ("API_KEY", API_KEY),
            ("CRED", &cred),
            ("QUERY_TOKEN", QUERY_TOKEN),
        ],
    );
    run.wait(Duration::from_secs(60)).await;
    let log = run.log();

    // The secrets did go out, so the test means something.
    let sent = rx.requests();
    assert_eq!(sent.len(), 3, "400 once, 503 twice: {sent:?}");
    for r in &sent {
        assert_eq!(r.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
        assert_eq!(r.header("x-api-key"), Some(API_KEY));
        assert_eq!(r.query.as_deref(), Some(&*format!("token={QUERY_TOKEN}")));
    }

    let echo = std::fs::read_to_string(d.join("echo.ndjson.failures.reasons")).unwrap();
    let bad = std::fs::read_to_string(d.join("bad-url.ndjson.failures.reasons")).unwrap();
    assert!(
        echo.contains("400 Bad Request")
            && echo.contains("503 Service Unavailable")
            && echo.contains("you sent")
            && echo.contains("authorization: [redacted]"),
        "the reasons still say what happened:\n{echo}"
    );
    assert!(bad.contains("is not a URL"), "{bad}");
    assert!(log.contains("retry"), "the retry was logged:\n{log}");

    let files = outputs(d);
    assert!(files.len() >= 5, "{files:?}");
    for (file, text) in &files {
        for secret in forbidden() {
            assert!(
                !text.contains(&secret),
                "`{secret}` found in {file}:\n{text}"
            );
        }
    }
}

/// A value registered as a secret (as the config loader registers every
/// `${VAR}` value) is cut from the stored reasons wherever it appears: here
/// in the URL's path, which the reason shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_secrets_in_a_url_path_are_cut_from_reasons() {
    const PATH_SECRET: &str = "path-SECRET-9d8c7b6a";
    sluice::redact::register(PATH_SECRET);
    let s = Setup::new(ReceiverConfig::default()).await;
    s.numbered_jobs(2);
    let report = s
        .run(&format!(
            r#"
[[pipeline]]
name = "hook"
[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/status/404/hooks/{PATH_SECRET}/{{{{ body.id }}}}"
"#
        ))
        .await;
    assert_eq!(single(&report).dead_lettered, 2);
    let requests = s.receiver.requests();
    assert!(requests.iter().all(|r| r.path.contains(PATH_SECRET)));
    let reasons = std::fs::read_to_string(s.path("jobs.ndjson.failures.reasons")).unwrap();
    assert!(reasons.contains("/hooks/[redacted]/"), "{reasons}");
    assert!(!reasons.contains(PATH_SECRET), "{reasons}");
}
