//! Message envelopes: how a body becomes what steps and templates see.
//!
//! | format    | `body` in templates          | also                                   |
//! |-----------|------------------------------|----------------------------------------|
//! | `raw`     | the text (bytes if not UTF-8)| —                                      |
//! | `json`    | the parsed value             | JSON pointer lookups in `extract`       |
//! | `laravel` | the parsed payload           | `job.*`: `uuid`, `displayName`, `job`, `maxTries`, `backoff`, `timeout`, `retryUntil`, `data`, and `command`: `data.command` decoded from PHP's `serialize()` ([`php`]; `job.command.reportId`, JSON pointer `/command/reportId`), absent when it cannot be (an encrypted command) |
//!
//! A body that does not decode is a permanent failure: the job is
//! dead-lettered with the reason and never retried.

pub mod laravel;
pub mod php;

use serde::Deserialize;

pub use crate::job::Envelope;

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
    pub fn decode(self, body: &[u8]) -> Result<Envelope, DecodeError> {
        match self {
            Format::Raw => Ok(Envelope::Raw),
            Format::Json => parse_json(body).map(Envelope::Json),
            Format::Laravel => {
                let mut v = parse_json(body)?;
                laravel::check(&v)?;
                // The job object, decoded from PHP's serialize(), as
                // `job.command` (an encrypted or unreadable command stays
                // only the string at `job.data.command`).
                let command = v["data"]
                    .get("command")
                    .and_then(|c| c.as_str())
                    .and_then(|c| php::unserialize(c.as_bytes()).ok());
                if let (Some(command), Some(obj)) = (command, v.as_object_mut()) {
                    obj.insert("command".into(), command.to_json());
                }
                Ok(Envelope::Laravel(v))
            }
        }
    }
}

/// Why a body does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "body is not valid UTF-8 (bad byte at offset {valid_up_to}); JSON must be UTF-8 \
         (use format = \"raw\" for binary bodies)"
    )]
    NotUtf8 { valid_up_to: usize },
    #[error("body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not a Laravel job payload: {0} (is the queue's format really \"laravel\"?)")]
    NotLaravel(&'static str),
}

pub(crate) fn parse_json(body: &[u8]) -> Result<serde_json::Value, DecodeError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(DecodeError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        });
    }
    serde_json::from_slice(body).map_err(DecodeError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_say_what_is_wrong() {
        let e = Format::Json.decode(b"{\"a\": ").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = Format::Json
            .decode(b"{\"a\": \"\xff\"}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not valid UTF-8") && e.contains("offset 7"),
            "{e}"
        );
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
        let e = Format::Laravel
            .decode(br#"{"id": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing `displayName`"), "{e}");
    }

    #[test]
    fn a_laravel_command_must_be_a_string() {
        let payload = |command: &str| {
            format!(
                r#"{{"displayName":"J","job":"x","data":{{"commandName":"J","command":{command}}}}}"#
            )
        };
        for (command, says) in [
            (
                r#"{"file": "report-1.json"}"#,
                "`data.command` is an object",
            ),
            (r#"["report-1.json"]"#, "`data.command` is a list"),
            ("42", "`data.command` is not a string"),
            ("null", "`data.command` is not a string"),
        ] {
            let e = Format::Laravel
                .decode(payload(command).as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(says) && e.contains("not a Laravel job payload"),
                "{command}: {e}"
            );
        }
        assert!(
            Format::Laravel
                .decode(payload(r#""O:1:\"J\":0:{}""#).as_bytes())
                .is_ok()
        );
        // The serialized command, decoded: templates and pointers read
        // its properties.
        let sent = br#"{"displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","data":{"commandName":"App\\Jobs\\SendReport","command":"O:19:\"App\\Jobs\\SendReport\":2:{s:4:\"file\";s:14:\"report-42.json\";s:8:\"\u0000*\u0000tries\";i:3;}"}}"#;
        let env = Format::Laravel.decode(sent).unwrap();
        let v = env.json().unwrap();
        assert_eq!(v["command"]["file"], "report-42.json");
        assert_eq!(
            v["command"]["tries"], 3,
            "a protected property, by its plain name"
        );
        assert_eq!(v["command"]["__class"], "App\\Jobs\\SendReport");
        // An encrypted command (ShouldBeEncrypted) is not PHP's format: no
        // `command`, the string stays where it was.
        let encrypted = br#"{"displayName":"J","job":"x","data":{"commandName":"J","command":"eyJpdiI6IjEyMyJ9"}}"#;
        let env = Format::Laravel.decode(encrypted).unwrap();
        assert!(env.json().unwrap().get("command").is_none());
        // Old-style jobs (`Queue::push('Job@handle', $data)`) have no command.
        let old = br#"{"displayName":"Job@handle","job":"Job@handle","data":{"a":1}}"#;
        assert!(Format::Laravel.decode(old).is_ok());
    }
}
