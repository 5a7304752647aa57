//! The Kafka source in-process, against the broker `scripts/kafka` starts:
//! what templates see of each record, and the source's metrics. (The
//! process tests are in process_kafka.rs, the contract in
//! conformance_kafka.rs.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::{FAST_GROUP_OPTIONS, Record, brokers, create_topic, produce, unique};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sluice::config::{self, RunOptions};
use sluice::runtime::{Progress, RunReport, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

const PARTITIONS: i32 = 3;

/// A pipeline from a fresh topic to the receiver, `headers` templated.
fn config(topic: &str, url: &str) -> String {
    let options: String = FAST_GROUP_OPTIONS
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    format!(
        r#"
[[pipeline]]
name = "kafka-fields"
concurrency = 8
[pipeline.source]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}-group"
dead_letter_topic = "{topic}-dlq"
commit_interval_ms = 100
[pipeline.source.options]
"statistics.interval.ms" = "100"
{options}
[[pipeline.step]]
type = "http"
url = "{url}/events/{{{{ body.n }}}}"
body = '{{"n": {{{{ body.n }}}}}}'
headers = {{ x-headers = "{{{{ headers | length }}}}", x-origin = "{{{{ topic }}}}-{{{{ partition }}}}-{{{{ offset }}}}", x-key = "{{{{ key or 'none' }}}}", x-ts = "{{{{ 'yes' if timestamp > 0 else 'no' }}}}" }}
"#,
        brokers = brokers()
    )
}

/// Runs `text` until `until` is done, then stops it; returns the report.
async fn run_until(text: &str, until: impl std::future::Future<Output = ()>) -> RunReport {
    let loaded = config::parse("kafka.toml", text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = Shutdown::new();
    let run = config::run(
        &loaded,
        RunOptions {
            shutdown: shutdown.clone(),
            progress: Progress::Off,
            stop_when_empty: false,
            admin: None,
        },
    );
    let stop = async {
        until.await;
        shutdown.request();
    };
    let (report, ()) = tokio::join!(run, stop);
    report.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (a minute at most) until `rx` accepted `n` requests.
async fn accepted(rx: &Receiver, n: u64) {
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for_accepted(n))
        .await
        .unwrap_or_else(|_| panic!("the receiver accepted only {} of {n}", rx.accepted()));
}

/// Topic, partition, offset, key, timestamp and headers are template
/// variables: each request names the record it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_see_where_each_record_came_from() {
    common::kafka::require_broker();
    let topic = unique("fields");
    create_topic(&topic, PARTITIONS).await;
    create_topic(&format!("{topic}-dlq"), 1).await;
    let records: Vec<Record> = (0..12)
        .map(|n| Record {
            key: (n % 2 == 0).then(|| format!("k{n}")),
            partition: Some(n % PARTITIONS),
            payload: format!(r#"{{"n": {n}}}"#).into_bytes(),
        })
        .collect();
    let placed = produce(&topic, &records).await;
    let rx = Receiver::start(ReceiverConfig::default()).await.unwrap();
    let report = run_until(&config(&topic, &rx.url()), accepted(&rx, 12)).await;
    assert!(report.settled_everything());
    let mut seen = BTreeMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        let n: usize = r.path.strip_prefix("/events/").unwrap().parse().unwrap();
        seen.insert(
            n,
            (
                r.header("x-origin").unwrap().to_owned(),
                r.header("x-key").unwrap().to_owned(),
                r.header("x-ts").unwrap().to_owned(),
                r.header("x-headers").unwrap().to_owned(),
            ),
        );
    }
    assert_eq!(seen.len(), 12);
    for (n, (partition, offset)) in placed.iter().enumerate() {
        let key = if n % 2 == 0 {
            format!("k{n}")
        } else {
            "none".into()
        };
        assert_eq!(
            seen[&n],
            (
                format!("{topic}-{partition}-{offset}"),
                key,
                "yes".into(),
                "0".into()
            ),
            "record {n}"
        );
    }
}

/// Commits, rebalances and each partition's lag reach the metrics facade.
/// The receiver answers after 200 ms, so the 30 events take a second and
/// librdkafka's statistics (every 100 ms) see a backlog not yet committed.
#[test]
fn commits_rebalances_and_lag_are_metrics() {
    common::kafka::require_broker();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime keeps the source's tasks and librdkafka's
    // callbacks (run while polling) on this thread, with the recorder.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = unique("metrics");
    // A snapshot resets what it reads: counters are summed over them, and
    // the largest lag read per partition kept.
    let mut counters: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut lags: BTreeMap<String, f64> = BTreeMap::new();
    let mut backlog = 0f64;
    let mut read = || {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let k = key.key();
            let label = |name: &str| {
                k.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            match (k.name(), value) {
                ("sluice_kafka_consumer_lag", DebugValue::Gauge(g)) => {
                    let e = lags.entry(label("partition")).or_default();
                    *e = e.max(g.into_inner());
                }
                ("sluice_source_backlog", DebugValue::Gauge(g)) => {
                    backlog = backlog.max(g.into_inner());
                }
                ("sluice_kafka_commits_total", DebugValue::Counter(c)) => {
                    *counters
                        .entry(("commits".into(), label("result")))
                        .or_default() += c;
                }
                ("sluice_kafka_rebalances_total", DebugValue::Counter(c)) => {
                    *counters
                        .entry(("rebalances".into(), label("kind")))
                        .or_default() += c;
                }
                _ => {}
            }
        }
    };
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            create_topic(&topic, PARTITIONS).await;
            create_topic(&format!("{topic}-dlq"), 1).await;
            let records: Vec<Record> = (0..30)
                .map(|n| Record {
                    key: None,
                    partition: Some(n % PARTITIONS),
                    payload: format!(r#"{{"n": {n}}}"#).into_bytes(),
                })
                .collect();
            produce(&topic, &records).await;
            let rx = Receiver::start(ReceiverConfig {
                latency: (Duration::from_millis(200), Duration::from_millis(200)),
                ..ReceiverConfig::default()
            })
            .await
            .unwrap();
            // A snapshot is read every 20 ms while the events run: each
            // reading takes what was recorded since the last one.
            let sample = async {
                loop {
                    read();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let until = async {
                tokio::select! {
                    () = accepted(&rx, 30) => {}
                    () = sample => {}
                }
            };
            let report = run_until(&config(&topic, &rx.url()), until).await;
            assert!(report.settled_everything());
        })
    });
    read();
    let count = |what: &str, label: &str| {
        counters
            .get(&(what.to_owned(), label.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert!(count("commits", "ok") >= 1, "{counters:?}");
    assert_eq!(count("commits", "failed"), 0, "{counters:?}");
    assert!(count("rebalances", "assign") >= 1, "{counters:?}");
    assert!(
        lags.values().any(|l| *l > 0.0),
        "a backlog was read as lag: {lags:?}"
    );
    assert!(
        lags.values().all(|l| *l <= 30.0),
        "no partition lags more than was produced: {lags:?}"
    );
    // The source's backlog is the partitions' lag summed.
    assert!(
        backlog > 0.0 && backlog <= 30.0,
        "backlog {backlog}, lags {lags:?}"
    );
}

/// Nothing is ever settled here (the receiver holds every request for two
/// minutes), so the group commits nothing: each partition's lag still
/// counts all it holds, from its start (librdkafka's own lag is unknown
/// without a commit), and the backlog reads the 30 events from the first
/// statistics on. It never reads 0 before them.
#[test]
fn the_lag_counts_partitions_with_nothing_committed() {
    common::kafka::require_broker();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = unique("lag");
    let mut lags: BTreeMap<String, f64> = BTreeMap::new();
    let mut backlogs: Vec<f64> = Vec::new();
    let mut read = || {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let k = key.key();
            match (k.name(), value) {
                ("sluice_kafka_consumer_lag", DebugValue::Gauge(g)) => {
                    let partition = k
                        .labels()
                        .find(|l| l.key() == "partition")
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default();
                    lags.insert(partition, g.into_inner());
                }
                ("sluice_source_backlog", DebugValue::Gauge(g)) => backlogs.push(g.into_inner()),
                _ => {}
            }
        }
        lags.len() == PARTITIONS as usize && lags.values().all(|l| *l == 10.0)
    };
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            create_topic(&topic, PARTITIONS).await;
            create_topic(&format!("{topic}-dlq"), 1).await;
            let records: Vec<Record> = (0..30)
                .map(|n| Record {
                    key: None,
                    partition: Some(n % PARTITIONS),
                    payload: format!(r#"{{"n": {n}}}"#).into_bytes(),
                })
                .collect();
            produce(&topic, &records).await;
            let rx = Receiver::start(ReceiverConfig {
                latency: (Duration::from_secs(120), Duration::from_secs(120)),
                ..ReceiverConfig::default()
            })
            .await
            .unwrap();
            let until = async {
                let sample = async {
                    while !read() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(30), sample)
                    .await
                    .expect("every partition's lag read as 10 within 30 s");
            };
            let text = format!("shutdown_timeout_secs = 1\n{}", config(&topic, &rx.url()));
            run_until(&text, until).await;
        })
    });
    assert_eq!(lags.len(), 3, "{lags:?}");
    assert!(
        !backlogs.is_empty() && backlogs.iter().all(|b| *b == 30.0),
        "the backlog read {backlogs:?}: 30 once known, never 0 before"
    );
}
