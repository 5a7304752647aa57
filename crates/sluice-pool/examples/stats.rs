//! Stats at any time, and a hook that feeds a metrics facade per task.
//!
//! cargo run -p sluice-pool --example stats

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_pool::{Pool, TaskOutcome};

#[tokio::main]
async fn main() {
    let slow = Arc::new(AtomicU64::new(0));
    let hook_slow = slow.clone();
    let pool = Pool::builder()
        .concurrency(16)
        .queue_capacity(64)
        .on_task_end(move |event| {
            // In a service: metrics::histogram!("job_seconds").record(...)
            if event.outcome == TaskOutcome::Completed && event.run_time > Duration::from_millis(15)
            {
                hook_slow.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build();
    for i in 0..200u64 {
        pool.execute(async move { tokio::time::sleep(Duration::from_millis(5 + i % 20)).await })
            .await
            .expect("the pool is open");
        if i % 50 == 0 {
            let s = pool.stats();
            println!(
                "running {:>2}/{}  queued {:>2}  free {:>2}",
                s.running,
                s.capacity,
                s.queued,
                s.free()
            );
        }
    }
    pool.join().await;
    let s = pool.stats();
    println!(
        "completed {}; run time p50 {:?} p99 {:?}; queue wait p99 {:?}; {} slower than 15 ms",
        s.completed,
        s.run_time.quantile(0.5),
        s.run_time.quantile(0.99),
        s.queue_wait.quantile(0.99),
        slow.load(Ordering::Relaxed)
    );
}
