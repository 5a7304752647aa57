//! The source conformance suite: what every source must do under the
//! runtime, written once against the contract (`sluice::sources`) and run
//! for each source by a small [`Harness`] and one line,
//! `all_checks!(MyHarness::new())` (tests/conformance_file.rs,
//! tests/conformance_sqs.rs, tests/conformance_kafka.rs). A new source
//! passes these before it lands.
//!
//! Each check starts from fresh input and asserts on what the broker holds
//! afterwards: nothing lost, nothing left unsettled that should not be.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice::sources::{DeadLetter, DeadLetterTarget, Received, Revocation, Source, SourceError};
use sluice::{Backoff, Job, JobError, PipelineReport, Retry, Shutdown, Worker};
use tokio::sync::watch;
use tokio::time::Instant;

/// One source under test, on input of its own.
pub trait Harness {
    /// Fresh input holding `msgs` (body, ordering key), in order.
    fn seed(&mut self, msgs: &[(String, Option<String>)]) -> impl Future<Output = ()>;
    /// A source on the input, as a new process would open it.
    fn open(&self, concurrency: usize) -> impl Future<Output = Box<dyn Source>>;
    /// How many messages the broker still holds unsettled (running,
    /// waiting, invisible or visible).
    fn unsettled(&self) -> impl Future<Output = usize>;
    /// The bodies in the source's own dead-letter target.
    fn dead_letters(&self) -> impl Future<Output = Vec<String>>;
    /// What [`unsettled`](Harness::unsettled) must say when exactly the
    /// seeded messages at `unsettled` (indexes into the seed) are not
    /// settled. A broker that settles one message at a time (SQS, the file
    /// checkpoint) holds just those; one that commits an offset below which
    /// everything is settled (Kafka) holds every message of a partition from
    /// its lowest unsettled one on: they all come back after a restart.
    fn held_if_unsettled(&self, unsettled: &[usize]) -> usize {
        unsettled.len()
    }
}

use std::future::Future;

/// Every check of the suite, one `#[tokio::test]` each, on a fresh harness
/// from `$new` (an expression; `.await` allowed). A source's test file is
/// then one line: `conformance::all_checks!(MyHarness::new());`.
#[macro_export]
macro_rules! all_checks {
    (@each [$new:expr] $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                conformance::$check(&mut $new).await;
            }
        )*
    };
    ($new:expr) => {
        $crate::all_checks!(@each [$new]
            at_least_once_under_crash,
            retry_waits_its_delay,
            dead_letter_stored_before_removal,
            release_at_shutdown,
            extend_keeps_a_long_job_leased,
            revoked_jobs_are_not_settled,
            ordering_key_keeps_order,
            exit_code_says_what_went_back,
        );
    };
}

/// A fast retry policy: attempts 5, backoff 100 ms up to 1 s.
fn fast_retry() -> Retry {
    Retry {
        max_attempts: 5,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: false,
        },
    }
}

fn bodies(n: usize) -> Vec<(String, Option<String>)> {
    (0..n).map(|i| (format!(r#"{{"n": {i}}}"#), None)).collect()
}

fn n_of(job: &Job) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&job.body).unwrap();
    v["n"].as_u64().unwrap()
}

/// Counts handler calls; `wait` resolves once `n` were made.
#[derive(Clone)]
struct Calls(Arc<watch::Sender<u32>>);

impl Calls {
    fn new() -> Calls {
        Calls(Arc::new(watch::channel(0).0))
    }
    fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    async fn wait(&self, n: u32) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

/// Resolves once `cond` holds, looking every few milliseconds (the counts
/// have no change notification; the callers' timeouts bound the wait).
async fn wait_until(cond: impl Fn() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !cond() {
        tick.tick().await;
    }
}

/// Runs `worker` until it ends by itself or `until` resolves, then stops it
/// as SIGTERM would; a minute at most.
async fn run_until(
    worker: Worker,
    shutdown: Shutdown,
    until: impl Future<Output = ()>,
) -> PipelineReport {
    let task = tokio::spawn(worker.run());
    let run = async {
        tokio::pin!(task);
        tokio::select! {
            r = &mut task => r.unwrap(),
            _ = until => {
                shutdown.request();
                task.await.unwrap()
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends within a minute")
}

fn worker(
    name: &str,
    source: Box<dyn Source>,
    shutdown: &Shutdown,
) -> sluice::worker::WorkerBuilder {
    Worker::builder(name)
        .boxed_source(source)
        .concurrency(8)
        .retry(fast_retry())
        .shutdown(shutdown.clone())
        .shutdown_timeout(Duration::ZERO)
}

/// A process that dies mid-run settles nothing more; every message it did
/// not ack is delivered again to the next one.
pub async fn at_least_once_under_crash<H: Harness>(h: &mut H) {
    h.seed(&bodies(30)).await;
    let seen = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let calls = Calls::new();
    let hang = |n: u64| n < 3;
    let handler = {
        let (seen, calls) = (seen.clone(), calls.clone());
        move |job: Job| {
            let (seen, calls) = (seen.clone(), calls.clone());
            async move {
                let n = n_of(&job);
                *seen.lock().unwrap().entry(n).or_default() += 1;
                calls.bump();
                if hang(n) {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("crash", h.open(8).await, &shutdown)
        .handler(handler.clone())
        .build()
        .unwrap();
    let counts = w.counts();
    // The worker runs on a runtime of its own, so that the crash can take
    // every one of its tasks at once, as a kill -9 would: nothing settles,
    // nothing is released, no lease is extended any more.
    let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
    let process = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _running = tokio::spawn(w.run());
            let _ = crashed.await;
        });
        rt.shutdown_background();
    });
    let acked = async {
        calls.wait(30).await;
        wait_until(|| counts.succeeded.get() >= 27).await;
    };
    tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .expect("27 acks within a minute");
    crash.send(()).unwrap();
    process.join().unwrap();
    assert_eq!(
        h.unsettled().await,
        h.held_if_unsettled(&[0, 1, 2]),
        "the 3 unacked messages are still held"
    );

    // The next process gets them again.
    seen.lock().unwrap().clear();
    let calls = Calls::new();
    let handler = {
        let (seen, calls) = (seen.clone(), calls.clone());
        move |job: Job| {
            let (seen, calls) = (seen.clone(), calls.clone());
            async move {
                *seen.lock().unwrap().entry(n_of(&job)).or_default() += 1;
                calls.bump();
                Ok(())
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("crash-rerun", h.open(8).await, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    // Everything the broker held comes back: the 3, and on a broker that
    // commits an offset prefix, what stood behind them.
    let held = h.held_if_unsettled(&[0, 1, 2]) as u64;
    let report = run_until(w, shutdown, async {
        calls.wait(held as u32).await;
        wait_until(|| counts.succeeded.get() >= held).await;
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    for n in 0..3 {
        assert!(seen.contains_key(&n), "message {n} came back: {seen:?}");
    }
    assert!(report.settled_everything(), "{report:?}");
    assert_eq!(h.unsettled().await, 0);
}

/// A retry comes back after its delay, as the next attempt.
pub async fn retry_waits_its_delay<H: Harness>(h: &mut H) {
    h.seed(&bodies(5)).await;
    let attempts = Arc::new(Mutex::new(BTreeMap::<u64, Vec<(u32, Instant)>>::new()));
    let handler = {
        let attempts = attempts.clone();
        move |job: Job| {
            let attempts = attempts.clone();
            async move {
                attempts
                    .lock()
                    .unwrap()
                    .entry(n_of(&job))
                    .or_default()
                    .push((job.attempt, Instant::now()));
                match job.attempt {
                    1 => Err(JobError::retry_after(Duration::from_millis(400), "not yet")),
                    _ => Ok(()),
                }
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("retry", h.open(8).await, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        wait_until(|| counts.succeeded.get() >= 5).await;
    })
    .await;
    assert_eq!((report.succeeded, report.retried), (5, 5), "{report:?}");
    for (n, tries) in attempts.lock().unwrap().iter() {
        let numbers: Vec<u32> = tries.iter().map(|t| t.0).collect();
        assert_eq!(numbers, [1, 2], "message {n}");
        let waited = tries[1].1 - tries[0].1;
        assert!(
            waited >= Duration::from_millis(400),
            "message {n} came back after {waited:?}"
        );
    }
    assert_eq!(h.unsettled().await, 0);
}

/// Wraps the source's own target: fails the first `fail` stores.
struct Flaky {
    inner: Arc<dyn DeadLetterTarget>,
    fail: AtomicU32,
}

impl DeadLetterTarget for Flaky {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        if self
            .fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(async { Err(SourceError::transient("the target is down")) });
        }
        self.inner.store(letter)
    }
    fn name(&self) -> String {
        format!("flaky {}", self.inner.name())
    }
}

/// A message is removed only once its dead letter is stored: a store that
/// fails leaves it with the broker, and it is stored on a later round.
pub async fn dead_letter_stored_before_removal<H: Harness>(h: &mut H) {
    h.seed(&bodies(6)).await;
    let handler = |job: Job| async move {
        match n_of(&job) {
            0..3 => Err(JobError::fail("bad input")),
            _ => Ok(()),
        }
    };
    // A target that never stores: the bad messages stay with the broker.
    let source = h.open(8).await;
    let target = Arc::new(Flaky {
        inner: source.dead_letters().expect("the source has a target"),
        fail: AtomicU32::new(u32::MAX),
    });
    let shutdown = Shutdown::new();
    let w = worker("dlq-down", source, &shutdown)
        .handler(handler)
        .dead_letters(target)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        wait_until(|| counts.succeeded.get() >= 3 && counts.settle_errors.get() >= 3).await;
    })
    .await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(!report.settled_everything(), "exit code 3: {report:?}");
    assert_eq!(
        h.unsettled().await,
        h.held_if_unsettled(&[0, 1, 2]),
        "not stored, so not removed"
    );
    assert!(h.dead_letters().await.is_empty());

    // The target fails once more, then stores: every bad message ends up
    // stored, once, and removed.
    let source = h.open(8).await;
    let target = Arc::new(Flaky {
        inner: source.dead_letters().expect("the source has a target"),
        fail: AtomicU32::new(1),
    });
    let shutdown = Shutdown::new();
    let w = worker("dlq-flaky", source, &shutdown)
        .handler(handler)
        .dead_letters(target)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        wait_until(|| counts.dead_lettered.get() >= 3).await;
    })
    .await;
    assert_eq!(report.dead_lettered, 3, "{report:?}");
    let mut stored = h.dead_letters().await;
    stored.sort();
    let expected: Vec<String> = bodies(3).into_iter().map(|b| b.0).collect();
    assert_eq!(stored, expected);
    assert_eq!(h.unsettled().await, 0);
}

/// At shutdown, jobs still running are stopped and their messages handed
/// back at once, counted; the next consumer gets them without waiting out
/// a lease.
pub async fn release_at_shutdown<H: Harness>(h: &mut H) {
    h.seed(&bodies(4)).await;
    let calls = Calls::new();
    let handler = {
        let calls = calls.clone();
        move |_job: Job| {
            let calls = calls.clone();
            async move {
                calls.bump();
                std::future::pending::<Result<(), JobError>>().await
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("release", h.open(8).await, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let report = run_until(w, shutdown, calls.wait(4)).await;
    assert_eq!(report.released, 4, "{report:?}");
    assert!(!report.settled_everything(), "exit code 3: {report:?}");
    assert_eq!(h.unsettled().await, 4);
    let mut again = h.open(8).await;
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while got < 4 {
        let r = tokio::time::timeout_at(deadline, again.receive(8))
            .await
            .expect("released messages come back at once");
        match r.unwrap() {
            Received::Deliveries(d) => {
                got += d.len();
                for d in d {
                    d.acker.ack().await.unwrap();
                }
            }
            Received::End => panic!("the source ended with {got} of 4 back"),
        }
    }
    again.close().await.unwrap();
    assert_eq!(h.unsettled().await, 0);
}

/// A job that runs longer than its lease keeps it: no other consumer gets
/// the message meanwhile.
pub async fn extend_keeps_a_long_job_leased<H: Harness>(h: &mut H) {
    h.seed(&bodies(1)).await;
    let source = h.open(1).await;
    let lease = source.capabilities().lease;
    let long = lease.map_or(Duration::from_millis(500), |l| l * 5 / 2);
    let calls = Calls::new();
    let handler = {
        let calls = calls.clone();
        move |_job: Job| {
            let calls = calls.clone();
            async move {
                calls.bump();
                tokio::time::sleep(long).await;
                Ok(())
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("lease", source, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    let task = tokio::spawn(w.run());
    calls.wait(1).await;
    if lease.is_some() {
        // Another consumer polls for as long as the job runs.
        let mut other = h.open(1).await;
        let r = tokio::time::timeout(long - Duration::from_millis(200), other.receive(1)).await;
        assert!(
            r.is_err(),
            "a leased message was delivered to a second consumer"
        );
        other.close().await.unwrap();
    }
    wait_until(|| counts.succeeded.get() >= 1).await;
    shutdown.request();
    let report = task.await.unwrap();
    assert_eq!((report.succeeded, report.received), (1, 1), "{report:?}");
    assert_eq!(h.unsettled().await, 0);
}

/// Gives each delivery a revocation token the test can fire.
struct Revoking {
    inner: Box<dyn Source>,
    tokens: Arc<Mutex<Vec<(String, Revocation)>>>,
}

impl Source for Revoking {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(async move {
            let r = self.inner.receive(max).await?;
            if let Received::Deliveries(ds) = r {
                let ds = ds
                    .into_iter()
                    .map(|mut d| {
                        let t = Revocation::new();
                        self.tokens
                            .lock()
                            .unwrap()
                            .push((String::from_utf8_lossy(&d.message.body).into(), t.clone()));
                        d.revocation = Some(t);
                        d
                    })
                    .collect();
                return Ok(Received::Deliveries(ds));
            }
            Ok(r)
        })
    }
    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.inner.close()
    }
    fn capabilities(&self) -> sluice::sources::Capabilities {
        self.inner.capabilities()
    }
    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        self.inner.dead_letters()
    }
}

/// A revoked message's job stops and the message is not settled: the
/// broker still holds it for its next owner.
pub async fn revoked_jobs_are_not_settled<H: Harness>(h: &mut H) {
    h.seed(&bodies(6)).await;
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let source = Revoking {
        inner: h.open(8).await,
        tokens: tokens.clone(),
    };
    let calls = Calls::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let open = Arc::new(AtomicBool::new(false));
    let handler = {
        let (calls, gate, open) = (calls.clone(), gate.clone(), open.clone());
        move |_job: Job| {
            let (calls, gate, open) = (calls.clone(), gate.clone(), open.clone());
            async move {
                let wait = gate.notified();
                calls.bump();
                if !open.load(SeqCst) {
                    wait.await;
                }
                Ok(())
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("revoke", Box::new(source), &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        calls.wait(6).await;
        for (body, t) in tokens.lock().unwrap().iter() {
            if body.contains('1') || body.contains('3') || body.contains('5') {
                t.cancel();
            }
        }
        wait_until(|| counts.revoked.get() >= 3).await;
        open.store(true, SeqCst);
        gate.notify_waiters();
        wait_until(|| counts.succeeded.get() >= 3).await;
    })
    .await;
    assert_eq!((report.succeeded, report.revoked), (3, 3), "{report:?}");
    assert_eq!(
        h.unsettled().await,
        h.held_if_unsettled(&[1, 3, 5]),
        "revoked messages stay with the broker"
    );
}

/// Messages with the same ordering key run one at a time, in order, a
/// retry included.
pub async fn ordering_key_keeps_order<H: Harness>(h: &mut H) {
    let mut msgs = Vec::new();
    for seq in 0..4 {
        for key in ["a", "b", "c"] {
            msgs.push((
                format!(r#"{{"key": "{key}", "seq": {seq}}}"#),
                Some(key.to_owned()),
            ));
        }
    }
    h.seed(&msgs).await;
    let done = Arc::new(Mutex::new(BTreeMap::<String, Vec<u64>>::new()));
    let running = Arc::new(Mutex::new(HashSet::<String>::new()));
    let handler = {
        let (done, running) = (done.clone(), running.clone());
        move |job: Job| {
            let (done, running) = (done.clone(), running.clone());
            async move {
                let v: serde_json::Value = serde_json::from_slice(&job.body).unwrap();
                let key = v["key"].as_str().unwrap().to_owned();
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(job.key.as_deref(), Some(key.as_str()));
                assert!(
                    running.lock().unwrap().insert(key.clone()),
                    "two messages of key {key} ran at once"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.lock().unwrap().remove(&key);
                if seq == 0 && job.attempt == 1 {
                    return Err(JobError::retry_after(
                        Duration::from_millis(300),
                        "first try",
                    ));
                }
                done.lock().unwrap().entry(key).or_default().push(seq);
                Ok(())
            }
        }
    };
    let shutdown = Shutdown::new();
    let w = worker("order", h.open(8).await, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        wait_until(|| counts.succeeded.get() >= 12).await;
    })
    .await;
    assert_eq!(report.succeeded, 12, "{report:?}");
    for (key, seqs) in done.lock().unwrap().iter() {
        assert_eq!(seqs, &[0, 1, 2, 3], "key {key} out of order");
    }
    assert_eq!(h.unsettled().await, 0);
}

/// Stopped while every job waits to retry: whether the broker holds the
/// retries (pending retry) or they were released from their slots, the
/// jobs did not succeed and the exit code says so (3); nothing is lost.
pub async fn exit_code_says_what_went_back<H: Harness>(h: &mut H) {
    h.seed(&bodies(5)).await;
    let handler = |_job: Job| async {
        Err(JobError::retry_after(
            Duration::from_secs(60),
            "downstream is down",
        ))
    };
    let source = h.open(8).await;
    let in_broker = source.capabilities().delayed_retry;
    let shutdown = Shutdown::new();
    let w = worker("backoff", source, &shutdown)
        .handler(handler)
        .build()
        .unwrap();
    let counts = w.counts();
    let report = run_until(w, shutdown, async {
        wait_until(|| counts.retried.get() >= 5).await;
    })
    .await;
    assert_eq!(report.retried, 5, "{report:?}");
    if in_broker {
        // The broker holds the retries: handed over, nothing released, but
        // pending a retry, not succeeded: exit code 3 all the same.
        assert_eq!(
            (report.released, report.pending_retry),
            (0, 5),
            "{report:?}"
        );
        assert!(!report.settled_everything(), "exit code 3: {report:?}");
    } else {
        assert_eq!(
            (report.released, report.released_waiting_retry),
            (5, 5),
            "{report:?}"
        );
        assert!(!report.settled_everything(), "exit code 3: {report:?}");
    }
    assert_eq!(h.unsettled().await, 5, "nothing lost");
}
