//! Message envelopes: how a body becomes what steps and templates see.
//!
//! | format    | `body` in templates          | also                                   |
//! |-----------|------------------------------|----------------------------------------|
//! | `raw`     | the text (bytes if not UTF-8)| —                                      |
//! | `json`    | the parsed value             | JSON pointer lookups in `extract`       |
//! | `laravel` | the parsed payload           | `job.*`: `uuid`, `displayName`, `job`, `maxTries`, `backoff`, `timeout`, `retryUntil`, `data` |
//!
//! A body that does not decode is a permanent failure: the job is
//! dead-lettered with the reason and never retried.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The envelope of a pipeline's messages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Bytes as they are.
    Raw,
    /// A JSON document.
    #[default]
    Json,
    /// A Laravel queue payload (JSON with `displayName`, `job`, `data`...).
    Laravel,
}

/// A decoded body.
#[derive(Clone, Debug)]
pub enum Envelope {
    Raw,
    Json(serde_json::Value),
    Laravel(serde_json::Value),
}

/// Retry settings a message carries (Laravel's `maxTries`, `backoff`,
/// `retryUntil`); they apply where the config does not set its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryHints {
    /// Attempts in all; `Some(0)` means unlimited, as in Laravel.
    pub max_tries: Option<u32>,
    /// Delay before retry n is `backoff[n - 1]`, the last one repeating.
    pub backoff: Vec<Duration>,
    /// No retry after this time.
    pub retry_until: Option<SystemTime>,
}

impl Envelope {
    /// The retry settings the payload carries, for Laravel jobs.
    pub fn retry_hints(&self) -> Option<RetryHints> {
        let Envelope::Laravel(v) = self else {
            return None;
        };
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

    /// The parsed JSON, for `json` and `laravel` bodies.
    pub fn json(&self) -> Option<&serde_json::Value> {
        match self {
            Envelope::Raw => None,
            Envelope::Json(v) | Envelope::Laravel(v) => Some(v),
        }
    }
}

impl Format {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Laravel => "laravel",
        }
    }

    /// Decodes `body`, or says why it cannot be.
    pub fn decode(self, body: &[u8]) -> Result<Envelope, String> {
        match self {
            Format::Raw => Ok(Envelope::Raw),
            Format::Json => parse_json(body).map(Envelope::Json),
            Format::Laravel => {
                let v = parse_json(body)?;
                check_laravel(&v)?;
                Ok(Envelope::Laravel(v))
            }
        }
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, String> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(format!(
            "body is not valid UTF-8 (bad byte at offset {}); JSON must be UTF-8 \
             (use format = \"raw\" for binary bodies)",
            e.valid_up_to()
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))
}

/// The fields every Laravel queue payload has (`Queue::createPayloadArray`).
fn check_laravel(v: &serde_json::Value) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err("body is not a Laravel job payload: expected a JSON object".into());
    };
    for field in ["displayName", "job", "data"] {
        if !obj.contains_key(field) {
            return Err(format!(
                "body is not a Laravel job payload: missing `{field}` \
                 (is the queue's format really \"laravel\"?)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_say_what_is_wrong() {
        let e = Format::Json.decode(b"{\"a\": ").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = Format::Json.decode(b"{\"a\": \"\xff\"}").unwrap_err();
        assert!(
            e.contains("not valid UTF-8") && e.contains("offset 7"),
            "{e}"
        );
    }

    #[test]
    fn laravel_retry_hints() {
        let env = Format::Laravel
            .decode(br#"{"displayName":"J","job":"x","data":{},"maxTries":4,"backoff":"1,5,10","retryUntil":2000000000}"#)
            .unwrap();
        let h = env.retry_hints().unwrap();
        assert_eq!(h.max_tries, Some(4));
        assert_eq!(h.backoff, [1, 5, 10].map(Duration::from_secs));
        assert_eq!(
            h.retry_until,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        let env = Format::Laravel
            .decode(br#"{"displayName":"J","job":"x","data":{},"maxTries":null,"backoff":null}"#)
            .unwrap();
        assert_eq!(env.retry_hints().unwrap(), RetryHints::default());
        assert!(Format::Json.decode(b"{}").unwrap().retry_hints().is_none());
    }

    #[test]
    fn raw_accepts_anything() {
        assert!(matches!(Format::Raw.decode(b"\xff\x00"), Ok(Envelope::Raw)));
    }

    #[test]
    fn laravel_needs_its_envelope_fields() {
        let ok = br#"{"uuid":"u","displayName":"App\\Jobs\\Send","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":3,"data":{"commandName":"App\\Jobs\\Send","command":"O:..."}}"#;
        let env = Format::Laravel.decode(ok).unwrap();
        assert_eq!(env.json().unwrap()["maxTries"], 3);
        let e = Format::Laravel.decode(br#"{"id": 1}"#).unwrap_err();
        assert!(e.contains("missing `displayName`"), "{e}");
    }
}
