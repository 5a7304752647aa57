//! Laravel's queue payload (`Queue::createPayloadArray`) and the retry rules
//! it carries.
//!
//! A Laravel job says how often and how late it may be retried: `maxTries`
//! (`0` means unlimited), `backoff` (`"10,30"`: 10 s before the second
//! attempt, 30 s before every later one) and `retryUntil` (a Unix time after
//! which it is not retried). [`LaravelRetry`] applies them where the
//! pipeline's config sets nothing of its own, as `php artisan queue:work`
//! does with its `--tries` and `--backoff` defaults.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::DecodeError;
use crate::job::JobError;
use crate::retry::{Backoff, Decision, Retry, RetryPolicy};

/// The fields every Laravel queue payload has.
pub(crate) fn check(v: &serde_json::Value) -> Result<(), DecodeError> {
    let Some(obj) = v.as_object() else {
        return Err(DecodeError::NotLaravel("expected a JSON object"));
    };
    for (field, missing) in [
        ("displayName", "missing `displayName`"),
        ("job", "missing `job`"),
        ("data", "missing `data`"),
    ] {
        if !obj.contains_key(field) {
            return Err(DecodeError::NotLaravel(missing));
        }
    }
    // Laravel writes the job object serialized (or encrypted) as a string;
    // anything else is not a payload Laravel made, and a regex over it would
    // silently read some rendering of it.
    match obj["data"].get("command") {
        None | Some(serde_json::Value::String(_)) => Ok(()),
        Some(serde_json::Value::Object(_)) => Err(DecodeError::NotLaravel(
            "`data.command` is an object, not the serialized command string Laravel writes",
        )),
        Some(serde_json::Value::Array(_)) => Err(DecodeError::NotLaravel(
            "`data.command` is a list, not the serialized command string Laravel writes",
        )),
        Some(_) => Err(DecodeError::NotLaravel(
            "`data.command` is not a string, as the serialized command Laravel writes is",
        )),
    }
}

/// Retry settings a Laravel payload carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryHints {
    /// Attempts in all; `Some(0)` means unlimited, as in Laravel.
    pub max_tries: Option<u32>,
    /// Delay before retry n is `backoff[n - 1]`, the last one repeating.
    pub backoff: Vec<Duration>,
    /// No retry after this time.
    pub retry_until: Option<SystemTime>,
}

impl RetryHints {
    /// Reads the hints of a payload; `None` when `body` is not a JSON
    /// object.
    pub fn parse(body: &[u8]) -> Option<RetryHints> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let v = v.as_object()?;
        let max_tries = v
            .get("maxTries")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        // Laravel writes `backoff` as "1,5,10" (or a number, or null).
        let backoff = match v.get("backoff") {
            Some(serde_json::Value::String(s)) => s
                .split(',')
                .filter_map(|p| p.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .collect(),
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(Duration::from_secs).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .map(Duration::from_secs)
                .collect(),
            _ => Vec::new(),
        };
        let retry_until = v
            .get("retryUntil")
            .and_then(serde_json::Value::as_u64)
            .map(|t| UNIX_EPOCH + Duration::from_secs(t));
        Some(RetryHints {
            max_tries,
            backoff,
            retry_until,
        })
    }
}

/// Laravel's retry rules: the job's own `maxTries`, `backoff` and
/// `retryUntil`, each unless the config set its counterpart
/// (`retry.max_attempts`, `retry.backoff`).
#[derive(Clone, Debug, Default)]
pub struct LaravelRetry {
    /// `retry.max_attempts`, when the config sets it: it outranks `maxTries`.
    pub max_attempts: Option<u32>,
    /// `retry.backoff`, when the config sets it: it outranks `backoff`.
    pub backoff: Option<Backoff>,
}

impl RetryPolicy for LaravelRetry {
    fn on_failure(&self, attempt: u32, body: &[u8], error: JobError) -> Decision {
        let fallback = Retry::default();
        let hints = RetryHints::parse(body).unwrap_or_default();
        let (max, why_max) = match (self.max_attempts, hints.max_tries) {
            (Some(n), _) => (n, "retry.max_attempts"),
            (None, Some(0)) => (u32::MAX, "the job's maxTries"),
            (None, Some(n)) => (n, "the job's maxTries"),
            (None, None) => (fallback.max_attempts, "retry.max_attempts"),
        };
        // As in Laravel: while a job's retryUntil is ahead it is retried
        // whatever its attempts; once passed, it is not retried again.
        let max = if hints.retry_until.is_some() {
            u32::MAX
        } else {
            max
        };
        if let (JobError::Retry { reason, .. }, Some(until)) = (&error, hints.retry_until) {
            if SystemTime::now() >= until {
                return Decision::DeadLetter {
                    reason: format!("the job's retryUntil has passed; last error: {reason}"),
                };
            }
        }
        let delay = || match (&self.backoff, hints.backoff.last()) {
            (Some(b), _) => b.delay(attempt),
            (None, Some(last)) => *hints
                .backoff
                .get(attempt.max(1) as usize - 1)
                .unwrap_or(last),
            (None, None) => fallback.backoff.delay(attempt),
        };
        Retry::decide(attempt, max, why_max, error, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINTED: &[u8] =
        br#"{"displayName":"J","job":"x","data":{},"maxTries":5,"backoff":"1,7"}"#;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: false,
        }
    }

    #[test]
    fn hints_parse() {
        let h = RetryHints::parse(
            br#"{"displayName":"J","job":"x","data":{},"maxTries":4,"backoff":"1,5,10","retryUntil":2000000000}"#,
        )
        .unwrap();
        assert_eq!(h.max_tries, Some(4));
        assert_eq!(h.backoff, [1, 5, 10].map(Duration::from_secs));
        assert_eq!(
            h.retry_until,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        let h = RetryHints::parse(
            br#"{"displayName":"J","job":"x","data":{},"maxTries":null,"backoff":null}"#,
        )
        .unwrap();
        assert_eq!(h, RetryHints::default());
    }

    #[test]
    fn a_jobs_own_retry_hints_apply_unless_the_config_sets_them() {
        let p = LaravelRetry::default();
        let retry = || JobError::retry("503");
        assert!(
            matches!(p.on_failure(4, HINTED, retry()), Decision::Retry { delay, .. } if delay == Duration::from_secs(7))
        );
        assert!(
            matches!(p.on_failure(1, HINTED, retry()), Decision::Retry { delay, .. } if delay == Duration::from_secs(1))
        );
        match p.on_failure(5, HINTED, retry()) {
            Decision::DeadLetter { reason } => assert!(reason.contains("maxTries"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let p = LaravelRetry {
            max_attempts: Some(3),
            backoff: Some(backoff()),
        };
        assert!(matches!(
            p.on_failure(3, HINTED, retry()),
            Decision::DeadLetter { .. }
        ));
        assert!(
            matches!(p.on_failure(1, HINTED, retry()), Decision::Retry { delay, .. } if delay == Duration::from_millis(100))
        );
    }

    #[test]
    fn retry_until_outranks_attempts() {
        let p = LaravelRetry {
            max_attempts: Some(3),
            backoff: None,
        };
        let at = |t: SystemTime| {
            let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
            format!(r#"{{"displayName":"J","job":"x","data":{{}},"retryUntil":{secs}}}"#)
        };
        let ahead = at(SystemTime::now() + Duration::from_secs(3600));
        assert!(
            matches!(
                p.on_failure(50, ahead.as_bytes(), JobError::retry("x")),
                Decision::Retry { .. }
            ),
            "a retryUntil ahead outranks max_attempts, as in Laravel"
        );
        let past = at(SystemTime::now() - Duration::from_secs(2));
        match p.on_failure(1, past.as_bytes(), JobError::retry("x")) {
            Decision::DeadLetter { reason } => assert!(reason.contains("retryUntil"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
