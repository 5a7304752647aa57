//! Kafka events for `scripts/test` and `bench/e2e-kafka.sh`: create a fresh
//! topic and fill it fast, then wait until a consumer group has committed
//! all of it.
//!
//! ```sh
//! kafka-events produce --topic orders-1 --partitions 6 --count 200000 --keys 1000 \
//!     --dead-letter-topic orders-1-dlq
//! kafka-events wait-committed --topic orders-1 --group orders-1-webhooks --count 200000
//! ```
//!
//! `produce` refuses a topic that exists, so what `wait-committed` counts is
//! exactly what this run produced: on a fresh topic every partition starts
//! at offset 0, and the group's committed offsets sum to the number of
//! events settled (the contiguous prefix of each partition). Both exit
//! non-zero, saying why, when anything is short.
//!
//! Each event is a JSON object with a key (`customer-<i % keys>`, so one
//! customer's events share a partition, in order) and the producer's
//! timestamp (CreateTime):
//! `{"id": "evt_7", "type": "invoice.paid", "data": {"customer": "customer-7", "invoice": 7, "amount_cents": 1107}}`

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// How long one broker call may take before the tool gives up.
const BROKER_WAIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Produce test events to a fresh Kafka topic, or wait for a group to commit them")]
struct Args {
    /// `bootstrap.servers`.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the topic (it must not exist) and produce events to it.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Events to produce.
        #[arg(long, default_value_t = 40)]
        count: u64,
        /// Distinct message keys (`customer-0` ...).
        #[arg(long, default_value_t = 8)]
        keys: u64,
        /// Also create this topic (one partition), for dead letters.
        #[arg(long)]
        dead_letter_topic: Option<String>,
    },
    /// Wait until the group's committed offsets on the topic sum to `count`.
    WaitCommitted {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line saying what failed, not a backtrace.
            eprintln!("kafka-events: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Produce {
            topic,
            partitions,
            count,
            keys,
            dead_letter_topic,
        } => {
            create_topic(&args.brokers, &topic, partitions).await?;
            if let Some(dlq) = &dead_letter_topic {
                create_topic(&args.brokers, dlq, 1).await?;
            }
            // librdkafka's blocking calls stay off the runtime's thread.
            let brokers = args.brokers.clone();
            tokio::task::spawn_blocking(move || produce(&brokers, &topic, count, keys.max(1)))
                .await?
        }
        Command::WaitCommitted {
            topic,
            group,
            count,
            timeout_secs,
        } => {
            tokio::task::spawn_blocking(move || {
                wait_committed(
                    &args.brokers,
                    &topic,
                    &group,
                    count,
                    Duration::from_secs(timeout_secs),
                )
            })
            .await?
        }
    }
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the admin client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(BROKER_WAIT)),
        )
        .await
        .with_context(|| {
            format!(
                "creating topic {name} on {brokers} (is the broker up? scripts/kafka starts one)"
            )
        })?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => bail!(
                "topic {t} exists already: give a new name, so that what is counted is only this run's events"
            ),
            Err((t, e)) => bail!("creating topic {t} on {brokers}: {e}"),
        }
    }
    Ok(())
}

/// Counts the broker's answers to the events produced.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn produce(brokers: &str, topic: &str, count: u64, keys: u64) -> anyhow::Result<()> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Large batches: 200,000 events go out in a few seconds.
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "30000")
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let started = Instant::now();
    for i in 0..count {
        let key = format!("customer-{}", i % keys);
        let payload = format!(
            r#"{{"id": "evt_{i}", "type": "invoice.paid", "data": {{"customer": "{key}", "invoice": {i}, "amount_cents": {}}}}}"#,
            100 + i % 9000
        );
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // librdkafka's queue is full: let it deliver, then again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("producing event {i} to {topic}: {e}"),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(BROKER_WAIT)
        .with_context(|| format!("waiting for the broker to take the events for {topic}"))?;
    let took = started.elapsed().as_secs_f64();
    let d = producer.context();
    let (ok, failed) = (d.ok.load(Relaxed), d.failed.load(Relaxed));
    if ok != count {
        let first = d
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        bail!(
            "the broker took {ok} of {count} events for {topic} ({failed} failed; first error: {})",
            first.as_deref().unwrap_or("none")
        );
    }
    println!(
        "produced {count} events to {topic} in {took:.2} s ({:.0} events/s)",
        count as f64 / took.max(1e-3)
    );
    Ok(())
}

fn wait_committed(
    brokers: &str,
    topic: &str,
    group: &str,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    // Reads the group's offsets; it never joins the group (no subscribe).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .context("creating the consumer that reads the group's offsets")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_WAIT)
        .with_context(|| format!("reading topic {topic}'s partitions"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partitions on {brokers}: was it created?");
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(topic, p);
    }
    let started = Instant::now();
    // The first sample with something committed: the rate is measured from
    // there, so joining the group is not counted as processing time.
    let mut first: Option<(Instant, u64)> = None;
    let mut committed = 0;
    while started.elapsed() < timeout {
        let offsets = consumer
            .committed_offsets(tpl.clone(), BROKER_WAIT)
            .with_context(|| format!("reading group {group}'s committed offsets"))?;
        committed = offsets
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) if o > 0 => o as u64,
                _ => 0,
            })
            .sum();
        let now = Instant::now();
        if committed > 0 && first.is_none() {
            first = Some((now, committed));
        }
        if committed >= count {
            let (t0, c0) = first.unwrap_or((now, committed));
            let secs = now.duration_since(t0).as_secs_f64();
            let rate = if secs > 0.0 {
                format!("{:.0} events/s", (committed - c0) as f64 / secs)
            } else {
                "rate unknown: all were committed at the first look".to_owned()
            };
            println!(
                "group {group} committed {committed} of {count} events on {topic} after {:.2} s; \
                 {} more in the {secs:.2} s after its first commit: {rate}",
                now.duration_since(started).as_secs_f64(),
                committed - c0,
            );
            if committed > count {
                bail!("more was committed ({committed}) than was produced ({count})");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "group {group} committed {committed} of {count} events on {topic} within {} s",
        timeout.as_secs()
    )
}
