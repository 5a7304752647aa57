//! Shared set-up for the daemon's behaviour tests: a temp dir with a jobs
//! file, the test receiver, and a config run in-process through the same
//! loader and runtime as `sluice run`.

#![allow(dead_code)]

pub mod aws;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod laravel;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice::config;
use sluice::config::RunOptions;
use sluice::runtime::{Progress, RunReport, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub receiver: Receiver,
}

impl Setup {
    pub async fn new(receiver: ReceiverConfig) -> Setup {
        Setup {
            dir: tempfile::tempdir().expect("a temp dir"),
            receiver: Receiver::start(receiver)
                .await
                .expect("the receiver starts"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `jobs.ndjson`, one line per item.
    pub fn jobs(&self, lines: &[Vec<u8>]) -> PathBuf {
        let mut text = Vec::new();
        for l in lines {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        let p = self.path("jobs.ndjson");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `{"id": i}` for each i.
    pub fn numbered_jobs(&self, n: usize) -> PathBuf {
        self.jobs(
            &(0..n)
                .map(|i| format!(r#"{{"id": {i}}}"#).into_bytes())
                .collect::<Vec<_>>(),
        )
    }

    /// Replaces `@DIR@` and `@URL@` in `text`, then runs it to the end.
    pub async fn run(&self, text: &str) -> RunReport {
        let text = text
            .replace("@DIR@", &self.dir.path().display().to_string())
            .replace("@URL@", &self.receiver.url());
        let loaded = config::parse("test.toml", &text, |_| None).unwrap_or_else(|e| panic!("{e}"));
        let run = config::run(
            &loaded,
            RunOptions {
                shutdown: Shutdown::new(),
                progress: Progress::Off,
                stop_when_empty: false,
                admin: None,
            },
        );
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the run ends within a minute")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The reasons file as JSON records.
    pub fn reasons(&self, input: &str) -> Vec<serde_json::Value> {
        read_lines(&self.path(&format!("{input}.failures.reasons")))
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// The failures file's lines.
    pub fn failures(&self, input: &str) -> Vec<Vec<u8>> {
        read_lines(&self.path(&format!("{input}.failures")))
    }

    /// Ids (`/jobs/<id>`) the receiver accepted, with how often.
    pub fn accepted_ids(&self) -> std::collections::BTreeMap<u64, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in self.receiver.requests() {
            if r.status / 100 == 2 {
                if let Some(id) = r.path.rsplit('/').next().and_then(|s| s.parse().ok()) {
                    *m.entry(id).or_insert(0) += 1;
                }
            }
        }
        m
    }
}

pub fn read_lines(p: &Path) -> Vec<Vec<u8>> {
    match std::fs::read(p) {
        Ok(b) => b
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn single(report: &RunReport) -> &sluice::runtime::PipelineReport {
    assert_eq!(report.pipelines.len(), 1);
    &report.pipelines[0]
}

/// A receiver that keeps every request, for tests that read what it got.
pub async fn recording_receiver(config: ReceiverConfig) -> Receiver {
    Receiver::start(ReceiverConfig {
        record: true,
        ..config
    })
    .await
    .expect("the receiver starts")
}

/// Polls `cond` every 10 ms until it holds; fails the test, naming
/// `what`, after `bound`.
pub async fn wait_until(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < bound, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `rx` has accepted `n` requests; fails the test after
/// `bound`, saying how many it had.
pub async fn wait_for_accepted(rx: &Receiver, n: u64, bound: Duration) {
    tokio::time::timeout(bound, rx.wait_for_accepted(n))
        .await
        .unwrap_or_else(|_| panic!("the receiver accepted only {} of {n}", rx.accepted()));
}
