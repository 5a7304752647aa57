//! The pool benchmark: N tasks at concurrency C, each sleeping S ms (or doing
//! nothing), through one of three ways of bounding concurrency in tokio.
//!
//! ```text
//! cargo run --release -p sluice-pool --example pool-bench -- \
//!     --mode pool --tasks 1000000 --concurrency 50000 --sleep-ms 10
//! ```
//!
//! Modes: `pool` (this crate), `semaphore` (tokio::spawn per task, bounded
//! by a Semaphore), `buffer_unordered` (futures' StreamExt, one task).
//! Prints one JSON line; `bench/pool.sh` runs them all beside the Go
//! baselines and prints the table recorded in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_pool::Pool;
use tokio::sync::Semaphore;

struct Args {
    mode: String,
    tasks: u64,
    concurrency: usize,
    sleep_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: "pool".into(),
        tasks: 1_000_000,
        concurrency: 1_000,
        sleep_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => args.mode = value()?,
            "--tasks" => args.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--concurrency" => {
                args.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--sleep-ms" => {
                args.sleep_ms = value()?.parse().map_err(|e| format!("--sleep-ms: {e}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// One task's work: sleep, or nothing at all.
async fn work(sleep: Duration) {
    if !sleep.is_zero() {
        tokio::time::sleep(sleep).await;
    }
}

async fn run_pool(a: &Args, sleep: Duration) -> u64 {
    let pool = Pool::builder()
        .concurrency(a.concurrency)
        .queue_capacity(a.concurrency)
        .build();
    for _ in 0..a.tasks {
        pool.execute(work(sleep)).await.expect("pool open");
    }
    pool.join().await;
    let s = pool.stats();
    assert_eq!(s.completed, a.tasks, "every task ran");
    s.completed
}

async fn run_semaphore(a: &Args, sleep: Duration) -> u64 {
    let sem = Arc::new(Semaphore::new(a.concurrency));
    for _ in 0..a.tasks {
        let permit = sem.clone().acquire_owned().await.expect("never closed");
        tokio::spawn(async move {
            work(sleep).await;
            drop(permit);
        });
    }
    // Every permit back means every task finished.
    let all = sem
        .acquire_many(a.concurrency as u32)
        .await
        .expect("never closed");
    drop(all);
    a.tasks
}

async fn run_buffer_unordered(a: &Args, sleep: Duration) -> u64 {
    futures::stream::iter(0..a.tasks)
        .map(|_| work(sleep))
        .buffer_unordered(a.concurrency)
        .fold(0u64, |n, ()| async move { n + 1 })
        .await
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_seconds() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 a second here).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pool-bench: {e}");
            eprintln!(
                "usage: pool-bench --mode pool|semaphore|buffer_unordered \
                 --tasks N --concurrency C --sleep-ms S"
            );
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sleep = Duration::from_millis(a.sleep_ms);
    let start = Instant::now();
    let a = Arc::new(a);
    let driver = a.clone();
    let done = if a.mode == "buffer_unordered" {
        // One future driving everything, as `#[tokio::main]` code does. Run
        // as a spawned task instead, tokio's cooperative budget makes this
        // pattern spin: about 30x slower at 50,000 sleeps in flight.
        rt.block_on(run_buffer_unordered(&a, sleep))
    } else {
        // The submitting loop runs as a task on the runtime's workers, as it
        // would in a service, not on the thread that called block_on.
        rt.block_on(rt.spawn(async move {
            let a = &*driver;
            match a.mode.as_str() {
                "pool" => run_pool(a, sleep).await,
                "semaphore" => run_semaphore(a, sleep).await,
                other => {
                    eprintln!(
                        "pool-bench: unknown mode {other}: pool, semaphore or buffer_unordered"
                    );
                    std::process::exit(2);
                }
            }
        }))
        .expect("the driver task")
    };
    let wall = start.elapsed();
    assert_eq!(done, a.tasks);
    let line = serde_json::json!({
        "impl": "rust",
        "mode": a.mode,
        "tasks": a.tasks,
        "concurrency": a.concurrency,
        "sleep_ms": a.sleep_ms,
        "wall_ms": (wall.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
        "cpu_s": (cpu_seconds() * 100.0).round() / 100.0,
        "tasks_per_sec": (a.tasks as f64 / wall.as_secs_f64()).round(),
    });
    println!("{line}");
}
