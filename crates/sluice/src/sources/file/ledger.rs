//! The file source's durable record: which lines are settled (the
//! checkpoint) and which failed (the failures file and its reasons).
//!
//! The checkpoint is a journal, one write per batch of settlements, so a
//! `kill -9` loses at most what was still in memory: on restart only the
//! lines that were unsettled (in flight or waiting to retry) run again.
//!
//! ```text
//! sluice-checkpoint 1
//! read 81920            every line below this offset was received...
//! pending 512 1024      ...and all but these were settled
//! settled 90112         a line at or above `read` that was settled later
//! settled 1024
//! ```
//!
//! A failed line is written to the failures file (as it was, so the file
//! can be fed back in) and its reason to `<failures>.reasons` (JSON lines)
//! before its settlement is journaled, and both files are synced first. An
//! oversize line, of which only a prefix is in memory, is copied from where
//! it was read (the input, or the stdin spool) in 64 KiB chunks on a
//! blocking thread; the copy checks that those bytes still are the line (the
//! prefix matches, no newline inside, none missing), and a copy that fails
//! is cut off again, so the failures file never holds half a line.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::sources::common::Watermark;

const HEADER: &str = "sluice-checkpoint 1";
/// Rewrite the journal as a snapshot once it holds this many records.
const COMPACT_EVERY: usize = 100_000;

/// What a checkpoint says about an input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Lines below this offset were received...
    pub read: u64,
    /// ...and settled, except these.
    pub pending: BTreeSet<u64>,
    /// Lines at or above `read` that were settled.
    pub settled_above: BTreeSet<u64>,
}

impl Resume {
    /// Where reading restarts.
    pub fn start(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.read)
    }

    /// True when the line at `offset` was settled before.
    pub fn is_settled(&self, offset: u64) -> bool {
        if offset < self.read {
            !self.pending.contains(&offset) || self.settled_above.contains(&offset)
        } else {
            self.settled_above.contains(&offset)
        }
    }

    /// Reads a checkpoint; a missing file is a fresh start.
    pub fn load(path: &Path) -> io::Result<Resume> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Resume::default()),
            Err(e) => return Err(e),
        };
        let bad = |n: usize, why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {n}: {why}; delete it to start over"),
            )
        };
        let mut r = Resume::default();
        // The text after the last newline is a record a crash cut short.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for (i, line) in complete.lines().enumerate() {
            let n = i + 1;
            if i == 0 {
                if line != HEADER {
                    return Err(bad(n, "not a sluice checkpoint"));
                }
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let num = |w: &str| w.parse::<u64>().map_err(|_| bad(n, "not a number"));
            match words.next() {
                Some("read") => r.read = num(words.next().unwrap_or(""))?,
                Some("pending") => {
                    for w in words {
                        r.pending.insert(num(w)?);
                    }
                }
                Some("settled") => {
                    let at = num(words.next().unwrap_or(""))?;
                    if at < r.read {
                        r.pending.remove(&at);
                    } else {
                        r.settled_above.insert(at);
                    }
                }
                None => {}
                Some(_) => return Err(bad(n, "unknown record")),
            }
        }
        if !complete.is_empty() && !complete.starts_with(HEADER) {
            return Err(bad(1, "not a sluice checkpoint"));
        }
        Ok(r)
    }
}

/// What the source tells the ledger.
#[derive(Debug)]
pub enum Event {
    /// Lines at these offsets were handed out; reading is now at `read`.
    Received { offsets: Vec<u64>, read: u64 },
    /// The line at this offset is done (succeeded, or its failure was
    /// stored); answered once journaled.
    Settled(u64, oneshot::Sender<io::Result<()>>),
    /// The line failed for good: store it in the failures file, synced;
    /// answered once stored. It stays unsettled until `Settled`.
    StoreFailure {
        offset: u64,
        line: FailedLine,
        attempts: u32,
        reason: String,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Write a final snapshot and sync everything.
    Close(oneshot::Sender<io::Result<()>>),
}

/// A failed line, for the failures file.
#[derive(Debug)]
pub enum FailedLine {
    /// The whole line, in memory.
    Whole(Bytes),
    /// An oversize line: `len` bytes at `at` in `from`, of which `head` is
    /// the start (what the job saw).
    Copy {
        from: PathBuf,
        at: u64,
        len: u64,
        head: Bytes,
    },
}

/// Where the ledger writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub checkpoint: Option<PathBuf>,
    pub failures: PathBuf,
}

impl Paths {
    pub fn reasons(&self) -> PathBuf {
        let mut p = self.failures.clone().into_os_string();
        p.push(".reasons");
        p.into()
    }
}

/// Runs the ledger as a task until `Close` or the channel ends.
///
/// Appends go to the page cache and take microseconds, so they are made
/// inline; only the `fsync` of the failures file goes to a blocking thread.
pub fn spawn(
    paths: Paths,
    resume: Resume,
    rx: mpsc::UnboundedReceiver<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Ledger::new(paths, resume).run(rx))
}

struct Ledger {
    paths: Paths,
    /// Lines received and not settled, and how far reading got.
    lines: Watermark,
    settled_above: BTreeSet<u64>,
    journal: Option<File>,
    records: usize,
    failures: Option<(File, File)>,
    /// A write failed: every later settlement reports it.
    broken: Option<String>,
}

impl Ledger {
    /// Starts from what the checkpoint said: its unsettled lines stay
    /// pending until this run settles them.
    fn new(paths: Paths, resume: Resume) -> Ledger {
        Ledger {
            paths,
            lines: Watermark::with_pending(resume.read, resume.pending),
            settled_above: resume.settled_above,
            journal: None,
            records: 0,
            failures: None,
            broken: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 4096 {
                    break;
                }
            }
            if let Some(done) = self.apply(&mut batch).await {
                let r = match self.snapshot() {
                    Ok(()) => self.sync_failures().await,
                    Err(e) => Err(e),
                };
                let _ = done.send(r);
                return;
            }
        }
    }

    /// Applies a batch: failures stored and synced, then one journal write.
    async fn apply(&mut self, batch: &mut Vec<Event>) -> Option<oneshot::Sender<io::Result<()>>> {
        let mut journal = String::new();
        let mut answers = Vec::new();
        let mut wrote_failures = false;
        let mut close = None;
        for ev in batch.drain(..) {
            match ev {
                Event::Received { offsets, read } => {
                    self.lines.received(offsets, read);
                    self.settled_above.retain(|&o| o >= read);
                }
                Event::Settled(at, done) => {
                    self.settle(at, &mut journal);
                    answers.push((done, None));
                }
                Event::StoreFailure {
                    offset,
                    line,
                    attempts,
                    reason,
                    done,
                } => match self.store_failure(offset, line, attempts, &reason).await {
                    Ok(()) => {
                        wrote_failures = true;
                        answers.push((done, None));
                    }
                    Err(e) => answers.push((done, Some(e.to_string()))),
                },
                Event::Close(done) => close = Some(done),
            }
        }
        let mut outcome = Ok(());
        if wrote_failures {
            outcome = self.sync_failures().await;
        }
        if outcome.is_ok() && !journal.is_empty() {
            outcome = self.append(&journal);
        }
        if let Err(e) = &outcome {
            self.broken.get_or_insert_with(|| e.to_string());
        }
        for (done, err) in answers {
            let err = err.or_else(|| self.broken.clone());
            let _ = done.send(match err {
                None => Ok(()),
                Some(e) => Err(io::Error::other(e)),
            });
        }
        if self.records >= COMPACT_EVERY {
            if let Err(e) = self.snapshot() {
                self.broken.get_or_insert_with(|| e.to_string());
            }
        }
        close
    }

    fn settle(&mut self, at: u64, journal: &mut String) {
        self.lines.settled(at);
        if self.paths.checkpoint.is_some() {
            use std::fmt::Write as _;
            let _ = writeln!(journal, "settled {at}");
            self.records += 1;
        }
    }

    async fn store_failure(
        &mut self,
        offset: u64,
        line: FailedLine,
        attempts: u32,
        reason: &str,
    ) -> io::Result<()> {
        if self.failures.is_none() {
            let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
            self.failures = Some((open(&self.paths.failures)?, open(&self.paths.reasons())?));
        }
        let (lines, reasons) = self.failures.as_mut().expect("opened above");
        match line {
            FailedLine::Whole(line) => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(&line);
                buf.push(b'\n');
                lines.write_all(&buf)?;
            }
            FailedLine::Copy {
                from,
                at,
                len,
                head,
            } => {
                let to = lines.try_clone()?;
                tokio::task::spawn_blocking(move || copy_line(&from, at, len, &head, to))
                    .await
                    .map_err(io::Error::other)??;
            }
        }
        let record = serde_json::json!({
            "offset": offset,
            "attempts": attempts,
            "reason": reason,
        });
        reasons.write_all(format!("{record}\n").as_bytes())?;
        Ok(())
    }

    /// Syncs the failures files on a blocking thread.
    async fn sync_failures(&mut self) -> io::Result<()> {
        let Some((a, b)) = &self.failures else {
            return Ok(());
        };
        let (a, b) = (a.try_clone()?, b.try_clone()?);
        tokio::task::spawn_blocking(move || {
            a.sync_data()?;
            b.sync_data()
        })
        .await
        .map_err(io::Error::other)?
    }

    fn append(&mut self, text: &str) -> io::Result<()> {
        if self.paths.checkpoint.is_none() {
            return Ok(());
        }
        if self.journal.is_none() {
            // First write of this run: start from a snapshot so the journal
            // never depends on an older run's records.
            self.snapshot()?;
        }
        let j = self.journal.as_mut().expect("snapshot opens the journal");
        j.write_all(text.as_bytes())
    }

    /// Replaces the journal with the current state, atomically.
    fn snapshot(&mut self) -> io::Result<()> {
        let Some(path) = self.paths.checkpoint.clone() else {
            return Ok(());
        };
        let mut text = format!("{HEADER}\nread {}\npending", self.lines.read());
        for p in self.lines.pending() {
            text.push_str(&format!(" {p}"));
        }
        text.push('\n');
        for s in &self.settled_above {
            text.push_str(&format!("settled {s}\n"));
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        self.journal = Some(OpenOptions::new().append(true).open(&path)?);
        self.records = 0;
        Ok(())
    }
}

/// Appends the `len` bytes at `at` in `from`, and a newline, to `to`,
/// in 64 KiB chunks. Fails, leaving `to` as it was, if those bytes are not
/// the line that was read: the input changed since.
fn copy_line(from: &Path, at: u64, len: u64, head: &[u8], mut to: File) -> io::Result<()> {
    let changed = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "cannot copy the oversize line at offset {at} from `{}`: {why}; it changed \
                 while sluice was reading it",
                from.display()
            ),
        )
    };
    let mut input = File::open(from).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot reopen `{}`: {e}", from.display()))
    })?;
    input.seek(io::SeekFrom::Start(at))?;
    let before = to.metadata()?.len();
    let copied = (|| {
        let mut input = input.take(len);
        let mut buf = vec![0u8; 64 << 10];
        let mut done = 0u64;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if chunk.contains(&b'\n') {
                return Err(changed("it holds a newline now"));
            }
            // The part of the head this chunk covers must match it.
            let d = done as usize;
            if d < head.len() {
                let upto = head.len().min(d + n);
                if chunk[..upto - d] != head[d..upto] {
                    return Err(changed("its bytes differ from those read"));
                }
            }
            to.write_all(chunk)?;
            done += n as u64;
        }
        if done != len {
            return Err(changed(&format!("it is {done} bytes, not {len}")));
        }
        to.write_all(b"\n")
    })();
    if copied.is_err() {
        // Never leave half a line: the next failure would be glued to it.
        let _ = to.set_len(before);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_rules() {
        let r = Resume {
            read: 100,
            pending: BTreeSet::from([10, 50]),
            settled_above: BTreeSet::from([120]),
        };
        assert_eq!(r.start(), 10);
        assert!(r.is_settled(0) && r.is_settled(30));
        assert!(!r.is_settled(10) && !r.is_settled(50));
        assert!(!r.is_settled(110) && r.is_settled(120));
    }

    #[test]
    fn an_oversize_line_is_copied_only_while_it_is_still_there() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let line = "x".repeat(200_000);
        std::fs::write(&input, format!("short\n{line}\nafter")).unwrap();
        let out = dir.path().join("out");
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap()
        };
        std::fs::write(&out, "earlier\n").unwrap();
        let len = line.len() as u64;
        copy_line(&input, 6, len, b"xxx", open()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("earlier\n{line}\n")
        );

        let before = std::fs::read(&out).unwrap();
        let refused = [
            (6, len, &b"xy"[..], "differ"),         // not the bytes read
            (6, len + 3, &b"xxx"[..], "newline"),   // runs into the next line
            (6, len + 100, &b"xxx"[..], "newline"), // likewise
            (200_007, 50, &b"aft"[..], "not 50"),   // cut short by the end
        ];
        for (at, len, head, why) in refused {
            let e = copy_line(&input, at, len, head, open()).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(std::fs::read(&out).unwrap(), before, "left as it was");
        }
    }

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        std::fs::write(
            &path,
            format!("{HEADER}\nread 100\npending 10 50\nsettled 50\nsettled 130\nsett"),
        )
        .unwrap();
        let r = Resume::load(&path).unwrap();
        assert_eq!(r.read, 100);
        assert_eq!(r.pending, BTreeSet::from([10]));
        assert_eq!(r.settled_above, BTreeSet::from([130]));
        std::fs::write(&path, "something else\n").unwrap();
        assert!(
            Resume::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not a sluice checkpoint")
        );
        assert_eq!(
            Resume::load(&dir.path().join("none")).unwrap(),
            Resume::default()
        );
    }
}
