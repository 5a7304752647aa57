//! `${VAR}` in a config, through the real `sluice` binary: the value a
//! request carries is exactly what the environment holds (a quote cannot
//! add a header, a backslash cannot change the secret), and no value from
//! the environment is ever printed.

use std::path::Path;
use std::process::{Command, Output};

use sluice::testkit::{Receiver, ReceiverConfig};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Runs `sluice <args> -c config` in `dir` with only `env` set.
async fn sluice(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("-c")
        .arg(dir.join("sluice.toml"))
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || cmd.output().expect("run sluice"))
        .await
        .expect("the blocking task ends")
}

fn write(dir: &Path, config: &str, jobs: usize) {
    let lines: String = (0..jobs).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    std::fs::write(dir.join("jobs.ndjson"), lines).expect("write jobs");
    std::fs::write(dir.join("sluice.toml"), config).expect("write config");
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const INJECTION: &str = r#"tok", "x-injected" = "yes"#;
const BACKSLASHES: &str = r#"a\nb\\c\"d\u0041"#;
const DOLLARS: &str = "${SLUICE_T_TOKEN} $${x}";
const BODY: &str = "{\"note\": \"line 1\nline 2\\t\", \"tab\": \"\t\"}\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_exactly_what_the_environment_holds() {
    let rx = Receiver::start(ReceiverConfig::default())
        .await
        .expect("the receiver starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = format!(
        r#"[[pipeline]]
name = "t"
concurrency = "${{SLUICE_T_WORKERS}}"
[pipeline.source]
type = "file"
path = "jobs.ndjson"
[[pipeline.step]]
type = "http"
url = "{url}/jobs/{{{{ body.id }}}}"
headers = {{ authorization = "Bearer ${{SLUICE_T_TOKEN}}", x-raw = '${{SLUICE_T_RAW}}', x-dollar = "${{SLUICE_T_DOLLAR}}", x-default = "${{SLUICE_T_UNSET:-plain}}" }}
body = """
${{SLUICE_T_BODY}}"""
"#,
        url = rx.url()
    );
    write(dir.path(), &config, 3);
    let env = [
        ("SLUICE_T_WORKERS", "2"),
        ("SLUICE_T_TOKEN", INJECTION),
        ("SLUICE_T_RAW", BACKSLASHES),
        ("SLUICE_T_DOLLAR", DOLLARS),
        ("SLUICE_T_BODY", BODY),
    ];
    let out = sluice(dir.path(), &["run", "--progress", "off"], &env).await;
    let log = printed(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let requests = rx.requests();
    assert_eq!(requests.len(), 3, "{log}");
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {INJECTION}").as_str())
        );
        assert_eq!(r.header("x-injected"), None, "a quote added a header");
        assert_eq!(r.header("x-raw"), Some(BACKSLASHES));
        assert_eq!(r.header("x-dollar"), Some(DOLLARS), "substituted twice");
        assert_eq!(r.header("x-default"), Some("plain"));
        assert_eq!(r.body, BODY.as_bytes(), "newlines, tabs, escapes");
    }
    for secret in [INJECTION, BACKSLASHES] {
        assert!(!log.contains(secret), "`{secret}` printed:\n{log}");
    }
}

const PATH_SECRET: &str = "path-secret-5d1e";
const HEADER_SECRET: &str = "header-secret-77a0";

/// Jobs fail with reasons that quote the URL, whose path holds a secret:
/// every line sluice prints has it cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_never_prints_a_value_from_the_environment() {
    let rx = Receiver::start(ReceiverConfig {
        error_rate: 1.0,
        error_status: 400,
        ..ReceiverConfig::default()
    })
    .await
    .expect("the receiver starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = format!(
        r#"[[pipeline]]
name = "t"
[pipeline.source]
type = "file"
path = "jobs.ndjson"
[[pipeline.step]]
type = "http"
url = "{url}/jobs/${{SLUICE_T_PATH}}/{{{{ body.id }}}}"
headers = {{ authorization = "Bearer ${{SLUICE_T_HEADER}}" }}
"#,
        url = rx.url()
    );
    write(dir.path(), &config, 4);
    let env = [
        ("SLUICE_T_PATH", PATH_SECRET),
        ("SLUICE_T_HEADER", HEADER_SECRET),
    ];
    let out = sluice(dir.path(), &["run", "--progress", "off"], &env).await;
    let log = printed(&out);
    assert_eq!(rx.total(), 4, "every job was tried once: {log}");
    for r in rx.requests() {
        assert!(r.path.contains(PATH_SECRET), "{}", r.path);
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {HEADER_SECRET}").as_str())
        );
    }
    // The reasons were printed, with the secret cut.
    assert!(log.contains("/jobs/[redacted]/"), "{log}");
    for secret in [PATH_SECRET, HEADER_SECRET] {
        assert!(!log.contains(secret), "`{secret}` printed:\n{log}");
    }
}

/// A config error about a value from the environment names the field, not
/// the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_never_prints_a_value_from_the_environment() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = r#"[[pipeline]]
name = "t"
[pipeline.source]
type = "file"
path = "jobs.ndjson"
[[pipeline.step]]
type = "http"
url = "${SLUICE_T_URL}"
"#;
    write(dir.path(), config, 1);
    let secret = "not a url but a secret-31c9";
    let out = sluice(dir.path(), &["check"], &[("SLUICE_T_URL", secret)]).await;
    let log = printed(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("sluice.toml:8: pipeline[0].step[0].url: `[redacted]` is not a URL"),
        "{log}"
    );
    assert!(!log.contains(secret), "{log}");

    // Unset: the variable is named, with what to do.
    let out = sluice(dir.path(), &["check"], &[]).await;
    let log = printed(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "sluice.toml:8: environment variable `SLUICE_T_URL` is not set; set it, or write `${SLUICE_T_URL:-default}`"
        ),
        "{log}"
    );
}

/// Names from the environment are not secrets: a pipeline named by one and
/// a `failures` path from another are printed as they are (the summary,
/// the job lines, the failure reasons), while the header's token from the
/// environment is still cut everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_environment_stay_readable_secrets_do_not() {
    let rx = Receiver::start(ReceiverConfig {
        error_rate: 1.0,
        error_status: 400,
        echo_headers: true,
        ..ReceiverConfig::default()
    })
    .await
    .expect("the receiver starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = format!(
        r#"[[pipeline]]
name = "${{SLUICE_T_NAME}}"
[pipeline.source]
type = "file"
path = "jobs.ndjson"
failures = "${{SLUICE_T_FAILURES}}"
[[pipeline.step]]
type = "http"
url = "{url}/jobs/{{{{ body.id }}}}"
headers = {{ authorization = "Bearer ${{SLUICE_T_TOKEN}}" }}
"#,
        url = rx.url()
    );
    write(dir.path(), &config, 2);
    let token = "tok-from-env-5150";
    let env = [
        ("SLUICE_T_NAME", "reports"),
        ("SLUICE_T_FAILURES", "retry.ndjson"),
        ("SLUICE_T_TOKEN", token),
        ("RUST_LOG", "info"),
    ];
    let out = sluice(dir.path(), &["run", "--progress", "log"], &env).await;
    let log = printed(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(log.contains("pipeline=reports"), "{log}");
    assert!(log.contains("reports:"), "the summary names it: {log}");
    assert!(!log.contains(token), "{log}");
    let reasons = std::fs::read_to_string(dir.path().join("retry.ndjson.reasons"))
        .expect("the failures file is where its variable says");
    assert!(!reasons.contains(token), "{reasons}");
    assert!(
        !log.contains("[redacted]:") && !log.contains("pipeline=[redacted]"),
        "{log}"
    );
}
