//! The Redis source against a real Redis (127.0.0.1:6379, or
//! `SLUICE_REDIS_URL`), laid out as Laravel's Redis queue lays it out:
//! the reserved member is the one the pop script stored, byte for byte,
//! and every settlement names it; a crashed consumer's reservation comes
//! back; a delayed job waits its time; attempts count as Laravel counts
//! them. Each test has a queue of its own and deletes its keys.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::redis::{connection, url};
use redis::Commands;
use sluice::SourceContext;
use sluice::sources::redis::RedisSourceConfig;
use sluice::sources::{Delivery, Received, Source, SourceConfig};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A queue of its own, with the prefix a Laravel app has; deleted when
/// dropped.
struct Queue {
    cfg: RedisSourceConfig,
}

impl Queue {
    fn new(name: &str) -> Queue {
        let mut cfg = RedisSourceConfig::new(
            url(),
            format!("{name}-{}-{}", std::process::id(), fastrand::u32(..)),
        );
        cfg.prefix = "laravel_database_".into();
        cfg.block_for_secs = 1;
        Queue { cfg }
    }

    fn keys(&self) -> sluice::sources::redis::scripts::Keys {
        self.cfg.keys()
    }

    /// Laravel's push: the payload, then a notify token.
    fn push(&self, payload: &str) {
        let k = self.keys();
        let _: () = redis::pipe()
            .rpush(&k.queue, payload)
            .rpush(&k.notify, 1)
            .query(&mut connection())
            .unwrap();
    }

    async fn open(&self) -> Box<dyn Source> {
        self.cfg
            .build(&SourceContext::new("redis-test", 8))
            .await
            .unwrap()
    }

    fn reserved(&self) -> Vec<(Vec<u8>, f64)> {
        connection()
            .zrange_withscores(self.keys().reserved, 0, -1)
            .unwrap()
    }

    fn delayed(&self) -> Vec<(Vec<u8>, f64)> {
        connection()
            .zrange_withscores(self.keys().delayed, 0, -1)
            .unwrap()
    }

    fn list(&self) -> Vec<Vec<u8>> {
        connection().lrange(self.keys().queue, 0, -1).unwrap()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let k = self.keys();
        let _: Result<(), _> = connection().del(&[
            k.queue,
            k.reserved,
            k.delayed,
            k.notify,
            self.cfg.dead_letter_key(),
        ]);
    }
}

/// A Laravel 8 payload as `Queue::createPayloadArray` writes it (the
/// command abridged): slashes escaped, keys in PHP's order.
fn payload(uuid: &str, attempts: u32) -> String {
    format!(
        r#"{{"uuid":"{uuid}","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"data":{{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{{s:8:\"reportId\";i:42;}}"}},"id":"{uuid}","attempts":{attempts}}}"#
    )
}

async fn receive_one(source: &mut Box<dyn Source>, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, source.receive(1)).await {
        Err(_) => None,
        Ok(r) => match r.unwrap() {
            Received::Deliveries(mut d) => {
                assert_eq!(d.len(), 1);
                d.pop()
            }
            Received::End => panic!("a queue does not end"),
        },
    }
}

fn attempts_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["attempts"].as_u64().unwrap()
}

#[tokio::test]
async fn the_reserved_member_is_the_popped_bytes_and_settles_by_them() {
    let q = Queue::new("reserved");
    for uuid in ["a", "b", "c"] {
        q.push(&payload(uuid, 0));
    }
    let mut source = q.open().await;
    let wait = Duration::from_secs(5);

    // The body is the job as pushed (Laravel's getRawBody); the reserved
    // member is the pop script's re-encoding, attempts counted, and an ack
    // deletes it by its bytes.
    let a = receive_one(&mut source, wait).await.unwrap();
    assert_eq!(a.message.id, "a");
    assert_eq!(a.message.attempt, 1);
    assert_eq!(a.message.body.as_ref(), payload("a", 0).as_bytes());
    let reserved = q.reserved();
    assert_eq!(reserved.len(), 1);
    assert_ne!(
        reserved[0].0,
        payload("a", 0).as_bytes(),
        "cjson re-encodes it"
    );
    let mut expected: serde_json::Value = serde_json::from_str(&payload("a", 0)).unwrap();
    expected["attempts"] = 1.into();
    let stored: serde_json::Value = serde_json::from_slice(&reserved[0].0).unwrap();
    assert_eq!(stored, expected);
    let expiry = reserved[0].1 - now();
    assert!((85.0..=91.0).contains(&expiry), "retry_after 90: {expiry}");
    a.acker.ack().await.unwrap();
    assert!(q.reserved().is_empty());

    // Extend moves the score; retry (Laravel's release) moves the same
    // bytes to :delayed at now + delay.
    let b = receive_one(&mut source, wait).await.unwrap();
    b.acker.extend(Duration::from_secs(600)).await.unwrap();
    let member = q.reserved()[0].0.clone();
    let extended = q.reserved()[0].1 - now();
    assert!((595.0..=601.0).contains(&extended), "{extended}");
    b.acker.retry(Duration::from_secs(30)).await.unwrap();
    assert!(q.reserved().is_empty());
    let delayed = q.delayed();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].0, member, "the reserved bytes, verbatim");
    assert_eq!(attempts_of(&member), 1);
    let due = delayed[0].1 - now();
    assert!((28.0..=31.0).contains(&due), "{due}");

    // Release: the job as pushed goes back to the head, byte for byte.
    let c = receive_one(&mut source, wait).await.unwrap();
    c.acker.release().await.unwrap();
    assert!(q.reserved().is_empty());
    assert_eq!(q.list(), [payload("c", 0).into_bytes()]);

    // Remove (after a dead letter) is a delete too.
    let c = receive_one(&mut source, wait).await.unwrap();
    assert_eq!(c.message.attempt, 1, "a release is not an attempt");
    c.acker.remove().await.unwrap();
    assert!(q.reserved().is_empty() && q.list().is_empty());
    source.close().await.unwrap();
}

#[tokio::test]
async fn extend_does_not_reserve_a_settled_job_again() {
    let q = Queue::new("extend");
    q.push(&payload("x", 0));
    let mut source = q.open().await;
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .unwrap();
    let extend = d.acker.extend(Duration::from_secs(60));
    // Settled (by another hand) before the heartbeat's extension lands.
    let member = q.reserved()[0].0.clone();
    let _: i64 = connection().zrem(q.keys().reserved, member).unwrap();
    extend.await.unwrap();
    assert!(q.reserved().is_empty(), "ZADD XX adds nothing");
    drop(d);
    source.close().await.unwrap();
}

#[tokio::test]
async fn a_crashed_consumers_job_comes_back_counted() {
    let q = Queue::new("crashed");
    // A consumer popped it (attempts 1) and died: its reservation expired
    // ten seconds ago.
    let reserved = payload("lost", 1);
    let _: i64 = connection()
        .zadd(q.keys().reserved, &reserved, now() - 10.0)
        .unwrap();
    let mut source = q.open().await;
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .expect("migrated back and popped");
    assert_eq!(d.message.id, "lost");
    assert_eq!(d.message.attempt, 2, "Laravel counts the crashed run");
    assert_eq!(
        d.message.body.as_ref(),
        reserved.as_bytes(),
        "as it was reserved"
    );
    assert_eq!(attempts_of(&q.reserved()[0].0), 2);
    d.acker.ack().await.unwrap();
    assert!(q.reserved().is_empty() && q.list().is_empty());

    // One whose reservation has not expired stays with its consumer.
    let _: i64 = connection()
        .zadd(q.keys().reserved, payload("busy", 1), now() + 60.0)
        .unwrap();
    assert!(
        receive_one(&mut source, Duration::from_millis(1500))
            .await
            .is_none()
    );
    source.close().await.unwrap();
}

#[tokio::test]
async fn a_delayed_job_waits_its_time() {
    let q = Queue::new("delayed");
    let due = now() + 2.0;
    // Laravel's `later`: straight into :delayed.
    let _: i64 = connection()
        .zadd(q.keys().delayed, payload("later", 0), due)
        .unwrap();
    let mut source = q.open().await;
    assert!(
        receive_one(&mut source, Duration::from_millis(1500))
            .await
            .is_none(),
        "not before its time"
    );
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .expect("runs once due");
    assert!(now() >= due);
    assert_eq!(d.message.attempt, 1);
    d.acker.ack().await.unwrap();
    assert!(q.delayed().is_empty() && q.reserved().is_empty());
    source.close().await.unwrap();
}

#[tokio::test]
async fn attempts_count_as_laravel_counts_them() {
    let q = Queue::new("attempts");
    q.push(&payload("n", 0));
    let mut source = q.open().await;
    let wait = Duration::from_secs(5);
    let mut seen = vec![];
    for _ in 0..3 {
        let d = receive_one(&mut source, wait).await.unwrap();
        seen.push((d.message.attempt, attempts_of(&d.message.body)));
        d.acker.retry(Duration::ZERO).await.unwrap();
    }
    // attempt is Laravel's attempts(): the stored count plus this run.
    assert_eq!(seen, [(1, 0), (2, 1), (3, 2)]);
    let d = receive_one(&mut source, wait).await.unwrap();
    assert_eq!(d.message.attempt, 4);
    d.acker.ack().await.unwrap();
    source.close().await.unwrap();
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_reserved_not_lost() {
    let q = Queue::new("garbage");
    q.push("not json");
    let mut source = q.open().await;
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.message.body.as_ref(), b"not json");
    assert_eq!(d.message.attempt, 1);
    assert_eq!(q.reserved()[0].0, b"not json");
    // Dead-lettered: the record names the payload and the reason.
    let target = source.dead_letters().unwrap();
    target
        .store(sluice::sources::DeadLetter {
            pipeline: "redis-test",
            message: &d.message,
            attempts: 1,
            reason: "not a Laravel payload",
        })
        .await
        .unwrap();
    d.acker.remove().await.unwrap();
    let records: Vec<String> = connection().lrange(q.cfg.dead_letter_key(), 0, -1).unwrap();
    assert_eq!(records.len(), 1);
    let r: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(r["payload"], "not json");
    assert_eq!(r["reason"], "not a Laravel payload");
    assert_eq!(r["pipeline"], "redis-test");
    assert!(q.reserved().is_empty());
    source.close().await.unwrap();
}

#[tokio::test]
async fn stop_when_empty_waits_for_what_the_queue_still_holds() {
    let q = Queue::new("drain");
    q.push(&payload("now", 0));
    let _: i64 = connection()
        .zadd(q.keys().delayed, payload("soon", 0), now() + 1.5)
        .unwrap();
    let mut source = q.open().await;
    source.stop_when_empty();
    let first = receive_one(&mut source, Duration::from_secs(5))
        .await
        .unwrap();
    // Held by this source: not drained while it is out.
    let early = tokio::time::timeout(Duration::from_millis(500), source.receive(1)).await;
    assert!(early.is_err(), "ended while a job was out");
    first.acker.ack().await.unwrap();
    let soon = receive_one(&mut source, Duration::from_secs(5))
        .await
        .expect("the delayed job is waited for");
    assert_eq!(soon.message.id, "soon");
    soon.acker.ack().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), source.receive(1))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, Received::End), "{end:?}");
    source.close().await.unwrap();
}

/// A TCP proxy to Redis whose connections the test can cut, as a Redis
/// restart or a network fault would.
struct Proxy {
    addr: std::net::SocketAddr,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let upstream = url()
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let links = links.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Proxy {
            addr,
            links,
            accept,
        }
    }

    /// Drops every connection made so far.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_lost_connection_is_a_transient_error_and_comes_back() {
    let proxy = Proxy::start().await;
    let mut q = Queue::new("reconnect");
    let db = url().rsplit('/').next().unwrap_or("0").to_owned();
    q.cfg.url = format!("redis://{}/{db}", proxy.addr);
    q.push(&payload("before", 0));
    let mut source = q.open().await;
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .unwrap();
    d.acker.ack().await.unwrap();

    proxy.cut();
    q.push(&payload("after", 0));
    // Receives fail, transiently, until the connection is back; then the
    // job comes as if nothing happened.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let d = loop {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        match tokio::time::timeout(Duration::from_secs(5), source.receive(1)).await {
            Ok(Ok(Received::Deliveries(mut d))) => break d.pop().unwrap(),
            Ok(Ok(Received::End)) => panic!("a queue does not end"),
            Ok(Err(e)) => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    };
    assert_eq!(d.message.id, "after");
    d.acker.ack().await.unwrap();
    assert!(q.reserved().is_empty() && q.list().is_empty());
    source.close().await.unwrap();
}

/// A config-built pipeline on a Laravel queue: the command's properties
/// reach the template, a failure is released to `:delayed` after the
/// payload's own `backoff`, counted, and `--stop-when-empty` ends the run
/// once the queue holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laravel_job_runs_from_config_with_its_own_backoff() {
    use sluice::config::{self, RunOptions};
    use sluice::runtime::{Progress, Shutdown};
    use sluice::testkit::{Receiver, ReceiverConfig};

    let q = Queue::new("config");
    let job = payload("r42", 0).replace(r#""backoff":null"#, r#""backoff":"1""#);
    q.push(&job);
    let rx = Receiver::start(ReceiverConfig {
        latency: (Duration::ZERO, Duration::ZERO),
        fail_first: 1,
        record: true,
        ..ReceiverConfig::default()
    })
    .await
    .unwrap();
    let text = format!(
        r#"
[[pipeline]]
name = "reports"
concurrency = 4
[pipeline.source]
type = "redis"
url = "{url}"
queue = "{queue}"
prefix = "laravel_database_"
block_for_secs = 1
[[pipeline.step]]
type = "http"
url = "{rx}/reports/{{{{ job.command.reportId }}}}"
body = '{{"job": {{{{ job.uuid | tojson }}}}}}'
"#,
        url = url(),
        queue = q.cfg.queue,
        rx = rx.url(),
    );
    let loaded = config::parse("redis.toml", &text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let run = tokio::spawn(async move {
        config::run(
            &loaded,
            RunOptions {
                shutdown: Shutdown::new(),
                progress: Progress::Off,
                stop_when_empty: true,
                admin: None,
            },
        )
        .await
    });
    // The first answer is a 503: the job waits in :delayed, as Laravel's
    // release leaves it, for the payload's 1 s.
    let delayed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(d) = q.delayed().pop() {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the failed job is released to :delayed");
    assert_eq!(attempts_of(&delayed.0), 1);
    assert!(
        delayed.1 - now() <= 1.1,
        "backoff 1 s: {}",
        delayed.1 - now()
    );
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends once the queue is empty")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.settled_everything(), "{report:?}");
    let requests = rx.requests();
    let statuses: Vec<(String, u16)> = requests
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [("/reports/42".into(), 503), ("/reports/42".into(), 200)]
    );
    assert!(q.list().is_empty() && q.reserved().is_empty() && q.delayed().is_empty());
}

/// Newer Laravel versions add fields to the payload (a `createdAt` Unix
/// time, a `delay`), and apps add their own through
/// `Queue::createPayloadUsing` hooks (a tenant id, tags). They are read
/// like Laravel 8's: the job runs with its attempts counted, every field
/// survives the pop into the reserved member, and a retry releases that
/// member, extra fields and all, into `:delayed`.
#[tokio::test]
async fn a_newer_laravels_payload_with_extra_fields_is_read_and_kept_whole() {
    let q = Queue::new("newer");
    let newer = r#"{"uuid":"n-1","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":3,"maxExceptions":null,"failOnTimeout":false,"backoff":"5","timeout":120,"retryUntil":null,"data":{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{s:8:\"reportId\";i:42;}"},"createdAt":1764633600,"delay":null,"tenant":"acme","tags":["reports","eu"],"id":"n-1","attempts":0}"#;
    q.push(newer);
    let mut source = q.open().await;
    let d = receive_one(&mut source, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((d.message.id.as_str(), d.message.attempt), ("n-1", 1));
    assert_eq!(d.message.body.as_ref(), newer.as_bytes());
    let env = sluice::formats::Format::Laravel
        .decode(&d.message.body)
        .expect("a newer payload is a Laravel payload");
    let json = env.json().unwrap();
    assert_eq!(json["command"]["reportId"], 42);
    assert_eq!(json["tenant"], "acme");
    let hints = sluice::formats::laravel::RetryHints::parse(&d.message.body).unwrap();
    assert_eq!(
        hints.max_tries,
        Some(sluice::formats::laravel::MaxTries::Limit(3.0))
    );
    assert_eq!(hints.timeout, Some(Duration::from_secs(120)));
    let reserved_bytes = q.reserved()[0].0.clone();
    let reserved: serde_json::Value = serde_json::from_slice(&reserved_bytes).unwrap();
    let original: serde_json::Value = serde_json::from_str(newer).unwrap();
    for field in ["createdAt", "delay", "tenant", "tags", "data", "timeout"] {
        assert_eq!(reserved[field], original[field], "{field} survives the pop");
    }
    assert_eq!(reserved["attempts"], 1);
    d.acker.retry(Duration::from_secs(30)).await.unwrap();
    let delayed = q.delayed();
    assert_eq!(delayed.len(), 1);
    assert_eq!(
        delayed[0].0, reserved_bytes,
        "released as Laravel releases: the reserved member"
    );
    source.close().await.unwrap();
}
