//! Per-destination limits: at most 2 requests in flight and 20 starts a
//! second per host, 50 in flight overall. A slow host never holds up the
//! others, and hosts are forgotten once idle.
//!
//! cargo run -p sluice-pool --example per-key

use std::time::{Duration, Instant};

use sluice_pool::{KeyLimit, Pool, Rate};

#[tokio::main]
async fn main() {
    let pool = Pool::builder()
        .concurrency(50)
        .queue_capacity(200)
        .per_key(KeyLimit::concurrency(2).with_rate(Rate::per_second(20)))
        .build();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..40u32 {
        let host = if i % 4 == 0 {
            "slow.example"
        } else {
            "fast.example"
        };
        let latency = if host == "slow.example" { 200 } else { 10 };
        handles.push((
            host,
            pool.key(host)
                .submit(async move {
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                    t0.elapsed()
                })
                .await
                .expect("the pool is open"),
        ));
    }
    let mut last = std::collections::BTreeMap::new();
    for (host, h) in handles {
        let at = h.await.expect("no panics here");
        last.insert(host, at);
    }
    for (host, at) in last {
        println!("{host}: last request done at {at:.2?}");
    }
    pool.join().await;
    // A paced key is remembered until its pace recovers, then forgotten.
    println!("keys tracked right after the run: {}", pool.stats().keys);
}
