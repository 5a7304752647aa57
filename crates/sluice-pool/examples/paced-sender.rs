//! A paced sender: 2 at a time, at most 4 starts a second, and a pause
//! between batches — lenient on a fragile downstream.
//!
//! cargo run -p sluice-pool --example paced-sender

use std::time::{Duration, Instant};

use sluice_pool::{Pool, Rate};

#[tokio::main]
async fn main() {
    let pool = Pool::builder()
        .concurrency(2)
        .queue_capacity(10)
        .rate(Rate::per_second(4))
        .build();
    let t0 = Instant::now();
    for batch in 0..3 {
        let group = pool.group();
        for n in 0..4 {
            group
                .execute(async move {
                    println!("{:>6.2?}  batch {batch} message {n}", t0.elapsed());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                })
                .await
                .expect("the pool is open");
        }
        group.wait().await;
        println!("{:>6.2?}  batch {batch} done; pausing", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pool.join().await;
}
