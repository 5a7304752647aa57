//! Non-blocking dispatch: hand a job to a free worker or hear "all busy" at
//! once, with the job handed back so nothing is dropped.
//!
//! cargo run -p sluice-pool --example try-dispatch

use std::time::Duration;

use sluice_pool::{Pool, TrySubmitError};

#[tokio::main]
async fn main() {
    // No waiting room: a job either starts now or is refused.
    let pool = Pool::builder().concurrency(2).queue_capacity(0).build();
    let mut deferred = Vec::new();
    for job in 0..5u32 {
        match pool.try_execute(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            println!("job {job} done");
        }) {
            Ok(()) => println!("job {job} dispatched"),
            Err(TrySubmitError::Full(task)) => {
                println!("job {job}: all workers busy, keeping it for later");
                deferred.push(task);
            }
            Err(TrySubmitError::Closed(_)) => unreachable!("the pool is open"),
        }
    }
    // Later, wait for room for the ones that did not fit.
    for task in deferred {
        pool.execute(task).await.expect("the pool is open");
    }
    pool.join().await;
}
