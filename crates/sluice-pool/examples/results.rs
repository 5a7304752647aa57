//! Results and panics: each handle resolves to the output, or says the task
//! panicked; the pool carries on and counts it.
//!
//! cargo run -p sluice-pool --example results

use sluice_pool::Pool;

#[tokio::main]
async fn main() {
    let pool = Pool::new(4);
    let mut handles = Vec::new();
    for n in 0..6u32 {
        handles.push(
            pool.submit(async move {
                if n == 3 {
                    panic!("report {n} is malformed");
                }
                n * 10
            })
            .await
            .expect("the pool is open"),
        );
    }
    for (n, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(v) => println!("task {n}: {v}"),
            Err(e) => println!("task {n}: {e}"),
        }
    }
    pool.join().await;
    let s = pool.stats();
    println!("completed {}, panicked {}", s.completed, s.panicked);
}
