//! Changing a running pipeline: its concurrency, whether it takes
//! messages, and whether its jobs may reach each destination. The admin
//! API ([`crate::admin`]) and a library user hold the same [`Control`]
//! ([`crate::Worker::control`]).
//!
//! - **Concurrency**: [`Control::set_concurrency`] resizes the pipeline's
//!   pool at once. Growing lets the receive loop take more messages
//!   straight away; shrinking never interrupts a running job: the limit
//!   takes effect as jobs settle.
//! - **Pause**: [`Control::pause`] stops the receive loop asking its source
//!   for messages (the messages stay in the broker; the Kafka source pauses
//!   its partitions and stays in its group); jobs in flight carry on and
//!   settle. [`Control::resume`] starts receiving again.
//! - **Destinations**: [`Destinations::pause`] holds every job about to
//!   send to one destination (`scheme://host:port`) in its slot until it is
//!   resumed; jobs for other destinations go on. The time held does not
//!   count toward the job timeout, and a stop releases the held jobs'
//!   messages at once (what earlier steps of such a job did runs again on
//!   redelivery: at least once). A pipeline whose jobs all go to the paused destination fills
//!   its slots and so stops taking messages too.
//!
//! ```
//! # async fn f(worker: sluice::Worker) {
//! let control = worker.control();
//! let run = tokio::spawn(worker.run());
//! control.set_concurrency(50).unwrap();
//! control.pause();
//! // ... the downstream is being repaired ...
//! control.resume();
//! # drop(run); }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, gauge};
use sluice_pool::Pool;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::breaker::Breaker;
use crate::telemetry::{CONCURRENCY_LIMIT, HTTP_REQUESTS, PIPELINE_PAUSED};

/// The most concurrency a pipeline may be resized to.
pub const MAX_CONCURRENCY: usize = 100_000;

/// Why a resize was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResizeError {
    #[error(
        "concurrency must be between 1 and {MAX_CONCURRENCY}, not {0}; pause the pipeline to stop it taking messages"
    )]
    OutOfRange(usize),
    #[error(
        "concurrency {wanted} needs about {needed} open files but the hard limit is {limit}; \
         raise the hard limit (ulimit -Hn, or LimitNOFILE= under systemd) and restart, or choose \
         a smaller concurrency"
    )]
    OpenFiles {
        wanted: usize,
        needed: u64,
        limit: u64,
    },
}

/// One pipeline's switches; see the [module docs](self).
pub struct Control {
    pipeline: String,
    concurrency: AtomicUsize,
    /// Set once the receive loop has built its pool.
    pool: OnceLock<Pool>,
    paused: watch::Sender<bool>,
    paused_gauge: Gauge,
    limit_gauge: Gauge,
    /// Open files a job in flight may hold (1 + its http and fetch steps),
    /// to refuse a concurrency the process cannot hold; 0: not checked.
    files_per_job: u64,
    resizing: Mutex<()>,
    breaker: OnceLock<Arc<Breaker>>,
    destinations: Arc<Destinations>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("pipeline", &self.pipeline)
            .field("concurrency", &self.concurrency())
            .field("paused", &self.is_paused())
            .finish_non_exhaustive()
    }
}

impl Control {
    pub(crate) fn new(
        pipeline: &str,
        concurrency: usize,
        files_per_job: u64,
        destinations: Arc<Destinations>,
    ) -> Control {
        let limit_gauge = gauge!(CONCURRENCY_LIMIT, "pipeline" => pipeline.to_owned());
        limit_gauge.set(concurrency as f64);
        let paused_gauge =
            gauge!(PIPELINE_PAUSED, "pipeline" => pipeline.to_owned(), "by" => "operator");
        paused_gauge.set(0.0);
        Control {
            pipeline: pipeline.to_owned(),
            concurrency: AtomicUsize::new(concurrency),
            pool: OnceLock::new(),
            paused: watch::Sender::new(false),
            paused_gauge,
            limit_gauge,
            files_per_job,
            resizing: Mutex::new(()),
            breaker: OnceLock::new(),
            destinations,
        }
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The concurrency limit now.
    pub fn concurrency(&self) -> usize {
        self.concurrency.load(Relaxed)
    }

    /// Changes the concurrency limit, effective at once; see the
    /// [module docs](self).
    pub fn set_concurrency(&self, n: usize) -> Result<(), ResizeError> {
        if n == 0 || n > MAX_CONCURRENCY {
            return Err(ResizeError::OutOfRange(n));
        }
        let _one_at_a_time = self.resizing.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.concurrency();
        if self.files_per_job > 0 {
            crate::config::limits::resize(before, n, self.files_per_job).map_err(
                |(needed, limit)| ResizeError::OpenFiles {
                    wanted: n,
                    needed,
                    limit,
                },
            )?;
        }
        self.concurrency.store(n, Relaxed);
        if let Some(pool) = self.pool.get() {
            pool.resize(n);
        }
        self.limit_gauge.set(n as f64);
        if before != n {
            tracing::info!(pipeline = %self.pipeline, from = before, to = n, "concurrency changed");
        }
        Ok(())
    }

    /// Stops taking messages; jobs in flight carry on.
    pub fn pause(&self) {
        if !self.paused.send_replace(true) {
            self.paused_gauge.set(1.0);
            tracing::info!(pipeline = %self.pipeline, "paused: no new messages are taken; jobs in flight carry on");
        }
    }

    /// Takes messages again after [`pause`](Self::pause).
    pub fn resume(&self) {
        if self.paused.send_replace(false) {
            self.paused_gauge.set(0.0);
            tracing::info!(pipeline = %self.pipeline, "resumed: taking messages again");
        }
    }

    /// Whether an operator paused the pipeline.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// The destinations its jobs have sent to, and their switches.
    pub fn destinations(&self) -> &Arc<Destinations> {
        &self.destinations
    }

    /// The receive loop's pool, sized to the current limit.
    pub(crate) fn attach(&self, pool: &Pool) {
        // Under the resize lock: a resize cannot fall between the two.
        let _one_at_a_time = self.resizing.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.pool.set(pool.clone());
        pool.resize(self.concurrency());
    }

    /// Returns once the pipeline is not paused.
    pub(crate) async fn unpaused(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Returns once the pipeline is paused.
    pub(crate) async fn paused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| *paused).await;
    }

    /// The pipeline's circuit breaker, made by its receive loop.
    pub(crate) fn breaker(&self, threshold: u32) -> Arc<Breaker> {
        self.breaker
            .get_or_init(|| Arc::new(Breaker::new(&self.pipeline, threshold)))
            .clone()
    }

    /// Whether the circuit breaker holds intake (the destination keeps
    /// failing).
    pub fn breaker_open(&self) -> bool {
        self.breaker.get().is_some_and(|b| b.is_open())
    }
}

/// Destinations listed and counted one by one; past this many, the rest
/// share the entry `other` (a templated host cannot grow the metrics or
/// the list without bound).
pub const MAX_DESTINATIONS: usize = 64;

/// The destinations of one pipeline's jobs (`scheme://host:port`), as they
/// are first sent to: whether each is paused, and its requests by status
/// class (`sluice_http_requests_total`).
pub struct Destinations {
    pipeline: String,
    seen: RwLock<HashMap<String, Arc<Destination>>>,
    other: OnceLock<Arc<Destination>>,
    /// How many are paused: the fast path reads only this.
    paused: AtomicUsize,
    resumed: Notify,
}

impl std::fmt::Debug for Destinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destinations")
            .field("pipeline", &self.pipeline)
            .field("list", &self.list())
            .finish()
    }
}

/// One destination's switch and counters.
pub(crate) struct Destination {
    name: String,
    paused: AtomicBool,
    /// 2xx, 3xx, 4xx, 5xx, and no answer (a transport error or timeout).
    requests: [Counter; 5],
}

/// Why a destination's switch could not be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "pipeline `{pipeline}` has no destination `{destination}` to switch (write it as \
     scheme://host:port, as listed; past {MAX_DESTINATIONS} destinations the rest are counted \
     as `other` and cannot be paused one by one); its destinations: {known}"
)]
pub struct UnknownDestination {
    pub pipeline: String,
    pub destination: String,
    pub known: String,
}

impl Destinations {
    /// The destinations of `pipeline`'s jobs, none seen yet.
    pub fn new(pipeline: &str) -> Destinations {
        Destinations {
            pipeline: pipeline.to_owned(),
            seen: RwLock::default(),
            other: OnceLock::new(),
            paused: AtomicUsize::new(0),
            resumed: Notify::new(),
        }
    }

    fn other(&self) -> Arc<Destination> {
        self.other
            .get_or_init(|| Arc::new(Destination::new(&self.pipeline, "other")))
            .clone()
    }

    fn entry(&self, name: &str) -> Arc<Destination> {
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = seen.get(name) {
                return d.clone();
            }
            // Full: no write lock for each request to a host past the cap.
            if seen.len() >= MAX_DESTINATIONS {
                return self.other();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = seen.get(name) {
            return d.clone();
        }
        if seen.len() >= MAX_DESTINATIONS {
            return self.other();
        }
        let d = Arc::new(Destination::new(&self.pipeline, name));
        seen.insert(name.to_owned(), d.clone());
        d
    }

    /// Waits while `destination` is paused, then returns its entry. The
    /// wait is `held`: it does not count toward the job's timeout.
    pub(crate) async fn admit(&self, destination: &str, held: &Hold) -> Arc<Destination> {
        let d = self.entry(destination);
        if self.paused.load(Relaxed) == 0 || !d.paused.load(Relaxed) {
            return d;
        }
        let _held = held.start();
        loop {
            let resumed = self.resumed.notified();
            if !d.paused.load(Relaxed) {
                return d;
            }
            resumed.await;
        }
    }

    fn switch(&self, destination: &str, pause: bool) -> Result<(), UnknownDestination> {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        let Some(d) = seen.get(destination) else {
            let mut known: Vec<_> = seen.keys().cloned().collect();
            known.sort();
            return Err(UnknownDestination {
                pipeline: self.pipeline.clone(),
                destination: destination.to_owned(),
                known: if known.is_empty() {
                    "none yet".into()
                } else {
                    known.join(", ")
                },
            });
        };
        if d.paused.swap(pause, Relaxed) != pause {
            if pause {
                self.paused.fetch_add(1, Relaxed);
                tracing::info!(pipeline = %self.pipeline, destination, "destination paused: its jobs wait in their slots");
            } else {
                self.paused.fetch_sub(1, Relaxed);
                tracing::info!(pipeline = %self.pipeline, destination, "destination resumed");
                self.resumed.notify_waiters();
            }
        }
        Ok(())
    }

    /// Holds the jobs about to send to `destination` until it is resumed.
    pub fn pause(&self, destination: &str) -> Result<(), UnknownDestination> {
        self.switch(destination, true)
    }

    /// Lets the jobs held for `destination` go.
    pub fn resume(&self, destination: &str) -> Result<(), UnknownDestination> {
        self.switch(destination, false)
    }

    /// Every destination seen, sorted, and whether it is paused.
    pub fn list(&self) -> Vec<(String, bool)> {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = seen
            .values()
            .map(|d| (d.name.clone(), d.paused.load(Relaxed)))
            .collect();
        list.sort();
        list
    }
}

impl Destination {
    fn new(pipeline: &str, name: &str) -> Destination {
        let class = |c: &'static str| metrics::counter!(HTTP_REQUESTS, "pipeline" => pipeline.to_owned(), "destination" => name.to_owned(), "status_class" => c);
        Destination {
            name: name.to_owned(),
            paused: AtomicBool::new(false),
            requests: [
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("error"),
            ],
        }
    }

    /// Counts one request by its answer's status, or `None` when none came.
    pub(crate) fn answered(&self, status: Option<u16>) {
        let i = match status {
            Some(200..=299) => 0,
            Some(300..=399) => 1,
            Some(400..=499) => 2,
            Some(500..=599) => 3,
            _ => 4,
        };
        self.requests[i].increment(1);
    }
}

/// Time a job spent held (by a paused destination), which its timeout
/// does not count. Cheap to clone: one per job attempt.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hold(Arc<HoldInner>);

#[derive(Debug, Default)]
struct HoldInner {
    state: Mutex<HoldState>,
    /// A permit each time a hold starts.
    started: Notify,
    /// Woken when a hold ends.
    ended: Notify,
}

#[derive(Debug, Default)]
struct HoldState {
    since: Option<Instant>,
    total: Duration,
}

/// Ends a hold when dropped.
pub(crate) struct Holding<'a>(&'a Hold);

impl Hold {
    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn start(&self) -> Holding<'_> {
        self.lock().since = Some(Instant::now());
        self.0.started.notify_one();
        Holding(self)
    }

    /// Held so far; `None` while a hold is under way (the timeout waits).
    pub(crate) fn held(&self) -> Option<Duration> {
        let s = self.lock();
        s.since.is_none().then_some(s.total)
    }

    /// Returns once no hold is under way.
    pub(crate) async fn released(&self) {
        loop {
            // Woken by `notify_waiters` from its creation on.
            let ended = self.0.ended.notified();
            if self.lock().since.is_none() {
                return;
            }
            ended.await;
        }
    }

    /// Returns once the job is being held.
    pub(crate) async fn holding(&self) {
        loop {
            let started = self.0.started.notified();
            if self.lock().since.is_some() {
                return;
            }
            started.await;
        }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        if let Some(since) = s.since.take() {
            s.total += since.elapsed();
        }
        drop(s);
        self.0.0.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_destination_holds_its_jobs_until_resumed() {
        let d = Arc::new(Destinations::new("p"));
        let hold = Hold::default();
        d.admit("http://a:80", &hold).await;
        d.admit("http://b:80", &hold).await;
        assert_eq!(
            d.pause("http://c:80").unwrap_err().known,
            "http://a:80, http://b:80"
        );
        d.pause("http://a:80").unwrap();
        assert_eq!(
            d.list(),
            vec![("http://a:80".into(), true), ("http://b:80".into(), false)]
        );
        // b goes on while a is paused.
        d.admit("http://b:80", &hold).await;
        let waiting = tokio::spawn({
            let (d, hold) = (d.clone(), hold.clone());
            async move { d.admit("http://a:80", &hold).await.name.clone() }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "held while paused");
        assert_eq!(hold.held(), None, "the timeout waits during a hold");
        d.resume("http://a:80").unwrap();
        assert_eq!(waiting.await.unwrap(), "http://a:80");
        assert_eq!(hold.held(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn destinations_past_the_cap_share_one_entry() {
        let d = Destinations::new("p");
        for i in 0..MAX_DESTINATIONS + 5 {
            d.entry(&format!("http://h{i}:80"));
        }
        assert_eq!(d.list().len(), MAX_DESTINATIONS);
        assert_eq!(d.entry("http://h999:80").name, "other");
    }

    #[tokio::test]
    async fn resize_and_pause() {
        let c = Arc::new(Control::new("p", 10, 0, Arc::new(Destinations::new("p"))));
        let pool = Pool::new(1);
        c.attach(&pool);
        assert_eq!(pool.capacity(), 10, "the pool takes the current limit");
        c.set_concurrency(3).unwrap();
        assert_eq!((c.concurrency(), pool.capacity()), (3, 3));
        assert_eq!(c.set_concurrency(0), Err(ResizeError::OutOfRange(0)));
        assert_eq!(c.concurrency(), 3, "a refused resize changes nothing");
        c.pause();
        assert!(c.is_paused());
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.unpaused().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits while paused");
        c.resume();
        waiting.await.unwrap();
        assert!(!c.is_paused());
    }
}
