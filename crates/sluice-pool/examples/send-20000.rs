//! Send 20,000 messages with 3 workers and wait for all of them.
//!
//! The hand-made version is a channel of jobs, 3 goroutines and a wait group.
//! Here `execute` waits while the pool is full, so memory stays flat however
//! many messages there are, and `join` waits for the last one.
//!
//! cargo run -p sluice-pool --example send-20000

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sluice_pool::Pool;

#[tokio::main]
async fn main() {
    let pool = Pool::new(3);
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for user in 0..20_000u64 {
        let sent = sent.clone();
        pool.execute(async move {
            // Stands in for the network call to the messaging API.
            let _ = user;
            tokio::task::yield_now().await;
            sent.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .expect("the pool is open");
    }
    pool.join().await;
    let s = pool.stats();
    println!(
        "sent {} messages with 3 workers in {:.2?} (p50 run {:?}, p99 queue wait {:?})",
        sent.load(Ordering::Relaxed),
        started.elapsed(),
        s.run_time.quantile(0.5),
        s.queue_wait.quantile(0.99),
    );
    assert_eq!(s.completed, 20_000);
}
