//! The file source's edges, in-process and as a child process reading
//! stdin: oversize lines kept whole in the failures file (so it feeds back
//! in), and a UTF-8 byte order mark skipped.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, read_lines, single};
use sluice::testkit::ReceiverConfig;

/// Posts each job to `/jobs/<id>` with its message id in a header.
fn config(input: &str, max_body_bytes: u64) -> String {
    format!(
        r#"
[[pipeline]]
name = "lines"
concurrency = 8
max_body_bytes = {max_body_bytes}
[pipeline.source]
type = "file"
path = '{input}'
failures = '@DIR@/failed.ndjson'
[[pipeline.step]]
type = "http"
url = "@URL@/jobs/{{{{ body.id }}}}"
body = '{{{{ body.pad | length }}}}'
headers = {{ x-message-id = "{{{{ message.id }}}}" }}
"#
    )
}

/// `{"id": id, "pad": "xxx..."}` padded to about `len` bytes.
fn line(id: u64, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"id": {id}, "pad": ""#);
    let pad = len.saturating_sub(head.len() + 2);
    let mut l = head.into_bytes();
    l.extend(std::iter::repeat_n(b'x', pad));
    l.extend_from_slice(br#""}"#);
    l
}

/// Several oversize lines (one over a whole read buffer, one with CRLF),
/// mixed with good ones: each is copied whole into the failures file, and
/// feeding that file back in with a bigger cap delivers every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_lines_are_kept_whole_and_feed_back_in() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let mut lines = Vec::new();
    let mut big = Vec::new();
    for id in 0..40u64 {
        let l = match id % 8 {
            3 => line(id, 2_000),
            5 => line(id, 300_000 + id as usize),
            7 => {
                let mut l = line(id, 5_000);
                l.push(b'\r');
                l
            }
            _ => line(id, 100),
        };
        if l.len() > 1024 {
            big.push(l.clone());
        }
        lines.push(l);
    }
    s.jobs(&lines);
    let report = s.run(&config("@DIR@/jobs.ndjson", 1024)).await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (25, 15), "{p:?}");
    let failed = read_lines(&s.path("failed.ndjson"));
    let mut want = big.clone();
    let mut got = failed.clone();
    want.sort();
    got.sort();
    assert!(
        got == want,
        "the failures file holds each oversize line whole"
    );
    let reasons = read_lines(&s.path("failed.ndjson.reasons"));
    assert_eq!(reasons.len(), 15);
    for r in &reasons {
        let r: serde_json::Value = serde_json::from_slice(r).unwrap();
        let why = r["reason"].as_str().unwrap();
        assert!(why.contains("over max_body_bytes (1024)"), "{why}");
    }

    // Feed the failures back in with room for them.
    std::fs::rename(s.path("failed.ndjson"), s.path("again.ndjson")).unwrap();
    std::fs::remove_file(s.path("failed.ndjson.reasons")).unwrap();
    let report = s.run(&config("@DIR@/again.ndjson", 1 << 20)).await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (15, 0), "{p:?}");
    let ids = s.accepted_ids();
    assert_eq!(ids.len(), 40, "every line delivered: {ids:?}");
    assert!(ids.values().all(|&n| n == 1), "each once: {ids:?}");
    // The body the job saw was the whole pad, not a prefix.
    for r in s.receiver.requests() {
        let id: u64 = r.path.rsplit('/').next().unwrap().parse().unwrap();
        let want = lines[id as usize].len() - format!(r#"{{"id": {id}, "pad": ""#).len() - 2;
        let want = want - usize::from(lines[id as usize].ends_with(b"\r"));
        assert_eq!(r.body, want.to_string().as_bytes(), "job {id}");
    }
}

/// A byte order mark before the first line is not part of it: the line
/// parses, its id (offset) is 3, and the checkpoint resumes past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_order_mark_is_skipped() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let mut text = b"\xEF\xBB\xBF".to_vec();
    for id in 0..5 {
        text.extend_from_slice(format!("{{\"id\": {id}, \"pad\": \"ab\"}}\n").as_bytes());
    }
    std::fs::write(s.path("jobs.ndjson"), &text).unwrap();
    let report = s.run(&config("@DIR@/jobs.ndjson", 1024)).await;
    let p = single(&report);
    assert_eq!((p.succeeded, p.dead_lettered), (5, 0), "{p:?}");
    let first = s
        .receiver
        .requests()
        .into_iter()
        .find(|r| r.path == "/jobs/0")
        .expect("the first line was delivered");
    assert_eq!(first.header("x-message-id"), Some("3"));
    // A rerun finds everything settled: the checkpoint agrees on offsets.
    let report = s.run(&config("@DIR@/jobs.ndjson", 1024)).await;
    assert_eq!(single(&report).received, 0);
    assert_eq!(s.receiver.requests().len(), 5);

    // A file that is only a BOM, or a BOM and blank lines, has no jobs.
    std::fs::write(s.path("empty.ndjson"), b"\xEF\xBB\xBF\n\r\n").unwrap();
    let report = s.run(&config("@DIR@/empty.ndjson", 1024)).await;
    let p = single(&report);
    assert_eq!((p.received, p.dead_lettered), (0, 0), "{p:?}");
}

/// From stdin, which cannot be read again: a BOM is skipped, and the
/// oversize lines are spooled as read and copied whole into the failures
/// file, which then feeds back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_oversize_lines_are_kept_whole() {
    let s = Setup::new(ReceiverConfig::default()).await;
    let mut input = b"\xEF\xBB\xBF".to_vec();
    let mut big = Vec::new();
    for id in 0..30u64 {
        let l = if id % 4 == 0 {
            line(id, 3_000 + 70_000 * (id as usize % 3))
        } else {
            line(id, 50)
        };
        if l.len() > 1024 {
            big.push(l.clone());
        }
        input.extend_from_slice(&l);
        input.push(b'\n');
    }
    let text = config("-", 1024)
        .replace("@DIR@", &s.dir.path().display().to_string())
        .replace("@URL@", &s.receiver.url());
    std::fs::write(s.path("stdin.toml"), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--progress", "off", "-c"])
        .arg(s.path("stdin.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // A file, not a pipe: a pipe nobody reads fills up and blocks it.
        .stderr(std::fs::File::create(s.path("stdin.log")).unwrap())
        .spawn()
        .expect("spawn sluice");
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread in small pieces, so lines straddle reads.
    let writer = std::thread::spawn(move || {
        for piece in input.chunks(777) {
            stdin.write_all(piece).unwrap();
        }
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sluice did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    writer.join().unwrap();
    let log = std::fs::read_to_string(s.path("stdin.log")).unwrap();
    // It ended by itself (the exit code for "some were dead-lettered" is
    // the runtime's business).
    assert!(status.code().is_some(), "{log}");
    assert!(log.contains("pipeline stopped"), "{log}");
    let mut got = read_lines(&s.path("failed.ndjson"));
    got.sort();
    big.sort();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "each oversize line whole in the failures file");
    assert_eq!(s.accepted_ids().len(), 30 - big.len());

    std::fs::rename(s.path("failed.ndjson"), s.path("again.ndjson")).unwrap();
    let report = s.run(&config("@DIR@/again.ndjson", 1 << 20)).await;
    assert_eq!(single(&report).succeeded, big.len() as u64);
    let ids = s.accepted_ids();
    assert_eq!(ids.len(), 30, "{ids:?}");
    assert!(ids.values().all(|&n| n == 1));
}
