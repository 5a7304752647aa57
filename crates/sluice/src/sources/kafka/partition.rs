//! Each assigned partition's progress: what was handed out, what is
//! settled, what was committed, and whether it is still ours.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::sources::common::Watermark;
use crate::sources::{Message, Revocation};

/// A topic and partition.
pub(super) type Tp = (String, i32);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One assigned partition.
#[derive(Debug)]
pub(super) struct Partition {
    /// Offsets read and not settled; `None` until the first message.
    marks: Mutex<Option<Watermark>>,
    /// The last offset committed (the next to read).
    committed: Mutex<Option<i64>>,
    /// Set when the partition is being revoked: nothing more of it is
    /// handed to the runtime.
    draining: AtomicBool,
    /// Deliveries the runtime holds and has not settled.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to 0.
    idle: Notify,
    /// Cancelled when the partition is revoked: its jobs stop, unsettled.
    pub(super) revoked: Revocation,
}

impl Partition {
    pub(super) fn new() -> Partition {
        Partition {
            marks: Mutex::new(None),
            committed: Mutex::new(None),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            revoked: Revocation::new(),
        }
    }

    /// Offset `offset` was read.
    pub(super) fn read(&self, offset: i64) {
        lock(&self.marks)
            .get_or_insert_with(|| Watermark::new(offset as u64))
            .received([offset as u64], offset as u64 + 1);
    }

    /// Whether its messages may still go to the runtime.
    pub(super) fn is_live(&self) -> bool {
        !self.draining.load(Relaxed) && !self.revoked.is_cancelled()
    }

    pub(super) fn handed_out(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A delivery of it was settled, released or let go.
    pub(super) fn returned(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// The offset to commit, when it moved past the last commit.
    pub(super) fn to_commit(&self) -> Option<i64> {
        let low = lock(&self.marks).as_ref()?.low() as i64;
        let committed = *lock(&self.committed);
        (committed.is_none_or(|c| low > c)).then_some(low)
    }

    /// The offset below which every message read is settled; None when
    /// nothing was read from the partition.
    pub(super) fn settled_below(&self) -> Option<i64> {
        lock(&self.marks).as_ref().map(|w| w.low() as i64)
    }

    pub(super) fn committed(&self, offset: i64) {
        let mut c = lock(&self.committed);
        *c = Some(c.map_or(offset, |c| c.max(offset)));
    }

    pub(super) fn settled(&self, offset: i64) {
        if let Some(w) = lock(&self.marks).as_mut() {
            w.settled(offset as u64);
        }
    }

    /// Waits until the runtime holds none of its deliveries, or `bound`.
    async fn drained(&self, bound: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Relaxed) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }
}

/// What the source, its ackers, the poll task, the commit task and the
/// rebalance callbacks share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    partitions: Mutex<HashMap<Tp, Arc<Partition>>>,
    /// Messages handed back while running, to deliver again first.
    pub(super) released: Mutex<VecDeque<Released>>,
    /// Woken when a message is released.
    pub(super) wake: Notify,
    /// Held through each commit, from reading the offsets to marking them
    /// committed: a slow commit (the periodic one can outlive its timeout)
    /// never lands after a newer one and moves the group's offset back.
    commit: Mutex<()>,
}

/// A message read, not yet handed to the runtime (or handed back).
#[derive(Debug)]
pub(super) struct Released {
    pub(super) message: Message,
    pub(super) partition: Arc<Partition>,
    pub(super) offset: i64,
}

impl Shared {
    /// The partition's progress, created on its first message.
    pub(super) fn partition(&self, tp: &Tp) -> Arc<Partition> {
        lock(&self.partitions)
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(Partition::new()))
            .clone()
    }

    /// The partition's state, if it was ever read from while assigned.
    pub(super) fn get(&self, tp: &Tp) -> Option<Arc<Partition>> {
        lock(&self.partitions).get(tp).cloned()
    }

    pub(super) fn released(&self) -> MutexGuard<'_, VecDeque<Released>> {
        lock(&self.released)
    }

    /// Commits, through `commit` (librdkafka's synchronous commit), the
    /// settled offsets of every partition or of `only`, and marks them
    /// committed once it succeeded. Blocks; one commit at a time. Ok(false)
    /// when there was nothing new to commit.
    pub(super) fn commit_settled<E>(
        &self,
        only: Option<&[Tp]>,
        commit: impl FnOnce(&TopicPartitionList) -> Result<(), E>,
    ) -> Result<bool, E> {
        let _one_at_a_time = lock(&self.commit);
        let (tpl, done) = self.commits(only);
        if tpl.count() == 0 {
            return Ok(false);
        }
        let r = commit(&tpl);
        // librdkafka's lists go before the consumer does.
        drop(tpl);
        r?;
        done.iter().for_each(|(p, o)| p.committed(*o));
        Ok(true)
    }

    /// The offsets to commit: of every partition, or of `only`.
    fn commits(&self, only: Option<&[Tp]>) -> (TopicPartitionList, Vec<(Arc<Partition>, i64)>) {
        let parts = lock(&self.partitions);
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for (tp, part) in parts.iter() {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            if let Some(offset) = part.to_commit() {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
                done.push((part.clone(), offset));
            }
        }
        (tpl, done)
    }

    /// Stops handing out `revoked`'s messages; true if the runtime holds
    /// none of them.
    pub(super) fn stop_handing_out(&self, revoked: &[Tp]) -> bool {
        let all = lock(&self.partitions);
        let mut idle = true;
        for p in revoked.iter().filter_map(|tp| all.get(tp)) {
            p.draining.store(true, Relaxed);
            idle &= p.in_flight.load(Relaxed) == 0;
        }
        idle
    }

    /// Waits up to `grace` for the runtime to settle what it holds of
    /// `revoked`. False if some were still running at the deadline.
    pub(super) async fn drained(&self, revoked: &[Tp], grace: Duration) -> bool {
        let parts: Vec<Arc<Partition>> = {
            let all = lock(&self.partitions);
            revoked
                .iter()
                .filter_map(|tp| all.get(tp).cloned())
                .collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        let mut all = true;
        for p in &parts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            all &= p.drained(left).await;
        }
        all
    }

    /// Forgets `revoked`: their deliveries are revoked (the jobs stop,
    /// unsettled) and their unsent messages dropped.
    pub(super) fn revoke(&self, revoked: &[Tp]) {
        let mut parts = lock(&self.partitions);
        for tp in revoked {
            if let Some(p) = parts.remove(tp) {
                p.revoked.cancel();
            }
        }
        drop(parts);
        self.released()
            .retain(|r| !r.partition.revoked.is_cancelled());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_below_what_is_settled() {
        let p = Partition::new();
        assert_eq!(p.to_commit(), None, "nothing read yet");
        for o in 5..8 {
            p.read(o);
        }
        p.settled(6);
        p.settled(7);
        assert_eq!(
            p.to_commit(),
            Some(5),
            "5 still runs: commit nothing past it"
        );
        p.committed(5);
        assert_eq!(p.to_commit(), None);
        p.settled(5);
        assert_eq!(p.to_commit(), Some(8));
        p.committed(8);
        assert_eq!(p.to_commit(), None, "committed already");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_runtime_to_settle_what_it_holds() {
        let shared = Arc::new(Shared::default());
        let tp: Tp = ("t".into(), 0);
        let p = shared.partition(&tp);
        p.read(0);
        p.handed_out();
        assert!(p.is_live());
        assert!(!shared.stop_handing_out(std::slice::from_ref(&tp)));
        assert!(!p.is_live(), "a draining partition hands out nothing more");
        let drain = {
            let shared = shared.clone();
            let tp = tp.clone();
            tokio::spawn(async move { shared.drained(&[tp], Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        p.settled(0);
        p.returned();
        assert!(drain.await.unwrap(), "drained before the deadline");

        let q = shared.partition(&("t".into(), 1));
        q.handed_out();
        let started = tokio::time::Instant::now();
        assert!(
            !shared
                .drained(&[("t".into(), 1)], Duration::from_secs(5))
                .await
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5), "up to the grace");
        shared.revoke(&[("t".into(), 1)]);
        assert!(q.revoked.is_cancelled());
    }
}
