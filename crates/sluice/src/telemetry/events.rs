//! One struct per thing that happens to a pipeline's jobs. Emitting one
//! logs it (where a person should see it) and counts it, in one place: the
//! counts are both the metrics and what the run report reads.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge, counter, gauge, histogram};
use sluice_pool::Histogram;
use tracing::{debug, error, warn};

use super::{IN_FLIGHT, JOB_DURATION, JOBS, PENDING_RETRY, RECEIVED, SETTLE_ERRORS};

/// A count kept once: the number the report reads and the metric the
/// exporter reads go up together.
#[derive(Debug)]
pub struct Count {
    n: AtomicU64,
    metric: Counter,
}

impl Count {
    fn new(metric: Counter) -> Count {
        Count {
            n: AtomicU64::new(0),
            metric,
        }
    }

    fn add(&self, n: u64) {
        self.n.fetch_add(n, Relaxed);
        self.metric.increment(n);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.n.load(Relaxed)
    }
}

/// One pipeline's counts: what its events add to.
#[derive(Debug)]
pub struct PipelineCounts {
    pub pipeline: String,
    pub received: Count,
    pub succeeded: Count,
    /// Failed attempts that will be tried again.
    pub retried: Count,
    pub dead_lettered: Count,
    /// Handed back unsettled (shutdown): they come back on the next run.
    pub released: Count,
    /// Of `released`, those that were waiting out a retry's backoff.
    pub released_waiting_retry: AtomicU64,
    /// Taken back by the source (rebalance, lost channel): another consumer
    /// settles them.
    pub revoked: Count,
    /// Handed back at once to keep their ordering key's order behind a
    /// retried message.
    pub deferred: Count,
    /// Settlements the source or the dead-letter target refused.
    pub settle_errors: Count,
    /// Received and not yet over (settled, released, revoked, handed back
    /// for a retry): the one in-flight figure, kept with its gauge.
    in_flight: AtomicU64,
    in_flight_gauge: Gauge,
    /// Messages handed back to their broker to be retried later (Redis's
    /// `:delayed`, SQS's visibility) and not received again in this run:
    /// their jobs have not succeeded. Each is forgotten [`PENDING_GRACE`]
    /// after it fell due (another consumer of the queue took it), so the
    /// map is bounded by the retry rate and the longest backoff, not by
    /// how long the process runs.
    pending_retry: Mutex<HashMap<String, Instant>>,
    /// Entries in `pending_retry`: read without the lock on every receive.
    pending_retry_len: AtomicUsize,
    pending_retry_gauge: Gauge,
    job_duration: metrics::Histogram,
    latency: Mutex<Latency>,
    failure_lines: LogBudget,
    failures: Mutex<VecDeque<Failure>>,
    health: std::sync::atomic::AtomicU8,
}

/// Attempt times: since the start, and of the last whole
/// [`LATENCY_WINDOW`] for live displays.
#[derive(Debug)]
struct Latency {
    all: Histogram,
    window_start: Instant,
    current: Histogram,
    last: Histogram,
}

/// See [`PipelineCounts::recent_latency`].
pub const LATENCY_WINDOW: Duration = Duration::from_secs(5);

impl Latency {
    fn rotate(&mut self, now: Instant) {
        let age = now.duration_since(self.window_start);
        if age >= LATENCY_WINDOW {
            self.last = if age >= LATENCY_WINDOW * 2 {
                // Nothing recorded in the window just past.
                Histogram::default()
            } else {
                std::mem::take(&mut self.current)
            };
            self.current = Histogram::default();
            self.window_start = now;
        }
    }
}

/// Failures a pipeline keeps for the admin API, the newest.
pub const RECENT_FAILURES: usize = 100;

/// A failed attempt, as the admin API lists it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub at: SystemTime,
    pub message_id: String,
    pub attempt: u32,
    /// `retried` or `dead_lettered`.
    pub outcome: &'static str,
    /// Why, secrets cut out ([`crate::redact`]).
    pub reason: String,
}

/// Where a pipeline is, for readiness probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Built; its receive loop has not started.
    Starting,
    /// Receiving.
    Running,
    /// Its last receive failed (the source cannot reach its broker); it is
    /// trying again.
    Failing,
    /// Its receive loop has ended.
    Stopped,
}

impl Health {
    /// As the admin API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Running => "running",
            Health::Failing => "failing",
            Health::Stopped => "stopped",
        }
    }
}

impl PipelineCounts {
    /// Where the pipeline is.
    pub fn health(&self) -> Health {
        match self.health.load(Relaxed) {
            0 => Health::Starting,
            1 => Health::Running,
            2 => Health::Failing,
            _ => Health::Stopped,
        }
    }

    pub(crate) fn set_health(&self, h: Health) {
        let v = match h {
            Health::Starting => 0,
            Health::Running => 1,
            Health::Failing => 2,
            Health::Stopped => 3,
        };
        self.health.store(v, Relaxed);
    }

    pub fn new(pipeline: &str) -> PipelineCounts {
        let p = pipeline.to_owned();
        let outcome =
            |o: &'static str| Count::new(counter!(JOBS, "pipeline" => p.clone(), "outcome" => o));
        PipelineCounts {
            pipeline: p.clone(),
            received: Count::new(counter!(RECEIVED, "pipeline" => p.clone())),
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            released: outcome("released"),
            released_waiting_retry: AtomicU64::new(0),
            revoked: outcome("revoked"),
            deferred: outcome("deferred"),
            settle_errors: Count::new(counter!(SETTLE_ERRORS, "pipeline" => p.clone())),
            in_flight: AtomicU64::new(0),
            in_flight_gauge: gauge!(IN_FLIGHT, "pipeline" => p.clone()),
            pending_retry: Mutex::new(HashMap::new()),
            pending_retry_len: AtomicUsize::new(0),
            pending_retry_gauge: gauge!(PENDING_RETRY, "pipeline" => p.clone()),
            job_duration: histogram!(JOB_DURATION, "pipeline" => p),
            latency: Mutex::new(Latency {
                all: Histogram::default(),
                window_start: Instant::now(),
                current: Histogram::default(),
                last: Histogram::default(),
            }),
            failure_lines: LogBudget::default(),
            failures: Mutex::new(VecDeque::with_capacity(16)),
            health: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Logs how many job-failure lines the current interval held back, if
    /// any; called when the pipeline stops.
    pub fn flush_logs(&self) {
        self.failure_lines.flush(&self.pipeline);
    }

    /// The distribution of one attempt's time, receipt to settled.
    pub fn latency(&self) -> Histogram {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .clone()
    }

    /// The attempt times of the last whole [`LATENCY_WINDOW`] (empty when
    /// none ended in it), for live displays.
    pub fn recent_latency(&self) -> Histogram {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        l.rotate(Instant::now());
        l.last.clone()
    }

    /// The most recent failed attempts (at most [`RECENT_FAILURES`]),
    /// newest first.
    pub fn recent_failures(&self) -> Vec<Failure> {
        let ring = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }

    fn failed(&self, message_id: &str, attempt: u32, outcome: &'static str, reason: &str) {
        let failure = Failure {
            at: SystemTime::now(),
            message_id: message_id.to_owned(),
            attempt,
            outcome,
            reason: crate::redact::redact(reason).into_owned(),
        };
        let mut ring = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RECENT_FAILURES {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// Messages received whose job is not over yet (running, waiting in
    /// its slot to retry, or settling): the one in-flight figure that the
    /// progress line, `/api`, `sluice_jobs_in_flight` and the summary show.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Jobs whose retry was handed back to the broker and that have not
    /// come back in this run (nor fell due over [`PENDING_GRACE`] ago): not
    /// succeeded, not lost.
    pub fn pending_retry(&self) -> u64 {
        let mut pending = self.pending_retry.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_overdue(&mut pending);
        pending.len() as u64
    }

    /// A message was received: if it was one handed back for a retry, it
    /// is no longer pending. Cheap while none is.
    pub(crate) fn came_back(&self, id: &str) {
        if self.pending_retry_len.load(Relaxed) == 0 {
            return;
        }
        let mut pending = self.pending_retry.lock().unwrap_or_else(|p| p.into_inner());
        if pending.remove(id).is_some() {
            self.pending_retry_len.store(pending.len(), Relaxed);
            self.pending_retry_gauge.set(pending.len() as f64);
        }
    }

    /// Drops the entries past their grace (taken by another consumer, or
    /// waiting behind a backlog like any message not yet received).
    fn forget_overdue(&self, pending: &mut HashMap<String, Instant>) {
        let now = Instant::now();
        pending.retain(|_, forget_at| *forget_at > now);
        self.pending_retry_len.store(pending.len(), Relaxed);
        self.pending_retry_gauge.set(pending.len() as f64);
    }
}

/// How long after a retry falls due it still counts as pending here.
pub const PENDING_GRACE: Duration = Duration::from_secs(60);

/// Job-failure lines one pipeline logs one by one per interval; the rest
/// are logged at `debug` and summed up in one line per interval, so a
/// downstream that fails every job does not write a line per job.
const LOG_BURST: u32 = 10;
/// See [`LOG_BURST`].
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets [`LOG_BURST`] job-failure lines per [`LOG_INTERVAL`] through.
#[derive(Debug)]
struct LogBudget(Mutex<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    window_start: Instant,
    logged: u32,
    held_back: u64,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget(Mutex::new(BudgetState {
            window_start: Instant::now(),
            logged: 0,
            held_back: 0,
        }))
    }
}

impl LogBudget {
    /// True when one more failure line may be logged at `warn`. The first
    /// call after an interval ends first reports what that interval held
    /// back.
    fn admit(&self, pipeline: &str) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(s.window_start) >= LOG_INTERVAL {
            Self::report(&mut s, pipeline);
            s.window_start = now;
            s.logged = 0;
        }
        if s.logged < LOG_BURST {
            s.logged += 1;
            true
        } else {
            s.held_back += 1;
            false
        }
    }

    fn flush(&self, pipeline: &str) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Self::report(&mut s, pipeline);
    }

    fn report(s: &mut BudgetState, pipeline: &str) {
        if s.held_back > 0 {
            warn!(
                pipeline = %pipeline,
                not_logged = s.held_back,
                "{} more job failures since {:.0} s ago were not logged one by one \
                 (at most {LOG_BURST} per {} s; RUST_LOG=debug logs each)",
                s.held_back,
                s.window_start.elapsed().as_secs_f64(),
                LOG_INTERVAL.as_secs()
            );
            s.held_back = 0;
        }
    }
}

/// Something that happened, logged and counted by [`emit`](Event::emit).
pub trait Event {
    fn emit(self, counts: &PipelineCounts);
}

/// Messages came from the source.
#[derive(Debug)]
pub struct Received {
    pub count: u64,
}

impl Event for Received {
    fn emit(self, c: &PipelineCounts) {
        c.received.add(self.count);
        c.in_flight.fetch_add(self.count, Relaxed);
        c.in_flight_gauge.increment(self.count as f64);
    }
}

/// A received message's job is over: settled, released, revoked, or its
/// settlement failed.
#[derive(Debug)]
pub struct JobEnded;

impl Event for JobEnded {
    fn emit(self, c: &PipelineCounts) {
        c.in_flight.fetch_sub(1, Relaxed);
        c.in_flight_gauge.decrement(1.0);
    }
}

/// One attempt of a job ended (whatever came of it), after `took`.
#[derive(Debug)]
pub struct AttemptEnded {
    pub took: Duration,
}

impl Event for AttemptEnded {
    fn emit(self, c: &PipelineCounts) {
        c.job_duration.record(self.took);
        let mut l = c.latency.lock().unwrap_or_else(|p| p.into_inner());
        l.rotate(Instant::now());
        l.all.record(self.took);
        l.current.record(self.took);
    }
}

/// A job succeeded and its message was acked.
#[derive(Debug)]
pub struct JobSucceeded;

impl Event for JobSucceeded {
    fn emit(self, c: &PipelineCounts) {
        c.succeeded.add(1);
    }
}

/// A job failed and will run again after `delay`.
#[derive(Debug)]
pub struct JobRetried<'a> {
    pub id: &'a str,
    pub attempt: u32,
    pub delay: Duration,
    pub reason: &'a str,
}

impl Event for JobRetried<'_> {
    fn emit(self, c: &PipelineCounts) {
        c.retried.add(1);
        c.failed(self.id, self.attempt, "retried", self.reason);
        let retry_in_ms = self.delay.as_millis() as u64;
        if c.failure_lines.admit(&c.pipeline) {
            warn!(
                pipeline = %c.pipeline, message_id = %self.id, attempt = self.attempt,
                retry_in_ms, reason = %self.reason, "job failed; will retry"
            );
        } else {
            debug!(
                pipeline = %c.pipeline, message_id = %self.id, attempt = self.attempt,
                retry_in_ms, reason = %self.reason, "job failed; will retry"
            );
        }
    }
}

/// A failed job's message went back to its broker, to be delivered again
/// after the retry's delay (Redis's `:delayed`, SQS's visibility): pending
/// until it is received again.
#[derive(Debug)]
pub struct RetryHandedBack<'a> {
    pub id: &'a str,
    /// When the broker delivers it again.
    pub delay: Duration,
}

impl Event for RetryHandedBack<'_> {
    fn emit(self, c: &PipelineCounts) {
        let mut pending = c.pending_retry.lock().unwrap_or_else(|p| p.into_inner());
        // Overdue ones go now and then, so the map stays bounded.
        if pending.len() >= 1024 && pending.len().is_power_of_two() {
            c.forget_overdue(&mut pending);
        }
        pending.insert(
            self.id.to_owned(),
            Instant::now() + self.delay + PENDING_GRACE,
        );
        c.pending_retry_len.store(pending.len(), Relaxed);
        c.pending_retry_gauge.set(pending.len() as f64);
    }
}

/// A job failed for good; its message was stored with the dead-letter
/// target and removed from the source.
#[derive(Debug)]
pub struct JobDeadLettered<'a> {
    pub id: &'a str,
    pub attempt: u32,
    pub reason: &'a str,
    pub target: &'a str,
}

impl Event for JobDeadLettered<'_> {
    fn emit(self, c: &PipelineCounts) {
        c.dead_lettered.add(1);
        c.failed(self.id, self.attempt, "dead_lettered", self.reason);
        if c.failure_lines.admit(&c.pipeline) {
            warn!(
                pipeline = %c.pipeline, message_id = %self.id, attempt = self.attempt,
                reason = %self.reason, dead_letters = %self.target, "job dead-lettered"
            );
        } else {
            debug!(
                pipeline = %c.pipeline, message_id = %self.id, attempt = self.attempt,
                reason = %self.reason, dead_letters = %self.target, "job dead-lettered"
            );
        }
    }
}

/// A message went back to its source unsettled (shutdown).
#[derive(Debug)]
pub struct JobReleased {
    /// It was waiting out a retry's backoff, not running.
    pub waiting_retry: bool,
}

impl Event for JobReleased {
    fn emit(self, c: &PipelineCounts) {
        c.released.add(1);
        if self.waiting_retry {
            c.released_waiting_retry.fetch_add(1, Relaxed);
        }
    }
}

/// The source took a message back; its job was stopped unsettled.
#[derive(Debug)]
pub struct JobRevoked<'a> {
    pub id: &'a str,
}

impl Event for JobRevoked<'_> {
    fn emit(self, c: &PipelineCounts) {
        c.revoked.add(1);
        // A rebalance revokes every job of a partition at once: a line
        // each only within the job-line budget, the rest summed up.
        if c.failure_lines.admit(&c.pipeline) {
            tracing::info!(pipeline = %c.pipeline, message_id = %self.id, "message revoked by its source; its job was stopped");
        } else {
            debug!(pipeline = %c.pipeline, message_id = %self.id, "message revoked by its source; its job was stopped");
        }
    }
}

/// A message was handed back without running, to stay behind an earlier
/// message of its ordering key that is being retried.
#[derive(Debug)]
pub struct JobDeferred<'a> {
    pub id: &'a str,
    pub key: &'a str,
}

impl Event for JobDeferred<'_> {
    fn emit(self, c: &PipelineCounts) {
        c.deferred.add(1);
        tracing::debug!(pipeline = %c.pipeline, message_id = %self.id, key = %self.key, "handed back to keep its key's order");
    }
}

/// A settlement failed: the message was not acked, removed, retried or
/// released as the runtime asked, and the source will deliver it again.
#[derive(Debug)]
pub struct SettleFailed<'a> {
    pub id: &'a str,
    /// `ack`, `retry`, `dead_letter`, `remove`, `release`.
    pub action: &'static str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl Event for SettleFailed<'_> {
    fn emit(self, c: &PipelineCounts) {
        c.settle_errors.add(1);
        error!(
            pipeline = %c.pipeline, message_id = %self.id, action = self.action,
            error = %crate::error_chain(self.error),
            "could not settle the message; the source will deliver it again"
        );
    }
}

#[cfg(test)]
mod pending_retry_tests {
    use super::*;

    /// A retry comes back and is no longer pending; one that another
    /// consumer took (never received here) is forgotten once past its
    /// grace, so a long-running process does not keep every id it ever
    /// handed back.
    #[test]
    fn pending_retries_are_bounded_by_their_grace() {
        let c = PipelineCounts::new("pending");
        RetryHandedBack {
            id: "a",
            delay: Duration::from_secs(5),
        }
        .emit(&c);
        RetryHandedBack {
            id: "b",
            delay: Duration::from_secs(5),
        }
        .emit(&c);
        assert_eq!(c.pending_retry(), 2);
        c.came_back("a");
        c.came_back("unknown");
        assert_eq!(c.pending_retry(), 1);
        // "b" fell due long ago and never came back here.
        *c.pending_retry.lock().unwrap().get_mut("b").unwrap() = Instant::now();
        assert_eq!(c.pending_retry(), 0);
        assert_eq!(c.pending_retry_len.load(Relaxed), 0);
    }
}
