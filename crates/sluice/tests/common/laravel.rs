//! Laravel 8 itself, for the interop tests: the PHP scripts in
//! `tests/interop/laravel/` (Laravel's own RedisQueue, Worker and Bus
//! dispatcher, from Debian's php-laravel-framework; `scripts/laravel`
//! installs it) run against the Redis of [`super::redis`].
//!
//! Each [`Laravel`] has two queues of its own (`queue` and `other`) and a
//! list its jobs record their runs in; all are deleted when it is dropped.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::Commands;
use sluice::sources::redis::scripts::Keys;

use super::redis::{connection, url};

/// The key prefix of Laravel's default config (`{app name}_database_`).
pub const PREFIX: &str = "laravel_database_";

/// Where the PHP scripts are.
pub const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/laravel");

/// The bound on one PHP script's run; reaching it fails the test.
const PHP_WAIT: Duration = Duration::from_secs(60);

/// Fails the test, saying how to fix it, unless `php` runs with Laravel 8
/// and the modules the scripts need.
pub fn require_php() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let probe = "require '/usr/share/php/Illuminate/autoload.php';
            foreach (['redis', 'pdo_mysql', 'pdo_pgsql'] as $m) {
                if (!extension_loaded($m)) { fwrite(STDERR, \"no php module $m\"); exit(1); }
            }";
        match Command::new("php").args(["-r", probe]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(format!("cannot run php: {e}")),
        }
    });
    if let Err(why) = checked {
        panic!("PHP with Laravel 8 is not ready ({why}): run scripts/laravel");
    }
}

/// REDIS_HOST, REDIS_PORT and REDIS_DB for the scripts, from the tests'
/// Redis URL (`redis://host:port/db`).
fn redis_env() -> Vec<(String, String)> {
    let url = url();
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (addr, db) = rest.split_once('/').unwrap_or((rest, "0"));
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
    let db = if db.is_empty() { "0" } else { db };
    [("REDIS_HOST", host), ("REDIS_PORT", port), ("REDIS_DB", db)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What a script printed.
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Two fresh queues, a list for the jobs' records, and the scripts to
/// drive them.
pub struct Laravel {
    /// The queue most tests use.
    pub queue: String,
    /// A second queue, for tests that compare two.
    pub other: String,
    /// The list (without the prefix) the jobs RPUSH their runs to.
    handled: String,
}

impl Laravel {
    /// Fails the test unless PHP with Laravel and Redis are there.
    pub fn new(name: &str) -> Laravel {
        require_php();
        let _ = connection();
        let queue = format!(
            "interop-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        Laravel {
            other: format!("{queue}-other"),
            handled: format!("interop:handled:{queue}"),
            queue,
        }
    }

    /// The keys of `queue`, with Laravel's prefix.
    pub fn keys(queue: &str) -> Keys {
        Keys::new(PREFIX, queue)
    }

    /// Runs `php SCRIPT ARGS` with `env` (over the Redis settings and
    /// HANDLED_LIST); fails the test when it exits non-zero or outlives
    /// [`PHP_WAIT`].
    pub async fn php(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("php");
        cmd.current_dir(SCRIPTS)
            .arg(format!("{SCRIPTS}/{script}"))
            .args(args)
            .envs(redis_env())
            .env("REDIS_PREFIX", PREFIX)
            .env("HANDLED_LIST", &self.handled)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("php {script} {}", args.join(" "));
        // A blocking wait would stall the test's runtime, and with it the
        // in-process receiver sluice may be posting to.
        tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `{what}` ({e}): run scripts/laravel"));
            let started = Instant::now();
            loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if started.elapsed() > PHP_WAIT {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("collect the output");
                    panic!(
                        "`{what}` did not finish within {PHP_WAIT:?}; stdout:\n{}\nstderr:\n{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = child.wait_with_output().expect("collect the output");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "`{what}` exited {}; stdout:\n{}\nstderr:\n{stderr}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
            Output {
                stdout: out.stdout,
                stderr,
            }
        })
        .await
        .expect("the PHP run's thread")
    }

    /// `dispatch.php QUEUE COUNT EXTRA...`: the payloads Laravel pushed,
    /// byte for byte, one per job.
    pub async fn dispatch(&self, queue: &str, count: u32, extra: &[&str]) -> Vec<Vec<u8>> {
        let count = count.to_string();
        let mut args = vec![queue, count.as_str()];
        args.extend_from_slice(extra);
        let out = self.php("dispatch.php", &args, &[]).await;
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// `pop.php QUEUE` with the connection's `retry_after`: the reserved
    /// member Laravel stored, as `getReservedJob()` gives it.
    pub async fn pop(&self, queue: &str, retry_after_secs: u64) -> Vec<u8> {
        let retry_after = retry_after_secs.to_string();
        self.php("pop.php", &[queue], &[("RETRY_AFTER", &retry_after)])
            .await
            .stdout
    }

    /// `work.php QUEUE ARGS...`: Laravel's Worker, its console lines.
    pub async fn work(&self, queue: &str, args: &[&str]) -> Output {
        let mut all = vec![queue];
        all.extend_from_slice(args);
        self.php("work.php", &all, &[]).await
    }

    /// What the jobs recorded, oldest first: `job`, `uuid`, `reportId`,
    /// `attempts`, `queue`.
    pub fn handled(&self) -> Vec<serde_json::Value> {
        let lines: Vec<Vec<u8>> = connection()
            .lrange(format!("{PREFIX}{}", self.handled), 0, -1)
            .unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_slice(l).expect("a JSON record"))
            .collect()
    }

    /// Pushes `payload` as Laravel's push script does: onto the list, with
    /// a notify token.
    pub fn push_raw(queue: &str, payload: &[u8]) {
        let k = Laravel::keys(queue);
        let _: () = redis::pipe()
            .rpush(&k.queue, payload)
            .rpush(&k.notify, 1)
            .query(&mut connection())
            .unwrap();
    }

    /// The members of `queue`'s `:reserved`.
    pub fn reserved(queue: &str) -> Vec<Vec<u8>> {
        connection()
            .zrange(Laravel::keys(queue).reserved, 0, -1)
            .unwrap()
    }

    /// The latest time (Unix seconds) a reservation of `queue` is held
    /// until; 0 when none is.
    pub fn reserved_until(queue: &str) -> f64 {
        let held: Vec<(Vec<u8>, f64)> = connection()
            .zrange_withscores(Laravel::keys(queue).reserved, 0, -1)
            .unwrap();
        held.iter().map(|(_, score)| *score).fold(0.0, f64::max)
    }

    /// The members of `queue`'s `:delayed`, with their scores.
    pub fn delayed(queue: &str) -> Vec<(Vec<u8>, f64)> {
        connection()
            .zrange_withscores(Laravel::keys(queue).delayed, 0, -1)
            .unwrap()
    }

    /// Jobs `queue` holds: ready, reserved, delayed.
    pub fn held(queue: &str) -> (u64, u64, u64) {
        let k = Laravel::keys(queue);
        redis::pipe()
            .llen(&k.queue)
            .zcard(&k.reserved)
            .zcard(&k.delayed)
            .query(&mut connection())
            .unwrap()
    }
}

impl Drop for Laravel {
    fn drop(&mut self) {
        let mut keys = vec![format!("{PREFIX}{}", self.handled)];
        for q in [&self.queue, &self.other] {
            let k = Laravel::keys(q);
            keys.extend([k.queue, k.reserved, k.delayed, k.notify]);
            keys.push(format!("{PREFIX}sluice:failed:{q}"));
        }
        let _: Result<(), _> = connection().del(keys);
    }
}
