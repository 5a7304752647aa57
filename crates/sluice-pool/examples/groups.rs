//! Wait groups: wait for just the batch you submitted while the pool keeps
//! serving other work, and stays open.
//!
//! cargo run -p sluice-pool --example groups

use std::time::Duration;

use sluice_pool::Pool;

#[tokio::main]
async fn main() {
    let pool = Pool::new(8);
    // Long-running background work on the same pool.
    for _ in 0..4 {
        pool.execute(async { tokio::time::sleep(Duration::from_millis(500)).await })
            .await
            .expect("the pool is open");
    }
    let batch = pool.group();
    for page in 0..20u32 {
        batch
            .execute(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = page; // re-post one page of the backlog
            })
            .await
            .expect("the pool is open");
    }
    batch.wait().await;
    let s = pool.stats();
    println!(
        "batch done ({} settled); background still running: {}",
        s.completed, s.running
    );
    pool.join().await;
}
