//! The `sluice` binary as a child process: SIGTERM, a forcing second
//! signal and `kill -9`, each followed by a rerun that resumes from the file
//! source's checkpoint, against the fault-injecting receiver; and the
//! messages of `sluice check`.
//!
//! Every job is `POST /jobs/<id>`, so the receiver's record says which jobs
//! were delivered and how often.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{self, Running};
use sluice::testkit::{Receiver, ReceiverConfig};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// The bound on every wait; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn receiver(latency: (Duration, Duration)) -> Receiver {
    common::recording_receiver(ReceiverConfig {
        latency,
        ..ReceiverConfig::default()
    })
    .await
}

/// A jobs file of `{"id": N}` lines and a config that posts each to the
/// receiver, in a temporary directory that also holds the checkpoint, the
/// failures file and the logs of each run.
struct Trial {
    dir: TempDir,
    config: PathBuf,
    runs: usize,
}

impl Trial {
    fn new(jobs: u64, concurrency: usize, shutdown_timeout_secs: u64, rx: &Receiver) -> Trial {
        let dir = tempfile::tempdir().expect("a temp dir");
        let input = dir.path().join("jobs.ndjson");
        let lines: String = (0..jobs).map(|id| format!("{{\"id\": {id}}}\n")).collect();
        std::fs::write(&input, lines).expect("write the jobs");
        let config = dir.path().join("sluice.toml");
        let text = format!(
            r#"shutdown_timeout_secs = {shutdown_timeout_secs}
[[pipeline]]
name = "t"
concurrency = {concurrency}
[pipeline.source]
type = "file"
path = '{input}'
format = "json"
[[pipeline.step]]
type = "http"
url = "{url}/jobs/{{{{ body.id }}}}"
body = '{{"id": {{{{ body.id }}}}}}'
"#,
            input = input.display(),
            url = rx.url(),
        );
        std::fs::write(&config, text).expect("write the config");
        Trial {
            dir,
            config,
            runs: 0,
        }
    }

    /// Starts `sluice run`; its stdout and stderr go to `run-<n>.log`.
    fn start(&mut self) -> Running {
        self.runs += 1;
        process::start(self.dir.path(), self.runs, &self.config, &[])
    }

    /// Runs to the end; asserts exit code 0.
    async fn run_to_completion(&mut self) {
        let mut run = self.start();
        let status = run.wait(WAIT).await;
        assert_eq!(status.code(), Some(0), "the rerun failed:\n{}", run.log());
    }
}

/// Polls `cond` every 10 ms; fails the test with `what` after [`WAIT`].
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    common::wait_until(what, WAIT, cond).await;
}

async fn wait_for_accepted(rx: &Receiver, n: u64) {
    common::wait_for_accepted(rx, n, WAIT).await;
}

/// How often the receiver accepted each job id.
fn acceptances(rx: &Receiver) -> BTreeMap<u64, u64> {
    let mut by_id = BTreeMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        let id: u64 = r
            .path
            .strip_prefix("/jobs/")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected path {}", r.path));
        assert_eq!(r.body, format!("{{\"id\": {id}}}"), "body of {}", r.path);
        *by_id.entry(id).or_default() += 1;
    }
    by_id
}

/// Acceptances beyond the first, per id.
fn duplicates(by_id: &BTreeMap<u64, u64>) -> Vec<(u64, u64)> {
    by_id
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect()
}

/// SIGTERM lets in-flight jobs finish and settles them (exit 0); the rerun
/// skips every settled line, so each job is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_loses_nothing_and_duplicates_nothing() {
    graceful_stop_loses_nothing_and_duplicates_nothing("TERM").await;
}

/// SIGHUP (a closed terminal, a `kill -HUP` meant as a reload) stops as
/// SIGTERM does, not with the signal's default death: a drain, exit 0,
/// a summary, nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_stops_gracefully_as_sigterm_does() {
    graceful_stop_loses_nothing_and_duplicates_nothing("HUP").await;
}

async fn graceful_stop_loses_nothing_and_duplicates_nothing(signal: &str) {
    let jobs = 3000;
    let rx = receiver((ms(20), ms(40))).await;
    let mut trial = Trial::new(jobs, 50, 10, &rx);

    let mut run = trial.start();
    wait_for_accepted(&rx, 500).await;
    run.signal(signal);
    let took = Instant::now();
    let status = run.wait(Duration::from_secs(30)).await;
    let first = rx.accepted();
    println!(
        "SIG{signal} at >= 500 accepted: exited {status} after {:?}, {first} accepted",
        took.elapsed()
    );
    assert_eq!(status.code(), Some(0), "graceful stop:\n{}", run.log());
    assert!(first < jobs, "the run ended before SIG{signal} stopped it");
    assert!(
        run.log().contains(&format!("SIG{signal}")),
        "the stop names its signal:\n{}",
        run.log()
    );

    trial.run_to_completion().await;
    let by_id = acceptances(&rx);
    process::assert_all_delivered(&by_id, jobs);
    let dups = duplicates(&by_id);
    assert!(
        dups.is_empty(),
        "{} jobs delivered more than once after a graceful stop, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(10)]
    );
}

/// A second SIGTERM cuts the shutdown timeout short: in-flight jobs are
/// released at once (exit 3), and the rerun delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_forces_and_the_rerun_finishes() {
    let (jobs, concurrency) = (200, 50);
    let rx = receiver((ms(2000), ms(3000))).await;
    let mut trial = Trial::new(jobs, concurrency, 30, &rx);

    let mut run = trial.start();
    wait_until("a full pool of requests in flight", || {
        rx.total() >= concurrency as u64
    })
    .await;
    run.signal("TERM");
    // Two signals in a row may be merged into one; wait for the first to land.
    wait_until("the graceful stop to begin", || {
        run.log().contains("stopping: no new jobs")
    })
    .await;
    run.signal("TERM");
    let took = Instant::now();
    let status = run.wait(Duration::from_secs(20)).await;
    println!(
        "second SIGTERM: exited {status} after {:?} ({} requests answered)",
        took.elapsed(),
        rx.accepted()
    );
    assert_eq!(status.code(), Some(3), "forced stop:\n{}", run.log());
    assert!(rx.accepted() < jobs, "every job finished before the stop");

    rx.set_config(ReceiverConfig::default());
    trial.run_to_completion().await;
    process::assert_all_delivered(&acceptances(&rx), jobs);
}

/// SIGTERM while every job waits out a retry's backoff: nothing is
/// settled, so the run exits 3 and says how many went back (the bug this
/// replaced: exit 0 and "every message received was settled"). The rerun
/// delivers every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_backoff_exits_3_with_the_count_released() {
    let (jobs, concurrency) = (40, 100);
    let rx = receiver((ms(1), ms(2))).await;
    rx.set_config(ReceiverConfig {
        error_rate: 1.0,
        record: true,
        ..ReceiverConfig::default()
    });
    let mut trial = Trial::new(jobs, concurrency, 10, &rx);
    let text = std::fs::read_to_string(&trial.config).unwrap()
        + "[pipeline.retry]\nmax_attempts = 5\nbackoff = { initial_ms = 60000, jitter = false }\n";
    std::fs::write(&trial.config, text).unwrap();

    // At `debug` every failure is logged, not only the first few.
    trial.runs += 1;
    let mut run = process::start_env(
        trial.dir.path(),
        trial.runs,
        &trial.config,
        &[],
        &[("RUST_LOG", "debug")],
    );
    wait_until("every job to fail once", || rx.total() >= jobs).await;
    wait_until("every failure to be logged", || {
        run.log().matches("will retry").count() as u64 >= jobs
    })
    .await;
    run.signal("TERM");
    let status = run.wait(Duration::from_secs(20)).await;
    let log = run.log();
    assert_eq!(status.code(), Some(3), "exit code:\n{log}");
    assert!(
        log.contains(&format!(
            "released unsettled {jobs} ({jobs} of them waiting to retry)"
        )),
        "the summary counts what went back:\n{log}"
    );
    assert!(log.contains("NOT every message was settled"), "{log}");

    rx.set_config(ReceiverConfig {
        record: true,
        ..ReceiverConfig::default()
    });
    trial.run_to_completion().await;
    process::assert_all_delivered(&acceptances(&rx), jobs);
}

/// After `kill -9` the rerun delivers every job; the checkpoint journal keeps
/// the duplicates to what was in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_everything_with_bounded_duplicates() {
    let (jobs, concurrency) = (5000, 100);
    let rx = receiver((ms(5), ms(15))).await;
    let mut trial = Trial::new(jobs, concurrency, 10, &rx);

    let mut run = trial.start();
    wait_for_accepted(&rx, 1500).await;
    run.signal("KILL");
    let status = run.wait(WAIT).await;
    let first = rx.accepted();
    assert_eq!(status.signal(), Some(9), "not killed:\n{}", run.log());
    assert!(first < jobs, "the run ended before kill -9 stopped it");

    trial.run_to_completion().await;
    let by_id = acceptances(&rx);
    process::assert_all_delivered(&by_id, jobs);
    let dups = duplicates(&by_id);
    let extra: u64 = dups.iter().map(|(_, n)| n - 1).sum();
    println!(
        "kill -9 at {first} accepted: {extra} duplicate deliveries over {} jobs \
         (concurrency {concurrency}), {} total 200s",
        dups.len(),
        rx.accepted()
    );
    assert!(
        extra <= concurrency as u64,
        "{extra} duplicates exceed the {concurrency} jobs in flight, e.g. {:?}",
        &dups[..dups.len().min(10)]
    );
}

/// What `sluice check` said about one config.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, name: &str, text: &str) -> Checked {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .env_remove("MISSING_VAR_XYZ")
        .output()
        .expect("run sluice check");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The 1-based line of `text` holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    1 + text
        .lines()
        .position(|l| l.contains(needle))
        .expect("the needle is in the text")
}

/// A pipeline whose steps are `steps`.
fn with_steps(steps: &str) -> String {
    format!(
        "shutdown_timeout_secs = 10\n\n[[pipeline]]\nname = \"t\"\n\
         [pipeline.source]\ntype = \"file\"\npath = \"-\"\n{steps}"
    )
}

const HTTP_STEP: &str = "\n[[pipeline.step]]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n";

/// `sluice check` accepts a valid config, and rejects bad ones naming the
/// file, the line and the field (or the missing variable).
#[test]
fn check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().expect("a temp dir");

    let ok = check(dir.path(), "ok.toml", &with_steps(HTTP_STEP));
    assert_eq!(ok.code, Some(0), "valid config rejected: {}", ok.stderr);
    assert!(ok.stdout.contains("ok.toml: ok"), "stdout: {}", ok.stdout);

    let text = with_steps(&format!(
        "\n[[pipeline.step]]\ntype = \"extract\"\nregex = '(unclosed'\n{HTTP_STEP}"
    ));
    let bad = check(dir.path(), "regex.toml", &text);
    let at = format!(
        "regex.toml:{}: pipeline[0].step[0].regex:",
        line_of(&text, "(unclosed")
    );
    assert_eq!(bad.code, Some(1), "bad regex accepted: {}", bad.stdout);
    assert!(bad.stderr.contains(&at), "want `{at}` in: {}", bad.stderr);

    let text = with_steps(&HTTP_STEP.replace("http://127.0.0.1:9", "${MISSING_VAR_XYZ}"));
    let bad = check(dir.path(), "env.toml", &text);
    let at = format!("env.toml:{}:", line_of(&text, "MISSING_VAR_XYZ"));
    assert_eq!(
        bad.code,
        Some(1),
        "missing variable accepted: {}",
        bad.stdout
    );
    assert!(bad.stderr.contains(&at), "want `{at}` in: {}", bad.stderr);
    assert!(
        bad.stderr.contains("`MISSING_VAR_XYZ` is not set"),
        "{}",
        bad.stderr
    );

    let text = with_steps(&format!("{HTTP_STEP}urll = \"http://127.0.0.1:9/y\"\n"));
    let bad = check(dir.path(), "unknown.toml", &text);
    let at = format!("unknown.toml:{}:", line_of(&text, "urll"));
    assert_eq!(bad.code, Some(1), "unknown field accepted: {}", bad.stdout);
    assert!(
        bad.stderr.contains("unknown field `urll`"),
        "{}",
        bad.stderr
    );
    // Last, so the cases above still run: the line must be the field's own,
    // not its table's.
    assert!(bad.stderr.contains(&at), "want `{at}` in: {}", bad.stderr);
}

/// A templated host naming 300 destinations (300 receivers on their own
/// ports), 20 jobs at a time: only 64 destinations keep idle connections,
/// the rest close theirs once answered, so the process's open descriptors
/// stay near the budget (`concurrency x 2 + 256`) instead of one idle
/// socket per destination ever used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_destinations_do_not_pile_up_idle_connections() {
    const PORTS: usize = 300;
    const JOBS: usize = 6000;
    let mut receivers = Vec::new();
    for _ in 0..PORTS {
        receivers.push(
            Receiver::start(ReceiverConfig {
                latency: (ms(2), ms(6)),
                record: false,
                ..ReceiverConfig::default()
            })
            .await
            .expect("a receiver starts"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..JOBS)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"port\": {}}}\n",
                receivers[i % PORTS].addr().port()
            )
        })
        .collect();
    std::fs::write(dir.path().join("jobs.ndjson"), lines).unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"fanout\"\nconcurrency = 20\n[pipeline.source]\n\
             type = \"file\"\npath = '{}'\n[[pipeline.step]]\ntype = \"http\"\n\
             url = \"http://127.0.0.1:{{{{ body.port }}}}/jobs/{{{{ body.id }}}}\"\n",
            dir.path().join("jobs.ndjson").display()
        ),
    )
    .unwrap();
    let mut run = process::start(dir.path(), 0, &config, &[]);
    let accepted = || receivers.iter().map(Receiver::accepted).sum::<u64>();
    let pid = run.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let mut most = 0;
    let started = Instant::now();
    while accepted() < (JOBS as u64) * 3 / 4 {
        most = most.max(fds());
        if let Some(status) = run.exited() {
            panic!("sluice exited ({status}) early: {}", run.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            run.log()
        );
        tokio::time::sleep(ms(20)).await;
    }
    most = most.max(fds());
    let status = run.wait(Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(0), "{}", run.log());
    println!("{PORTS} destinations at concurrency 20: at most {most} descriptors open");
    assert!(
        most <= 64 * 2 + 20 * 2 + 60,
        "{most} descriptors open: idle connections piled up per destination"
    );
}
