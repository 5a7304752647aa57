//! [`Builder`]: every knob of a [`Pool`], with its default in one place.

use std::fmt;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::event::{Hook, TaskEvent};
use crate::key::{Key, KeyLimit};
use crate::pool::Pool;
use crate::rate::{Pacer, Rate};
use crate::shared::Shared;
use crate::state::{KeyLimits, State};

/// The concurrency a [`Builder`] starts with.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Configures a [`Pool`]. Start from [`Pool::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sluice_pool::{KeyLimit, Pool, Rate};
///
/// let pool = Pool::builder()
///     .concurrency(200)                 // at most 200 tasks at once
///     .queue_capacity(1_000)            // at most 1,000 more waiting
///     .rate(Rate::per_second(500))      // at most 500 starts a second
///     .per_key(KeyLimit::concurrency(20).with_rate(Rate::per_second(50)))
///     .build();
/// assert_eq!(pool.stats().capacity, 200);
/// # }
/// ```
pub struct Builder {
    concurrency: usize,
    queue_capacity: Option<usize>,
    rate: Option<Rate>,
    key_limits: KeyLimits,
    on_task_end: Option<Hook>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            concurrency: DEFAULT_CONCURRENCY,
            queue_capacity: None,
            rate: None,
            key_limits: KeyLimits::Fixed(KeyLimit::unlimited()),
            on_task_end: None,
        }
    }
}

impl Builder {
    /// At most `n` tasks run at once (default [`DEFAULT_CONCURRENCY`]).
    /// `0` builds a paused pool: tasks queue until [`Pool::resize`] grows it.
    pub fn concurrency(mut self, n: usize) -> Builder {
        self.concurrency = n;
        self
    }

    /// At most `n` tasks wait for a slot (default: the concurrency). `0`
    /// means nothing waits: `submit` waits for a free slot, `try_submit`
    /// refuses when every slot is busy.
    pub fn queue_capacity(mut self, n: usize) -> Builder {
        self.queue_capacity = Some(n);
        self
    }

    /// Paces task starts across the whole pool, on top of the concurrency
    /// limit (default: no pacing). A [`Slot`](crate::Slot) taken by
    /// `acquire` is a start too.
    pub fn rate(mut self, rate: Rate) -> Builder {
        self.rate = Some(rate);
        self
    }

    /// The limit every key gets (default: [`KeyLimit::unlimited`]).
    pub fn per_key(mut self, limit: KeyLimit) -> Builder {
        self.key_limits = KeyLimits::Fixed(limit);
        self
    }

    /// Chooses each key's limit when the key is first seen (or seen again
    /// after it went idle and was forgotten).
    ///
    /// `limit` runs under the pool's lock: keep it a quick lookup, and never
    /// call the pool from it.
    pub fn per_key_with<F>(mut self, limit: F) -> Builder
    where
        F: Fn(&Key) -> KeyLimit + Send + Sync + 'static,
    {
        self.key_limits = KeyLimits::With(Box::new(limit));
        self
    }

    /// Calls `hook` once for every task that settles (completed, panicked or
    /// cancelled), outside the pool's lock: the place to feed a metrics
    /// facade. Keep it cheap; it runs on the worker that ran the task.
    pub fn on_task_end<F>(mut self, hook: F) -> Builder
    where
        F: Fn(&TaskEvent<'_>) + Send + Sync + 'static,
    {
        self.on_task_end = Some(Box::new(hook));
        self
    }

    /// Builds the pool on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`build_on`](Builder::build_on) there.
    #[track_caller]
    pub fn build(self) -> Pool {
        let handle = Handle::try_current().unwrap_or_else(|_| {
            panic!(
                "sluice_pool::Builder::build called outside a tokio runtime: \
                 call it inside one, or pass a runtime with build_on(handle)"
            )
        });
        self.build_on(handle)
    }

    /// Builds the pool on the given runtime: its workers are spawned there,
    /// so the pool may be used from any thread.
    pub fn build_on(self, runtime: Handle) -> Pool {
        let queue_capacity = self.queue_capacity.unwrap_or(self.concurrency);
        let state = State::new(
            self.concurrency,
            queue_capacity,
            self.rate.map(Pacer::new),
            self.key_limits,
        );
        Pool::from_shared(Arc::new(Shared::new(state, runtime, self.on_task_end)))
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("concurrency", &self.concurrency)
            .field("queue_capacity", &self.queue_capacity)
            .field("rate", &self.rate)
            .field("on_task_end", &self.on_task_end.is_some())
            .finish_non_exhaustive()
    }
}
