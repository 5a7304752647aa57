//! The bad-config corpus: every file in `tests/corpus/config/` is a config
//! that the real `sluice check`, and `sluice run` before anything connects,
//! must refuse with exit code 1 and `file:line: field: what to do`.
//!
//! A corpus file says what it expects in its leading comments:
//!
//! - `# expect: <fragment>`: the message holds this (one line each);
//! - `# env: NAME=value`: the variable is set for the run (nothing else of
//!   the environment is passed on);
//! - `# <- error` ending a line: the message names that line.
//!
//! Each runs in a fresh directory holding `jobs.ndjson` and a directory
//! `adir/`, which the configs' relative paths name.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

struct Case {
    path: PathBuf,
    expect: Vec<String>,
    env: Vec<(String, String)>,
    line: Option<usize>,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a corpus file");
            let mut case = Case {
                path,
                expect: Vec::new(),
                env: Vec::new(),
                line: None,
            };
            for (n, l) in text.lines().enumerate() {
                if let Some(e) = l.strip_prefix("# expect: ") {
                    case.expect.push(e.to_owned());
                } else if let Some(kv) = l.strip_prefix("# env: ") {
                    let (k, v) = kv.split_once('=').expect("# env: NAME=value");
                    case.env.push((k.to_owned(), v.to_owned()));
                } else if l.ends_with("# <- error") {
                    case.line = Some(n + 1);
                }
            }
            assert!(
                !case.expect.is_empty(),
                "{}: no `# expect:` line",
                case.path.display()
            );
            case
        })
        .collect()
}

/// Runs `sluice <args> -c <case>` in `cwd`; what went wrong, if anything.
fn refused(case: &Case, cwd: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(&case.path)
        .current_dir(cwd)
        .env_clear()
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = format!("stdout: {stdout}\nstderr: {stderr}");
    if out.status.code() != Some(1) {
        return Err(format!("exit {:?}, want 1\n{said}", out.status.code()));
    }
    let at = match case.line {
        Some(line) => format!("error: {}:{line}: ", case.path.display()),
        None => format!("error: {}: ", case.path.display()),
    };
    if !stderr.starts_with(&at) {
        return Err(format!("want the message to start `{at}`\n{said}"));
    }
    for e in &case.expect {
        if !stderr.contains(e.as_str()) {
            return Err(format!("want `{e}` in the message\n{said}"));
        }
    }
    Ok(())
}

#[test]
fn check_and_run_refuse_every_bad_config() {
    let cases = corpus();
    assert!(cases.len() >= 30, "only {} corpus cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let cwd = tempfile::tempdir().expect("a temp dir");
        std::fs::write(cwd.path().join("jobs.ndjson"), "{\"id\": 1}\n").expect("write jobs");
        std::fs::create_dir(cwd.path().join("adir")).expect("make adir");
        for args in [&["check"][..], &["run", "--progress", "off"][..]] {
            if let Err(e) = refused(case, cwd.path(), args) {
                failed.push(format!("{} ({}): {e}", case.path.display(), args[0]));
            }
        }
        // Refused before anything ran: no checkpoint, no failures file.
        let left: Vec<_> = std::fs::read_dir(cwd.path())
            .expect("list the temp dir")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        if left.len() != 2 {
            failed.push(format!("{}: left {left:?}", case.path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

/// `run` raises the open-files soft limit to what the concurrency needs
/// (1000 jobs with one http step: about 2256), and refuses, naming the
/// number, when the hard limit is lower.
#[test]
fn run_raises_the_open_files_limit_or_refuses() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("jobs.ndjson"), "").expect("write jobs");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[[pipeline]]\nname = \"t\"\nconcurrency = 1000  # <- error\n\
         [pipeline.source]\ntype = \"file\"\npath = \"jobs.ndjson\"\n\
         [[pipeline.step]]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n",
    )
    .expect("write the config");
    // `ulimit` in a shell: the workspace forbids the unsafe code that
    // setrlimit(2) needs here.
    let run = |limits: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limits} && exec \"$0\" run --progress off -c \"$1\""
            ))
            .arg(BIN)
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .output()
            .expect("run sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    let (code, log) = run("ulimit -Sn 300");
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("raised the open-files soft limit") && log.contains("to=2256"),
        "{log}"
    );

    let (code, log) = run("ulimit -Sn 512 && ulimit -Hn 1024");
    assert_eq!(code, Some(1), "{log}");
    let at = format!("error: {}:3: pipeline[0].concurrency: ", config.display());
    assert!(log.starts_with(&at), "want `{at}`: {log}");
    assert!(
        log.contains("needs about 2256 open files, over the hard limit of 1024"),
        "{log}"
    );
}

/// A failures file reached through a symlink to the input is the input:
/// `check` and `run` refuse it, and nothing is written.
#[test]
fn a_symlink_to_the_input_is_the_input() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("jobs.ndjson"), "{\"id\": 1}\n").expect("write jobs");
    std::os::unix::fs::symlink("jobs.ndjson", dir.path().join("feed")).expect("symlink");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[[pipeline]]\nname = \"t\"\n[pipeline.source]\ntype = \"file\"\npath = \"jobs.ndjson\"\n\
         failures = \"feed\"\n[[pipeline.step]]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n",
    )
    .expect("write the config");
    for args in [&["check"][..], &["run", "--progress", "off"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .expect("run sluice");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                ":6: pipeline[0].source.failures: `feed` is the same file as this \
                             pipeline's `path`"
            ),
            "{stderr}"
        );
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    left.sort();
    assert_eq!(left, ["feed", "jobs.ndjson", "sluice.toml"]);
}
