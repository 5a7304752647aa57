//! The contiguous-offset watermark.

use std::collections::BTreeSet;

/// Offsets handed out and not yet settled, and how far reading got: every
/// offset below [`low`](Watermark::low) is settled, whatever order jobs
/// finished in.
///
/// ```
/// use sluice::sources::common::Watermark;
///
/// let mut w = Watermark::new(0);
/// w.received([0, 10, 20], 30); // three records read; the next starts at 30
/// w.settled(10);
/// assert_eq!(w.low(), 0); // 0 is still running: nothing can be committed
/// w.settled(0);
/// assert_eq!(w.low(), 20);
/// w.settled(20);
/// assert_eq!(w.low(), 30);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    read: u64,
    pending: BTreeSet<u64>,
}

impl Watermark {
    /// Nothing pending; reading starts at `start`.
    pub fn new(start: u64) -> Watermark {
        Watermark {
            read: start,
            pending: BTreeSet::new(),
        }
    }

    /// Restores a watermark: read up to `read`, these offsets unsettled.
    pub fn with_pending(read: u64, pending: impl IntoIterator<Item = u64>) -> Watermark {
        Watermark {
            read,
            pending: pending.into_iter().collect(),
        }
    }

    /// `offsets` were handed out; reading has reached `read`.
    pub fn received(&mut self, offsets: impl IntoIterator<Item = u64>, read: u64) {
        self.pending.extend(offsets);
        self.read = self.read.max(read);
    }

    /// `offset` is settled; false if it was not pending.
    pub fn settled(&mut self, offset: u64) -> bool {
        self.pending.remove(&offset)
    }

    /// Puts `offset` back among the unsettled (a settlement that did not
    /// become durable after all).
    pub fn unsettle(&mut self, offset: u64) {
        self.pending.insert(offset);
    }

    /// Every offset below this is settled.
    pub fn low(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.read)
    }

    /// How far reading got.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// True when `offset` is below `read` and not pending.
    pub fn is_settled(&self, offset: u64) -> bool {
        offset < self.read && !self.pending.contains(&offset)
    }

    /// The unsettled offsets, lowest first.
    pub fn pending(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.iter().copied()
    }

    /// How many offsets are unsettled.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_settlements_move_the_low_mark_only_when_contiguous() {
        let mut w = Watermark::new(100);
        assert_eq!(w.low(), 100);
        w.received([100, 101, 102, 103], 104);
        for o in [103, 101] {
            assert!(w.settled(o));
            assert_eq!(w.low(), 100);
        }
        assert!(!w.settled(101), "settled twice");
        w.settled(100);
        assert_eq!(w.low(), 102);
        assert!(w.is_settled(101) && !w.is_settled(102) && !w.is_settled(104));
        w.unsettle(101);
        assert_eq!(w.low(), 101);
        w.settled(101);
        w.settled(102);
        assert_eq!((w.low(), w.pending_len()), (104, 0));
    }
}
