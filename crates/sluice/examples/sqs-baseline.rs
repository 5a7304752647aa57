//! The plain SDK loop `bench/e2e-sqs.sh` compares sluice with: `pollers`
//! tasks, each receiving 10 messages and deleting them in one batch, until
//! the queue is empty. No work per message: the emulator's own ceiling.
//!
//! `cargo run --release --example sqs-baseline -- ENDPOINT QUEUE_URL POLLERS`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, queue_url, pollers] = &args[..] else {
        eprintln!("usage: sqs-baseline ENDPOINT QUEUE_URL POLLERS");
        std::process::exit(2);
    };
    let pollers: usize = pollers.parse().expect("POLLERS is a number");
    let cfg: sluice::sources::sqs::SqsSourceConfig = toml::from_str(&format!(
        "queue_url = '{queue_url}'\nendpoint = '{endpoint}'\nregion = 'us-east-1'\n\
         access_key_id = 'test'\nsecret_access_key = 'test'"
    ))
    .expect("a valid source config");
    let client = sluice::sources::sqs::client(&cfg).await;
    let done = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pollers {
        let (client, queue_url) = (client.clone(), queue_url.clone());
        let (done, requests) = (done.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                requests.fetch_add(1, Relaxed);
                let out = client
                    .receive_message()
                    .queue_url(&queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("ReceiveMessage");
                let msgs = out.messages.unwrap_or_default();
                if msgs.is_empty() {
                    return;
                }
                let entries = msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("id and receipt")
                    })
                    .collect();
                requests.fetch_add(1, Relaxed);
                client
                    .delete_message_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("DeleteMessageBatch");
                done.fetch_add(msgs.len() as u64, Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("a poller does not panic");
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Relaxed);
    println!(
        "baseline: {n} messages in {secs:.2} s ({:.1} msgs/s), {} requests ({:.3} per message)",
        n as f64 / secs,
        requests.load(Relaxed),
        requests.load(Relaxed) as f64 / n.max(1) as f64
    );
}
