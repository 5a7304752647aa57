//! The admin server through the real binary: `sluice run --admin` serves
//! /healthz, /readyz and /metrics while a pipeline works, and refuses a
//! non-loopback address without a token. (The routes themselves have
//! socket-free tests in `src/admin`.)

mod common;

use std::time::Duration;

use common::process;
use sluice::testkit::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(30);

/// A file of `n` jobs posted to `rx`, in `dir`.
fn config(dir: &std::path::Path, n: usize, rx: &Receiver) -> std::path::PathBuf {
    config_with(dir, n, rx, "")
}

/// [`config`] with more pipeline settings.
fn config_with(
    dir: &std::path::Path,
    n: usize,
    rx: &Receiver,
    settings: &str,
) -> std::path::PathBuf {
    let lines: String = (0..n).map(|id| format!("{{\"id\": {id}}}\n")).collect();
    std::fs::write(dir.join("jobs.ndjson"), lines).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[pipeline]]
name = "admin-check"
concurrency = 4
{settings}
[pipeline.source]
type = "file"
path = '{}'
[[pipeline.step]]
type = "http"
url = "{}/jobs/{{{{ body.id }}}}"
"#,
            dir.join("jobs.ndjson").display(),
            rx.url(),
        ),
    )
    .unwrap();
    path
}

/// The test receiver, answering after 20 ms.
async fn receiver_20ms() -> Receiver {
    Receiver::start(ReceiverConfig {
        latency: (Duration::from_millis(20), Duration::from_millis(20)),
        ..ReceiverConfig::default()
    })
    .await
    .unwrap()
}

/// The admin server's address, from the line the run logs.
async fn admin_base(run: &mut process::Running) -> String {
    run.admin_base(WAIT).await
}

/// The admin token the tests that set one use: quotes and a `$` in it,
/// as an env secret may have.
const TOKEN: &str = "tok'en\"with$quotes";

/// GETs `url` with [`TOKEN`] (ignored by a daemon that has none).
async fn get(url: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (res.status().as_u16(), res.text().await.unwrap())
}

/// While the pipeline works: alive, ready, and its counts in Prometheus'
/// text format, moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_readiness_and_metrics() {
    let rx = receiver_20ms().await;
    let dir = tempfile::tempdir().unwrap();
    // 2,000 jobs, 4 at a time at 20 ms: ~10 s, stopped long before.
    let cfg = config(dir.path(), 2000, &rx);
    let mut run = process::start(dir.path(), 0, &cfg, &["--admin", "127.0.0.1:0"]);
    let base = admin_base(&mut run).await;
    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
    tokio::time::timeout(WAIT, rx.wait_for_accepted(40))
        .await
        .expect("jobs reach the receiver");
    let (status, ready) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(r#""admin-check":"running""#), "{ready}");

    let succeeded = |text: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("sluice_jobs_total{")
                    && l.contains(r#"pipeline="admin-check""#)
                    && l.contains(r#"outcome="succeeded""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no succeeded count in:\n{text}"))
    };
    let (status, first) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        first.contains("sluice_job_duration_seconds_bucket{"),
        "durations are histograms with buckets:\n{first}"
    );
    // (CPU seconds are counted whole: 0 this early.)
    for process_metric in ["process_resident_memory_bytes", "process_open_fds"] {
        let value = first
            .lines()
            .find(|l| l.starts_with(&format!("{process_metric} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {process_metric} in:\n{first}"));
        assert!(value > 0.0, "{process_metric} = {value}");
    }
    assert!(
        first.contains("\nprocess_cpu_seconds_total "),
        "no process_cpu_seconds_total in:\n{first}"
    );
    let before = succeeded(&first);
    let target = rx.accepted() + 20;
    tokio::time::timeout(WAIT, rx.wait_for_accepted(target))
        .await
        .expect("more jobs reach the receiver");
    let after = succeeded(&get(&format!("{base}/metrics")).await.1);
    assert!(after > before, "the count moves: {before} then {after}");

    run.signal("TERM");
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", run.log());
}

/// A non-loopback address without SLUICE_ADMIN_TOKEN, or with one under
/// 16 bytes: refused before anything runs, with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_address_needs_a_token() {
    let rx = Receiver::start(ReceiverConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10, &rx);
    let mut run = process::start(dir.path(), 0, &cfg, &["--admin", "0.0.0.0:0"]);
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(run.log().contains("SLUICE_ADMIN_TOKEN"), "{}", run.log());
    // A token anyone could guess guards nothing there either.
    let mut run = process::start_env(
        dir.path(),
        1,
        &cfg,
        &["--admin", "0.0.0.0:0"],
        &[("SLUICE_ADMIN_TOKEN", "x")],
    );
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(run.log().contains("needs at least 16"), "{}", run.log());
    assert_eq!(rx.total(), 0, "nothing ran");
}

/// `sluice demo` starts the admin server and says where, so a newcomer
/// can watch the numbers move on the first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_admin_routes_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "demo",
            "--jobs",
            "500",
            "--concurrency",
            "50",
            "--latency-ms",
            "1",
            "--progress",
            "off",
            "--admin",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run sluice demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("admin server: http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no admin address in:\n{err}"));
    let port: u16 = line
        .trim_start_matches("admin server: http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(port, 0, "the bound port, not the one asked for");
}

/// `sluice ctl` against the running daemon, with its environment.
fn ctl(base: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["ctl", "--admin", base]).args(args);
    cmd.env_remove("SLUICE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("SLUICE_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run sluice ctl")
}

fn ok(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sluice ctl failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn pipeline(base: &str) -> serde_json::Value {
    let (status, body) = get(&format!("{base}/api/pipelines/admin-check")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the pipeline until `cond` holds, for at most [`WAIT`].
async fn until(
    base: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let p = pipeline(base).await;
        if cond(&p) {
            return p;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn n(p: &serde_json::Value, field: &str) -> u64 {
    p[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {p}"))
}

/// An operator resizes, pauses and resumes a running pipeline and one of
/// its destinations with `sluice ctl`; the API, /metrics and the receiver
/// agree on what happened, and a paused destination's held jobs are not
/// timed out; a stop while it holds jobs releases them at once (exit 3:
/// handed back unsettled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resize_pause_and_resume_a_running_pipeline() {
    let rx = receiver_20ms().await;
    let dir = tempfile::tempdir().unwrap();
    // ~200 jobs/s at 4 in flight: 50,000 last far longer than the test.
    let cfg = config_with(dir.path(), 50_000, &rx, "job_timeout_secs = 1");
    let token = TOKEN;
    let mut run = process::start_env(
        dir.path(),
        0,
        &cfg,
        &["--admin", "127.0.0.1:0"],
        &[("SLUICE_ADMIN_TOKEN", token)],
    );
    let base = admin_base(&mut run).await;
    tokio::time::timeout(WAIT, rx.wait_for_accepted(20))
        .await
        .expect("jobs reach the receiver");
    // Reading the API needs the token too.
    let refused = ctl(&base, None, &["status"]);
    assert!(!refused.status.success());
    let status = ok(&ctl(&base, Some(token), &["status"]));
    assert!(
        status.contains("admin-check") && status.contains("/ 4 "),
        "{status}"
    );

    // Changing anything needs the token.
    let refused = ctl(&base, None, &["resize", "admin-check", "12"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("admin token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(n(&pipeline(&base).await, "concurrency"), 4);

    // Resize: the limit is the pool's at once, and more jobs run.
    let out = ok(&ctl(&base, Some(token), &["resize", "admin-check", "12"]));
    assert!(out.contains("/ 12 "), "{out}");
    until(&base, "more than 4 in flight", |p| n(p, "in_flight") > 4).await;
    let metrics = get(&format!("{base}/metrics")).await.1;
    assert!(
        metrics.contains("sluice_concurrency_limit{pipeline=\"admin-check\"} 12"),
        "{metrics}"
    );

    // Pause: in-flight jobs finish and nothing more is taken.
    ok(&ctl(&base, Some(token), &["pause", "admin-check"]));
    let paused = until(&base, "drained while paused", |p| n(p, "in_flight") == 0).await;
    assert_eq!(paused["state"], "paused");
    let (received, sent) = (n(&paused, "received"), rx.total());
    // Absence can only be watched for a while: half a second at ~600
    // jobs/s would have taken hundreds more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        n(&pipeline(&base).await, "received"),
        received,
        "paused: no intake"
    );
    assert_eq!(rx.total(), sent);
    assert!(
        metrics_value(
            &base,
            "sluice_pipeline_paused{pipeline=\"admin-check\",by=\"operator\"}"
        )
        .await
            == 1.0
    );
    let (status, ready) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "a paused pipeline is still ready: {ready}");

    // Resume: intake starts again.
    ok(&ctl(&base, Some(token), &["resume", "admin-check"]));
    until(&base, "receiving again", |p| n(p, "received") > received).await;

    // Pause the one destination: its jobs wait in their slots, past the
    // 1 s job timeout without being timed out, until it is resumed.
    // scheme://host:port, as the receiver's URL is written.
    let destination = rx.url();
    let listed = pipeline(&base).await;
    assert_eq!(
        listed["destinations"][0]["destination"],
        destination.as_str(),
        "{listed}"
    );
    ok(&ctl(
        &base,
        Some(token),
        &["pause-destination", "admin-check", &destination],
    ));
    all_held(&base, &rx).await;
    let sent = rx.total();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.total(), sent, "nothing sent to a paused destination");
    let before = rx.accepted();
    ok(&ctl(
        &base,
        Some(token),
        &["resume-destination", "admin-check", &destination],
    ));
    tokio::time::timeout(WAIT, rx.wait_for_accepted(before + 50))
        .await
        .expect("the held jobs go once the destination is resumed");
    let p = pipeline(&base).await;
    assert_eq!(n(&p, "retried"), 0, "no held job was timed out: {p}");
    assert_eq!(
        ok(&ctl(&base, Some(token), &["failures"])).trim(),
        "no failures"
    );

    // A stop while a destination holds jobs releases them at once, not at
    // the shutdown timeout: they sent nothing.
    ok(&ctl(
        &base,
        Some(token),
        &["pause-destination", "admin-check", &destination],
    ));
    all_held(&base, &rx).await;
    run.signal("TERM");
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(3), "messages were handed back: {log}");
    assert!(log.contains("released unsettled 12"), "{log}");
    assert!(!log.contains("shutdown timeout reached"), "{log}");
}

/// Waits until all 12 slots hold a job and none is at the receiver: the
/// requests that were past the gate when the destination was paused have
/// been answered (received == answered, twice in a row 50 ms apart).
async fn all_held(base: &str, rx: &Receiver) {
    let mut quiet = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while quiet < 2 {
        let p = pipeline(base).await;
        let settled_at_receiver = rx.total() == rx.accepted();
        quiet = if n(&p, "in_flight") == 12 && settled_at_receiver {
            quiet + 1
        } else {
            0
        };
        assert!(std::time::Instant::now() < deadline, "never all held: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_value(base: &str, series: &str) -> f64 {
    let text = get(&format!("{base}/metrics")).await.1;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// The API and `sluice ctl` work against `sluice demo` while it runs: its
/// one pipeline is listed, moving, and can be resized; a stop then lets
/// the jobs in flight finish, so it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let args: Vec<&std::ffi::OsStr> = [
        "demo",
        "--jobs",
        "200000",
        "--concurrency",
        "8",
        "--latency-ms",
        "20",
        "--progress",
        "off",
        "--admin",
        "127.0.0.1:0",
        "--dir",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([work.as_os_str()])
    .collect();
    let mut demo = process::spawn(dir.path(), 0, &args, &[]);
    let line = demo.wait_for_log("admin server: http://", WAIT).await;
    let base = line
        .trim_start_matches("admin server: ")
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    let listed = deadline_poll(&base).await;
    let name = listed["name"].as_str().unwrap().to_owned();
    let status = ok(&ctl(&base, None, &["status"]));
    assert!(status.contains(&name), "{status}");
    let out = ok(&ctl(&base, None, &["resize", &name, "3"]));
    assert!(out.contains("/ 3 "), "{out}");
    let (code, page) = get(&format!("{base}/")).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    demo.signal("INT");
    let status = demo.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", demo.log());
    assert!(demo.log().contains("every job succeeded"), "{}", demo.log());
}

/// The demo's one pipeline, once it has settled a job.
async fn deadline_poll(base: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(&format!("{base}/api/pipelines")).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(p) = v["pipelines"].get(0).filter(|p| n(p, "succeeded") > 0) {
            return p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo settles nothing: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 300 connections that never send a byte (before any token check): the
/// admin server holds at most 64 of them (the rest are closed at once),
/// drops those after the header timeout, and `/healthz` answers again
/// while the flood's sockets are still open on the other side. The
/// process's open descriptors stay bounded throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cannot_starve_the_admin_server() {
    let rx = receiver_20ms().await;
    let dir = tempfile::tempdir().unwrap();
    // 4 at a time at 20 ms: runs past the test.
    let cfg = config(dir.path(), 20_000, &rx);
    let mut run = process::start(dir.path(), 0, &cfg, &["--admin", "127.0.0.1:0"]);
    let base = admin_base(&mut run).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", run.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let before = fds();
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let started = std::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut most = 0;
    loop {
        most = most.max(fds());
        let ok = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "/healthz unreachable for {WAIT:?} under 300 half-open connections\n{}",
            run.log()
        );
    }
    most = most.max(fds());
    assert!(
        most <= before + 64 + 16,
        "{most} descriptors open under the flood, from {before}: the server kept them"
    );
    drop(flood);
    run.signal("KILL");
}
