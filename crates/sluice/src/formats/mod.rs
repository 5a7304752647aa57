//! Message envelopes: how a body becomes what steps and templates see.
//!
//! | format    | `body` in templates          | also                                   |
//! |-----------|------------------------------|----------------------------------------|
//! | `raw`     | the text (bytes if not UTF-8)| —                                      |
//! | `json`    | the parsed value             | JSON pointer lookups in `extract`       |
//! | `laravel` | the parsed payload           | `job.*`: `uuid`, `displayName`, `job`, `maxTries`, `backoff`, `timeout`, `retryUntil`, `data`, and `command`: `data.command` decoded from PHP's `serialize()` ([`php`]; `job.command.reportId`, JSON pointer `/command/reportId`), decrypted first when the job is `ShouldBeEncrypted` and `[pipeline.laravel]` gives the app's key ([`encrypted`]), else absent when it cannot be decoded |
//!
//! A body that does not decode is a permanent failure: the job is
//! dead-lettered with the reason and never retried. With
//! [`[pipeline.laravel]`](laravel::LaravelConfig) keys, so is a job whose
//! encrypted command does not decrypt with any of them (none is the key it
//! was encrypted with, or its MAC is forged): the reason says which and what
//! to set, as Laravel's own worker fails such a job. A pipeline sets the keys because it reads
//! `job.command`, which such a job would not have. Without keys an
//! encrypted command stays only the string at `job.data.command`, and a
//! template that reads `job.command` fails as for any missing field.
//!
//! ```toml
//! [pipeline.laravel]
//! app_key = "${APP_KEY}"       # base64:..., as in the app's .env
//! previous_keys = "${APP_PREVIOUS_KEYS:-}"
//! cipher = "AES-256-CBC"       # the default
//! ```

pub mod encrypted;
pub mod laravel;
pub mod php;

use serde::Deserialize;

use crate::component::FieldError;
use encrypted::AppKeys;
use php::PhpValue;

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

    /// Decodes `body`, or says why it cannot be. An encrypted Laravel
    /// command stays only the string at `job.data.command`: see
    /// [`Decoder`] for one with keys.
    pub fn decode(self, body: &[u8]) -> Result<Envelope, DecodeError> {
        decode(self, None, body)
    }
}

/// How a pipeline decodes its bodies: its [`Format`] and, for `laravel`,
/// the app's keys for encrypted commands (`[pipeline.laravel]`).
///
/// ```
/// use sluice::formats::{Decoder, Format};
///
/// let decoder = Decoder::from(Format::Laravel);
/// let env = decoder.decode(br#"{"displayName":"J","job":"x","data":{}}"#)?;
/// assert_eq!(env.json().unwrap()["displayName"], "J");
/// # Ok::<(), sluice::formats::DecodeError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    format: Format,
    app_keys: Option<AppKeys>,
}

impl From<Format> for Decoder {
    fn from(format: Format) -> Decoder {
        Decoder {
            format,
            app_keys: None,
        }
    }
}

impl Decoder {
    /// The decoder of a pipeline whose source reads `format`, with its
    /// `[pipeline.laravel]` table if it has one. The error's field is
    /// relative to the pipeline (`laravel.app_key`) and shows no key.
    pub fn build(
        format: Format,
        laravel: Option<&laravel::LaravelConfig>,
    ) -> Result<Decoder, FieldError> {
        let decoder = Decoder::from(format);
        match (laravel, format) {
            (None, _) => Ok(decoder),
            (Some(l), Format::Laravel) => l
                .build()
                .map(|keys| decoder.with_app_keys(keys))
                .map_err(|e| FieldError::new(format!("laravel.{}", e.field), e.message)),
            (Some(_), other) => Err(FieldError::new(
                "laravel",
                format!(
                    "the source's format is \"{}\": [pipeline.laravel] is for format = \"laravel\" \
                     (set the source's format, or remove the table)",
                    other.name()
                ),
            )),
        }
    }

    /// The same decoder, decrypting Laravel's encrypted commands with
    /// `keys`.
    pub fn with_app_keys(mut self, keys: AppKeys) -> Decoder {
        self.app_keys = Some(keys);
        self
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Decodes `body`, or says why it cannot be.
    pub fn decode(&self, body: &[u8]) -> Result<Envelope, DecodeError> {
        decode(self.format, self.app_keys.as_ref(), body)
    }
}

fn decode(format: Format, keys: Option<&AppKeys>, body: &[u8]) -> Result<Envelope, DecodeError> {
    match format {
        Format::Raw => Ok(Envelope::Raw),
        Format::Json => parse_json(body).map(Envelope::Json),
        Format::Laravel => {
            let mut v = parse_json(body)?;
            laravel::check(&v)?;
            let command = match v["data"].get("command").and_then(|c| c.as_str()) {
                Some(c) => command(c, keys)?,
                None => None,
            };
            if let (Some(command), Some(obj)) = (command, v.as_object_mut()) {
                obj.insert("command".into(), command.to_json());
            }
            Ok(Envelope::Laravel(v))
        }
    }
}

/// The job object of a Laravel payload's `data.command`, decoded from
/// PHP's serialize(); `None` (it stays only the string at
/// `job.data.command`) when it cannot be and there are no keys to decrypt
/// it with. With keys, a command that is not `O:` (what Laravel's
/// `CallQueuedHandler` decrypts) must decrypt: else the job fails.
fn command(command: &str, keys: Option<&AppKeys>) -> Result<Option<PhpValue>, DecodeError> {
    if let Ok(v) = php::unserialize(command.as_bytes()) {
        return Ok(Some(v));
    }
    let Some(keys) = keys.filter(|_| !command.starts_with("O:")) else {
        return Ok(None);
    };
    let plain = keys
        .decrypt(command)
        .map_err(DecodeError::EncryptedCommand)?;
    // `encrypt(serialize($job))` serializes once more: the plain text is
    // a PHP string holding the serialized job.
    let v = php::unserialize(&plain).map_err(DecodeError::DecryptedCommand)?;
    match v {
        PhpValue::String(inner) => php::unserialize(&inner)
            .map(Some)
            .map_err(DecodeError::DecryptedCommand),
        v => Ok(Some(v)),
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
    /// Only with `[pipeline.laravel]` keys.
    #[error("the job's command is encrypted and {0}")]
    EncryptedCommand(encrypted::DecryptError),
    #[error("the job's command decrypts, but not to PHP's serialize() output: {0}")]
    DecryptedCommand(php::UnserializeError),
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

    fn decoder(cipher: encrypted::Cipher, key: &str) -> Decoder {
        let config = laravel::LaravelConfig {
            app_key: key.into(),
            previous_keys: Vec::new(),
            cipher,
        };
        Decoder::build(Format::Laravel, Some(&config)).unwrap()
    }

    #[test]
    fn an_encrypted_command_decrypts_into_job_command_with_the_apps_key() {
        use encrypted::Cipher;
        use encrypted::tests::{KEY_256, PAYLOAD_256_CBC};
        let env = decoder(Cipher::Aes256Cbc, KEY_256)
            .decode(PAYLOAD_256_CBC.as_bytes())
            .unwrap();
        let v = env.json().unwrap();
        assert_eq!(v["command"]["reportId"], 42);
        assert_eq!(v["command"]["format"], "pdf");
        assert_eq!(v["command"]["__class"], "App\\Jobs\\SendReport");
        // Without keys: as before, only the string.
        let env = Format::Laravel.decode(PAYLOAD_256_CBC.as_bytes()).unwrap();
        assert!(env.json().unwrap().get("command").is_none());
        // A plain command still decodes, and an unreadable `O:` one is
        // left alone as Laravel would unserialize it, not decrypt it.
        let plain =
            br#"{"displayName":"J","job":"x","data":{"command":"O:1:\"J\":1:{s:1:\"a\";i:1;}"}}"#;
        let env = decoder(Cipher::Aes256Cbc, KEY_256).decode(plain).unwrap();
        assert_eq!(env.json().unwrap()["command"]["a"], 1);
        let broken = br#"{"displayName":"J","job":"x","data":{"command":"O:1:\"J\""}}"#;
        let env = decoder(Cipher::Aes256Cbc, KEY_256).decode(broken).unwrap();
        assert!(env.json().unwrap().get("command").is_none());
    }

    #[test]
    fn a_command_that_does_not_decrypt_fails_the_job_with_the_fix() {
        use encrypted::Cipher;
        use encrypted::tests::PAYLOAD_256_CBC;
        let wrong = format!("base64:{}", "A".repeat(43) + "=");
        let e = decoder(Cipher::Aes256Cbc, &wrong)
            .decode(PAYLOAD_256_CBC.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "the job's command is encrypted and the MAC does not match any app_key (1 tried): \
                 set [pipeline.laravel] app_key to the app's APP_KEY"
            ),
            "{e}"
        );
        assert!(!e.contains(&"A".repeat(8)), "{e}");
        let garbage = br#"{"displayName":"J","job":"x","data":{"command":"not encrypted"}}"#;
        let e = decoder(Cipher::Aes256Cbc, &wrong)
            .decode(garbage)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in Laravel's encrypted format"), "{e}");
    }

    #[test]
    fn laravel_keys_are_for_laravel_pipelines_and_checked() {
        let config = |key: &str| laravel::LaravelConfig {
            app_key: key.into(),
            previous_keys: Vec::new(),
            cipher: encrypted::Cipher::Aes256Cbc,
        };
        let ok = config(encrypted::tests::KEY_256);
        let e = Decoder::build(Format::Json, Some(&ok)).unwrap_err();
        assert_eq!(e.field, "laravel");
        assert!(e.message.contains("format = \"laravel\""), "{e:?}");
        let e =
            Decoder::build(Format::Laravel, Some(&config(encrypted::tests::KEY_128))).unwrap_err();
        assert_eq!(e.field, "laravel.app_key");
        assert!(
            e.message
                .contains("16 bytes long, but AES-256-CBC needs a 32-byte key"),
            "{e:?}"
        );
    }
}
