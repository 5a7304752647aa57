//! The `file` source: newline-delimited jobs from a file or stdin — the
//! batch case (message 20,000 users, re-post a backlog).
//!
//! ```toml
//! [pipeline.source]
//! type = "file"
//! path = "users.ndjson"            # "-" reads stdin
//! format = "json"                  # raw | json | laravel
//! # checkpoint = "users.ndjson.checkpoint"   (the default)
//! # failures = "users.ndjson.failures"       (the default)
//! ```
//!
//! Each non-empty line is one job; its id is its byte offset. The run is
//! resumable: the checkpoint records which lines are settled, so a run that
//! was stopped or killed starts again where it stopped, re-running only the
//! lines that were unsettled. Lines that fail for good are appended, as they
//! were, to the failures file (feed it back in as the next run's input), and
//! their reasons to `<failures>.reasons`. Retries wait inside the source
//! (there is no broker to hold them); at most `max_pending` lines are
//! received and unsettled at once, which bounds memory.

mod ledger;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::{Acker, Delivery, Message, Received, Source, SourceError, SourceProgress};
use crate::formats::Format;
use crate::runtime::pipeline::Pipeline;
use crate::steps::FieldError;
use ledger::{Event, Paths, Resume};

/// `type = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The input: a file of newline-delimited jobs, or `-` for stdin.
    pub path: String,
    /// The envelope of each line. Default `json`.
    #[serde(default)]
    pub format: Format,
    /// Where settled lines are recorded, so a restart resumes. Default
    /// `<path>.checkpoint`; `""` turns resuming off. Always off for stdin.
    pub checkpoint: Option<String>,
    /// Where failed lines go. Default `<path>.failures` (`stdin.failures`
    /// for stdin).
    pub failures: Option<String>,
    /// Lines received and not yet settled (running or waiting to retry), at
    /// most. Default: twice the pipeline's concurrency.
    pub max_pending: Option<usize>,
}

impl FileSourceConfig {
    /// Checks what can be checked without opening anything.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.path.is_empty() {
            return Err(FieldError::new(
                "path",
                "empty: name a file, or `-` for stdin",
            ));
        }
        if self.failures.as_deref() == Some("") {
            return Err(FieldError::new(
                "failures",
                "empty: failed lines need somewhere to go",
            ));
        }
        if self.max_pending == Some(0) {
            return Err(FieldError::new("max_pending", "must be at least 1"));
        }
        Ok(())
    }

    fn is_stdin(&self) -> bool {
        self.path == "-"
    }

    fn paths(&self) -> Paths {
        let checkpoint = match (&self.checkpoint, self.is_stdin()) {
            (_, true) => None,
            (Some(c), _) if c.is_empty() => None,
            (Some(c), _) => Some(PathBuf::from(c)),
            (None, _) => Some(PathBuf::from(format!("{}.checkpoint", self.path))),
        };
        let failures = match (&self.failures, self.is_stdin()) {
            (Some(f), _) => PathBuf::from(f),
            (None, true) => PathBuf::from("stdin.failures"),
            (None, false) => PathBuf::from(format!("{}.failures", self.path)),
        };
        Paths {
            checkpoint,
            failures,
        }
    }
}

/// What the source and its ackers share.
struct Shared {
    ledger: mpsc::UnboundedSender<Event>,
    /// Lines handed out and not yet settled (acked or dead-lettered).
    unsettled: AtomicUsize,
    /// Lines waiting to be delivered again, soonest first.
    again: Mutex<BinaryHeap<Reverse<Again>>>,
    /// Woken on every settlement and every retry.
    wake: Notify,
    /// Set when a failed line could not be stored: the source stops.
    broken: Mutex<Option<String>>,
}

struct Again {
    due: Instant,
    line: Line,
}

impl PartialEq for Again {
    fn eq(&self, other: &Again) -> bool {
        (self.due, self.line.offset) == (other.due, other.line.offset)
    }
}
impl Eq for Again {}
impl PartialOrd for Again {
    fn partial_cmp(&self, other: &Again) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Again {
    fn cmp(&self, other: &Again) -> std::cmp::Ordering {
        (self.due, self.line.offset).cmp(&(other.due, other.line.offset))
    }
}

/// One line of input.
#[derive(Clone, Debug)]
struct Line {
    offset: u64,
    body: Bytes,
    attempt: u32,
    /// The line's real length when it was longer than the body cap.
    oversize: Option<u64>,
}

/// The running source.
pub struct FileSource {
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    is_file: bool,
    /// Offset of the next byte to read.
    offset: u64,
    eof: bool,
    /// A line being read (kept here so `receive` is cancel-safe).
    partial: BytesMut,
    partial_len: u64,
    partial_start: u64,
    /// Lines read but not yet handed out.
    ready: VecDeque<Line>,
    resume: Resume,
    skipped: u64,
    max_body: u64,
    window: usize,
    shared: Arc<Shared>,
    progress: Arc<SourceProgress>,
    ledger: Option<tokio::task::JoinHandle<()>>,
    name: String,
}

impl FileSource {
    /// Opens the input, reads the checkpoint and starts the ledger.
    pub fn open(cfg: &FileSourceConfig, pipeline: &Pipeline) -> Result<FileSource, SourceError> {
        let paths = cfg.paths();
        let resume = match &paths.checkpoint {
            Some(p) => Resume::load(p).map_err(|e| {
                SourceError::Fatal(format!("cannot use the checkpoint `{}`: {e}", p.display()))
            })?,
            None => Resume::default(),
        };
        let progress = Arc::new(SourceProgress::default());
        let start = resume.start();
        let reader: Box<dyn AsyncBufRead + Send + Unpin> = if cfg.is_stdin() {
            Box::new(BufReader::with_capacity(64 << 10, tokio::io::stdin()))
        } else {
            let mut std_file = std::fs::File::open(&cfg.path)
                .map_err(|e| SourceError::Fatal(format!("cannot open `{}`: {e}", cfg.path)))?;
            let len = std_file.metadata().map(|m| m.len()).unwrap_or(0);
            if start > len {
                return Err(SourceError::Fatal(format!(
                    "the checkpoint says `{}` was read to byte {start}, but it has {len} bytes: \
                     it is not the file the checkpoint was made for; delete the checkpoint to start over",
                    cfg.path
                )));
            }
            progress.total_bytes.store(len, Relaxed);
            if start > 0 {
                tracing::info!(
                    input = %cfg.path, offset = start,
                    "resuming from the checkpoint (delete it to start over)"
                );
                use std::io::Seek;
                std_file.seek(io::SeekFrom::Start(start)).map_err(|e| {
                    SourceError::Fatal(format!("cannot seek in `{}`: {e}", cfg.path))
                })?;
            }
            let file = tokio::fs::File::from_std(std_file);
            Box::new(BufReader::with_capacity(256 << 10, file))
        };
        progress.read_bytes.store(start, Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let ledger = ledger::spawn(paths, resume.clone(), rx);
        Ok(FileSource {
            reader,
            is_file: !cfg.is_stdin(),
            offset: start,
            eof: false,
            partial: BytesMut::new(),
            partial_len: 0,
            partial_start: start,
            ready: VecDeque::new(),
            resume,
            skipped: 0,
            max_body: pipeline.max_body_bytes,
            window: cfg.max_pending.unwrap_or(pipeline.concurrency * 2).max(1),
            shared: Arc::new(Shared {
                ledger: tx,
                unsettled: AtomicUsize::new(0),
                again: Mutex::new(BinaryHeap::new()),
                wake: Notify::new(),
                broken: Mutex::new(None),
            }),
            progress,
            ledger: Some(ledger),
            name: cfg.path.clone(),
        })
    }

    /// Reads one line into `ready` (or skips it), or notes the end.
    /// Cancel-safe: a line read halfway stays in `partial`.
    async fn read_line(&mut self) -> io::Result<()> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                self.eof = true;
                if self.partial_len > 0 {
                    self.finish_line();
                }
                return Ok(());
            }
            let (chunk, done) = match memchr(buf) {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = (self.max_body + 1).saturating_sub(self.partial.len() as u64) as usize;
            self.partial
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.partial_len += chunk.len() as u64;
            let used = done.unwrap_or(buf.len());
            self.reader.consume(used);
            self.offset += used as u64;
            self.progress.read_bytes.store(self.offset, Relaxed);
            if done.is_some() {
                self.finish_line();
                return Ok(());
            }
        }
    }

    fn finish_line(&mut self) {
        let start = self.partial_start;
        let mut len = self.partial_len;
        let mut body = std::mem::take(&mut self.partial);
        self.partial_len = 0;
        self.partial_start = self.offset;
        if body.last() == Some(&b'\r') && len as usize == body.len() {
            body.truncate(body.len() - 1);
            len -= 1;
        }
        if body.iter().all(u8::is_ascii_whitespace) && len as usize == body.len() {
            return;
        }
        if self.resume.is_settled(start) {
            self.skipped += 1;
            return;
        }
        let oversize = (len > self.max_body).then_some(len);
        if oversize.is_some() {
            body.truncate(self.max_body as usize);
        }
        self.ready.push_back(Line {
            offset: start,
            body: body.freeze(),
            attempt: 1,
            oversize,
        });
    }

    /// Fills `ready` with up to `want` lines without waiting on a slow
    /// stdin once one line is in hand.
    async fn read_some(&mut self, want: usize) -> io::Result<()> {
        while self.ready.len() < want && !self.eof {
            let had = self.ready.len();
            self.read_line().await?;
            let buffered_line = memchr(self.reader_buffer()).is_some();
            if self.ready.len() > had && !self.is_file && !buffered_line {
                break;
            }
        }
        Ok(())
    }

    fn reader_buffer(&mut self) -> &[u8] {
        // `fill_buf` on an already-filled BufReader returns the buffer
        // without reading; poll it once without waiting.
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match std::pin::Pin::new(&mut self.reader).poll_fill_buf(&mut cx) {
            std::task::Poll::Ready(Ok(b)) => b,
            _ => &[],
        }
    }

    fn deliver(&self, line: Line) -> Delivery {
        let message = Message {
            id: line.offset.to_string(),
            body: line.body.clone(),
            attributes: Default::default(),
            attempt: line.attempt,
            oversize: line.oversize,
        };
        Delivery {
            message,
            acker: Box::new(FileAcker {
                line,
                shared: self.shared.clone(),
            }),
        }
    }

    /// Lines due for another try, up to `max`.
    fn take_due(&self, max: usize, out: &mut Vec<Delivery>) -> Option<Instant> {
        let now = Instant::now();
        let mut again = self.shared.again.lock().unwrap_or_else(|p| p.into_inner());
        while out.len() < max {
            match again.peek() {
                Some(Reverse(a)) if a.due <= now => {
                    let Reverse(a) = again.pop().expect("peeked");
                    out.push(self.deliver(a.line));
                }
                Some(Reverse(a)) => return Some(a.due),
                None => return None,
            }
        }
        again.peek().map(|Reverse(a)| a.due)
    }

    async fn next(&mut self, max: usize) -> Result<Received, SourceError> {
        loop {
            let shared = self.shared.clone();
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            if let Some(why) = shared
                .broken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(SourceError::Fatal(why));
            }
            let mut out = Vec::new();
            let next_due = self.take_due(max, &mut out);
            let unsettled = shared.unsettled.load(Relaxed);
            let room = self.window.saturating_sub(unsettled + out.len());
            let take = room.min(max - out.len()).min(self.ready.len());
            let fresh: Vec<Line> = self.ready.drain(..take).collect();
            if !fresh.is_empty() {
                let offsets = fresh.iter().map(|l| l.offset).collect();
                let read = self.ready.front().map_or(self.partial_start, |l| l.offset);
                let _ = shared.ledger.send(Event::Received { offsets, read });
                shared.unsettled.fetch_add(fresh.len(), Relaxed);
                out.extend(fresh.into_iter().map(|l| self.deliver(l)));
            }
            if !out.is_empty() {
                return Ok(Received::Deliveries(out));
            }
            let idle = shared.unsettled.load(Relaxed) == 0 && next_due.is_none();
            if self.eof && self.ready.is_empty() && idle {
                if self.skipped > 0 {
                    tracing::info!(input = %self.name, skipped = self.skipped, "skipped lines the checkpoint marks as settled");
                }
                return Ok(Received::End);
            }
            let can_read = !self.eof && room > 0 && self.ready.is_empty();
            let sleep = async {
                match next_due {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.read_some(max), if can_read => {
                    r.map_err(|e| SourceError::Fatal(format!("reading `{}` failed: {e}", self.name)))?;
                }
                _ = sleep => {}
                _ = notified => {}
            }
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.name)
            .field("offset", &self.offset)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl Source for FileSource {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(self.next(max.max(1)))
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let _ = self.shared.ledger.send(Event::Close(tx));
            let r = rx
                .await
                .map_err(|_| SourceError::Fatal("the checkpoint writer stopped".into()))?;
            if let Some(h) = self.ledger.take() {
                let _ = h.await;
            }
            r.map_err(|e| {
                SourceError::Fatal(format!("writing the checkpoint or failures failed: {e}"))
            })
        })
    }

    fn progress(&self) -> Option<Arc<SourceProgress>> {
        Some(self.progress.clone())
    }
}

/// Settles one line.
struct FileAcker {
    line: Line,
    shared: Arc<Shared>,
}

impl FileAcker {
    fn settled(&self) {
        self.shared.unsettled.fetch_sub(1, Relaxed);
        self.shared.wake.notify_one();
    }

    fn again(self, delay: Duration, attempt: u32) {
        let FileAcker { mut line, shared } = self;
        line.attempt = attempt;
        shared
            .again
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse(Again {
                due: Instant::now() + delay,
                line,
            }));
        shared.wake.notify_one();
    }
}

impl Acker for FileAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            // Wait for the settlement to be journaled: the slot stays taken
            // until then, so a kill -9 re-runs at most what was in flight.
            let (done, written) = oneshot::channel();
            let stopped = || SourceError::Fatal("the checkpoint writer stopped".into());
            self.shared
                .ledger
                .send(Event::Settled(self.line.offset, done))
                .map_err(|_| stopped())?;
            let r = written.await.map_err(|_| stopped())?;
            self.settled();
            r.map_err(|e| SourceError::Fatal(format!("could not write the checkpoint: {e}")))
        })
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), SourceError>> {
        let next = self.line.attempt.saturating_add(1);
        (*self).again(delay, next);
        Box::pin(std::future::ready(Ok(())))
    }

    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let (done, stored) = oneshot::channel();
            let line = self.line.oversize.is_none().then(|| self.line.body.clone());
            self.shared
                .ledger
                .send(Event::Failed {
                    offset: self.line.offset,
                    line,
                    attempts: self.line.attempt,
                    reason,
                    done,
                })
                .map_err(|_| SourceError::Fatal("the failures writer stopped".into()))?;
            let r = stored
                .await
                .map_err(|_| SourceError::Fatal("the failures writer stopped".into()))?;
            match r {
                Ok(()) => {
                    self.settled();
                    Ok(())
                }
                Err(e) => {
                    // Not stored: the line stays unsettled, so the
                    // checkpoint never passes it and it runs again on the
                    // next start; this run stops taking new lines.
                    let why = format!("could not write the failures file: {e}");
                    *self.shared.broken.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(why.clone());
                    self.shared.wake.notify_one();
                    Err(SourceError::Fatal(why))
                }
            }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let attempt = self.line.attempt;
        (*self).again(Duration::ZERO, attempt);
        Box::pin(std::future::ready(Ok(())))
    }
}
