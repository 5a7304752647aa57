//! Helpers for the tests that need the SQS + S3 emulator (moto, started by
//! `scripts/services`): clients, fresh queues and buckets, Laravel payloads.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

pub fn moto() -> String {
    let url = std::env::var("SLUICE_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    let addr = url.trim_start_matches("http://").to_owned();
    if std::net::TcpStream::connect(&addr).is_err() {
        panic!(
            "the SQS/S3 emulator does not answer at {url}: run scripts/services (it installs and starts moto)"
        );
    }
    url
}

pub async fn sqs() -> Client {
    let cfg: sluice::sources::sqs::SqsSourceConfig = toml::from_str(&format!(
        "queue_url = 'x'\nendpoint = '{}'\nregion = 'us-east-1'\naccess_key_id = 'test'\nsecret_access_key = 'test'",
        moto()
    ))
    .unwrap();
    sluice::sources::sqs::client(&cfg).await
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}", fastrand::u64(..))
}

pub async fn create_queue(client: &Client, name: &str, visibility_secs: u32) -> String {
    let mut req = client.create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        visibility_secs.to_string(),
    );
    if name.ends_with(".fifo") {
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
    }
    req.send().await.unwrap().queue_url.unwrap()
}

pub async fn send(client: &Client, url: &str, bodies: &[(String, Option<String>)]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (b, group))| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b);
                if let Some(g) = group {
                    e = e.message_group_id(g);
                }
                e.build().unwrap()
            })
            .collect();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

/// (visible, in flight) messages of a queue.
pub async fn counts(client: &Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let a = out.attributes().unwrap();
    let n = |k| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    (
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Every message left in a queue (made visible at once for the reading).
pub async fn drain(client: &Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            return all;
        }
        all.extend(msgs);
    }
}

pub async fn bucket(name: &str, objects: &[(String, String)]) {
    let base = moto();
    let http = reqwest::Client::new();
    let r = http.put(format!("{base}/{name}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    for (key, body) in objects {
        let r = http
            .put(format!("{base}/{name}/{key}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }
}

/// A Laravel queue payload naming `report-<id>.json` in its command.
pub fn laravel_job(id: &str, max_tries: u32, backoff: &str) -> String {
    let file = format!("report-{id}.json");
    let command = format!(
        "O:19:\"App\\\\Jobs\\\\SendReport\":1:{{s:4:\"file\";s:{}:\"{file}\";}}",
        file.len()
    );
    serde_json::json!({
        "uuid": format!("uuid-{id}"),
        "displayName": "App\\Jobs\\SendReport",
        "job": "Illuminate\\Queue\\CallQueuedHandler@call",
        "maxTries": max_tries,
        "maxExceptions": null,
        "failOnTimeout": false,
        "backoff": backoff,
        "timeout": null,
        "retryUntil": null,
        "data": {"commandName": "App\\Jobs\\SendReport", "command": command},
    })
    .to_string()
}

/// extract -> fetch from the emulator's S3 -> POST to the receiver, with
/// `@MOTO@`, `@BUCKET@` and `@URL@` to fill in.
pub const REPORT_STEPS: &str = r#"
[[pipeline.step]]
type = "extract"
regex = 'report-(?P<id>[^.]+)\.json'
[[pipeline.step]]
type = "fetch"
url = "s3://@BUCKET@/report-{{ id }}.json"
into = "report"
decode = "json"
[pipeline.step.options]
aws_endpoint = "@MOTO@"
aws_allow_http = "true"
aws_region = "us-east-1"
aws_access_key_id = "test"
aws_secret_access_key = "test"
[[pipeline.step]]
type = "http"
url = "@URL@/reports/{{ id }}"
body = '{"id": "{{ id }}", "job": {{ job.displayName | tojson }}, "report": {{ report | tojson }}}'
"#;

/// `[pipeline.source]` for the emulator's queue `url`: Laravel's
/// format, 1 s polls, one delete batch at a time (moto's deletes race).
pub fn laravel_source(url: &str) -> String {
    format!(
        r#"[pipeline.source]
type = "sqs"
queue_url = "{url}"
endpoint = "{moto}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
wait_time_secs = 1
delete_batches_in_flight = 1
format = "laravel"
"#,
        moto = moto()
    )
}
