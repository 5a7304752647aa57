//! What happens after a job fails: the [`RetryPolicy`] a worker runs with,
//! and the one [`Backoff`] every source and step shares.
//!
//! The default policy is [`Retry`]: up to `max_attempts` attempts, waiting
//! `backoff` between them, then a dead letter. A [`JobError::Fail`] is
//! dead-lettered at once; a [`JobError::Retry`] with its own `after` (a
//! 429's `Retry-After`) waits that long instead of the backoff. Message
//! formats may bring their own rules (Laravel's `maxTries`, `backoff`,
//! `retryUntil`: see [`crate::formats::laravel`]).

use std::fmt;
use std::time::Duration;

use crate::job::JobError;

/// What to do with a message whose job failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Run it again after `delay`.
    Retry { delay: Duration, reason: String },
    /// Park it with the dead-letter target, with `reason`.
    DeadLetter { reason: String },
}

/// Decides, after a failed attempt, whether a message is tried again.
pub trait RetryPolicy: fmt::Debug + Send + Sync + 'static {
    /// Attempt `attempt` (1 for the first) of the message with `body` failed
    /// with `error`.
    fn on_failure(&self, attempt: u32, body: &[u8], error: JobError) -> Decision;

    /// Before attempt `attempt` of the message with `body` runs: a reason
    /// to dead-letter it without running it, when it is already past its
    /// limits (a worker that crashed holding it spent an attempt the broker
    /// counted). Default: every message runs. (Laravel jobs bring their own
    /// rule: see [`crate::formats::laravel`].)
    fn before_attempt(&self, attempt: u32, body: &[u8]) -> Option<String> {
        let _ = (attempt, body);
        None
    }

    /// How long one attempt of the message with `body` may run, given the
    /// pipeline's `job_timeout_secs` (`configured`), and what running out
    /// of time means. Default: `configured`, and a timed-out attempt is
    /// retried like any retryable failure. (Laravel jobs bring their own:
    /// `timeout` and `failOnTimeout`.)
    fn timeout(&self, body: &[u8], configured: Option<Duration>) -> AttemptTimeout {
        let _ = body;
        AttemptTimeout {
            limit: configured,
            fails_the_job: false,
            from_job: false,
        }
    }
}

/// One attempt's time limit ([`RetryPolicy::timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimeout {
    /// None: no limit.
    pub limit: Option<Duration>,
    /// Running out of time fails the job for good (dead-letters it)
    /// rather than retrying it.
    pub fails_the_job: bool,
    /// The limit is the job's own (for the reason's wording).
    pub from_job: bool,
}

/// The default policy: at most `max_attempts` attempts, `backoff` between.
#[derive(Clone, Debug)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Default for Retry {
    /// 5 attempts, 500 ms doubling to at most 60 s, with jitter.
    fn default() -> Retry {
        Retry {
            max_attempts: 5,
            backoff: Backoff::default(),
        }
    }
}

impl Retry {
    /// The decision for `attempt` of at most `max` (named `why_max` in the
    /// reason), with `fallback` as the delay when the error names none.
    pub fn decide(
        attempt: u32,
        max: u32,
        why_max: &str,
        error: JobError,
        delay: impl FnOnce() -> Duration,
    ) -> Decision {
        match error {
            JobError::Fail { reason } => Decision::DeadLetter { reason },
            JobError::Retry { reason, .. } if attempt >= max => Decision::DeadLetter {
                reason: format!(
                    "gave up after {attempt} attempts ({why_max}); last error: {reason}"
                ),
            },
            JobError::Retry { after, reason } => Decision::Retry {
                delay: after.unwrap_or_else(delay),
                reason,
            },
        }
    }
}

impl RetryPolicy for Retry {
    fn on_failure(&self, attempt: u32, _body: &[u8], error: JobError) -> Decision {
        Retry::decide(
            attempt,
            self.max_attempts,
            "retry.max_attempts",
            error,
            || self.backoff.delay(attempt),
        )
    }
}

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

impl Default for Backoff {
    /// 500 ms, doubling, at most 60 s, with jitter.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: true,
        }
    }
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
    fn decisions() {
        let p = Retry {
            max_attempts: 3,
            backoff: backoff(false),
        };
        let d = |attempt, e| p.on_failure(attempt, b"", e);
        assert_eq!(
            d(2, JobError::retry("x")),
            Decision::Retry {
                delay: Duration::from_millis(200),
                reason: "x".into()
            }
        );
        assert_eq!(
            d(1, JobError::retry_after(Duration::from_secs(7), "429")),
            Decision::Retry {
                delay: Duration::from_secs(7),
                reason: "429".into()
            }
        );
        match d(3, JobError::retry("503")) {
            Decision::DeadLetter { reason } => {
                assert!(reason.contains("gave up after 3 attempts") && reason.contains("503"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            d(1, JobError::fail("404")),
            Decision::DeadLetter {
                reason: "404".into()
            }
        );
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
