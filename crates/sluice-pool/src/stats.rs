//! [`Stats`]: a snapshot of what a pool is doing and has done.

use std::fmt;
use std::time::Duration;

/// A snapshot of a pool's gauges, counters and timing distributions, taken by
/// [`Pool::stats`](crate::Pool::stats) under one short lock.
///
/// Every task admitted is accounted for exactly once:
/// `submitted == completed + panicked + cancelled + returned + running_tasks + queued`,
/// where `running_tasks` is at most `running`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// The current concurrency limit.
    pub capacity: usize,
    /// Slots in use: tasks running, plus tasks a worker holds while it waits
    /// for the pool's pace, plus [`Slot`](crate::Slot)s held by inline work.
    /// May exceed `capacity` for a while after a shrink.
    pub running: usize,
    /// Tasks admitted and waiting for a slot (or for their key).
    pub queued: usize,
    /// Places held by unspent [`Permit`](crate::Permit)s.
    pub reserved: usize,
    /// The wait queue's capacity.
    pub queue_capacity: usize,
    /// Keys the pool currently tracks (busy, or still pacing).
    pub keys: usize,
    /// Whether the pool is closed to new tasks.
    pub closed: bool,
    /// Tasks admitted since the pool was built.
    pub submitted: u64,
    /// Tasks that ran to completion.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks cancelled while running (at a shutdown deadline, or with their
    /// runtime).
    pub cancelled: u64,
    /// Tasks handed back to the caller without having started.
    pub returned: u64,
    /// Submissions refused because the pool was full or closed.
    pub rejected: u64,
    /// Time from admission to start, of every task that started.
    pub queue_wait: Histogram,
    /// Time from start to settling, of every task that settled.
    pub run_time: Histogram,
}

impl Stats {
    /// Free slots now: never negative, even while a shrink takes effect.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.running)
    }

    /// Tasks that settled one way or another.
    pub fn settled(&self) -> u64 {
        self.completed + self.panicked + self.cancelled + self.returned
    }
}

const SUB_BITS: u32 = 2;
const SUBS: usize = 1 << SUB_BITS;
/// Values up to 2^40 ns (about 18 minutes) get their own bucket.
const MAX_POW: u32 = 40;
const BUCKETS: usize = SUBS + (MAX_POW as usize - SUB_BITS as usize + 1) * SUBS;

/// A log-linear histogram of durations: four buckets per power of two of
/// nanoseconds, so any quantile it reports is within 25 % of the truth.
/// Fixed size (about 1.3 KB), O(1) to record.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUBS as u64 {
        return ns as usize;
    }
    let pow = 63 - ns.leading_zeros();
    if pow > MAX_POW {
        return BUCKETS - 1;
    }
    let sub = (ns >> (pow - SUB_BITS)) as usize & (SUBS - 1);
    SUBS + (pow - SUB_BITS) as usize * SUBS + sub
}

/// The largest value that falls in bucket `i`.
fn upper_bound_of(i: usize) -> u64 {
    if i < SUBS {
        return i as u64;
    }
    let pow = (i - SUBS) / SUBS + SUB_BITS as usize;
    let sub = ((i - SUBS) % SUBS) as u64;
    let width = 1u64 << (pow - SUB_BITS as usize);
    ((SUBS as u64 + sub) << (pow - SUB_BITS as usize)) + width - 1
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The longest duration recorded (exact).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The mean duration (exact), zero when empty.
    pub fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum_ns / u128::from(n)) as u64),
        }
    }

    /// The duration below which a fraction `q` (0.0 to 1.0) of the recorded
    /// ones fall, within 25 %; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // The last bucket also holds everything too large for the rest.
                let upper = if i == BUCKETS - 1 {
                    u64::MAX
                } else {
                    upper_bound_of(i)
                };
                return Duration::from_nanos(upper.min(self.max_ns));
            }
        }
        self.max()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("mean", &self.mean())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut prev_upper = None;
        for i in 0..BUCKETS - 1 {
            let up = upper_bound_of(i);
            if let Some(p) = prev_upper {
                assert!(up > p, "bucket {i} must end after bucket {}", i - 1);
                assert_eq!(bucket_of(p + 1), i, "value {} starts bucket {i}", p + 1);
            }
            assert_eq!(bucket_of(up), i, "upper bound {up} stays in bucket {i}");
            prev_upper = Some(up);
        }
    }

    #[test]
    fn quantiles_are_within_a_quarter_of_the_truth() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        for (q, truth) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = h.quantile(q).as_secs_f64() * 1000.0;
            assert!(
                got >= truth && got <= truth * 1.25,
                "p{q}: {got} ms, truth {truth} ms"
            );
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), Duration::from_millis(1000));
        assert_eq!(h.mean(), Duration::from_micros(500_500));
    }

    #[test]
    fn huge_values_land_in_the_last_bucket_and_keep_their_max() {
        let mut h = Histogram::default();
        h.record(Duration::from_secs(86_400 * 365));
        assert_eq!(h.quantile(1.0), Duration::from_secs(86_400 * 365));
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::default();
        assert!(h.is_empty());
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
    }
}
