//! Laravel's queue payload (`Queue::createPayloadArray`) and the retry rules
//! it carries.
//!
//! A Laravel job says how often and how late it may be retried: `maxTries`
//! (`0` means unlimited), `backoff` (`"10,30"`: 10 s before the second
//! attempt, 30 s before every later one) and `retryUntil` (a Unix time after
//! which it is not retried). [`LaravelRetry`] applies them where the
//! pipeline's config sets nothing of its own, as `php artisan queue:work`
//! does with its `--tries` and `--backoff` defaults. A job's `timeout`
//! (seconds per attempt) outranks `job_timeout_secs`, as `$timeout`
//! outranks `--timeout`, and with `failOnTimeout` an attempt that runs
//! out of it fails the job for good instead of being retried.
//!
//! A job that implements `ShouldBeEncrypted` has its command encrypted with
//! the app's `APP_KEY`; [`LaravelConfig`] (`[pipeline.laravel]`) gives the
//! key, and the command is decrypted (see [`super::encrypted`]) into
//! `job.command` like any other:
//!
//! ```toml
//! [pipeline.laravel]
//! app_key = "${APP_KEY}"
//! previous_keys = "${APP_PREVIOUS_KEYS:-}"   # or a list
//! cipher = "AES-256-CBC"
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::DecodeError;
use super::encrypted::{AppKey, AppKeys, Cipher, WhichKey};
use crate::component::FieldError;
use crate::job::JobError;
use crate::retry::{AttemptTimeout, Backoff, Decision, Retry, RetryPolicy};

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

/// `[pipeline.laravel]`: what a `laravel`-format pipeline needs to read
/// its jobs.
///
/// With it, a job whose command is encrypted (`ShouldBeEncrypted`) gets
/// `job.command` decrypted; one whose command does not decrypt with any
/// key (a wrong key, a forged MAC) fails and is dead-lettered with the
/// reason, as Laravel's own worker fails it. Without it, such a command
/// stays only the string at `job.data.command`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaravelConfig {
    /// The app's `APP_KEY`, as in its `.env`: `base64:` and the key's
    /// base64 (what `php artisan key:generate` writes), or the raw key.
    /// Write `"${APP_KEY}"` rather than the key itself. Required.
    pub app_key: String,
    /// Keys the app used before `app_key` (Laravel 11's
    /// `APP_PREVIOUS_KEYS`), tried in order after it: a list, or one
    /// comma-separated string (`"${APP_PREVIOUS_KEYS:-}"`). Default none.
    #[serde(default, deserialize_with = "key_list")]
    pub previous_keys: Vec<String>,
    /// The app's `config('app.cipher')`: `AES-256-CBC`, `AES-128-CBC`,
    /// `AES-256-GCM` or `AES-128-GCM`, any case. Default `AES-256-CBC`, as
    /// in Laravel.
    #[serde(default)]
    pub cipher: Cipher,
}

impl fmt::Debug for LaravelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaravelConfig")
            .field("app_key", &crate::redact::REDACTED)
            .field("previous_keys", &self.previous_keys.len())
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl LaravelConfig {
    /// Checks the keys against the cipher; the error's field is `app_key`
    /// or `previous_keys` and never shows a key. The keys are registered
    /// as secrets (see [`crate::redact`]), written in the file or not.
    pub fn build(&self) -> Result<AppKeys, FieldError> {
        for k in std::iter::once(&self.app_key).chain(&self.previous_keys) {
            crate::redact::register(k);
            if let Some(b64) = k.strip_prefix("base64:") {
                crate::redact::register(b64);
            }
        }
        let current =
            AppKey::parse(&self.app_key).map_err(|e| FieldError::new("app_key", e.to_string()))?;
        let mut previous = Vec::new();
        for (i, k) in self.previous_keys.iter().enumerate() {
            let key = AppKey::parse(k).map_err(|e| previous_error(i, &e))?;
            previous.push(key);
        }
        AppKeys::checked(self.cipher, current, previous).map_err(|(which, e)| match which {
            WhichKey::Current => FieldError::new("app_key", e.to_string()),
            WhichKey::Previous(i) => previous_error(i, &e),
        })
    }
}

fn previous_error(i: usize, e: &super::encrypted::KeyError) -> FieldError {
    FieldError::new(
        "previous_keys",
        format!("key {} of previous_keys {e}", i + 1),
    )
}

/// A list of keys, or one string of them separated by commas (as
/// `APP_PREVIOUS_KEYS` is); blanks dropped.
fn key_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct KeyList;
    impl<'de> serde::de::Visitor<'de> for KeyList {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of keys, or one string of keys separated by commas")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(s.split(',').filter_map(key).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = seq.next_element::<String>()? {
                keys.extend(key(&k));
            }
            Ok(keys)
        }
    }
    fn key(k: &str) -> Option<String> {
        let k = k.trim();
        (!k.is_empty()).then(|| k.to_owned())
    }
    d.deserialize_any(KeyList)
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
    /// `timeout`: how long one attempt may run (the job's `$timeout`).
    pub timeout: Option<Duration>,
    /// `failOnTimeout`: an attempt that runs out of time fails the job.
    pub fail_on_timeout: bool,
}

impl RetryHints {
    /// Reads the hints of a payload; `None` when `body` is not a JSON
    /// object.
    pub fn parse(body: &[u8]) -> Option<RetryHints> {
        use serde_json::Value;
        // Only these fields, as small values: the rest of the payload (the
        // serialized command above all) is skipped, not built into a tree.
        // It runs for every attempt (for the timeout), not only on failure.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields {
            max_tries: Option<Value>,
            backoff: Option<Value>,
            retry_until: Option<Value>,
            timeout: Option<Value>,
            fail_on_timeout: Option<Value>,
        }
        // A struct also reads from a JSON list, by position: not a payload.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let f: Fields = serde_json::from_slice(body).ok()?;
        let max_tries = f
            .max_tries
            .and_then(|v| v.as_u64())
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        // Laravel writes `backoff` as "1,5,10" (or a number, or null).
        let backoff = match f.backoff {
            Some(Value::String(s)) => s
                .split(',')
                .filter_map(|p| p.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .collect(),
            Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).into_iter().collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(Duration::from_secs)
                .collect(),
            _ => Vec::new(),
        };
        let retry_until = f
            .retry_until
            .and_then(|v| v.as_u64())
            .map(|t| UNIX_EPOCH + Duration::from_secs(t));
        let timeout = f
            .timeout
            .and_then(|v| v.as_u64())
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
        let fail_on_timeout = f.fail_on_timeout == Some(Value::Bool(true));
        Some(RetryHints {
            max_tries,
            backoff,
            retry_until,
            timeout,
            fail_on_timeout,
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

    /// The job's own `timeout` outranks `job_timeout_secs`, as a job's
    /// `$timeout` outranks `queue:work --timeout`; with `failOnTimeout`,
    /// running out of it fails the job for good.
    fn timeout(&self, body: &[u8], configured: Option<Duration>) -> AttemptTimeout {
        let hints = RetryHints::parse(body).unwrap_or_default();
        AttemptTimeout {
            limit: hints.timeout.or(configured),
            fails_the_job: hints.fail_on_timeout,
            from_job: hints.timeout.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_only_from_a_json_object() {
        assert_eq!(RetryHints::parse(b"[3, \"1,2\"]"), None);
        assert_eq!(RetryHints::parse(b"\"x\""), None);
        let h = RetryHints::parse(b" {\"maxTries\": 3, \"backoff\": [1, 2], \"data\": {\"command\": \"O:1:\\\"A\\\":0:{}\"}}")
            .unwrap();
        assert_eq!(h.max_tries, Some(3));
        assert_eq!(h.backoff, [Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[test]
    fn a_jobs_timeout_outranks_the_pipelines() {
        let policy = LaravelRetry::default();
        let configured = Some(Duration::from_secs(60));
        let own = br#"{"displayName":"J","job":"x","data":{},"timeout":5,"failOnTimeout":true}"#;
        assert_eq!(
            policy.timeout(own, configured),
            AttemptTimeout {
                limit: Some(Duration::from_secs(5)),
                fails_the_job: true,
                from_job: true,
            }
        );
        // None, 0 (Laravel's "no limit of its own") and garbage: the pipeline's.
        for body in [
            &br#"{"displayName":"J","job":"x","data":{},"timeout":null}"#[..],
            br#"{"displayName":"J","job":"x","data":{},"timeout":0,"failOnTimeout":false}"#,
            b"not json",
        ] {
            assert_eq!(
                policy.timeout(body, configured),
                AttemptTimeout {
                    limit: configured,
                    fails_the_job: false,
                    from_job: false,
                },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

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

    fn laravel_config(text: &str) -> Result<LaravelConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn the_laravel_table_reads_keys_as_laravel_writes_them() {
        use crate::formats::encrypted::tests::{KEY_128, KEY_256};
        let c = laravel_config(&format!("app_key = \"{KEY_256}\"")).unwrap();
        assert_eq!(c.cipher, Cipher::Aes256Cbc, "Laravel's default");
        assert!(c.previous_keys.is_empty());
        assert_eq!(c.build().unwrap().cipher(), Cipher::Aes256Cbc);
        // `APP_PREVIOUS_KEYS` is one comma-separated string.
        let c = laravel_config(&format!(
            "app_key = \"{KEY_128}\"\ncipher = \"aes-128-gcm\"\nprevious_keys = \"{KEY_128}, {KEY_128},\""
        ))
        .unwrap();
        assert_eq!(c.previous_keys, [KEY_128, KEY_128]);
        assert_eq!(c.build().unwrap().cipher(), Cipher::Aes128Gcm);
        let c = laravel_config(&format!(
            "app_key = \"{KEY_256}\"\nprevious_keys = [\"{KEY_256}\", \"{KEY_128}\"]"
        ))
        .unwrap();
        let e = c.build().unwrap_err();
        assert_eq!(e.field, "previous_keys");
        assert!(
            e.message
                .starts_with("key 2 of previous_keys is 16 bytes long"),
            "{e:?}"
        );
        let c = laravel_config("app_key = \"base64:!!\"").unwrap();
        let e = c.build().unwrap_err();
        assert_eq!(e.field, "app_key");
        assert!(
            e.message.contains("php artisan key:generate --show"),
            "{e:?}"
        );
        assert!(!format!("{c:?}").contains("!!"), "{c:?}");
        let e = laravel_config("app_key = \"k\"\ncipher = \"AES-192-CBC\"").unwrap_err();
        assert!(e.contains("AES-256-CBC (the default)"), "{e}");
        let e = laravel_config("app_key = \"k\"\nkey = \"k\"").unwrap_err();
        assert!(e.contains("unknown field `key`"), "{e}");
    }
}
