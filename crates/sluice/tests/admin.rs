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
[pipeline.source]
type = "file"
path = '{}'
[[pipeline.step]]
type = "http"
url = "{}/jobs/{{{{ body.id }}}}"
"#,
            dir.join("jobs.ndjson").display(),
            rx.url()
        ),
    )
    .unwrap();
    path
}

async fn get(url: &str) -> (u16, String) {
    let res = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (res.status().as_u16(), res.text().await.unwrap())
}

/// While the pipeline works: alive, ready, and its counts in Prometheus'
/// text format, moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_readiness_and_metrics() {
    let rx = Receiver::start(ReceiverConfig {
        latency: (Duration::from_millis(20), Duration::from_millis(20)),
        ..ReceiverConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 2,000 jobs, 4 at a time at 20 ms: ~10 s, stopped long before.
    let cfg = config(dir.path(), 2000, &rx);
    let mut run = process::start(dir.path(), 0, &cfg, &["--admin", "127.0.0.1:0"]);
    let line = run.wait_for_log("admin server", WAIT).await;
    let addr = line
        .split("address=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let base = format!("http://{addr}");
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

/// A non-loopback address without SLUICE_ADMIN_TOKEN: refused before
/// anything runs, with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_address_needs_a_token() {
    let rx = Receiver::start(ReceiverConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10, &rx);
    let mut run = process::start(dir.path(), 0, &cfg, &["--admin", "0.0.0.0:0"]);
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(run.log().contains("SLUICE_ADMIN_TOKEN"), "{}", run.log());
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
