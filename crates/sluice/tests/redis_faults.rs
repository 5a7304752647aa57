//! The `sluice` binary as a child process on the Redis source, through
//! faults: `kill -9` mid-run (the dead process's reservations expire and a
//! second process runs them), a Redis restart mid-run (a private
//! `redis-server` with an append-only file, stopped and started again on
//! the same port), and two processes sharing one queue. Each is checked
//! against what the receiver got and what Redis holds afterwards: nothing
//! lost, nothing left ready, reserved or delayed.
//!
//! Jobs are Laravel payloads pushed as `RedisQueue::push` pushes them (the
//! payload on `queues:NAME`, a token on `queues:NAME:notify`); the
//! pipeline posts each to `/reports/<reportId>`, so the receiver's record
//! says which jobs were delivered, how often, and (by a header set from the
//! environment) by which process.

#![cfg(feature = "redis")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{self, Running};
use common::wait_until;
use redis::Commands;
use sluice::sources::redis::scripts::Keys;
use sluice::testkit::{Receiver, ReceiverConfig};
use tempfile::TempDir;

/// The bound on every wait; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(120);

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

async fn wait_for_accepted(rx: &Receiver, n: u64) {
    common::wait_for_accepted(rx, n, WAIT).await;
}

/// A Laravel payload for job `id` (`uuid` `job-<id>`, the command's
/// `reportId` `id`), as `Queue::createPayloadArray` writes it.
fn payload(id: u64) -> String {
    let class = r"App\\Jobs\\ProcessReport";
    format!(
        r#"{{"uuid":"job-{id}","displayName":"{class}","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"data":{{"commandName":"{class}","command":"O:22:\"{class}\":1:{{s:8:\"reportId\";i:{id};}}"}},"id":"job-{id}","attempts":0}}"#
    )
}

/// The job id of a payload or a reserved member: its `uuid`'s number.
fn id_of(job: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(job).expect("a JSON job");
    v["uuid"]
        .as_str()
        .and_then(|u| u.strip_prefix("job-")?.parse().ok())
        .unwrap_or_else(|| panic!("not one of ours: {v}"))
}

/// One queue of its own (unique name and prefix) on the server at `url`;
/// its keys are deleted when dropped.
struct Queue {
    url: String,
    name: String,
    prefix: String,
}

impl Queue {
    fn new(url: String, name: &str) -> Queue {
        let tag = format!("{}-{:x}", std::process::id(), fastrand::u64(..));
        Queue {
            url,
            name: format!("{name}-{tag}"),
            prefix: format!("sluice_faults_{tag}_"),
        }
    }

    fn keys(&self) -> Keys {
        Keys::new(&self.prefix, &self.name)
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .expect("a Redis URL")
            .get_connection()
            .unwrap_or_else(|e| {
                panic!(
                    "Redis does not answer at {} ({e}); scripts/services starts the machine's \
                     Redis, SLUICE_REDIS_URL points elsewhere",
                    sluice::redact::redact(&self.url)
                )
            })
    }

    /// Laravel's push of jobs `0..n`: each payload, then its notify token.
    fn push(&self, n: u64) {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for id in 0..n {
            pipe.rpush(&k.queue, payload(id)).ignore();
            pipe.rpush(&k.notify, 1).ignore();
        }
        let () = pipe.query(&mut self.connection()).expect("push the jobs");
    }

    /// The ids in `:reserved`.
    fn reserved_ids(&self) -> BTreeSet<u64> {
        let members: Vec<Vec<u8>> = self
            .connection()
            .zrange(self.keys().reserved, 0, -1)
            .expect("ZRANGE :reserved");
        members.iter().map(|m| id_of(m)).collect()
    }

    /// The ids in the list.
    fn ready_ids(&self) -> BTreeSet<u64> {
        let jobs: Vec<Vec<u8>> = self
            .connection()
            .lrange(self.keys().queue, 0, -1)
            .expect("LRANGE");
        jobs.iter().map(|j| id_of(j)).collect()
    }

    /// (ready, reserved, delayed, notify tokens, dead letters).
    fn sizes(&self) -> (u64, u64, u64, u64, u64) {
        let k = self.keys();
        redis::pipe()
            .llen(&k.queue)
            .zcard(&k.reserved)
            .zcard(&k.delayed)
            .llen(&k.notify)
            .llen(self.dead_letters())
            .query(&mut self.connection())
            .expect("read the queue's sizes")
    }

    fn dead_letters(&self) -> String {
        format!("{}sluice:failed:{}", self.prefix, self.name)
    }

    /// Asserts Redis holds nothing of the queue: no job ready, reserved or
    /// delayed, no stray notify token, no dead letter.
    fn assert_empty(&self, log: &str) {
        assert_eq!(
            self.sizes(),
            (0, 0, 0, 0, 0),
            "(ready, reserved, delayed, notify, dead letters) left in Redis; the last run's log:\n{log}"
        );
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let k = self.keys();
        // The server may be gone (a private one, or a failed test).
        if let Ok(mut c) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(ms(500)))
        {
            let _: Result<(), _> = c.del(&[
                k.queue,
                k.reserved,
                k.delayed,
                k.notify,
                self.dead_letters(),
            ]);
        }
    }
}

/// The config: the queue, `concurrency` jobs at once, each posted to the
/// receiver with an `x-sluice-worker` header from `SLUICE_WORKER`.
fn write_config(
    dir: &Path,
    q: &Queue,
    rx: &Receiver,
    concurrency: u64,
    retry_after_secs: u64,
) -> PathBuf {
    let text = r#"shutdown_timeout_secs = 10
[[pipeline]]
name = "reports"
concurrency = @CONCURRENCY@
[pipeline.source]
type = "redis"
url = "@REDIS@"
queue = "@QUEUE@"
prefix = "@PREFIX@"
retry_after_secs = @RETRY_AFTER@
block_for_secs = 1
[[pipeline.step]]
type = "http"
url = "@RX@/reports/{{ job.command.reportId }}"
body = '{"job": {{ job.uuid | tojson }}}'
headers = { x-sluice-worker = "${SLUICE_WORKER:-one}" }
"#
    .replace("@CONCURRENCY@", &concurrency.to_string())
    .replace("@REDIS@", &q.url)
    .replace("@QUEUE@", &q.name)
    .replace("@PREFIX@", &q.prefix)
    .replace("@RETRY_AFTER@", &retry_after_secs.to_string())
    .replace("@RX@", &rx.url());
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// How often the receiver accepted each job id, checking each request's
/// body names the job of its path.
fn acceptances(rx: &Receiver) -> BTreeMap<u64, u64> {
    let mut by_id = BTreeMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        let id: u64 = r
            .path
            .strip_prefix("/reports/")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected path {}", r.path));
        assert_eq!(
            r.body,
            format!(r#"{{"job": "job-{id}"}}"#),
            "body of {}",
            r.path
        );
        *by_id.entry(id).or_default() += 1;
    }
    by_id
}

/// Ids accepted more than once, with their counts.
fn duplicates(by_id: &BTreeMap<u64, u64>) -> BTreeMap<u64, u64> {
    by_id
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect()
}

/// Asserts a log shows no panic.
fn assert_no_panic(log: &str) {
    assert!(
        !log.contains("panicked"),
        "sluice panicked; its log:\n{log}"
    );
}

/// After `kill -9` the jobs the process held stay in `:reserved`; their
/// reservations (kept at 2 s by the dead process's heartbeat) expire, and
/// a second process with `--stop-when-empty` waits for them, migrates them
/// back and runs them. Every job is delivered; the only ones delivered
/// twice were reserved at the kill (delivered, not yet deleted), so at
/// most the first run's concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_the_dead_reservations_come_back_and_run() {
    const JOBS: u64 = 300;
    const CONCURRENCY: u64 = 50;
    let q = Queue::new(common::redis::url(), "kill9");
    q.push(JOBS);
    let rx = receiver((ms(150), ms(250))).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write_config(dir.path(), &q, &rx, CONCURRENCY, 2);

    let mut first = process::start(dir.path(), 1, &config, &[]);
    wait_for_accepted(&rx, 100).await;
    first.signal("KILL");
    let status = first.wait(WAIT).await;
    assert_eq!(status.signal(), Some(9), "not killed:\n{}", first.log());
    let delivered_first = acceptances(&rx);
    // No consumer runs now: this is what the dead process left.
    let (reserved, ready) = (q.reserved_ids(), q.ready_ids());
    println!(
        "kill -9 at {} accepted: {} reserved, {} ready",
        rx.accepted(),
        reserved.len(),
        ready.len()
    );
    assert!(
        (delivered_first.len() as u64) < JOBS,
        "the run ended before kill -9 stopped it"
    );
    assert!(!reserved.is_empty(), "kill -9 left nothing reserved");
    assert_eq!(
        duplicates(&delivered_first),
        BTreeMap::new(),
        "duplicates before the kill"
    );
    let held: BTreeSet<u64> = reserved.union(&ready).copied().collect();
    let lost: Vec<u64> = (0..JOBS)
        .filter(|id| !held.contains(id) && !delivered_first.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "jobs neither delivered nor in Redis after the kill: {lost:?}"
    );

    let started = Instant::now();
    let mut second = process::start(dir.path(), 2, &config, &["--stop-when-empty"]);
    let status = second.wait(WAIT).await;
    let log = second.log();
    println!("the rerun took {:?}", started.elapsed());
    assert_eq!(status.code(), Some(0), "the rerun failed:\n{log}");
    assert_no_panic(&log);

    let by_id = acceptances(&rx);
    process::assert_all_delivered(&by_id, JOBS);
    let dups = duplicates(&by_id);
    println!(
        "{} jobs delivered twice (concurrency {CONCURRENCY}), {} reserved at the kill",
        dups.len(),
        reserved.len()
    );
    for (id, n) in &dups {
        assert_eq!(*n, 2, "job {id} delivered {n} times");
        assert!(
            reserved.contains(id) && delivered_first.contains_key(id),
            "job {id} delivered twice but was not in flight at the kill"
        );
    }
    assert!(
        dups.len() as u64 <= CONCURRENCY,
        "{} duplicates exceed the {CONCURRENCY} jobs in flight",
        dups.len()
    );
    q.assert_empty(&log);
}

/// A `redis-server` of this test's own, on a free port, persisting to an
/// append-only file in its directory so that its data survives a restart,
/// and with a password, to check that no log shows it.
struct PrivateRedis {
    dir: TempDir,
    port: u16,
    password: String,
    child: Option<Child>,
    starts: usize,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis {
            dir: tempfile::tempdir().expect("a temp dir"),
            port,
            password: format!("pw-{:x}", fastrand::u64(..)),
            child: None,
            starts: 0,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let p = self.dir.path().join(format!("redis-{n}.log"));
                std::fs::read_to_string(p).unwrap_or_default()
            })
            .collect()
    }

    /// Starts the server (again: same port, same directory) and waits until
    /// it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let logfile = self.dir.path().join(format!("redis-{}.log", self.starts));
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&logfile)
            .args(["--requirepass", &self.password])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server; scripts/services)");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let up = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(ms(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("redis-server exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not answer on port {} within 20 s; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(ms(20));
        }
    }

    /// `SHUTDOWN` (which, with the append-only file, keeps every write)
    /// and waits for the process to exit.
    async fn stop(&mut self) {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "-a",
                &self.password,
                "--no-auth-warning",
            ])
            .arg("shutdown")
            .output()
            .expect("redis-cli is installed");
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "redis-server exited {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not stop ({out:?}); its log:\n{}",
                self.log()
            );
            tokio::time::sleep(ms(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Redis stops mid-run and comes back on the same port with its data:
/// while it is down sluice logs transient errors naming Redis (no panic,
/// no password), its connections reconnect with backoff, and the run
/// finishes under `--stop-when-empty` with exit code 0. Every job is
/// delivered at least once (an ack lost with the connection leaves its job
/// reserved, to run again after retry_after), and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_is_ridden_out() {
    const JOBS: u64 = 2000;
    const CONCURRENCY: u64 = 50;
    let mut redis = PrivateRedis::start();
    let q = Queue::new(redis.url(), "restart");
    q.push(JOBS);
    // Many acks a second, so that some are on the wire when Redis stops.
    let rx = receiver((ms(10), ms(20))).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write_config(dir.path(), &q, &rx, CONCURRENCY, 3);

    let mut run = process::start(dir.path(), 1, &config, &["--stop-when-empty"]);
    wait_for_accepted(&rx, 500).await;
    let before_stop = run.log().len();
    redis.stop().await;
    let at_stop = rx.accepted();
    // Down until sluice has noticed: a warning or an error after the stop.
    let stopped = Instant::now();
    wait_until("sluice to log Redis being down", WAIT, || {
        assert!(
            run.exited().is_none(),
            "sluice exited while Redis was down:\n{}",
            run.log()
        );
        let log = run.log();
        log[before_stop..]
            .lines()
            .any(|l| l.contains("WARN") || l.contains("ERROR"))
    })
    .await;
    let down = run.log()[before_stop..].to_owned();
    redis.restart();
    println!("Redis was down for {:?}", stopped.elapsed());
    let restarted_at = rx.accepted();

    let status = run.wait(WAIT).await;
    let log = run.log();
    println!(
        "Redis stopped at {at_stop} accepted, restarted at {restarted_at}; the run ended with \
         {status} after {} accepted; what sluice logged while it was down:\n{down}",
        rx.accepted()
    );
    assert!(at_stop < JOBS, "the run ended before Redis stopped");
    assert_no_panic(&log);
    assert!(
        !log.contains(&redis.password),
        "the password is logged:\n{log}"
    );
    // Each says Redis failed and that it is retried or comes back.
    for l in down
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        assert!(
            l.contains("redis:") && (l.contains("trying again") || l.contains("deliver it again")),
            "not a clear transient Redis error: {l}"
        );
    }

    let by_id = acceptances(&rx);
    process::assert_all_delivered(&by_id, JOBS);
    let dups = duplicates(&by_id);
    println!("{} jobs delivered more than once: {dups:?}", dups.len());
    assert!(
        dups.len() as u64 <= CONCURRENCY,
        "{} duplicates exceed the {CONCURRENCY} jobs in flight at the stop",
        dups.len()
    );
    q.assert_empty(&log);
    // Last, so that the checks above run whatever the exit: an ack cut off
    // by the restart must not make a drained run exit 3.
    assert_eq!(
        status.code(),
        Some(0),
        "the run drained the queue but did not exit 0:\n{log}"
    );
}

/// Two processes on one queue, no fault: both drain it together with
/// `--stop-when-empty` and exit 0, each job is delivered exactly once, and
/// both did some of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_queue_without_duplicates() {
    const JOBS: u64 = 1000;
    let q = Queue::new(common::redis::url(), "shared");
    q.push(JOBS);
    let rx = receiver((ms(40), ms(60))).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write_config(dir.path(), &q, &rx, 20, 60);

    let mut runs: Vec<(&str, Running)> = ["a", "b"]
        .into_iter()
        .enumerate()
        .map(|(n, worker)| {
            let run = process::start_env(
                dir.path(),
                n + 1,
                &config,
                &["--stop-when-empty"],
                &[("SLUICE_WORKER", worker)],
            );
            (worker, run)
        })
        .collect();
    for (worker, run) in &mut runs {
        let status = run.wait(WAIT).await;
        let log = run.log();
        assert_eq!(status.code(), Some(0), "sluice {worker} failed:\n{log}");
        assert_no_panic(&log);
    }

    let by_id = acceptances(&rx);
    process::assert_all_delivered(&by_id, JOBS);
    assert_eq!(
        duplicates(&by_id),
        BTreeMap::new(),
        "duplicates without a fault"
    );
    let mut by_worker: BTreeMap<String, u64> = BTreeMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        let w = r.header("x-sluice-worker").unwrap_or("none").to_owned();
        *by_worker.entry(w).or_default() += 1;
    }
    println!("jobs per process: {by_worker:?}");
    assert_eq!(
        by_worker.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both processes did some of the work: {by_worker:?}"
    );
    q.assert_empty(&runs[1].1.log());
}

/// Jobs that failed and were handed back to Redis's `:delayed` for a
/// retry have not succeeded: while they wait, `/api` and `/metrics` show
/// them as pending retry, not in flight (in flight never exceeds the
/// concurrency); a SIGTERM then ends the run with exit 3 and a summary
/// that counts them, never "every job succeeded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_parked_in_the_broker_are_pending_not_succeeded() {
    let q = Queue::new(common::redis::url(), "pending-retry");
    let rx = common::recording_receiver(ReceiverConfig {
        latency: (ms(1), ms(2)),
        error_rate: 1.0,
        ..ReceiverConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write_config(dir.path(), &q, &rx, 2, 60);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[pipeline.retry]\nmax_attempts = 5\nbackoff = { initial_ms = 60000, jitter = false }\n";
    std::fs::write(&config, text).unwrap();
    q.push(5);
    let mut run = process::start(dir.path(), 0, &config, &["--admin", "127.0.0.1:0"]);
    let base = run.admin_base(WAIT).await;
    wait_until("the 5 jobs parked in :delayed", WAIT, || q.sizes().2 == 5).await;
    // The last job's task ends a moment after its retry reached Redis.
    let started = Instant::now();
    let api = loop {
        let api = reqwest::get(format!("{base}/api/pipelines/reports"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /api")
            .text()
            .await
            .expect("a body");
        let api: serde_json::Value = serde_json::from_str(&api).expect("JSON");
        if api["in_flight"] == 0 && api["pending_retry"] == 5 {
            break api;
        }
        assert!(started.elapsed() < WAIT, "{api}");
        assert!(
            api["in_flight"].as_u64().is_some_and(|n| n <= 2),
            "in flight over the concurrency: {api}"
        );
        tokio::time::sleep(ms(10)).await;
    };
    assert_eq!(api["succeeded"], 0, "{api}");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    for series in [
        r#"sluice_jobs_in_flight{pipeline="reports"} 0"#,
        r#"sluice_jobs_pending_retry{pipeline="reports"} 5"#,
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    run.signal("TERM");
    let status = run.wait(WAIT).await;
    let log = run.log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("pending retry in the source 5"), "{log}");
    assert!(!log.contains("every job succeeded"), "{log}");
    // Nothing lost: the five wait in :delayed for their retry.
    assert_eq!(q.sizes(), (0, 0, 5, 0, 0));
}
