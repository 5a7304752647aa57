//! Progress while a run goes (a bar on a terminal, log lines otherwise) and
//! the summary at its end.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use super::RunReport;
use crate::sources::SourceProgress;
use crate::telemetry::PipelineCounts;

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// A bar when stderr is a terminal, log lines when not.
    #[default]
    Auto,
    Bar,
    Log,
    Off,
}

/// A pipeline on show: its name, its counts and its input's progress.
pub type Shown = (String, Arc<PipelineCounts>, Option<Arc<SourceProgress>>);

/// The progress display of a run; [`finish`](Running::finish) stops it.
#[derive(Debug)]
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Starts showing the progress of `shown`.
pub fn start(mode: Progress, shown: Vec<Shown>) -> Running {
    let mode = match mode {
        Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
        Progress::Auto => Progress::Log,
        m => m,
    };
    if mode == Progress::Off {
        return Running {
            stop: None,
            task: None,
        };
    }
    let (tx, mut rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let bar = (mode == Progress::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% ETA {eta} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        let every = match mode {
            Progress::Bar => Duration::from_millis(200),
            _ => Duration::from_secs(10),
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tick.tick() => {}
            }
            let now = snapshot(&shown);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let line = format!(
                "{} done ({:.0}/s), {} failed, {} retried{}",
                now.done,
                now.done as f64 / secs,
                now.failed,
                now.retried,
                match (now.in_flight, now.pending_retry) {
                    (0, 0) => String::new(),
                    (n, 0) => format!(", {n} in flight"),
                    (n, r) => format!(", {n} in flight, {r} pending retry"),
                }
            );
            match &bar {
                Some(bar) => {
                    bar.set_length(now.total_bytes.max(now.read_bytes));
                    bar.set_position(now.read_bytes);
                    bar.set_message(line);
                }
                None => {
                    let pct = match now.total_bytes {
                        0 => String::new(),
                        t => format!(
                            ", {:.1}% of input read",
                            now.read_bytes as f64 * 100.0 / t as f64
                        ),
                    };
                    tracing::info!("progress: {line}{pct}");
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    });
    Running {
        stop: Some(tx),
        task: Some(task),
    }
}

struct Snapshot {
    done: u64,
    failed: u64,
    retried: u64,
    in_flight: u64,
    pending_retry: u64,
    read_bytes: u64,
    total_bytes: u64,
}

fn snapshot(shown: &[Shown]) -> Snapshot {
    let mut s = Snapshot {
        done: 0,
        failed: 0,
        retried: 0,
        in_flight: 0,
        pending_retry: 0,
        read_bytes: 0,
        total_bytes: 0,
    };
    for (_, c, p) in shown {
        let ok = c.succeeded.get();
        let dead = c.dead_lettered.get();
        s.done += ok + dead;
        s.failed += dead;
        s.retried += c.retried.get();
        s.in_flight += c.in_flight();
        s.pending_retry += c.pending_retry();
        if let Some(p) = p {
            s.read_bytes += p.read_bytes.load(Relaxed);
            s.total_bytes += p.total_bytes.load(Relaxed);
        }
    }
    s
}

/// The end-of-run summary, one block per pipeline.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    for p in &report.pipelines {
        let done = p.succeeded + p.dead_lettered;
        let secs = p.elapsed.as_secs_f64().max(1e-3);
        let _ = writeln!(
            out,
            "pipeline {}: {done} jobs settled in {:.2} s ({:.0} jobs/s), stopped: {:?}",
            p.name,
            secs,
            done as f64 / secs,
            p.end
        );
        let mut extra = String::new();
        if p.released_waiting_retry > 0 {
            let _ = write!(
                extra,
                " ({} of them waiting to retry)",
                p.released_waiting_retry
            );
        }
        if p.pending_retry > 0 {
            let _ = write!(
                extra,
                ", pending retry in the source {} (not succeeded)",
                p.pending_retry
            );
        }
        if p.settle_errors > 0 {
            let _ = write!(extra, ", settle errors {}", p.settle_errors);
        }
        if p.revoked > 0 {
            let _ = write!(extra, ", revoked by the source {}", p.revoked);
        }
        if p.deferred > 0 {
            let _ = write!(extra, ", handed back to keep key order {}", p.deferred);
        }
        let _ = writeln!(
            out,
            "  succeeded {}, dead-lettered {}, retries {}, released unsettled {}{extra}",
            p.succeeded, p.dead_lettered, p.retried, p.released,
        );
        if !p.latency.is_empty() {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let _ = writeln!(
                out,
                "  job latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms(p.latency.quantile(0.5)),
                ms(p.latency.quantile(0.99)),
                ms(p.latency.max())
            );
        }
    }
    let _ = write!(
        out,
        "{}",
        match report.exit_code() {
            0 => "every message received was settled: every job succeeded".to_owned(),
            super::report::EXIT_DEAD_LETTERED => format!(
                "every message received was settled, but {} job(s) failed for good and were \
                 dead-lettered (exit code 4)",
                report.dead_lettered()
            ),
            _ => "NOT every message was settled: the unsettled ones, and those pending a \
                  retry, are with their source and run again from there (exit code 3)"
                .to_owned(),
        }
    );
    out
}
