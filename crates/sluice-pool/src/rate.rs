//! Start-rate pacing: [`Rate`] (public) and the GCRA [`Pacer`] behind it.

use std::time::Duration;

use tokio::time::Instant;

/// An upper bound on how often tasks may *start*: at most `count` starts per
/// `per`, evenly spaced, with an optional burst.
///
/// Without a burst, starts are spaced by `per / count`, so no window of length
/// `per` ever holds more than `count` starts: "4 per second" means one start
/// every 250 ms. [`Rate::with_burst`] lets up to `burst` starts happen at once
/// after an idle spell; the long-run rate stays `count` per `per`.
///
/// ```
/// use std::time::Duration;
/// use sluice_pool::Rate;
///
/// let rate = Rate::per_second(4);
/// assert_eq!(rate.interval(), Duration::from_millis(250));
/// let bursty = Rate::new(100, Duration::from_secs(60)).with_burst(10);
/// assert_eq!(bursty.burst(), 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per: Duration,
    burst: u32,
}

impl Rate {
    /// At most `count` starts every `per`.
    ///
    /// # Panics
    ///
    /// When `count` is zero or `per` is zero: such a rate would never, or
    /// always, allow a start. Use no rate at all for "unlimited".
    pub fn new(count: u32, per: Duration) -> Rate {
        assert!(count > 0, "Rate::new: count must be at least 1");
        assert!(!per.is_zero(), "Rate::new: per must be longer than zero");
        Rate {
            count,
            per,
            burst: 1,
        }
    }

    /// At most `count` starts per second.
    pub fn per_second(count: u32) -> Rate {
        Rate::new(count, Duration::from_secs(1))
    }

    /// At most `count` starts per minute.
    pub fn per_minute(count: u32) -> Rate {
        Rate::new(count, Duration::from_secs(60))
    }

    /// Allow up to `burst` starts at once after an idle spell (default 1).
    ///
    /// # Panics
    ///
    /// When `burst` is zero.
    pub fn with_burst(mut self, burst: u32) -> Rate {
        assert!(burst > 0, "Rate::with_burst: burst must be at least 1");
        self.burst = burst;
        self
    }

    /// How many starts `per` allows.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The window `count` applies to.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// How many starts may happen at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The spacing between two starts: `per / count`.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// Generic cell rate algorithm: one "theoretical arrival time" per limiter,
/// O(1) memory and work, no background timer.
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    /// How far ahead of `tat` a start may happen: `(burst - 1) * interval`.
    tolerance: Duration,
    /// Theoretical arrival time of the next start; `None` until first use.
    tat: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(rate: Rate) -> Pacer {
        let interval = rate.interval().max(Duration::from_nanos(1));
        Pacer {
            interval,
            tolerance: interval * (rate.burst - 1),
            tat: None,
        }
    }

    /// Books the next start and returns when it may happen (`>= now`).
    pub(crate) fn reserve(&mut self, now: Instant) -> Instant {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let start = tat.checked_sub(self.tolerance).map_or(now, |t| t.max(now));
        self.tat = Some(tat.max(start) + self.interval);
        start
    }

    /// `None` when a start is allowed now, else the instant it will be.
    pub(crate) fn blocked_until(&self, now: Instant) -> Option<Instant> {
        let tat = self.tat?;
        let allowed = tat.checked_sub(self.tolerance)?;
        (allowed > now).then_some(allowed)
    }

    /// Books a start now if allowed, else returns when it will be.
    pub(crate) fn try_start(&mut self, now: Instant) -> Result<(), Instant> {
        match self.blocked_until(now) {
            Some(at) => Err(at),
            None => {
                self.reserve(now);
                Ok(())
            }
        }
    }

    /// True when forgetting this pacer would not let anything start early.
    pub(crate) fn is_recovered(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn without_burst_starts_are_evenly_spaced() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::per_second(4));
        let starts: Vec<_> = (0..5).map(|_| p.reserve(t0) - t0).collect();
        assert_eq!(starts, vec![ms(0), ms(250), ms(500), ms(750), ms(1000)]);
    }

    #[test]
    fn burst_allows_that_many_at_once_then_paces() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::per_second(4).with_burst(3));
        let starts: Vec<_> = (0..5).map(|_| p.reserve(t0) - t0).collect();
        assert_eq!(starts, vec![ms(0), ms(0), ms(0), ms(250), ms(500)]);
    }

    #[test]
    fn idle_time_is_not_banked_beyond_the_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::per_second(10));
        p.reserve(t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.reserve(later), later);
        assert_eq!(p.reserve(later), later + ms(100));
    }

    #[test]
    fn try_start_books_only_when_allowed() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::per_second(2));
        assert_eq!(p.try_start(t0), Ok(()));
        assert_eq!(p.try_start(t0), Err(t0 + ms(500)));
        assert_eq!(
            p.try_start(t0),
            Err(t0 + ms(500)),
            "a refusal books nothing"
        );
        assert!(!p.is_recovered(t0));
        assert_eq!(p.try_start(t0 + ms(500)), Ok(()));
        assert!(p.is_recovered(t0 + ms(1000)));
    }

    #[test]
    #[should_panic(expected = "count must be at least 1")]
    fn zero_rate_is_refused() {
        let _ = Rate::per_second(0);
    }
}
