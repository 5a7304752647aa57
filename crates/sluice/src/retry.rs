//! The one backoff every source and step shares.

use std::time::Duration;

/// Exponential backoff with optional jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Pick a random point in the upper half of each delay, so jobs that
    /// failed together do not all come back together.
    pub jitter: bool,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let d = Duration::from_secs_f64(secs);
        if self.jitter {
            d / 2 + d.mul_f64(fastrand::f64() / 2.0)
        } else {
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: bool) -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_then_caps() {
        let b = backoff(false);
        let got: Vec<u128> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = backoff(true);
        for a in 1..=5 {
            let full = backoff(false).delay(a);
            for _ in 0..100 {
                let d = b.delay(a);
                assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
            }
        }
    }
}
