//! A dispatcher that changes its concurrency while it runs: start gently,
//! open up while the downstream copes, back off when it struggles. Resizing
//! works from any thread; a shrink never interrupts a running task.
//!
//! cargo run -p sluice-pool --example resizing-dispatcher

use std::time::Duration;

use sluice_pool::Pool;

#[tokio::main]
async fn main() {
    let pool = Pool::builder().concurrency(2).queue_capacity(50).build();
    let controller = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for size in [2, 8, 32, 8, 1, 16] {
                pool.resize(size);
                tokio::time::sleep(Duration::from_millis(40)).await;
                let s = pool.stats();
                println!(
                    "capacity {:>2}  running {:>2}  queued {:>2}  done {:>4}",
                    s.capacity, s.running, s.queued, s.completed
                );
            }
        })
    };
    for _ in 0..1_000 {
        // An async block: the sleep starts when the task does, not when queued.
        pool.execute(async { tokio::time::sleep(Duration::from_millis(5)).await })
            .await
            .expect("the pool is open");
    }
    controller.await.expect("controller");
    pool.join().await;
    println!("all {} done", pool.stats().completed);
}
