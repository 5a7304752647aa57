//! A worker with a handler of your own: greet every user in an NDJSON file,
//! 50 at a time. Lines without an `email` fail for good and land in the
//! failures file; the rest are acked, and a rerun skips them.
//!
//! `cargo run -p sluice --example custom-handler -- users.ndjson`
use sluice::sources::file::{FileSource, FileSourceConfig};
use sluice::{Job, JobError, Shutdown, SourceContext, Worker};

async fn greet(job: Job) -> Result<(), JobError> {
    let user: serde_json::Value = serde_json::from_slice(&job.body)
        .map_err(|e| JobError::fail(format!("line {} is not JSON: {e}", job.id)))?;
    let email = user["email"]
        .as_str()
        .ok_or_else(|| JobError::fail("no `email`"))?;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // the "send"
    println!("hello, {email}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: custom-handler FILE.ndjson")?;
    let source = FileSource::open(
        &FileSourceConfig::new(path),
        &SourceContext::new("greet", 50),
    )?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let report = Worker::builder("greet")
        .source(source)
        .handler(greet)
        .concurrency(50)
        .shutdown(shutdown)
        .build()?
        .run()
        .await;
    eprintln!(
        "{} greeted, {} dead-lettered",
        report.succeeded, report.dead_lettered
    );
    // 0: all greeted; 4: some dead-lettered; 3: some went back unsettled.
    std::process::exit(report.exit_code());
}
