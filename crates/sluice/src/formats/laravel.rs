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
//! Before it runs, a job already past its limits is failed without running
//! ([`RetryPolicy::before_attempt`]), as Laravel's worker does
//! (`markJobAsFailedIfAlreadyExceedsMaxAttempts`): a job whose `retryUntil`
//! has passed, or whose attempts (counting the one about to start: a worker
//! that crashed holding the job spent one) exceed its `maxTries`. That is
//! what ends a poison job that kills every worker. The reason is Laravel's
//! `MaxAttemptsExceededException` message. `maxTries` is read as PHP
//! compares it: `0` (the integer) is unlimited; a number or a numeric
//! string (`"3"`) is the limit; a limit below 1 (`-1`, `"0"`) fails the job
//! before its first run, as in Laravel; anything else is dead-lettered
//! with a reason rather than guessed at.
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
    /// `maxTries`; absent or null: None.
    pub max_tries: Option<MaxTries>,
    /// `displayName`, which Laravel names the job by in its failures.
    pub display_name: Option<String>,
    /// Delay before retry n is `backoff[n - 1]`, the last one repeating.
    pub backoff: Vec<Duration>,
    /// No retry after this time.
    pub retry_until: Option<SystemTime>,
    /// `timeout`: how long one attempt may run (the job's `$timeout`).
    pub timeout: Option<Duration>,
    /// `failOnTimeout`: an attempt that runs out of time fails the job.
    pub fail_on_timeout: bool,
}

/// A payload's `maxTries`, as Laravel's worker compares it.
#[derive(Clone, Debug, PartialEq)]
pub enum MaxTries {
    /// The integer `0`: no limit.
    Unlimited,
    /// A number or a numeric string: at most this many attempts (a limit
    /// below 1 allows none).
    Limit(f64),
    /// Neither: the value as written.
    NotANumber(String),
}

impl MaxTries {
    fn read(v: serde_json::Value) -> Option<MaxTries> {
        use serde_json::Value;
        Some(match v {
            Value::Null => return None,
            Value::Number(n) if n.as_i64() == Some(0) => MaxTries::Unlimited,
            Value::Number(n) => MaxTries::Limit(n.as_f64().unwrap_or(f64::NAN)),
            // PHP reads a numeric string as its number, whitespace around
            // it allowed.
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => MaxTries::Limit(n),
                _ => MaxTries::NotANumber(format!("{s:?}")),
            },
            other => MaxTries::NotANumber(other.to_string()),
        })
    }
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
            display_name: Option<String>,
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
        let max_tries = f.max_tries.and_then(MaxTries::read);
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
            display_name: f.display_name,
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

impl LaravelRetry {
    /// The most attempts allowed, and the setting that says so: the
    /// config's `retry.max_attempts`, else the job's `maxTries`, else the
    /// default. None: unlimited.
    fn limit(&self, hints: &RetryHints) -> Result<(Option<f64>, &'static str), String> {
        Ok(match (self.max_attempts, &hints.max_tries) {
            (Some(n), _) => (Some(f64::from(n)), "retry.max_attempts"),
            (None, Some(MaxTries::Unlimited)) => (None, "the job's maxTries"),
            (None, Some(MaxTries::Limit(n))) => (Some(*n), "the job's maxTries"),
            (None, Some(MaxTries::NotANumber(v))) => {
                return Err(format!(
                    "the job's maxTries is {v}, not a number: dispatch it with an integer \
                     $tries (0 for no limit)"
                ));
            }
            (None, None) => (
                Some(f64::from(Retry::default().max_attempts)),
                "retry.max_attempts",
            ),
        })
    }
}

impl RetryPolicy for LaravelRetry {
    /// Laravel's `markJobAsFailedIfAlreadyExceedsMaxAttempts`: with a
    /// `retryUntil`, only its time counts; else `attempt` over the limit.
    fn before_attempt(&self, attempt: u32, body: &[u8]) -> Option<String> {
        let hints = RetryHints::parse(body)?;
        let exceeded = match hints.retry_until {
            Some(until) => SystemTime::now() > until,
            None => match self.limit(&hints) {
                Err(reason) => return Some(reason),
                Ok((None, _)) => false,
                Ok((Some(max), _)) => f64::from(attempt) > max,
            },
        };
        exceeded.then(|| {
            let name = hints.display_name.as_deref().unwrap_or("The job");
            format!(
                "{name} has been attempted too many times or run too long. The job may have \
                 previously timed out. (attempt {attempt}; a worker that stopped while \
                 running it counts one)"
            )
        })
    }

    fn on_failure(&self, attempt: u32, body: &[u8], error: JobError) -> Decision {
        let fallback = Retry::default();
        let hints = RetryHints::parse(body).unwrap_or_default();
        // As in Laravel: while a job's retryUntil is ahead it is retried
        // whatever its attempts; once passed, it is not retried again.
        let (max, why_max) = if hints.retry_until.is_some() {
            (u32::MAX, "the job's retryUntil")
        } else {
            match self.limit(&hints) {
                Err(reason) => return Decision::DeadLetter { reason },
                Ok((None, why)) => (u32::MAX, why),
                // A limit below 1 allows no attempt at all.
                Ok((Some(n), why)) => (n.clamp(0.0, f64::from(u32::MAX)).ceil() as u32, why),
            }
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
        assert_eq!(h.max_tries, Some(MaxTries::Limit(3.0)));
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
        assert_eq!(h.max_tries, Some(MaxTries::Limit(4.0)));
        assert_eq!(h.backoff, [1, 5, 10].map(Duration::from_secs));
        assert_eq!(
            h.retry_until,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        let h = RetryHints::parse(
            br#"{"displayName":"J","job":"x","data":{},"maxTries":null,"backoff":null}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            RetryHints {
                display_name: Some("J".into()),
                ..RetryHints::default()
            }
        );
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

    /// Laravel's worker fails, without running it, a job already past its
    /// limits (`markJobAsFailedIfAlreadyExceedsMaxAttempts`), with PHP's
    /// reading of `maxTries`.
    #[test]
    fn a_job_past_its_limits_is_failed_before_it_runs() {
        let p = LaravelRetry::default();
        let body = |max_tries: &str| {
            format!(
                r#"{{"displayName":"App\\Jobs\\J","job":"x","data":{{}},"maxTries":{max_tries}}}"#
            )
        };
        let runs = |attempt, max_tries: &str| p.before_attempt(attempt, body(max_tries).as_bytes());
        assert_eq!(runs(1, "1"), None);
        let reason = runs(2, "1").expect("attempt 2 of $tries = 1 is not run");
        assert!(
            reason.starts_with("App\\Jobs\\J has been attempted too many times or run too long."),
            "{reason}"
        );
        assert_eq!(runs(3, "\"3\""), None, "a numeric string is its number");
        assert!(runs(4, "\" 3\"").is_some());
        assert_eq!(runs(1000, "0"), None, "0 is unlimited");
        assert!(
            runs(1, "-1").is_some(),
            "Laravel runs no attempt of maxTries -1"
        );
        assert!(
            runs(1, "\"0\"").is_some(),
            "only the integer 0 is unlimited"
        );
        assert_eq!(runs(5, "null"), None, "the default, 5");
        assert!(runs(6, "null").is_some());
        let reason = runs(1, "\"three\"").expect("not a number");
        assert!(
            reason.contains(r#"maxTries is "three", not a number"#),
            "{reason}"
        );
        assert!(matches!(
            p.on_failure(1, body("\"x\"").as_bytes(), JobError::retry("503")),
            Decision::DeadLetter { .. }
        ));
        // The config's max_attempts outranks maxTries.
        let configured = LaravelRetry {
            max_attempts: Some(3),
            backoff: None,
        };
        assert_eq!(configured.before_attempt(3, body("1").as_bytes()), None);
        assert!(configured.before_attempt(4, body("1").as_bytes()).is_some());
        // With a retryUntil only its time counts.
        let until = |secs: i64| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            format!(
                r#"{{"displayName":"J","job":"x","data":{{}},"maxTries":1,"retryUntil":{}}}"#,
                now + secs
            )
        };
        assert_eq!(p.before_attempt(9, until(3600).as_bytes()), None);
        assert!(p.before_attempt(1, until(-5).as_bytes()).is_some());
        // Not a payload: the decoder's to refuse, not this.
        assert_eq!(p.before_attempt(9, b"[1]"), None);
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
