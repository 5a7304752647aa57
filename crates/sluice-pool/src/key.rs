//! Per-key limits: [`Key`] names a class of tasks (a destination host, a
//! tenant), [`KeyLimit`] caps how many of them run at once and how fast they
//! start.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::queue::Queued;
use crate::rate::{Pacer, Rate};

/// The name of a class of tasks that share a [`KeyLimit`], such as the host a
/// request goes to. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key(Arc::from(s))
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key(Arc::from(s))
    }
}

impl From<Arc<str>> for Key {
    fn from(s: Arc<str>) -> Key {
        Key(s)
    }
}

impl From<&Key> for Key {
    fn from(k: &Key) -> Key {
        k.clone()
    }
}

/// How many tasks of one [`Key`] may run at once, and how fast they may start.
/// Applies under the pool's own limits, never instead of them.
///
/// ```
/// use sluice_pool::{KeyLimit, Rate};
///
/// // At most 2 requests in flight per host, at most 5 starts a second.
/// let limit = KeyLimit::concurrency(2).with_rate(Rate::per_second(5));
/// assert_eq!(limit.max_concurrency(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLimit {
    concurrency: usize,
    rate: Option<Rate>,
}

impl KeyLimit {
    /// No per-key cap: keyed tasks are limited by the pool alone.
    pub fn unlimited() -> KeyLimit {
        KeyLimit {
            concurrency: usize::MAX,
            rate: None,
        }
    }

    /// At most `n` tasks of one key run at once.
    ///
    /// # Panics
    ///
    /// When `n` is zero: such a key could never run anything.
    pub fn concurrency(n: usize) -> KeyLimit {
        assert!(n > 0, "KeyLimit::concurrency: n must be at least 1");
        KeyLimit {
            concurrency: n,
            rate: None,
        }
    }

    /// Also pace the starts of each key's tasks.
    pub fn with_rate(mut self, rate: Rate) -> KeyLimit {
        self.rate = Some(rate);
        self
    }

    /// The cap on tasks of one key running at once.
    pub fn max_concurrency(&self) -> usize {
        self.concurrency
    }

    /// The start rate of each key, if any.
    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }
}

impl Default for KeyLimit {
    fn default() -> KeyLimit {
        KeyLimit::unlimited()
    }
}

/// What the pool knows of one key while it has work (or pacing debt).
#[derive(Debug)]
pub(crate) struct KeyState {
    pub(crate) concurrency: usize,
    pub(crate) pacer: Option<Pacer>,
    /// Tasks of this key handed to a worker and not yet settled.
    pub(crate) active: usize,
    /// Tasks of this key waiting for the key (cap or pace), oldest first.
    pub(crate) waiting: VecDeque<Queued>,
    /// A turn for this key sits in the ready queue.
    pub(crate) in_ready: bool,
    /// A timer will hand this key a turn when its pace allows.
    pub(crate) timer_armed: bool,
    /// Callers waiting in `acquire` for this key to open (see
    /// [`is_open`](Self::is_open)), woken one at a time through `wake`.
    pub(crate) acquirers: usize,
    pub(crate) wake: Option<Arc<Notify>>,
}

impl KeyState {
    pub(crate) fn new(limit: KeyLimit) -> KeyState {
        KeyState {
            concurrency: limit.concurrency,
            pacer: limit.rate.map(Pacer::new),
            active: 0,
            waiting: VecDeque::new(),
            in_ready: false,
            timer_armed: false,
            acquirers: 0,
            wake: None,
        }
    }

    /// Nothing of this key waits and it is under its limit: a caller of
    /// `acquire` may take a slot of it now, pace permitting. Its own queued
    /// tasks go first.
    pub(crate) fn is_open(&self) -> bool {
        self.waiting.is_empty() && !self.in_ready && self.active < self.concurrency
    }

    /// Wakes one waiting `acquire` if the key is open. Called wherever the key
    /// may have opened, and by a woken waiter that leaves it open, so the
    /// turn is never lost: one wake in flight per open key.
    pub(crate) fn pass_turn(&self) {
        if self.acquirers > 0 && self.is_open() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    /// True when dropping this state would change nothing a later task sees.
    pub(crate) fn is_forgettable(&self, now: tokio::time::Instant) -> bool {
        self.active == 0
            && self.acquirers == 0
            && self.waiting.is_empty()
            && !self.in_ready
            && !self.timer_armed
            && self.pacer.as_ref().is_none_or(|p| p.is_recovered(now))
    }
}
