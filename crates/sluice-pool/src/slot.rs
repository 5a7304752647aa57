//! [`Slot`]: a running slot held by work the caller runs itself.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::key::Key;
use crate::shared::Shared;

/// A running slot of the pool (and of a key, under its limits), held while
/// the caller runs its work inline, in its own task: no task is spawned.
/// Taken by [`Keyed::acquire`](crate::Keyed::acquire) or
/// [`Pool::acquire`](crate::Pool::acquire); dropping it settles the slot like
/// a finished task: counted as completed, the key's next waiting task or
/// caller goes on.
///
/// While held it counts as running, so [`Pool::idle`](crate::Pool::idle),
/// [`Pool::join`](crate::Pool::join) and a shutdown wait for it: a shutdown
/// cannot cancel work it does not run, so drop the slot when told to stop.
/// It takes a start from the key's pace and the pool's, as a task would.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sluice_pool::{KeyLimit, Pool};
///
/// let pool = Pool::builder().concurrency(100).per_key(KeyLimit::concurrency(2)).build();
/// let host = pool.key("api.example.com");
/// let a = host.acquire().await.unwrap();
/// let _b = host.acquire().await.unwrap();
/// assert_eq!(pool.stats().running, 2); // a third waits until one drops
/// drop(a); // the request is done
/// let _c = host.acquire().await.unwrap();
/// # }
/// ```
pub struct Slot {
    shared: Arc<Shared>,
    key: Option<Key>,
    /// When the caller got the slot; `None` while it is held through the
    /// pool's pace, before it is handed over.
    began: Option<Instant>,
}

impl Slot {
    pub(crate) fn new(shared: Arc<Shared>, key: Option<Key>, began: bool) -> Slot {
        Slot {
            shared,
            key,
            began: began.then(Instant::now),
        }
    }

    /// The pool's pace allows the start: the slot is the caller's.
    pub(crate) fn begin(&mut self) {
        self.shared.slot_began();
        self.began = Some(Instant::now());
    }

    /// The key this slot counts against, if any.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.release_acquired(self.key.as_ref(), self.began);
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}
