//! A queue consumer's shutdown: drain for a while, then cancel what still
//! runs and take back every job that never started, to release it to the
//! broker. Nothing is lost silently.
//!
//! cargo run -p sluice-pool --example shutdown

use std::future::IntoFuture;
use std::pin::Pin;
use std::time::Duration;

use sluice_pool::Pool;

/// A job that knows which queue message it came from.
struct Job {
    message_id: u32,
    work: Duration,
}

impl IntoFuture for Job {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { tokio::time::sleep(self.work).await })
    }
}

#[tokio::main]
async fn main() {
    let pool = Pool::builder().concurrency(3).queue_capacity(20).build();
    for message_id in 0..12 {
        let work = Duration::from_millis(if message_id % 3 == 0 { 50 } else { 5_000 });
        pool.execute(Job { message_id, work })
            .await
            .expect("the pool is open");
    }
    let report = pool.shutdown(Duration::from_millis(200)).await;
    println!(
        "drained: {}, cancelled while running: {}",
        report.drained, report.cancelled
    );
    for unstarted in report.unstarted {
        let job: Job = unstarted.downcast().expect("only Jobs were submitted");
        println!("release message {} back to the queue", job.message_id);
    }
    let s = pool.stats();
    println!(
        "submitted {} = completed {} + cancelled {} + handed back {}",
        s.submitted, s.completed, s.cancelled, s.returned
    );
}
