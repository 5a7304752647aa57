//! The `sluice` binary as a child process on the Kafka source, against the
//! Kafka-protocol broker `scripts/kafka` starts (tansu on 127.0.0.1:9092;
//! `SLUICE_KAFKA_BROKERS` names another): two processes sharing a group,
//! `kill -9` and SIGTERM each followed by a restart, malformed records,
//! per-key order under retries, and a destination outage longer than any
//! job's retries could last.
//!
//! Each test has its own 6-partition topic, dead-letter topic and consumer
//! group, a test receiver, and its configs in a temporary directory that
//! also holds each run's log. An event is `{"id": N}`, posted to
//! `/events/N` with an `x-worker` header naming the process (or
//! `{"key": K, "seq": S}`, posted to `/keys/K/S`), so the receiver's
//! record says what was delivered, how often and by whom; what is settled
//! is read from the group's committed offsets.
//!
//! A Kafka source never runs out: each run is stopped with SIGTERM (or
//! `kill -9`) once the receiver or the broker shows what the test waits
//! for. Every wait is on something observable, with a bound.
//!
//! Needs the broker: feature `kafka-broker-tests`, run by `scripts/test`
//! after `scripts/kafka`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kafka::{
    FAST_GROUP_OPTIONS, Record, Stored, brokers, committed, create_topic, produce, read_all, unique,
};
use common::process::{self, Running};
use sluice::testkit::{Receiver, ReceiverConfig, Recorded};
use tempfile::TempDir;

const PARTITIONS: i32 = 6;
/// The bound on every wait; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(60);
/// The pipeline's name, as dead letters carry it.
const PIPELINE: &str = "events";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What differs between the tests' pipelines.
struct Pipeline {
    concurrency: usize,
    ordering: &'static str,
    commit_interval_ms: u64,
    /// The http step's path, a template.
    path: &'static str,
    /// The `[pipeline.retry]` table's lines.
    retry: &'static str,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline {
            concurrency: 10,
            ordering: "none",
            commit_interval_ms: 200,
            path: "/events/{{ body.id }}",
            retry: "max_attempts = 5\nbackoff = { initial_ms = 10, max_ms = 100 }",
        }
    }
}

/// A fresh topic, dead-letter topic and group, a receiver, and a temporary
/// directory for the configs and the runs' logs.
struct Trial {
    dir: TempDir,
    topic: String,
    dlq: String,
    group: String,
    rx: Receiver,
    runs: usize,
}

impl Trial {
    async fn new(receiver: ReceiverConfig) -> Trial {
        let (topic, dlq) = (unique("events"), unique("events-dlq"));
        create_topic(&topic, PARTITIONS).await;
        create_topic(&dlq, 1).await;
        let rx = Receiver::start(ReceiverConfig {
            record: true,
            ..receiver
        })
        .await
        .expect("the receiver starts");
        Trial {
            dir: tempfile::tempdir().expect("a temp dir"),
            topic,
            dlq,
            group: unique("sluice"),
            rx,
            runs: 0,
        }
    }

    /// Writes `sluice-<worker>.toml`: the topic through `pipeline` to the
    /// receiver, each request carrying `x-worker: <worker>`.
    fn config(&self, worker: &str, pipeline: &Pipeline) -> PathBuf {
        let options = FAST_GROUP_OPTIONS
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"shutdown_timeout_secs = 10
[[pipeline]]
name = "{PIPELINE}"
concurrency = {concurrency}
[pipeline.source]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
dead_letter_topic = "{dlq}"
format = "json"
ordering = "{ordering}"
commit_interval_ms = {commit_interval_ms}
options = {{ {options} }}
[[pipeline.step]]
type = "http"
url = "{url}{path}"
headers = {{ x-worker = "{worker}" }}
[pipeline.retry]
{retry}
"#,
            concurrency = pipeline.concurrency,
            brokers = brokers(),
            topic = self.topic,
            group = self.group,
            dlq = self.dlq,
            ordering = pipeline.ordering,
            commit_interval_ms = pipeline.commit_interval_ms,
            url = self.rx.url(),
            path = pipeline.path,
            retry = pipeline.retry,
        );
        let path = self.dir.path().join(format!("sluice-{worker}.toml"));
        std::fs::write(&path, text).expect("write the config");
        path
    }

    /// Starts `sluice run -c config`; its output goes to `run-<n>.log`.
    fn start(&mut self, config: &Path) -> Running {
        self.runs += 1;
        process::start(self.dir.path(), self.runs, config, &[])
    }

    /// How often the receiver accepted each event id.
    fn accepted(&self) -> BTreeMap<u64, u64> {
        count(accepted_ids(&self.rx.requests(), None))
    }

    /// Waits until the receiver accepted each of `0..events` at least once.
    async fn wait_for_every_event(&self, events: u64, runs: &[&Running]) {
        wait_until(
            &format!("all {events} events delivered"),
            WAIT,
            || self.accepted().len() as u64 >= events,
            || {
                let accepted = self.accepted();
                let missing: Vec<u64> = (0..events)
                    .filter(|id| !accepted.contains_key(id))
                    .take(10)
                    .collect();
                format!(
                    "{} of {events} delivered, missing e.g. {missing:?}\n{}",
                    accepted.len(),
                    logs(runs)
                )
            },
        )
        .await;
    }

    /// Waits until the group's committed offsets are `ends`.
    async fn wait_committed(&self, ends: &[i64], runs: &[&Running]) {
        let want: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
        let started = Instant::now();
        loop {
            let now = committed(&self.group, &self.topic, PARTITIONS).await;
            if now == want {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the group's committed offsets are {now:?}, not the partitions' ends \
                 {ends:?}, after {WAIT:?}\n{}",
                logs(runs)
            );
            tokio::time::sleep(ms(100)).await;
        }
    }

    async fn dead_letters(&self) -> Vec<Stored> {
        read_all(&self.dlq, 1).await
    }
}

/// `{"id": i}` for each id, spread over the partitions in turn.
fn numbered(ids: std::ops::Range<u64>) -> Vec<Record> {
    ids.map(|id| Record {
        key: None,
        partition: Some((id % PARTITIONS as u64) as i32),
        payload: format!(r#"{{"id": {id}}}"#).into_bytes(),
    })
    .collect()
}

/// `{"key": "kK", "seq": S}` for each sequence number in turn, each key's
/// events keyed `kK` (so one partition holds them, in sequence order).
fn keyed(keys: usize, seqs: u64) -> Vec<Record> {
    let mut records = Vec::new();
    for seq in 0..seqs {
        for k in 0..keys {
            records.push(Record {
                key: Some(format!("k{k}")),
                partition: None,
                payload: format!(r#"{{"key": "k{k}", "seq": {seq}}}"#).into_bytes(),
            });
        }
    }
    records
}

/// Each partition's end (one past its last offset) after `placed`.
fn ends(placed: &[(i32, i64)]) -> Vec<i64> {
    let mut ends = vec![0; PARTITIONS as usize];
    for &(p, o) in placed {
        ends[p as usize] = ends[p as usize].max(o + 1);
    }
    ends
}

/// The ids (`/events/<id>`) of the 2xx answers among `requests`, in the
/// order they were answered; of one worker's requests only, if given.
fn accepted_ids(requests: &[Recorded], worker: Option<&str>) -> Vec<u64> {
    requests
        .iter()
        .filter(|r| r.status / 100 == 2)
        .filter(|r| worker.is_none_or(|w| r.header("x-worker") == Some(w)))
        .map(|r| {
            r.path
                .strip_prefix("/events/")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("unexpected path {}", r.path))
        })
        .collect()
}

fn count(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, u64> {
    let mut by_id = BTreeMap::new();
    for id in ids {
        *by_id.entry(id).or_insert(0) += 1;
    }
    by_id
}

/// Deliveries beyond the first of each event.
fn duplicates(accepted: &BTreeMap<u64, u64>) -> u64 {
    accepted.values().map(|n| n - 1).sum()
}

/// The last lines of each run's log, for a failure message.
fn logs(runs: &[&Running]) -> String {
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            let log = r.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("--- run {} log (last 40 lines) ---\n{tail}\n", i + 1)
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds; after `bound` fails the test,
/// saying `what` it waited for and what `seen` says.
async fn wait_until(
    what: &str,
    bound: Duration,
    mut cond: impl FnMut() -> bool,
    seen: impl Fn() -> String,
) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < bound,
            "timed out after {bound:?} waiting for {what}: {}",
            seen()
        );
        tokio::time::sleep(ms(20)).await;
    }
}

/// Stops `run` with SIGTERM and returns its exit code.
async fn stop(run: &mut Running) -> Option<i32> {
    run.signal("TERM");
    run.wait(WAIT).await.code()
}

/// Two processes in one group split a 6-partition topic; SIGTERM to one of
/// them mid-run hands its partitions to the other (a rebalance), which
/// finishes the topic. Every event is delivered and the group's offsets
/// end at each partition's end. The stopped process commits all it
/// settled, and with incremental (cooperative-sticky) rebalancing b's
/// leaving takes nothing from a, so only a's revocations while b joined
/// bring events round again: per revocation, its jobs in flight plus those
/// settled above its partitions' lowest unsettled offset (at most what
/// `concurrency` jobs finish while the slowest one runs: concurrency ×
/// longest / shortest latency).
///
/// The events are produced once both processes hold partitions: tansu
/// takes seconds to bring a second member in (3 s seen), long enough for
/// the first to run alone through much of the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_group_and_one_takes_over_at_sigterm() {
    const EVENTS: u64 = 3000;
    const CONCURRENCY: u64 = 10;
    let latency = (ms(10), ms(30));
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency,
        ..ReceiverConfig::default()
    })
    .await;
    let pipeline = Pipeline {
        concurrency: CONCURRENCY as usize,
        ..Pipeline::default()
    };
    let (config_a, config_b) = (t.config("a", &pipeline), t.config("b", &pipeline));
    let mut a = t.start(&config_a);
    a.wait_for_log("partitions assigned", WAIT).await;
    let mut b = t.start(&config_b);
    // b is assigned its share in the rebalance that took it from a.
    b.wait_for_log("partitions assigned", WAIT).await;
    // a's revocations from now on are the ones that can cut its jobs short.
    let revoked_before = a.log().matches("partitions revoked").count() as u64;
    let placed = produce(&t.topic, &numbered(0..EVENTS)).await;
    let ends = ends(&placed);

    wait_until(
        "both processes to deliver",
        WAIT,
        || {
            let r = t.rx.requests();
            accepted_ids(&r, Some("a")).len() >= 300 && accepted_ids(&r, Some("b")).len() >= 300
        },
        || {
            let r = t.rx.requests();
            format!(
                "a delivered {}, b {}\n{}",
                accepted_ids(&r, Some("a")).len(),
                accepted_ids(&r, Some("b")).len(),
                logs(&[&a, &b])
            )
        },
    )
    .await;
    let b_code = stop(&mut b).await;
    let cut = t.rx.requests().len();
    let revoked_at_b_stop = a.log().matches("partitions revoked").count();
    assert_eq!(
        b_code,
        Some(0),
        "b's graceful stop settles what it took\n{}",
        logs(&[&a, &b])
    );

    t.wait_for_every_event(EVENTS, &[&a, &b]).await;
    t.wait_committed(&ends, &[&a, &b]).await;
    let revocations = a.log().matches("partitions revoked").count() as u64 - revoked_before;
    // Incremental (cooperative-sticky) rebalancing: b leaving only adds
    // its partitions to a; none of a's own is taken from it meanwhile.
    assert_eq!(
        a.log().matches("partitions revoked").count(),
        revoked_at_b_stop,
        "a's own partitions were revoked when b left\n{}",
        logs(&[&a, &b])
    );
    let a_code = stop(&mut a).await;
    assert_eq!(a_code, Some(0), "a's graceful stop\n{}", logs(&[&a, &b]));

    let requests = t.rx.requests();
    let (before, after) = requests.split_at(cut);
    let partition = |id: u64| placed[id as usize].0;
    let b_partitions: BTreeSet<i32> = accepted_ids(before, Some("b"))
        .into_iter()
        .map(partition)
        .collect();
    let done_before: BTreeSet<u64> = accepted_ids(before, None).into_iter().collect();
    let left_to_b = (0..EVENTS)
        .filter(|id| b_partitions.contains(&partition(*id)) && !done_before.contains(id))
        .count();
    assert!(
        left_to_b > 0,
        "b had delivered every event of its partitions {b_partitions:?} before its stop: \
         too little work to show a takeover"
    );
    let taken_over = accepted_ids(after, Some("a"))
        .into_iter()
        .filter(|id| b_partitions.contains(&partition(*id)))
        .count();
    assert!(
        taken_over > 0,
        "a delivered nothing of b's partitions {b_partitions:?} after b stopped \
         ({left_to_b} of their events were left)\n{}",
        logs(&[&a, &b])
    );
    assert!(
        accepted_ids(after, Some("b")).is_empty(),
        "b delivered after it exited"
    );

    let accepted = count(accepted_ids(&requests, None));
    assert_eq!(accepted.len() as u64, EVENTS, "ids outside 0..{EVENTS}");
    let ratio = (latency.1.as_millis() / latency.0.as_millis()) as u64;
    let bound = revocations * (CONCURRENCY + CONCURRENCY * ratio);
    let dups = duplicates(&accepted);
    println!(
        "two processes: b stopped after {} of a's and {} of its own deliveries; a took \
         over {taken_over} of b's partitions' events; {dups} duplicates (bound {bound} for \
         {revocations} revocations of a); {:?}",
        accepted_ids(before, Some("a")).len(),
        accepted_ids(before, Some("b")).len(),
        began.elapsed()
    );
    assert!(
        dups <= bound,
        "{dups} events delivered twice, over the {bound} that a's {revocations} revocations \
         can cut short (did b commit what it settled?)\n{}",
        logs(&[&a, &b])
    );
}

/// `kill -9` mid-run, then a restart: every event is delivered at least
/// once, and no more again than the killed process had in flight or
/// settled above its last commit: concurrency, plus what settled in one
/// commit interval and a commit's round trip, plus what finished while a
/// partition's lowest unsettled job ran (at the rate measured just before
/// the kill).
///
/// The restart is what finishes the topic: tansu 0.6.0 keeps the group's
/// generation when a member's session times out and does not hand the
/// dead member's partitions to anyone until another member joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_delivers_everything_with_bounded_duplicates() {
    const EVENTS: u64 = 3000;
    const CONCURRENCY: u64 = 10;
    const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
    const COMMIT_ROUND_TRIP: Duration = Duration::from_millis(100);
    let latency = (ms(5), ms(15));
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency,
        ..ReceiverConfig::default()
    })
    .await;
    let placed = produce(&t.topic, &numbered(0..EVENTS)).await;
    let ends = ends(&placed);
    let config = t.config(
        "a",
        &Pipeline {
            concurrency: CONCURRENCY as usize,
            commit_interval_ms: COMMIT_INTERVAL.as_millis() as u64,
            ..Pipeline::default()
        },
    );
    let mut first = t.start(&config);
    let accepted_by = |n: u64| {
        let rx = &t.rx;
        async move {
            tokio::time::timeout(WAIT, rx.wait_for_accepted(n))
                .await
                .unwrap_or_else(|_| panic!("the receiver accepted only {} of {n}", rx.accepted()));
            Instant::now()
        }
    };
    // The rate just before the kill.
    let t0 = accepted_by(500).await;
    let t1 = accepted_by(1000).await;
    first.signal("KILL");
    let status = first.wait(WAIT).await;
    let rate = 500.0 / (t1 - t0).as_secs_f64();
    let delivered_first = t.rx.accepted();
    assert_eq!(status.signal(), Some(9), "not killed:\n{}", first.log());
    let bound = CONCURRENCY
        + (rate * (COMMIT_INTERVAL + COMMIT_ROUND_TRIP + latency.1).as_secs_f64()).ceil() as u64;
    assert!(
        delivered_first > bound && delivered_first < EVENTS,
        "the first run delivered {delivered_first} of {EVENTS} before the kill: for the \
         duplicate bound ({bound}) to mean anything it must be between the two"
    );

    let mut second = t.start(&config);
    t.wait_for_every_event(EVENTS, &[&first, &second]).await;
    t.wait_committed(&ends, &[&first, &second]).await;
    let code = stop(&mut second).await;
    assert_eq!(
        code,
        Some(0),
        "the restart's graceful stop\n{}",
        logs(&[&first, &second])
    );

    let accepted = t.accepted();
    assert_eq!(accepted.len() as u64, EVENTS, "ids outside 0..{EVENTS}");
    let dups = duplicates(&accepted);
    println!(
        "kill -9 after {delivered_first} deliveries at {rate:.0}/s: {dups} duplicates \
         (bound {bound}); {:?}",
        began.elapsed()
    );
    assert!(
        dups <= bound,
        "{dups} events delivered twice after kill -9, over the bound of {bound} \
         (concurrency {CONCURRENCY} + {rate:.0}/s × ({COMMIT_INTERVAL:?} + \
         {COMMIT_ROUND_TRIP:?} + {:?}))\n{}",
        latency.1,
        logs(&[&first, &second])
    );
}

/// SIGTERM mid-run: running jobs finish, what is settled is committed, and
/// nothing taken is left unsettled (exit 0); the group's offsets then mark
/// exactly the events delivered (each partition's delivered events are
/// the prefix below its committed offset). The restart delivers the rest:
/// no event is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_restart_delivers_each_event_once() {
    const EVENTS: u64 = 2000;
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency: (ms(5), ms(15)),
        ..ReceiverConfig::default()
    })
    .await;
    let placed = produce(&t.topic, &numbered(0..EVENTS)).await;
    let ends = ends(&placed);
    let config = t.config("a", &Pipeline::default());
    let mut first = t.start(&config);
    tokio::time::timeout(WAIT, t.rx.wait_for_accepted(500))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the receiver accepted only {} of 500\n{}",
                t.rx.accepted(),
                logs(&[&first])
            )
        });
    let code = stop(&mut first).await;
    let delivered = t.accepted();
    assert_eq!(
        code,
        Some(0),
        "a SIGTERM'd run whose jobs all finished settled everything it took\n{}",
        logs(&[&first])
    );
    assert!(
        (delivered.len() as u64) < EVENTS,
        "the run finished before SIGTERM stopped it"
    );
    assert_eq!(duplicates(&delivered), 0, "duplicates in one run");

    // Each partition's delivered offsets are exactly those below its
    // committed offset.
    let offsets = committed(&t.group, &t.topic, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let mut got: Vec<i64> = delivered
            .keys()
            .map(|&id| placed[id as usize])
            .filter(|&(q, _)| q == p)
            .map(|(_, o)| o)
            .collect();
        got.sort_unstable();
        let below = offsets[p as usize].unwrap_or(0);
        assert_eq!(
            got,
            (0..below).collect::<Vec<_>>(),
            "partition {p}: delivered offsets (left) vs those below its committed offset \
             {below} (right)\n{}",
            logs(&[&first])
        );
    }

    let mut second = t.start(&config);
    t.wait_for_every_event(EVENTS, &[&first, &second]).await;
    t.wait_committed(&ends, &[&first, &second]).await;
    let code = stop(&mut second).await;
    assert_eq!(
        code,
        Some(0),
        "the restart's stop\n{}",
        logs(&[&first, &second])
    );
    let accepted = t.accepted();
    let twice: Vec<u64> = accepted
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    println!(
        "SIGTERM after {} deliveries, offsets {offsets:?}; restart: {} duplicates; {:?}",
        delivered.len(),
        twice.len(),
        began.elapsed()
    );
    assert!(
        twice.is_empty(),
        "{} events delivered twice after a graceful stop, e.g. {:?}\n{}",
        twice.len(),
        &twice[..twice.len().min(10)],
        logs(&[&first, &second])
    );
}

/// With `format = "json"`, records that are not JSON (or not UTF-8) go to
/// the dead-letter topic as they were, with headers saying why and where
/// from; the good ones around them reach the receiver; the process keeps
/// consuming; its offsets pass the bad records too. SIGTERM then exits 4:
/// everything settled, some dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_with_their_origin() {
    const GOOD: u64 = 200;
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency: (ms(1), ms(5)),
        ..ReceiverConfig::default()
    })
    .await;
    // (payload, what the reason must say)
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (br#"{"id": 7"#.to_vec(), "not valid JSON"),
        (br#"<event id="3"/>"#.to_vec(), "not valid JSON"),
        (br#"{"id": 1}{"id": 2}"#.to_vec(), "not valid JSON"),
        (vec![0xff, 0xfe, b'{', b'}'], "not valid UTF-8"),
        (b"id=12".to_vec(), "not valid JSON"),
    ];
    let mut records = numbered(0..GOOD);
    for (i, (payload, _)) in bad.iter().enumerate().rev() {
        records.insert(
            i * 30 + 5,
            Record {
                key: Some(format!("bad-{i}")),
                partition: Some(i as i32 % PARTITIONS),
                payload: payload.clone(),
            },
        );
    }
    let placed = produce(&t.topic, &records).await;
    let config = t.config("a", &Pipeline::default());
    let mut run = t.start(&config);

    t.wait_for_every_event(GOOD, &[&run]).await;
    let started = Instant::now();
    let letters = loop {
        let letters = t.dead_letters().await;
        if letters.len() >= bad.len() {
            break letters;
        }
        assert!(
            started.elapsed() < WAIT,
            "{} of {} dead letters after {WAIT:?}\n{}",
            letters.len(),
            bad.len(),
            logs(&[&run])
        );
        tokio::time::sleep(ms(100)).await;
    };
    assert_eq!(
        run.exited(),
        None,
        "sluice stopped on malformed records\n{}",
        logs(&[&run])
    );

    // Still consuming: more events after the bad ones are delivered.
    let more = produce(&t.topic, &numbered(GOOD..GOOD + 60)).await;
    t.wait_for_every_event(GOOD + 60, &[&run]).await;
    let mut all = placed.clone();
    all.extend(&more);
    t.wait_committed(&ends(&all), &[&run]).await;
    let code = stop(&mut run).await;
    assert_eq!(
        code,
        Some(4),
        "exit 4: everything settled, some dead-lettered\n{}",
        logs(&[&run])
    );

    let accepted = t.accepted();
    assert_eq!(
        accepted.len() as u64,
        GOOD + 60,
        "ids outside the good ones"
    );
    assert_eq!(duplicates(&accepted), 0, "good events delivered twice");
    let letters_now = t.dead_letters().await;
    assert_eq!(
        letters_now.len(),
        bad.len(),
        "dead letters: {letters_now:#?}"
    );
    for (i, (payload, why)) in bad.iter().enumerate() {
        let key = format!("bad-{i}");
        let letter = letters
            .iter()
            .find(|l| l.key.as_deref() == Some(key.as_str()))
            .unwrap_or_else(|| panic!("no dead letter keyed {key}: {letters:#?}"));
        // Where the bad record landed: it is the one keyed `bad-i`.
        let at = records
            .iter()
            .position(|r| r.key.as_deref() == Some(key.as_str()))
            .unwrap();
        let (partition, offset) = placed[at];
        let h = |name: &str| letter.headers.get(name).map(String::as_str);
        assert_eq!(&letter.payload, payload, "{key}: the payload as it was");
        assert!(
            h("sluice_dead_letter_reason").is_some_and(|r| r.contains(why)),
            "{key}: the reason should say {why:?}: {:?}",
            letter.headers
        );
        assert_eq!(h("sluice_pipeline"), Some(PIPELINE), "{key}");
        assert_eq!(h("sluice_attempts"), Some("1"), "{key}: not retried");
        assert_eq!(h("sluice_topic"), Some(t.topic.as_str()), "{key}");
        assert_eq!(
            h("sluice_partition"),
            Some(partition.to_string().as_str()),
            "{key}"
        );
        assert_eq!(
            h("sluice_offset"),
            Some(offset.to_string().as_str()),
            "{key}"
        );
    }
    println!(
        "malformed: {} dead letters, {} good delivered; {:?}",
        letters.len(),
        accepted.len(),
        began.elapsed()
    );
}

/// `ordering = "key"` under retries: the receiver refuses 30% of requests
/// (503), so jobs are retried; each key's accepted requests still come in
/// sequence order, each sequence number once, none missing, and no request
/// of a key runs ahead of an earlier one still being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordering_holds_under_retries() {
    const KEYS: usize = 10;
    const SEQS: u64 = 40;
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency: (ms(1), ms(3)),
        error_rate: 0.3,
        error_status: 503,
        ..ReceiverConfig::default()
    })
    .await;
    let records = keyed(KEYS, SEQS);
    let placed = produce(&t.topic, &records).await;
    // The broker holds each key's events in sequence order (one partition
    // per key, offsets rising), or the test would prove nothing.
    for k in 0..KEYS {
        let of_key: Vec<(i32, i64)> = (0..SEQS as usize)
            .map(|seq| placed[seq * KEYS + k])
            .collect();
        assert!(
            of_key
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
            "key k{k} was not produced in order to one partition: {of_key:?}"
        );
    }
    let config = t.config(
        "a",
        &Pipeline {
            concurrency: 20,
            ordering: "key",
            path: "/keys/{{ body.key }}/{{ body.seq }}",
            retry: "max_attempts = 40\nbackoff = { initial_ms = 5, max_ms = 20 }",
            ..Pipeline::default()
        },
    );
    let mut run = t.start(&config);

    // (key, seq) of each request, in the order answered, with its status.
    let parse = |r: &Recorded| -> (String, u64, u16) {
        let mut parts = r.path.strip_prefix("/keys/").unwrap_or_default().split('/');
        match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
            (Some(k), Some(seq)) => (k.to_owned(), seq, r.status),
            _ => panic!("unexpected path {}", r.path),
        }
    };
    let total = KEYS as u64 * SEQS;
    let distinct = || {
        t.rx.requests()
            .iter()
            .filter(|r| r.status == 200)
            .map(parse)
            .map(|(k, seq, _)| (k, seq))
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    wait_until(
        &format!("all {total} events delivered"),
        WAIT,
        || distinct() >= total,
        || format!("{} of {total}\n{}", distinct(), logs(&[&run])),
    )
    .await;
    let code = stop(&mut run).await;
    assert_eq!(
        code,
        Some(0),
        "nothing dead-lettered, nothing left\n{}",
        logs(&[&run])
    );

    let requests: Vec<(String, u64, u16)> = t.rx.requests().iter().map(parse).collect();
    let refused = requests.iter().filter(|r| r.2 != 200).count();
    assert!(
        refused >= 20,
        "only {refused} requests refused: too few retries to test order under them"
    );
    for k in 0..KEYS {
        let key = format!("k{k}");
        let tried: Vec<u64> = requests
            .iter()
            .filter(|r| r.0 == key)
            .map(|r| r.1)
            .collect();
        let accepted: Vec<u64> = requests
            .iter()
            .filter(|r| r.0 == key && r.2 == 200)
            .map(|r| r.1)
            .collect();
        assert_eq!(
            accepted,
            (0..SEQS).collect::<Vec<_>>(),
            "{key}: the sequence numbers accepted, in the order accepted"
        );
        assert!(
            tried.windows(2).all(|w| w[0] <= w[1]),
            "{key}: a request ran ahead of an earlier one still being retried: {tried:?}"
        );
    }
    println!(
        "key order: {} requests, {refused} refused and retried; {:?}",
        requests.len(),
        began.elapsed()
    );
}

/// The destination is down (every request 503) for longer than any job's
/// retries last (3 attempts, ≤ 50 ms apart) and longer than
/// `max.poll.interval.ms`: after `pause_after_failures` failed attempts in
/// a row the pipeline stops taking messages ("pausing intake", the Kafka
/// source's "partitions paused"), holds its retries and probes one attempt
/// at a time; once the destination answers again it resumes ("resuming
/// intake", "partitions resumed") and delivers every event. Nothing is
/// dead-lettered, and the paused consumer stays in its group (no
/// revocation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_outage_pauses_intake_and_nothing_is_dead_lettered() {
    const EVENTS: u64 = 300;
    const CONCURRENCY: usize = 10;
    // Longer than max.poll.interval.ms (7 s): a paused consumer must still
    // be polled, or librdkafka leaves the group.
    const OUTAGE: Duration = Duration::from_secs(8);
    let began = Instant::now();
    let healthy = ReceiverConfig {
        latency: (ms(1), ms(3)),
        ..ReceiverConfig::default()
    };
    let mut t = Trial::new(ReceiverConfig {
        error_rate: 1.0,
        error_status: 503,
        ..healthy.clone()
    })
    .await;
    let placed = produce(&t.topic, &numbered(0..EVENTS)).await;
    let config = t.config(
        "a",
        &Pipeline {
            concurrency: CONCURRENCY,
            retry: "max_attempts = 3\nbackoff = { initial_ms = 20, max_ms = 50 }\n\
                    pause_after_failures = 5",
            ..Pipeline::default()
        },
    );
    let mut run = t.start(&config);

    run.wait_for_log("pausing intake", WAIT).await;
    let paused = Instant::now();
    let at_pause = t.rx.total();
    run.wait_for_log("partitions paused", WAIT).await;
    // The outage goes on, with probes coming (a scenario, not a wait for
    // something to happen by then).
    wait_until(
        "the outage to last and probes to come",
        WAIT,
        || paused.elapsed() >= OUTAGE && t.rx.total() >= at_pause + 2,
        || {
            format!(
                "{} requests since the pause\n{}",
                t.rx.total() - at_pause,
                logs(&[&run])
            )
        },
    )
    .await;
    let during = t.rx.total() - at_pause;
    assert_eq!(run.exited(), None, "sluice exited\n{}", logs(&[&run]));
    let burnt = t.dead_letters().await;
    assert!(
        burnt.is_empty(),
        "{} events dead-lettered during the outage\n{}",
        burnt.len(),
        logs(&[&run])
    );
    t.rx.set_config(healthy);
    let recovered = Instant::now();

    t.wait_for_every_event(EVENTS, &[&run]).await;
    let resumed_after = recovered.elapsed();
    run.wait_for_log("resuming intake", WAIT).await;
    run.wait_for_log("partitions resumed", WAIT).await;
    t.wait_committed(&ends(&placed), &[&run]).await;
    let log = run.log();
    let code = stop(&mut run).await;
    assert_eq!(code, Some(0), "nothing dead-lettered\n{}", logs(&[&run]));
    let letters = t.dead_letters().await;
    assert!(
        letters.is_empty(),
        "{} events dead-lettered: {:?}",
        letters.len(),
        letters
            .iter()
            .map(|l| l.headers.get("sluice_dead_letter_reason"))
            .collect::<Vec<_>>()
    );
    assert!(
        !log.contains("partitions revoked"),
        "the paused consumer left its group\n{}",
        logs(&[&run])
    );
    // Those in flight when it opened, then one probe at a time at a
    // growing interval.
    assert!(
        during <= CONCURRENCY as u64 + 8,
        "{during} requests in the {OUTAGE:?} after the pause: not one probe at a time"
    );
    println!(
        "outage: {during} requests while paused for {:?}; all delivered {resumed_after:?} \
         after recovery; {:?}",
        recovered - paused,
        began.elapsed()
    );
}

/// `ordering = "key"` with retries (10 % of requests 503, backoffs of
/// 200 ms to 1 s) and a SIGTERM mid-run — to the only process, then a
/// restart, or to one of two group members: each key's events are first
/// delivered in their order (a key whose event was released at the stop
/// takes nothing more before the restart), and the graceful stop lets the
/// retries that fit its timeout finish, so what comes round again is no
/// more than the events in flight (the concurrency), not most of what
/// was delivered behind one released event.
async fn key_order_holds_across_a_sigterm(two_members: bool) {
    const KEYS: usize = 20;
    const SEQS: u64 = 60;
    const CONCURRENCY: usize = 20;
    let began = Instant::now();
    let mut t = Trial::new(ReceiverConfig {
        latency: (ms(2), ms(6)),
        error_rate: 0.1,
        error_status: 503,
        ..ReceiverConfig::default()
    })
    .await;
    let pipeline = Pipeline {
        concurrency: CONCURRENCY,
        ordering: "key",
        path: "/keys/{{ body.key }}/{{ body.seq }}",
        retry: "max_attempts = 40\nbackoff = { initial_ms = 200, max_ms = 1000 }",
        ..Pipeline::default()
    };
    let (config_a, config_b) = (t.config("a", &pipeline), t.config("b", &pipeline));
    let mut a = t.start(&config_a);
    let mut b = if two_members {
        let b = t.start(&config_b);
        // Both members hold partitions before the events come.
        for run in [&a, &b] {
            tokio::time::timeout(WAIT, async {
                while !run.log().contains("partitions assigned") {
                    tokio::time::sleep(ms(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no assignment\n{}", logs(&[&a, &b])));
        }
        Some(b)
    } else {
        None
    };
    let records = keyed(KEYS, SEQS);
    produce(&t.topic, &records).await;
    let total = KEYS as u64 * SEQS;
    let parse = |r: &Recorded| -> (String, u64) {
        let mut parts = r.path.strip_prefix("/keys/").unwrap_or_default().split('/');
        match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
            (Some(k), Some(seq)) => (k.to_owned(), seq),
            _ => panic!("unexpected path {}", r.path),
        }
    };
    let accepted = |rx: &Receiver| -> Vec<(String, u64)> {
        rx.requests()
            .iter()
            .filter(|r| r.status == 200)
            .map(parse)
            .collect()
    };
    let distinct = |rx: &Receiver| accepted(rx).into_iter().collect::<BTreeSet<_>>().len() as u64;
    wait_until(
        "a third of the events delivered",
        WAIT,
        || distinct(&t.rx) >= total / 3,
        || format!("{} of {total}", distinct(&t.rx)),
    )
    .await;
    let code = stop(&mut a).await;
    let at_stop = accepted(&t.rx).len();
    assert_eq!(
        code,
        Some(0),
        "every retry fitted the shutdown timeout and settled\n{}",
        logs(&[&a])
    );
    let mut rest = match b.take() {
        Some(b) => b,
        None => t.start(&config_a),
    };
    wait_until(
        &format!("all {total} events delivered"),
        WAIT,
        || distinct(&t.rx) >= total,
        || format!("{} of {total}\n{}", distinct(&t.rx), logs(&[&a, &rest])),
    )
    .await;
    assert_eq!(stop(&mut rest).await, Some(0), "{}", logs(&[&rest]));

    let all = accepted(&t.rx);
    let again = all.len() - all.iter().collect::<BTreeSet<_>>().len();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let mut seen = BTreeSet::new();
        let first: Vec<u64> = all
            .iter()
            .filter(|(kk, seq)| *kk == key && seen.insert(*seq))
            .map(|(_, seq)| *seq)
            .collect();
        assert_eq!(
            first,
            (0..SEQS).collect::<Vec<_>>(),
            "{key}: first deliveries out of order\n{}",
            logs(&[&a, &rest])
        );
    }
    println!(
        "key order across SIGTERM ({}): {at_stop} delivered at the stop, {again} delivered \
         again; {:?}",
        if two_members {
            "two members"
        } else {
            "restart"
        },
        began.elapsed()
    );
    // With two members the survivor keeps its own partitions through the
    // rebalance (cooperative-sticky): the same bound holds.
    assert!(
        again <= CONCURRENCY,
        "{again} events delivered again after a graceful stop, more than the {CONCURRENCY} \
         in flight\n{}",
        logs(&[&a, &rest])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_across_a_sigterm_and_restart() {
    key_order_holds_across_a_sigterm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_when_one_of_two_members_stops() {
    key_order_holds_across_a_sigterm(true).await;
}

/// `--stop-when-empty` on Kafka: the run ends by itself once caught up
/// (every assigned partition settled up to its high watermark, nothing in
/// flight), exit 0, every event delivered once and committed; a second
/// run on the caught-up group ends too, delivering nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_when_empty_ends_once_caught_up() {
    const EVENTS: u64 = 300;
    let t = Trial::new(ReceiverConfig {
        latency: (ms(1), ms(5)),
        ..ReceiverConfig::default()
    })
    .await;
    let placed = produce(&t.topic, &numbered(0..EVENTS)).await;
    let config = t.config("a", &Pipeline::default());
    let mut run = process::start(t.dir.path(), 1, &config, &["--stop-when-empty"]);
    let status = run.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", logs(&[&run]));
    let accepted = t.accepted();
    assert_eq!(accepted.len() as u64, EVENTS, "{}", logs(&[&run]));
    assert_eq!(duplicates(&accepted), 0);
    let offsets = committed(&t.group, &t.topic, PARTITIONS).await;
    let want: Vec<Option<i64>> = ends(&placed).into_iter().map(Some).collect();
    assert_eq!(offsets, want, "committed up to each partition's end");

    let mut again = process::start(t.dir.path(), 2, &config, &["--stop-when-empty"]);
    let status = again.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", logs(&[&again]));
    assert_eq!(
        t.rx.requests().len() as u64,
        EVENTS,
        "nothing more delivered"
    );
}
