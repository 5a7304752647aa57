//! The pipeline's circuit breaker: when the destination fails
//! persistently, stop taking messages and stop spending retries.
//!
//! After `threshold` attempts in a row ended in a retryable failure (with
//! no success between them) the breaker opens:
//! - the receive loop takes no new messages ([`Breaker::intake`]), so the
//!   broker keeps them (the Kafka source pauses its partitions and stays in
//!   its group);
//! - every attempt, first or retry, waits at [`Breaker::admit`] instead of
//!   running, so no message burns through its attempts to the dead letters;
//! - one attempt at a time runs as a probe, the first after 1 s, then at an
//!   interval that doubles up to [`MAX_INTERVAL`] while probes fail. A
//!   failed probe does not spend its message's attempt (three times per
//!   message: a message the destination always refuses cannot hold the
//!   pipeline for ever): the job waits for the next probe. When no job is waiting to probe (a broker-side retry,
//!   as on SQS), the receive loop takes one message to probe with.
//!
//! The first attempt that succeeds closes it: intake and retries resume.
//! An attempt that fails for good (a 4xx, bad input) says nothing about the
//! destination being down and neither opens nor closes it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::job::JobError;

/// The first probe's delay after opening.
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between probes.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) struct Breaker {
    pipeline: String,
    /// `sluice_pipeline_paused{by="breaker"}`.
    gauge: metrics::Gauge,
    /// 0: never opens.
    threshold: u32,
    /// Retryable failures in a row.
    failures: AtomicU32,
    /// Read without the lock on every attempt.
    open: AtomicBool,
    state: Mutex<State>,
    /// Woken when it closes or a probe ends.
    changed: Notify,
}

struct State {
    probing: bool,
    /// Jobs waiting at `admit` while open.
    waiting: usize,
    next_probe: Instant,
    interval: Duration,
    /// The receive loop takes its next message to probe with no sooner.
    intake_gate: Instant,
    /// Counts the openings: a probe from an earlier one says nothing
    /// about the current probe.
    generation: u64,
    opened: Instant,
}

/// Leave to run one attempt; say how it ended with [`Ticket::record`].
/// Dropped unrecorded (the job was revoked or stopped), a probe lets the
/// next one go.
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    /// The opening it probes for.
    generation: u64,
}

impl Breaker {
    pub(crate) fn new(pipeline: &str, threshold: u32) -> Breaker {
        let now = Instant::now();
        let gauge = metrics::gauge!(crate::telemetry::PIPELINE_PAUSED, "pipeline" => pipeline.to_owned(), "by" => "breaker");
        gauge.set(0.0);
        Breaker {
            gauge,
            pipeline: pipeline.to_owned(),
            threshold,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            state: Mutex::new(State {
                probing: false,
                waiting: 0,
                next_probe: now,
                interval: FIRST_INTERVAL,
                intake_gate: now,
                generation: 0,
                opened: now,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    /// Waits until an attempt may run: at once while closed; while open,
    /// as the one probe.
    pub(crate) async fn admit(&self) -> Ticket<'_> {
        if !self.is_open() {
            return Ticket {
                breaker: self,
                probe: false,
                generation: 0,
            };
        }
        let _waiting = Waiting::new(self);
        loop {
            let changed = self.changed.notified();
            let due = {
                let mut s = self.lock();
                if !self.is_open() {
                    return Ticket {
                        breaker: self,
                        probe: false,
                        generation: 0,
                    };
                }
                let now = Instant::now();
                if !s.probing && now >= s.next_probe {
                    s.probing = true;
                    return Ticket {
                        breaker: self,
                        probe: true,
                        generation: s.generation,
                    };
                }
                if s.probing {
                    // Its end wakes us; the timer is only a safety net.
                    now + s.interval
                } else {
                    s.next_probe
                }
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(due) => {}
            }
        }
    }

    /// Waits until the receive loop may take messages; returns how many at
    /// most: any number while closed, one to probe with while open and no
    /// job waits to probe.
    pub(crate) async fn intake(&self) -> usize {
        loop {
            if !self.is_open() {
                return usize::MAX;
            }
            let changed = self.changed.notified();
            let due = {
                let mut s = self.lock();
                if !self.is_open() {
                    return usize::MAX;
                }
                let now = Instant::now();
                let due = s.next_probe.max(s.intake_gate);
                if s.waiting > 0 || s.probing {
                    // A waiting job probes; look again when that ends.
                    now + s.interval
                } else if now >= due {
                    // The message it takes is admitted as the probe (if the
                    // source has one); one per interval.
                    s.intake_gate = now + s.interval;
                    return 1;
                } else {
                    due
                }
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(due) => {}
            }
        }
    }

    fn succeeded(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if !self.is_open() {
            return;
        }
        let mut s = self.lock();
        if !self.is_open() {
            return;
        }
        self.open.store(false, Relaxed);
        self.gauge.set(0.0);
        s.probing = false;
        s.interval = FIRST_INTERVAL;
        info!(pipeline = %self.pipeline, paused_secs = s.opened.elapsed().as_secs(), "resuming intake: an attempt succeeded");
        drop(s);
        self.changed.notify_waiters();
    }

    fn failed(&self, probe: Option<u64>, reason: &str) {
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if let Some(generation) = probe {
            let mut s = self.lock();
            if s.generation != generation {
                return;
            }
            s.probing = false;
            s.interval = (s.interval * 2).min(MAX_INTERVAL);
            s.next_probe = Instant::now() + s.interval;
            drop(s);
            self.changed.notify_waiters();
            return;
        }
        if self.threshold == 0 || failures < self.threshold || self.is_open() {
            return;
        }
        let mut s = self.lock();
        if self.is_open() {
            return;
        }
        self.open.store(true, Relaxed);
        self.gauge.set(1.0);
        s.generation += 1;
        s.probing = false;
        let now = Instant::now();
        s.opened = now;
        s.interval = FIRST_INTERVAL;
        s.next_probe = now + s.interval;
        warn!(
            pipeline = %self.pipeline,
            failures,
            last_error = %crate::redact::redact(reason),
            "pausing intake: {failures} attempts in a row failed; no new messages are taken and \
             retries wait, while one probe at a time (every 1 s, doubling to {} s) tries the \
             destination",
            MAX_INTERVAL.as_secs()
        );
    }

    /// A probe that ended without saying anything about the destination.
    fn probe_ended(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        s.probing = false;
        s.next_probe = Instant::now();
        drop(s);
        self.changed.notify_waiters();
    }
}

impl Ticket<'_> {
    /// How the attempt ended. True for a probe that failed with a
    /// retryable error: the job waits for the next probe (or the close)
    /// without spending an attempt, since the outage failed it, not its
    /// message.
    pub(crate) fn record(mut self, outcome: &Result<(), JobError>) -> bool {
        let probe = std::mem::take(&mut self.probe);
        match outcome {
            Ok(()) => self.breaker.succeeded(),
            Err(JobError::Retry { reason, .. }) => {
                self.breaker
                    .failed(probe.then_some(self.generation), reason);
                return probe;
            }
            Err(JobError::Fail { .. }) if probe => self.breaker.probe_ended(self.generation),
            Err(JobError::Fail { .. }) => {}
        }
        false
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probe_ended(self.generation);
        }
    }
}

/// Counts a job waiting at `admit`, until it stops waiting.
struct Waiting<'a>(&'a Breaker);

impl<'a> Waiting<'a> {
    fn new(b: &'a Breaker) -> Waiting<'a> {
        b.lock().waiting += 1;
        Waiting(b)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.waiting -= 1;
        if s.waiting == 0 {
            drop(s);
            // The receive loop may take a message to probe with now.
            self.0.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), JobError> {
        Err(JobError::retry("503 Service Unavailable"))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_probes_one_at_a_time() {
        let b = Breaker::new("p", 3);
        for _ in 0..2 {
            assert!(!b.admit().await.record(&down()), "not a probe");
        }
        b.admit().await.record(&Ok(()));
        assert!(!b.is_open(), "a success between failures resets the count");
        for _ in 0..3 {
            b.admit().await.record(&down());
        }
        assert!(b.is_open());
        let started = Instant::now();
        let probe = b.admit().await;
        assert!(probe.probe);
        assert_eq!(
            started.elapsed(),
            FIRST_INTERVAL,
            "the first probe after 1 s"
        );
        // A second job waits while the probe runs.
        let second = tokio::time::timeout(Duration::from_secs(60), b.admit()).await;
        assert!(second.is_err(), "only one probe at a time");
        assert!(probe.record(&down()), "a failed probe keeps its attempt");
        let started = Instant::now();
        let probe = b.admit().await;
        assert_eq!(
            started.elapsed(),
            FIRST_INTERVAL * 2,
            "a failed probe doubles the wait"
        );
        probe.record(&Ok(()));
        assert!(!b.is_open(), "a successful probe closes it");
        assert!(!b.admit().await.probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_or_a_permanent_failure_lets_the_next_probe_go() {
        let b = Breaker::new("p", 1);
        b.admit().await.record(&down());
        assert!(b.is_open());
        drop(b.admit().await);
        let started = Instant::now();
        let t = b.admit().await;
        assert!(t.probe);
        assert_eq!(started.elapsed(), Duration::ZERO);
        t.record(&Err(JobError::fail("400 Bad Request")));
        assert!(b.is_open(), "a 4xx says nothing about the outage");
        assert!(b.admit().await.probe);
    }

    #[tokio::test(start_paused = true)]
    async fn intake_takes_one_message_to_probe_with_when_no_job_waits() {
        let b = Breaker::new("p", 1);
        assert_eq!(b.intake().await, usize::MAX);
        b.admit().await.record(&down());
        let started = Instant::now();
        assert_eq!(b.intake().await, 1);
        assert_eq!(started.elapsed(), FIRST_INTERVAL);
        b.admit().await.record(&Ok(()));
        assert_eq!(b.intake().await, usize::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_from_an_earlier_pause_does_not_free_the_current_one() {
        let b = Breaker::new("p", 1);
        b.admit().await.record(&down());
        let old = b.admit().await;
        assert!(old.probe);
        // Another job (admitted before the pause) succeeds: closed; then
        // a failure opens it again, and its probe is under way.
        Ticket {
            breaker: &b,
            probe: false,
            generation: 0,
        }
        .record(&Ok(()));
        assert!(!b.is_open());
        b.admit().await.record(&down());
        let current = b.admit().await;
        assert!(current.probe);
        old.record(&down());
        let second = tokio::time::timeout(Duration::from_secs(60), b.admit()).await;
        assert!(
            second.is_err(),
            "the stale probe's end did not let a second probe run"
        );
        drop(current);
    }

    #[tokio::test(start_paused = true)]
    async fn never_opens_with_threshold_zero() {
        let b = Breaker::new("p", 0);
        for _ in 0..100 {
            b.admit().await.record(&down());
        }
        assert!(!b.is_open());
    }
}
