//! Runs the real `sluice` binary as a child process, for tests of signals,
//! `kill -9` and exit codes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A `sluice run` in progress; killed if the test ends first.
pub struct Running {
    child: Child,
    log: PathBuf,
}

/// Starts `sluice run -c config` (plus `extra` arguments), its stdout and
/// stderr going to `dir/run-<n>.log`.
pub fn start(dir: &Path, n: usize, config: &Path, extra: &[&str]) -> Running {
    start_env(dir, n, config, extra, &[])
}

/// [`start`] with environment variables set (after `RUST_LOG=info`, so
/// they can override it).
pub fn start_env(
    dir: &Path,
    n: usize,
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let mut args: Vec<&std::ffi::OsStr> = ["run", "--progress", "off", "-c"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.push(config.as_os_str());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    spawn(dir, n, &args, env)
}

/// Starts `sluice` with `args` (any command), its stdout and stderr going
/// to `dir/run-<n>.log`.
pub fn spawn(dir: &Path, n: usize, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Running {
    let log = dir.join(format!("run-{n}.log"));
    let out = File::create(&log).expect("create the log");
    let err = out.try_clone().expect("clone the log");
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn sluice");
    Running { child, log }
}

impl Running {
    /// Sends a signal by name (`TERM`, `KILL`) with kill(1): the workspace
    /// forbids the unsafe code a direct kill(2) needs.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(kill.expect("run kill").success(), "kill -{name} failed");
    }

    /// The admin server's base URL, `http://ADDR`, from the line the
    /// server logs once it listens (`--admin 127.0.0.1:0` picks a port).
    pub async fn admin_base(&mut self, bound: Duration) -> String {
        let line = self.wait_for_log("admin server", bound).await;
        let addr = line
            .split("address=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        format!("http://{addr}")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the log has a line containing `needle`; fails the test
    /// after `bound`, or when the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, bound: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.exited() {
                // It may have written the line just before exiting.
                if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                panic!(
                    "sluice exited ({status}) before logging {needle:?}; its log:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > bound {
                panic!(
                    "sluice did not log {needle:?} within {bound:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit; fails the test after `bound`.
    pub async fn wait(&mut self, bound: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if started.elapsed() > bound {
                panic!(
                    "sluice did not exit within {bound:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts every id in `0..jobs` was accepted at least once, and no other.
pub fn assert_all_delivered(by_id: &std::collections::BTreeMap<u64, u64>, jobs: u64) {
    let missing: Vec<u64> = (0..jobs).filter(|id| !by_id.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {jobs} jobs never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        by_id.len() as u64,
        jobs,
        "ids outside 0..{jobs} were delivered"
    );
}
