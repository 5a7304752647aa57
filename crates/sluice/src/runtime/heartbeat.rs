//! The one heartbeat of a worker: while the runtime holds a message (queued
//! behind its ordering key, running, waiting to retry in process, settling),
//! its lease is extended every third of a lease (the tick and the broker's
//! round trip must fit in what is left), so a slow job is never handed to a
//! second consumer. One task per worker, however many messages.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::sources::Acker;

/// A received message's acker, shared between its job and the heartbeat.
/// Taking it out (to settle) ends its lease extensions.
pub(super) struct Lease {
    acker: Mutex<Option<Box<dyn Acker>>>,
}

impl Lease {
    pub(super) fn new(acker: Box<dyn Acker>) -> Arc<Lease> {
        Arc::new(Lease {
            acker: Mutex::new(Some(acker)),
        })
    }

    /// The acker, for settling: no extension is sent after this.
    pub(super) fn take(&self) -> Option<Box<dyn Acker>> {
        self.acker.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The messages whose leases are kept, and when each is next due.
pub(super) struct Heartbeat {
    lease: Duration,
    held: Mutex<Vec<(Weak<Lease>, Instant)>>,
}

impl Heartbeat {
    pub(super) fn new(lease: Duration) -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            lease,
            held: Mutex::new(Vec::new()),
        })
    }

    /// Keeps `lease` leased until its acker is taken or it is dropped.
    pub(super) fn keep(&self, lease: &Arc<Lease>) {
        let due = Instant::now() + self.lease / 3;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Arc::downgrade(lease), due));
    }

    /// Runs until the worker drops its last handle on the heartbeat.
    pub(super) async fn run(this: Weak<Heartbeat>) {
        let Some(lease) = this.upgrade().map(|h| h.lease) else {
            return;
        };
        let tick = (lease / 6).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(h) = this.upgrade() else {
                return;
            };
            let now = Instant::now();
            let mut due = Vec::new();
            h.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain_mut(|(weak, at)| {
                    let Some(lease) = weak.upgrade() else {
                        return false;
                    };
                    let guard = lease.acker.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(acker) = guard.as_ref() else {
                        return false;
                    };
                    if *at <= now {
                        *at = now + h.lease / 3;
                        due.push(acker.extend(h.lease));
                    }
                    true
                });
            drop(h);
            for r in futures::future::join_all(due).await {
                if let Err(e) = r {
                    tracing::warn!(error = %crate::error_chain(&e), "could not extend a message's lease; a slow job may be delivered twice");
                }
            }
        }
    }
}
