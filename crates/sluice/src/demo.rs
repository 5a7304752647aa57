//! `sluice demo`: the worker pool delivering simulated jobs to five
//! destinations with 20–50 ms latency, with a live progress line and a
//! summary. Needs no server.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_pool::{KeyLimit, Pool, Stats};

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Jobs to run.
    pub jobs: u64,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// In flight at once per destination.
    pub per_destination: usize,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            jobs: 20_000,
            concurrency: 1_000,
            per_destination: 300,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    pub jobs: u64,
    pub failed: u64,
    pub wall: Duration,
    pub stats: Stats,
}

const DESTINATIONS: [&str; 5] = [
    "hooks.alpha.example",
    "hooks.beta.example",
    "api.gamma.example",
    "ingest.delta.example",
    "events.epsilon.example",
];

/// A cheap, repeatable spread of values for job `i` (no RNG dependency).
fn spread(i: u64, modulo: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % modulo
}

/// Runs the demo, printing progress to stderr and returning the summary.
pub async fn run(cfg: &DemoConfig) -> DemoSummary {
    let pool = Pool::builder()
        .concurrency(cfg.concurrency)
        .queue_capacity(cfg.concurrency)
        .per_key(KeyLimit::concurrency(cfg.per_destination))
        .build();
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = tokio::spawn(report_progress(pool.clone(), cfg.jobs, failed.clone()));

    for i in 0..cfg.jobs {
        let destination = DESTINATIONS[(spread(i, 1_000) % DESTINATIONS.len() as u64) as usize];
        let latency = Duration::from_millis(20 + spread(i, 31));
        let failed = failed.clone();
        pool.key(destination)
            .execute(async move {
                // Stands in for an HTTP POST to the destination.
                tokio::time::sleep(latency).await;
                if spread(i, 1_000) < 5 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
            .expect("the demo pool stays open until every job is submitted");
    }
    pool.join().await;
    let wall = started.elapsed();
    progress.abort();
    let _ = progress.await;
    let stats = pool.stats();
    finish_progress_line(&stats, cfg.jobs, failed.load(Ordering::Relaxed), wall);
    DemoSummary {
        jobs: stats.completed,
        failed: failed.load(Ordering::Relaxed),
        wall,
        stats,
    }
}

async fn report_progress(pool: Pool, total: u64, failed: Arc<AtomicU64>) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = pool.stats();
        let line = progress_line(&s, total, failed.load(Ordering::Relaxed), started.elapsed());
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

fn progress_line(s: &Stats, total: u64, failed: u64, elapsed: Duration) -> String {
    let done = s.completed + s.panicked;
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let width = 24;
    let filled = ((frac * width as f64) as usize).min(width);
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta = if rate > 0.0 {
        format!("{:.1}s", (total - done.min(total)) as f64 / rate)
    } else {
        "-".into()
    };
    format!(
        "[{}{}] {done}/{total} {:>3.0}%  {rate:>7.0} jobs/s  in flight {:>4}  queued {:>4}  failed {failed}  ETA {eta}",
        "=".repeat(filled),
        " ".repeat(width - filled),
        frac * 100.0,
        s.running,
        s.queued,
    )
}

fn finish_progress_line(s: &Stats, total: u64, failed: u64, wall: Duration) {
    let mut err = std::io::stderr().lock();
    let line = progress_line(s, total, failed, wall);
    if std::io::stderr().is_terminal() {
        let _ = writeln!(err, "\r{line}\x1b[K");
    } else {
        let _ = writeln!(err, "{line}");
    }
}

impl DemoSummary {
    /// The summary as printed at the end of the demo.
    pub fn render(&self) -> String {
        let s = &self.stats;
        format!(
            "jobs        {}\n\
             failed      {}\n\
             wall time   {:.2?}\n\
             throughput  {:.0} jobs/s\n\
             job latency p50 {:.1?}  p99 {:.1?}  max {:.1?}\n\
             queue wait  p50 {:.1?}  p99 {:.1?}\n\
             pool        concurrency {}, submitted {}, panicked {}, cancelled {}",
            self.jobs,
            self.failed,
            self.wall,
            self.jobs as f64 / self.wall.as_secs_f64().max(1e-9),
            s.run_time.quantile(0.5),
            s.run_time.quantile(0.99),
            s.run_time.max(),
            s.queue_wait.quantile(0.5),
            s.queue_wait.quantile(0.99),
            s.capacity,
            s.submitted,
            s.panicked,
            s.cancelled,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_runs_every_job() {
        let summary = run(&DemoConfig {
            jobs: 3_000,
            concurrency: 300,
            per_destination: 100,
        })
        .await;
        assert_eq!(summary.jobs, 3_000);
        assert_eq!(summary.stats.submitted, 3_000);
        assert!(
            summary.failed > 0 && summary.failed < 100,
            "about 0.5 % fail"
        );
        let text = summary.render();
        assert!(text.contains("jobs        3000"), "{text}");
        // Latency is the simulated 20-50 ms, within the histogram's 25 %.
        let p50 = summary.stats.run_time.quantile(0.5);
        assert!(p50 >= Duration::from_millis(20), "{p50:?}");
    }

    #[test]
    fn progress_line_shows_counts_and_rate() {
        let line = progress_line(&sample_stats(), 100, 1, Duration::from_secs(2));
        assert!(line.contains("50/100"), "{line}");
        assert!(line.contains("25 jobs/s"), "{line}");
        assert!(line.contains("failed 1"), "{line}");
    }

    fn sample_stats() -> Stats {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(10);
            for _ in 0..50 {
                pool.execute(async {}).await.unwrap();
            }
            pool.join().await;
            pool.stats()
        })
    }
}
