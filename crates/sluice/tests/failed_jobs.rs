//! The `failed_jobs` dead-letter target against the machine's MariaDB and
//! PostgreSQL, read back by Laravel itself: jobs a real Laravel dispatched
//! to its Redis queue fail under sluice, Laravel's own failed-job provider
//! lists the rows (tests/interop/laravel/failed.php), `queue:retry` puts
//! one back, and Laravel's own worker then runs it. A table that is not
//! there stops the run at start with the fix; a table that goes away
//! mid-run loses nothing: the job waits on its queue until a row can be
//! written. Each test has its own queue and table.

mod common;

use std::path::Path;
use std::time::Duration;

use common::laravel::{Laravel, PREFIX};
use common::process;
use sluice::testkit::{Receiver, ReceiverConfig};

/// The machine's databases, as sluice and Laravel's scripts name them.
#[derive(Clone, Copy, Debug)]
enum Db {
    MariaDb,
    Postgres,
}

impl Db {
    fn url(self) -> &'static str {
        match self {
            Db::MariaDb => "mysql://root@127.0.0.1:3306/test",
            Db::Postgres => "postgres://postgres@127.0.0.1:5432/test",
        }
    }

    fn driver(self) -> &'static str {
        match self {
            Db::MariaDb => "mysql",
            Db::Postgres => "pgsql",
        }
    }
}

/// A Laravel with queues of its own and a failed-jobs table of the test's
/// own, dropped at the end.
struct Setup {
    laravel: Laravel,
    db: Db,
    table: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(name: &str, db: Db) -> Setup {
        let s = Setup {
            laravel: Laravel::new(name),
            db,
            table: format!("failed_jobs_{}_{}", std::process::id(), fastrand::u32(..)),
            dir: tempfile::tempdir().unwrap(),
        };
        s.php("failed.php", &["create-table"]).await;
        s
    }

    fn queue(&self) -> &str {
        &self.laravel.queue
    }

    /// A script, against the test's database and table.
    async fn php(&self, script: &str, args: &[&str]) -> String {
        let env = [
            ("DB_DRIVER", self.db.driver()),
            ("FAILED_TABLE", &self.table),
        ];
        self.laravel.php(script, args, &env).await.text()
    }

    /// A config: the queue, the table as dead-letter target, and one http
    /// step to `rx` that report 2 gets a 422 from (a permanent failure).
    fn config(&self, rx: &Receiver) -> std::path::PathBuf {
        let path = self.dir.path().join("sluice.toml");
        let text = format!(
            r#"
[[pipeline]]
name = "reports"
concurrency = 4

[pipeline.source]
type = "redis"
url = "{redis}"
queue = "{queue}"
prefix = "{PREFIX}"
block_for_secs = 1

[pipeline.dead_letter]
type = "failed_jobs"
url = "{db}"
table = "{table}"

[[pipeline.step]]
type = "http"
url = "{rx}/status/{{% if job.command.reportId == 2 %}}422{{% else %}}200{{% endif %}}"
body = '{{"report": {{{{ job.command.reportId }}}}}}'
"#,
            redis = common::redis::url(),
            queue = self.queue(),
            db = self.db.url(),
            table = self.table,
            rx = rx.url(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Laravel's failed jobs, newest first, as its provider lists them.
    async fn failed(&self) -> Vec<serde_json::Value> {
        self.php("failed.php", &["list"])
            .await
            .lines()
            .map(|l| serde_json::from_str(l).expect("failed.php prints JSON lines"))
            .collect()
    }

    fn left_in_redis(&self) -> u64 {
        let (ready, reserved, delayed) = Laravel::held(self.queue());
        ready + reserved + delayed
    }

    async fn drop_table(&self) {
        self.php("failed.php", &["drop-table"]).await;
    }
}

async fn receiver() -> Receiver {
    Receiver::start(ReceiverConfig::default()).await.unwrap()
}

fn run_to_end(dir: &Path, n: usize, config: &Path) -> process::Running {
    process::start(dir, n, config, &["--stop-when-empty"])
}

/// Laravel dispatches three reports; report 2 fails for good under
/// sluice. Laravel's provider lists exactly that job, as its own worker
/// would have written it; `queue:retry` puts it back with its attempts
/// reset, and Laravel's worker runs it.
async fn laravel_lists_and_retries_what_sluice_failed(name: &str, db: Db) {
    let s = Setup::new(name, db).await;
    let pushed = s.laravel.dispatch(s.queue(), 3, &[]).await;
    assert_eq!(pushed.len(), 3);
    let rx = receiver().await;
    let mut run = run_to_end(s.dir.path(), 0, &s.config(&rx));
    let status = run.wait(Duration::from_secs(60)).await;
    assert_eq!(
        status.code(),
        Some(4),
        "settled, one dead-lettered; log:\n{}",
        run.log()
    );
    assert_eq!(s.left_in_redis(), 0, "every job settled on Redis");

    let rows = s.failed().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    let job2: serde_json::Value = serde_json::from_slice(&pushed[1]).unwrap();
    assert_eq!(row["uuid"], job2["uuid"]);
    assert_eq!(row["connection"], "redis");
    assert_eq!(row["queue"], s.queue());
    // The payload as Laravel pushed it, byte for byte: what queue:retry
    // pushes back.
    assert_eq!(row["payload"].as_str().unwrap().as_bytes(), &pushed[1][..]);
    let exception = row["exception"].as_str().unwrap();
    assert!(
        exception.starts_with("Sluice\\JobFailed: ") && exception.contains("422"),
        "{exception}"
    );
    assert!(!row["failed_at"].as_str().unwrap().is_empty());

    // queue:retry, then Laravel's own worker.
    let uuid = row["uuid"].as_str().unwrap();
    s.php("failed.php", &["retry", uuid]).await;
    assert!(s.failed().await.is_empty(), "queue:retry forgets the row");
    s.laravel.work(s.queue(), &["--stop-when-empty"]).await;
    let handled = s.laravel.handled();
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0]["reportId"], 2);
    assert_eq!(handled[0]["uuid"], job2["uuid"]);
    assert_eq!(handled[0]["attempts"], 1, "queue:retry reset the attempts");
    assert_eq!(s.left_in_redis(), 0);
    s.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_laravel_lists_and_retries_what_sluice_failed() {
    laravel_lists_and_retries_what_sluice_failed("fj-mariadb", Db::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_laravel_lists_and_retries_what_sluice_failed() {
    laravel_lists_and_retries_what_sluice_failed("fj-postgres", Db::Postgres).await;
}

/// No table: the run stops before taking a job, naming the table and the
/// migration that makes it; the jobs stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_stops_the_run_at_start_with_the_fix() {
    let s = Setup::new("fj-missing", Db::MariaDb).await;
    s.drop_table().await;
    s.laravel.dispatch(s.queue(), 2, &[]).await;
    let rx = receiver().await;
    let mut run = run_to_end(s.dir.path(), 0, &s.config(&rx));
    let status = run.wait(Duration::from_secs(30)).await;
    assert!(!status.success(), "{}", run.log());
    let log = run.log();
    assert!(
        log.contains(&s.table) && log.contains("php artisan queue:failed-table"),
        "{log}"
    );
    assert_eq!(rx.total(), 0, "no job ran");
    assert_eq!(s.left_in_redis(), 2, "the jobs stay queued");
}

/// The table goes away mid-run: the failed job cannot be stored, so it is
/// not removed; it goes back to Redis and comes round until the table is
/// back, then lands there once. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_waits_on_its_queue_until_its_row_is_written() {
    let s = Setup::new("fj-gone", Db::Postgres).await;
    let rx = receiver().await;
    let mut run = process::start(s.dir.path(), 0, &s.config(&rx), &[]);
    run.wait_for_log("pipeline started", Duration::from_secs(30))
        .await;
    s.drop_table().await;
    s.laravel.dispatch(s.queue(), 1, &["--start=2"]).await;
    run.wait_for_log("could not settle the message", Duration::from_secs(30))
        .await;
    s.php("failed.php", &["create-table"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.failed().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no row within 60 s; log:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.signal("TERM");
    let status = run.wait(Duration::from_secs(30)).await;
    // 3, not 4: a settlement failed on the way (the first store), and the
    // exit code says so even though the job settled in the end.
    assert_eq!(status.code(), Some(3), "{}", run.log());
    assert!(run.log().contains("settle errors 1"), "{}", run.log());
    assert_eq!(s.failed().await.len(), 1);
    assert_eq!(s.left_in_redis(), 0);
    assert!(rx.total() >= 2, "the job ran again after the failed store");
    s.drop_table().await;
}

/// The SQS source writes the row Laravel's SQS worker writes: connection
/// `sqs`, queue the queue's URL, payload the message body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_job_fails_into_the_row_laravels_sqs_worker_writes() {
    let s = Setup::new("fj-sqs", Db::MariaDb).await;
    let client = common::aws::sqs().await;
    let url = common::aws::create_queue(&client, &common::aws::unique("failed-jobs"), 30).await;
    let body = common::aws::laravel_job("fj-1", 1, "");
    common::aws::send(&client, &url, &[(body.clone(), None)]).await;
    let rx = receiver().await;
    let config = s.dir.path().join("sqs.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[pipeline]]
name = "reports"
{source}
[pipeline.dead_letter]
type = "failed_jobs"
url = "{db}"
table = "{table}"
[[pipeline.step]]
type = "http"
url = "{rx}/status/422"
"#,
            source = common::aws::laravel_source(&url),
            db = s.db.url(),
            table = s.table,
            rx = rx.url(),
        ),
    )
    .unwrap();
    let mut run = run_to_end(s.dir.path(), 0, &config);
    let status = run.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(4), "{}", run.log());
    let rows = s.failed().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["uuid"], "uuid-fj-1");
    assert_eq!(rows[0]["connection"], "sqs");
    assert_eq!(rows[0]["queue"], url.as_str());
    assert_eq!(rows[0]["payload"], body.as_str());
    assert_eq!(
        common::aws::counts(&client, &url).await,
        (0, 0),
        "deleted from SQS"
    );
    s.drop_table().await;
}

/// A wrong password, taken from the environment with a quote and a
/// backslash in it: the run stops at start saying it cannot connect and
/// what to check, the password appears nowhere, and the jobs stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_password_stops_the_run_without_showing_it() {
    let s = Setup::new("fj-password", Db::MariaDb).await;
    s.laravel.dispatch(s.queue(), 1, &[]).await;
    let rx = receiver().await;
    let config = std::fs::read_to_string(s.config(&rx)).unwrap().replace(
        Db::MariaDb.url(),
        "mysql://root:${DB_PASSWORD}@127.0.0.1:3306/test",
    );
    let path = s.dir.path().join("password.toml");
    std::fs::write(&path, config).unwrap();
    let secret = r#"no-such-pw"quote\slash"#;
    let mut run = process::start_env(
        s.dir.path(),
        1,
        &path,
        &["--stop-when-empty"],
        &[("DB_PASSWORD", secret)],
    );
    let status = run.wait(Duration::from_secs(30)).await;
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot connect to the failed_jobs database")
            && log.contains("percent-encode"),
        "{log}"
    );
    assert!(!log.contains("no-such-pw"), "the password leaked:\n{log}");
    assert_eq!(s.left_in_redis(), 1, "the job stays queued");
    s.drop_table().await;
}

/// Waits until every reservation of `queue` has expired (its score, the
/// time it is due back, has passed), so the next pop migrates it.
async fn until_reservations_expire(queue: &str) {
    let due = Laravel::reserved_until(queue);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        <= due
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{queue}: reserved past {due}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `$tries = 1` job that a worker popped and died holding has spent its
/// one try: Laravel's own Worker fails it without running it
/// (MaxAttemptsExceededException), and so does sluice, on the same Redis
/// state: no request, a failed_jobs row with Laravel's message, exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_tries_is_failed_unrun_as_laravels_worker_does() {
    let s = Setup::new("fj-tries", Db::MariaDb).await;
    let other = s.laravel.other.clone();
    for q in [s.queue(), other.as_str()] {
        s.laravel
            .dispatch(q, 1, &["--class=TriedOnceReport", "--start=7"])
            .await;
        // A worker pops it (its one attempt counted) and dies holding it.
        s.laravel.pop(q, 1).await;
        until_reservations_expire(q).await;
    }

    // Laravel's own worker on one queue...
    let out = s.php("work.php", &[&other, "--stop-when-empty"]).await;
    assert!(out.contains("Failed:"), "{out}");
    // ...and sluice on the other.
    let rx = receiver().await;
    let mut run = run_to_end(s.dir.path(), 0, &s.config(&rx));
    let status = run.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(4), "dead-lettered; log:\n{}", run.log());

    assert!(s.laravel.handled().is_empty(), "Laravel ran it");
    assert_eq!(rx.total(), 0, "sluice ran it");
    let rows = s.failed().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let message = "App\\Jobs\\TriedOnceReport has been attempted too many times or run too \
                   long. The job may have previously timed out.";
    for row in &rows {
        let exception = row["exception"].as_str().unwrap();
        let by = if row["queue"] == other.as_str() {
            "Illuminate\\Queue\\MaxAttemptsExceededException: "
        } else {
            assert_eq!(row["queue"], s.queue());
            "Sluice\\JobFailed: "
        };
        assert!(
            exception.starts_with(&format!("{by}{message}")),
            "{exception}"
        );
    }
    assert_eq!(s.left_in_redis(), 0);
    assert_eq!(Laravel::held(&other), (0, 0, 0));
    s.drop_table().await;
}

/// A job as a non-PHP producer writes it, report 2 (refused with a 422),
/// under `uuid`, with a `note` that makes payloads differ.
fn payload_with(uuid: &str, note: &str) -> String {
    format!(
        r#"{{"uuid":"{uuid}","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"note":"{note}","data":{{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{{s:8:\"reportId\";i:2;}}"}},"id":"{uuid}","attempts":0}}"#
    )
}

/// Two different jobs under one uuid both fail: each keeps a row (the
/// second under a uuid derived from both), none is dropped; the same job
/// failing twice keeps one row.
async fn a_reused_uuid_drops_no_payload(name: &str, db: Db) {
    let s = Setup::new(name, db).await;
    let uuid = format!("reused-{}", fastrand::u32(..));
    let (first, second) = (payload_with(&uuid, "first"), payload_with(&uuid, "second"));
    for p in [&first, &second, &first] {
        Laravel::push_raw(s.queue(), p.as_bytes());
    }
    let rx = receiver().await;
    let mut run = run_to_end(s.dir.path(), 0, &s.config(&rx));
    let status = run.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(4), "log:\n{}", run.log());
    assert_eq!(s.left_in_redis(), 0);
    let rows = s.failed().await;
    // Jobs run 4 at a time: either may have come first.
    let mut notes: Vec<&str> = rows
        .iter()
        .map(|r| {
            let p: serde_json::Value =
                serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
            if p["note"] == "first" {
                "first"
            } else {
                "second"
            }
        })
        .collect();
    notes.sort();
    assert_eq!(notes, ["first", "second"], "{rows:#?}");
    let original = rows.iter().filter(|r| r["uuid"] == uuid.as_str()).count();
    assert_eq!(original, 1, "one row keeps the uuid: {rows:#?}");
    s.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_reused_uuid_drops_no_payload() {
    a_reused_uuid_drops_no_payload("fj-dup-mariadb", Db::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_reused_uuid_drops_no_payload() {
    a_reused_uuid_drops_no_payload("fj-dup-postgres", Db::Postgres).await;
}
