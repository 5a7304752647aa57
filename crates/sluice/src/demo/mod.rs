//! `sluice demo`: the real pipeline on generated data, needing no server.
//!
//! It writes sample jobs (NDJSON) and report objects into a directory,
//! starts the [test receiver](crate::testkit) on loopback with 20–50 ms of
//! latency, writes a config file for them, and runs it through the same
//! config loader and runtime as `sluice run`: file source -> extract ->
//! fetch (a `file://` object store) -> template -> HTTP POST -> ack.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::config;
use crate::config::RunOptions;
use crate::runtime::{Progress, RunReport, Shutdown};
use crate::testkit::{Receiver, ReceiverConfig};

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Jobs to run.
    pub jobs: u64,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// The receiver's latency range.
    pub latency: (Duration, Duration),
    /// Distinct report objects the jobs point at.
    pub objects: u64,
    /// Where to put the files; a temporary directory when None.
    pub dir: Option<PathBuf>,
    pub progress: Progress,
    /// The admin server to register the pipeline with (`sluice demo`
    /// starts one).
    pub admin: Option<std::sync::Arc<crate::admin::AdminState>>,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            jobs: 100_000,
            concurrency: 1_000,
            latency: (Duration::from_millis(20), Duration::from_millis(50)),
            objects: 1_000,
            dir: None,
            progress: Progress::Auto,
            admin: None,
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoOutcome {
    pub report: RunReport,
    /// Requests the receiver accepted (2xx).
    pub delivered: u64,
    pub config_file: PathBuf,
}

/// The demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("preparing the demo files failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the demo config is invalid (a bug): {0}")]
    Config(#[from] config::ConfigError),
}

const CONFIG: &str = r#"# Written by `sluice demo`; run it again with `sluice run -c <this file>`
# while a receiver listens at the URL below.
shutdown_timeout_secs = 10

[[pipeline]]
name = "demo"
concurrency = @CONCURRENCY@

[pipeline.source]
type = "file"
path = '@DIR@/jobs.ndjson'
format = "json"

# {"id": 7, "user": "user-7@example.com", "report": "report-7.json"}
[[pipeline.step]]
type = "extract"
pointers = { id = "/id", user = "/user", report_name = "/report" }

[[pipeline.step]]
type = "fetch"
url = 'file://@DIR@/objects/{{ report_name }}'
into = "report"
decode = "json"

[[pipeline.step]]
type = "template"
into = "payload"
template = '{"id": {{ id }}, "user": {{ user | tojson }}, "report": {{ report | tojson }}}'

[[pipeline.step]]
type = "http"
url = "@URL@/reports/{{ id }}"
body = "{{ payload }}"
max_in_flight = @CONCURRENCY@

[pipeline.retry]
max_attempts = 5
backoff = { initial_ms = 200, max_ms = 5000, jitter = true }
"#;

/// Runs the demo; `shutdown` stops it early like SIGTERM would.
pub async fn run(cfg: &DemoConfig, shutdown: Shutdown) -> Result<DemoOutcome, DemoError> {
    let temp;
    let dir = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("sluice-demo-").tempdir()?;
            temp.path().to_owned()
        }
    };
    write_inputs(&dir, cfg.jobs, cfg.objects.max(1))?;
    let receiver = Receiver::start(ReceiverConfig {
        latency: cfg.latency,
        record: false,
        ..ReceiverConfig::default()
    })
    .await?;
    let text = CONFIG
        .replace("@DIR@", &dir.display().to_string())
        .replace("@URL@", &receiver.url())
        .replace("@CONCURRENCY@", &cfg.concurrency.to_string());
    let config_file = dir.join("demo.toml");
    std::fs::write(&config_file, &text)?;
    let loaded = config::parse(&config_file.display().to_string(), &text, |_| None)?;
    eprintln!(
        "sluice demo: {} jobs -> extract -> fetch (file:// object store) -> template -> \
         HTTP POST to {} ({}-{} ms latency), {} in flight",
        cfg.jobs,
        receiver.url(),
        cfg.latency.0.as_millis(),
        cfg.latency.1.as_millis(),
        cfg.concurrency
    );
    let report = config::run(
        &loaded,
        RunOptions {
            shutdown,
            progress: cfg.progress,
            stop_when_empty: false,
            admin: cfg.admin.clone(),
        },
    )
    .await?;
    Ok(DemoOutcome {
        report,
        delivered: receiver.accepted(),
        config_file,
    })
}

fn write_inputs(dir: &std::path::Path, jobs: u64, objects: u64) -> std::io::Result<()> {
    let objects_dir = dir.join("objects");
    std::fs::create_dir_all(&objects_dir)?;
    for k in 0..objects {
        let report = serde_json::json!({
            "report": k,
            "period": "2026-11",
            "rows": (0..5).map(|r| serde_json::json!({"sku": format!("sku-{}", (k * 7 + r) % 97), "qty": (k + r) % 13})).collect::<Vec<_>>(),
        });
        std::fs::write(
            objects_dir.join(format!("report-{k}.json")),
            report.to_string(),
        )?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("jobs.ndjson"))?);
    let mut line = String::new();
    for i in 0..jobs {
        line.clear();
        let _ = writeln!(
            line,
            r#"{{"id": {i}, "user": "user-{i}@example.com", "report": "report-{}.json"}}"#,
            i % objects
        );
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    // A rerun starts over rather than resuming a finished run.
    for stale in [
        "jobs.ndjson.checkpoint",
        "jobs.ndjson.failures",
        "jobs.ndjson.failures.reasons",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(())
}
