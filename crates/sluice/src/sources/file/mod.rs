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
//! their reasons to `<failures>.reasons`: the failures file is the source's
//! own dead-letter target. A line over `max_body_bytes` is held in memory
//! only up to the cap; when it fails it is still copied whole into the
//! failures file, streamed from the input by offset and length (stdin
//! cannot be read twice, so its oversize lines are spooled to a temporary
//! file as they are read, deleted when the run ends). A UTF-8 byte order
//! mark at the start of the input is skipped: it is not part of the first
//! line, whose offset is then 3. A file cannot delay a line, so retries wait in
//! the runtime, each holding its job slot; so at most the concurrency (or
//! `max_pending`) lines are received and unsettled at once, which bounds
//! memory. A line released at
//! shutdown stays unsettled in the checkpoint and runs on the next start.

mod ledger;

pub use ledger::Resume;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    Acker, DeadLetter, DeadLetterTarget, Delivery, FieldError, Message, Received, Source,
    SourceConfig, SourceContext, SourceError, SourceProgress,
};
use crate::formats::Format;
use ledger::{Event, FailedLine, Paths};

/// The UTF-8 byte order mark, skipped at the start of the input.
const BOM: &[u8] = b"\xEF\xBB\xBF";

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
    /// most. Default: as many as the pipeline's concurrency, resizes
    /// included (each holds a job slot until settled).
    pub max_pending: Option<usize>,
    /// A JSON pointer (`/user_id`) to each line's ordering key: lines with
    /// the same key run one at a time, in file order. Default: none.
    pub ordering_key: Option<String>,
}

/// Where lines are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`path = "-"`).
    Stdin,
    File(PathBuf),
}

/// Whether settled lines are recorded for a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// `checkpoint = ""`, or stdin: a restart runs everything again.
    Off,
    At(PathBuf),
}

impl SourceConfig for FileSourceConfig {
    fn format(&self) -> Format {
        self.format
    }

    fn check(&self) -> Result<(), FieldError> {
        FileSourceConfig::check(self)
    }

    fn files(&self) -> Vec<super::LocalFile> {
        let file = |field, path: PathBuf, exclusive| super::LocalFile {
            field,
            path,
            exclusive,
        };
        let with = |p: &PathBuf, suffix: &str| {
            let mut s = p.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        let paths = self.paths();
        let mut files = vec![match self.input() {
            // Stdin is consumed: two readers would each get part of it.
            Input::Stdin => file("path", PathBuf::from("-"), true),
            Input::File(p) => file("path", p, false),
        }];
        if let Some(c) = &paths.checkpoint {
            files.push(file("checkpoint", c.clone(), true));
            // The checkpoint is written whole to `<checkpoint>.tmp`, then
            // renamed over.
            files.push(file("checkpoint", with(c, ".tmp"), true));
        }
        files.push(file("failures", paths.failures.clone(), true));
        files.push(file("failures", paths.reasons(), true));
        files
    }

    fn build<'a>(
        &'a self,
        cx: &'a SourceContext,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move { Ok(Box::new(FileSource::open(self, cx)?) as Box<dyn Source>) })
    }
}

impl FileSourceConfig {
    /// A config reading `path` (`-` for stdin) with every default.
    pub fn new(path: impl Into<String>) -> FileSourceConfig {
        FileSourceConfig {
            path: path.into(),
            format: Format::default(),
            checkpoint: None,
            failures: None,
            max_pending: None,
            ordering_key: None,
        }
    }

    /// Checks what can be checked without reading the input: the fields,
    /// that the input is a file that exists (stdin aside), and that the
    /// checkpoint and the failures file can be written.
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
        if let Some(p) = &self.ordering_key {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(FieldError::new(
                    "ordering_key",
                    format!("`{p}` is not a JSON pointer: write it like \"/user_id\""),
                ));
            }
        }
        if self.max_pending == Some(0) {
            return Err(FieldError::new("max_pending", "must be at least 1"));
        }
        if let Input::File(p) = self.input() {
            match std::fs::metadata(&p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(FieldError::new(
                        "path",
                        format!(
                            "`{}` does not exist: check the path (a relative one starts where \
                             sluice runs), or write `-` for stdin",
                            p.display()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(FieldError::new(
                        "path",
                        format!("cannot read `{}`: {e}", p.display()),
                    ));
                }
                Ok(m) if m.is_dir() => {
                    return Err(FieldError::new(
                        "path",
                        format!(
                            "`{}` is a directory: name a file of newline-delimited jobs",
                            p.display()
                        ),
                    ));
                }
                Ok(_) => {}
            }
        }
        // Without them every rerun would send everything again, and failed
        // lines would have nowhere to go: find out now, not at the end.
        let paths = self.paths();
        if let Some(c) = &paths.checkpoint {
            check_writable(c).map_err(|e| {
                FieldError::new(
                    "checkpoint",
                    format!("{e}, or write checkpoint = \"\" to turn resuming off"),
                )
            })?;
        }
        check_writable(&paths.failures).map_err(|e| FieldError::new("failures", e))?;
        Ok(())
    }

    /// The input the `path` names.
    pub fn input(&self) -> Input {
        match self.path.as_str() {
            "-" => Input::Stdin,
            p => Input::File(PathBuf::from(p)),
        }
    }

    fn is_stdin(&self) -> bool {
        self.input() == Input::Stdin
    }

    /// Where the checkpoint goes, if anywhere.
    pub fn checkpoint(&self) -> Checkpoint {
        match (&self.checkpoint, self.input()) {
            (_, Input::Stdin) => Checkpoint::Off,
            (Some(c), _) if c.is_empty() => Checkpoint::Off,
            (Some(c), _) => Checkpoint::At(PathBuf::from(c)),
            (None, Input::File(p)) => {
                let mut c = p.into_os_string();
                c.push(".checkpoint");
                Checkpoint::At(c.into())
            }
        }
    }

    fn paths(&self) -> Paths {
        let checkpoint = match self.checkpoint() {
            Checkpoint::Off => None,
            Checkpoint::At(p) => Some(p),
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

/// Checks that `file` can be appended to, or created, without changing it:
/// its directory exists and takes new files.
fn check_writable(file: &std::path::Path) -> Result<(), String> {
    let shown = file.display();
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => return Err(format!("`{shown}` is a directory: name a file")),
        Ok(_) => {
            return std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .map(drop)
                .map_err(|e| format!("cannot write `{shown}`: {e}; make it writable"));
        }
        Err(_) => {}
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "the directory of `{shown}` does not exist: create `{}`",
            dir.display()
        )),
        Err(e) => Err(format!("cannot use the directory of `{shown}`: {e}")),
        Ok(m) if !m.is_dir() => Err(format!(
            "`{}` is not a directory, so `{shown}` cannot be created in it",
            dir.display()
        )),
        // Creating a file is the one test that holds for permissions, ACLs
        // and read-only mounts alike; it is removed at once.
        Ok(_) => tempfile::Builder::new()
            .prefix(".sluice-check-")
            .tempfile_in(dir)
            .map(drop)
            .map_err(|e| {
                format!(
                    "cannot create `{shown}`: `{}` does not take new files ({}); make it writable",
                    dir.display(),
                    e.kind()
                )
            }),
    }
}

/// What the source, its ackers and its failures file share.
struct Shared {
    ledger: mpsc::UnboundedSender<Event>,
    /// Lines handed out and not yet settled (acked or dead-lettered).
    unsettled: AtomicUsize,
    /// Lines handed back (released), to deliver again first.
    released: Mutex<VecDeque<Line>>,
    /// Woken on every settlement and every release.
    wake: Notify,
    /// Set when a failed line could not be stored: the source stops.
    broken: Mutex<Option<String>>,
    /// Where the whole of each unsettled oversize line can be read again,
    /// by its offset: the failures file copies it from there.
    kept: Mutex<HashMap<u64, Kept>>,
}

/// Where an oversize line's bytes are: the input file, or the stdin spool.
#[derive(Clone, Debug)]
struct Kept {
    from: PathBuf,
    at: u64,
    len: u64,
}

impl Shared {
    fn lock_released(&self) -> std::sync::MutexGuard<'_, VecDeque<Line>> {
        self.released.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
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
    /// `max_pending`, when set.
    max_pending: Option<usize>,
    shared: Arc<Shared>,
    progress: Arc<SourceProgress>,
    ledger: Option<tokio::task::JoinHandle<()>>,
    name: String,
    /// The failures file, for logs.
    failures: String,
    ordering_key: Option<String>,
    /// The input file, from which oversize lines are copied; None for stdin.
    input: Option<PathBuf>,
    /// Stdin only: the bytes of oversize lines, spooled as they are read,
    /// since stdin cannot be read again. Created at the first one.
    spool: Option<Spool>,
    /// Where the line being read starts in the spool, once it is spooled.
    partial_spooled: Option<u64>,
}

/// A temporary file holding stdin's oversize lines, deleted when dropped.
struct Spool {
    file: tempfile::NamedTempFile,
    len: u64,
}

impl FileSource {
    /// Opens the input, reads the checkpoint and starts the ledger.
    pub fn open(cfg: &FileSourceConfig, cx: &SourceContext) -> Result<FileSource, SourceError> {
        let paths = cfg.paths();
        let failures_name = paths.failures.display().to_string();
        let resume = match &paths.checkpoint {
            Some(p) => Resume::load(p).map_err(|e| {
                SourceError::fatal(format!("cannot use the checkpoint `{}`: {e}", p.display()))
                    .with_source(e)
            })?,
            None => Resume::default(),
        };
        let progress = Arc::new(SourceProgress::default());
        let start = resume.start();
        let reader: Box<dyn AsyncBufRead + Send + Unpin> = if cfg.is_stdin() {
            Box::new(BufReader::with_capacity(64 << 10, tokio::io::stdin()))
        } else {
            let mut std_file = std::fs::File::open(&cfg.path).map_err(|e| {
                SourceError::fatal(format!("cannot open `{}`: {e}", cfg.path)).with_source(e)
            })?;
            let len = std_file.metadata().map(|m| m.len()).unwrap_or(0);
            if start > len {
                return Err(SourceError::fatal(format!(
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
                    SourceError::fatal(format!("cannot seek in `{}`: {e}", cfg.path))
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
            max_body: cx.max_body_bytes,
            max_pending: cfg.max_pending,
            shared: Arc::new(Shared {
                ledger: tx,
                unsettled: AtomicUsize::new(0),
                released: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                broken: Mutex::new(None),
                kept: Mutex::new(HashMap::new()),
            }),
            progress,
            ledger: Some(ledger),
            name: cfg.path.clone(),
            failures: failures_name,
            ordering_key: cfg.ordering_key.clone(),
            input: (!cfg.is_stdin()).then(|| PathBuf::from(&cfg.path)),
            spool: None,
            partial_spooled: None,
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
            // One byte over the cap tells an oversize line; a possible BOM
            // is kept on top so the first line's body stays whole.
            let bom_room = if self.partial_start == 0 {
                BOM.len()
            } else {
                0
            };
            let cap = self.max_body + 1 + bom_room as u64;
            let room = cap.saturating_sub(self.partial.len() as u64) as usize;
            self.partial
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            let before = self.partial_len;
            self.partial_len += chunk.len() as u64;
            if !self.is_file && self.partial_len > self.max_body {
                // The first time, all that was read of the line before this
                // chunk is still in memory: it goes first.
                let head: &[u8] = match self.partial_spooled {
                    None => &self.partial[..before as usize],
                    Some(_) => &[],
                };
                spool_line(&mut self.spool, &mut self.partial_spooled, head, chunk)?;
            }
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
        let mut start = self.partial_start;
        let mut len = self.partial_len;
        let mut body = std::mem::take(&mut self.partial);
        let mut spooled = self.partial_spooled.take();
        self.partial_len = 0;
        self.partial_start = self.offset;
        if start == 0 && body.starts_with(BOM) {
            let _ = body.split_to(BOM.len());
            start += BOM.len() as u64;
            len -= BOM.len() as u64;
            spooled = spooled.map(|at| at + BOM.len() as u64);
            let cap = (self.max_body + 1) as usize;
            if body.len() > cap {
                body.truncate(cap);
            }
        }
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
            let kept = match (&self.input, &self.spool, spooled) {
                (Some(input), _, _) => Some(Kept {
                    from: input.clone(),
                    at: start,
                    len,
                }),
                (None, Some(spool), Some(at)) => Some(Kept {
                    from: spool.file.path().to_owned(),
                    at,
                    len,
                }),
                _ => None,
            };
            if let Some(k) = kept {
                self.shared.lock_kept().insert(start, k);
            }
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
            key: self.key_of(&line.body),
            fields: Default::default(),
        };
        Delivery::new(
            message,
            Box::new(FileAcker {
                line,
                shared: self.shared.clone(),
                done: false,
            }),
        )
    }

    /// The line's ordering key: the value at the `ordering_key` pointer, as
    /// text. A line without one (or not JSON) has none.
    fn key_of(&self, body: &[u8]) -> Option<String> {
        let pointer = self.ordering_key.as_deref()?;
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        match v.pointer(pointer)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Released lines, up to `max`: they are still unsettled.
    fn take_released(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut released = self.shared.lock_released();
        while out.len() < max {
            let Some(line) = released.pop_front() else {
                break;
            };
            out.push(self.deliver(line));
        }
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
                return Err(SourceError::fatal(why));
            }
            let mut out = Vec::new();
            self.take_released(max, &mut out);
            let unsettled = shared.unsettled.load(Relaxed);
            // Released lines are counted in `unsettled` already.
            // Without `max_pending`, the pool bounds the unsettled lines:
            // each holds a slot until settled, and a released one is
            // handed out again before any fresh line.
            let window = self.max_pending.unwrap_or(usize::MAX);
            let room = window.saturating_sub(unsettled);
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
            let idle = shared.unsettled.load(Relaxed) == 0;
            if self.eof && self.ready.is_empty() && idle {
                if self.skipped > 0 {
                    tracing::info!(input = %self.name, skipped = self.skipped, "skipped lines the checkpoint marks as settled");
                }
                return Ok(Received::End);
            }
            let can_read = !self.eof && room > 0 && self.ready.is_empty();
            tokio::select! {
                r = self.read_some(max), if can_read => {
                    r.map_err(|e| SourceError::fatal(format!("reading `{}` failed: {e}", self.name)).with_source(e))?;
                }
                _ = notified => {}
            }
        }
    }
}

/// Appends a stdin line that went over the cap to the spool: what was
/// read of it before (`head`, all in memory still) the first time, then
/// each later chunk. Small appends to the page cache, made inline like the
/// ledger's.
fn spool_line(
    spool: &mut Option<Spool>,
    line_at: &mut Option<u64>,
    head: &[u8],
    chunk: &[u8],
) -> io::Result<()> {
    if spool.is_none() {
        let file = tempfile::NamedTempFile::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a temporary file to keep an oversize line of stdin: {e}"),
            )
        })?;
        *spool = Some(Spool { file, len: 0 });
    }
    let spool = spool.as_mut().expect("created above");
    if line_at.is_none() {
        *line_at = Some(spool.len);
        spool.file.as_file_mut().write_all(head)?;
        spool.len += head.len() as u64;
    }
    spool.file.as_file_mut().write_all(chunk)?;
    spool.len += chunk.len() as u64;
    Ok(())
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
                .map_err(|_| SourceError::fatal("the checkpoint writer stopped"))?;
            if let Some(h) = self.ledger.take() {
                let _ = h.await;
            }
            r.map_err(|e| {
                SourceError::fatal(format!("writing the checkpoint or failures failed: {e}"))
                    .with_source(e)
            })
        })
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        Some(Arc::new(FailuresFile {
            shared: self.shared.clone(),
            name: self.failures.clone(),
        }))
    }

    fn progress(&self) -> Option<Arc<SourceProgress>> {
        Some(self.progress.clone())
    }
}

/// Settles one line.
struct FileAcker {
    line: Line,
    shared: Arc<Shared>,
    /// Settled, released, or on its way to be: nothing to do when dropped.
    done: bool,
}

impl Drop for FileAcker {
    fn drop(&mut self) {
        if !self.done {
            // Dropped unsettled (revoked): the line stays unsettled in the
            // checkpoint, so the next start runs it; this run stops
            // waiting for it.
            self.shared.unsettled.fetch_sub(1, Relaxed);
            self.shared.wake.notify_one();
        }
    }
}

impl FileAcker {
    /// Journals the line as settled; the slot stays taken until then, so a
    /// kill -9 re-runs at most what was in flight.
    async fn settle(mut self) -> Result<(), SourceError> {
        self.done = true;
        self.shared.lock_kept().remove(&self.line.offset);
        let (done, written) = oneshot::channel();
        let stopped = || SourceError::fatal("the checkpoint writer stopped");
        self.shared
            .ledger
            .send(Event::Settled(self.line.offset, done))
            .map_err(|_| stopped())?;
        let r = written.await.map_err(|_| stopped())?;
        self.shared.unsettled.fetch_sub(1, Relaxed);
        self.shared.wake.notify_one();
        r.map_err(|e| {
            SourceError::fatal(format!("could not write the checkpoint: {e}")).with_source(e)
        })
    }
}

impl Acker for FileAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(self.settle())
    }

    fn remove(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(self.settle())
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        self.done = true;
        let line = self.line.clone();
        self.shared.lock_released().push_back(line);
        self.shared.wake.notify_one();
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The failures file (and its `.reasons`): the file source's dead letters.
struct FailuresFile {
    shared: Arc<Shared>,
    name: String,
}

impl DeadLetterTarget for FailuresFile {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let stopped = || SourceError::fatal("the failures writer stopped");
            let offset: u64 = letter.message.id.parse().map_err(|_| {
                SourceError::fatal(format!(
                    "`{}` is not a line of this file; the failures file takes only its own lines",
                    letter.message.id
                ))
            })?;
            let m = letter.message;
            let line = match m.oversize {
                None => FailedLine::Whole(m.body.clone()),
                Some(len) => match self.shared.lock_kept().get(&offset).cloned() {
                    Some(k) => FailedLine::Copy {
                        from: k.from,
                        at: k.at,
                        len: k.len,
                        head: m.body.clone(),
                    },
                    None => {
                        // Not expected: every oversize line is kept. Stop
                        // as for a failed write; the line stays unsettled.
                        let why = format!(
                            "the oversize line at offset {offset} ({len} bytes) cannot be read \
                             again to copy it into `{}`",
                            self.name
                        );
                        *self.shared.broken.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(why.clone());
                        self.shared.wake.notify_one();
                        return Err(SourceError::fatal(why));
                    }
                },
            };
            let (done, stored) = oneshot::channel();
            self.shared
                .ledger
                .send(Event::StoreFailure {
                    offset,
                    line,
                    attempts: letter.attempts,
                    reason: letter.reason.to_owned(),
                    done,
                })
                .map_err(|_| stopped())?;
            match stored.await.map_err(|_| stopped())? {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Not stored: the line stays unsettled, so the
                    // checkpoint never passes it and it runs again on the
                    // next start; this run stops taking new lines.
                    let why = format!("could not write the failures file `{}`: {e}", self.name);
                    *self.shared.broken.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(why.clone());
                    self.shared.wake.notify_one();
                    Err(SourceError::fatal(why).with_source(e))
                }
            }
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
