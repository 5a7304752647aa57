//! Reserve, then receive: a consumer takes places in the pool first, asks
//! its "broker" for exactly that many messages, and spends one place per
//! message, so it never holds a message it has no room to run.
//!
//! `cargo run -p sluice-pool --example reserve`

use std::collections::VecDeque;
use std::time::Duration;

use sluice_pool::Pool;

#[tokio::main]
async fn main() {
    let mut broker: VecDeque<u32> = (0..100).collect();
    let pool = Pool::builder().concurrency(8).queue_capacity(0).build();
    while !broker.is_empty() {
        // Wait for one place, then take every other free one.
        let mut places = vec![pool.reserve().await.expect("the pool is open")];
        while let Ok(p) = pool.try_reserve() {
            places.push(p);
        }
        let n = places.len().min(broker.len());
        for (message, place) in broker.drain(..n).zip(places) {
            place
                .execute(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let _ = message; // handle it, then ack it
                })
                .expect("the pool is open");
        }
        // Places not spent go back to the pool when dropped.
    }
    pool.join().await;
    println!(
        "handled {} messages, at most 8 at once",
        pool.stats().completed
    );
}
