//! `[pipeline.source] type = "redis"`: the config, its defaults and its
//! checks.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::RedisSource;
use super::scripts::Keys;
use crate::formats::Format;
use crate::sources::{FieldError, Source, SourceConfig, SourceContext, SourceError};

/// `type = "redis"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// The server: `redis://[user:password@]host:port/db`, or `rediss://`
    /// for TLS (the server's certificate checked against the system's
    /// roots, or `tls_ca_file`). Default `redis://127.0.0.1:6379/0`.
    #[serde(default = "default_url")]
    pub url: String,
    /// With `rediss://`: a PEM file of the certificate authorities to trust
    /// instead of the system's (a private CA, a self-signed server).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The queue's name, as `onQueue('reports')` gives it. Default
    /// `default`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// The prefix of every key: the app's Redis `options.prefix`, which
    /// Laravel's default config sets to `{app name}_database_` (e.g.
    /// `laravel_database_`). Default none.
    #[serde(default)]
    pub prefix: String,
    /// How long a popped job stays reserved before any consumer may
    /// migrate it back and run it again: the queue connection's
    /// `retry_after`. sluice extends it while the job runs. Default 90,
    /// Laravel's.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// When the queue is empty, wait this long for a job (`BLPOP` on
    /// `:notify`) before looking again: the connection's `block_for`.
    /// Laravel's default (none) polls every `--sleep` seconds instead; a
    /// blocking wait answers at once and costs nothing. 1 to 60. Default 5.
    #[serde(default = "default_block_for_secs")]
    pub block_for_secs: u64,
    /// The envelope of each job. Default `laravel`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// The list failed jobs are pushed to (with the prefix), one JSON
    /// record each. Default `sluice:failed:{queue}`.
    pub dead_letter_list: Option<String>,
    /// A JSON pointer (`/data/user_id`) to each job's ordering key: jobs
    /// with the same key run one at a time, in queue order, in this
    /// process. Default none.
    pub ordering_key: Option<String>,
}

fn default_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn default_queue() -> String {
    "default".into()
}
fn default_retry_after_secs() -> u64 {
    90
}
fn default_block_for_secs() -> u64 {
    5
}
fn default_format() -> Format {
    Format::Laravel
}

impl RedisSourceConfig {
    /// A config for `queue` on the server at `url`, every other field at
    /// its default.
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> RedisSourceConfig {
        RedisSourceConfig {
            url: url.into(),
            queue: queue.into(),
            prefix: String::new(),
            retry_after_secs: default_retry_after_secs(),
            block_for_secs: default_block_for_secs(),
            format: default_format(),
            dead_letter_list: None,
            ordering_key: None,
            tls_ca_file: None,
        }
    }

    /// The queue's keys.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix, &self.queue)
    }

    /// The dead-letter list's key, prefix included.
    pub fn dead_letter_key(&self) -> String {
        match &self.dead_letter_list {
            Some(l) => format!("{}{l}", self.prefix),
            None => format!("{}sluice:failed:{}", self.prefix, self.queue),
        }
    }

    /// Checks what can be checked without connecting.
    pub fn check(&self) -> Result<(), FieldError> {
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return Err(FieldError::new(
                "url",
                format!("not a Redis URL ({e}): write it like \"redis://127.0.0.1:6379/0\""),
            ));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !self.url.starts_with("rediss://") {
                return Err(FieldError::new(
                    "tls_ca_file",
                    "set, but the url is not rediss://: TLS needs a rediss:// url",
                ));
            }
            if let Err(e) = std::fs::read(ca) {
                return Err(FieldError::new(
                    "tls_ca_file",
                    format!("cannot read `{}`: {e}", ca.display()),
                ));
            }
        }
        if self.queue.is_empty() {
            return Err(FieldError::new("queue", "empty: name the Laravel queue"));
        }
        if self.retry_after_secs == 0 {
            return Err(FieldError::new(
                "retry_after_secs",
                "must be at least 1: a job reserved for 0 s is handed to the next consumer at once",
            ));
        }
        if !(1..=60).contains(&self.block_for_secs) {
            return Err(FieldError::new("block_for_secs", "must be 1 to 60"));
        }
        if matches!(&self.dead_letter_list, Some(l) if l.is_empty()) {
            return Err(FieldError::new(
                "dead_letter_list",
                "empty: name a list, or leave it out for sluice:failed:{queue}",
            ));
        }
        if let Some(p) = &self.ordering_key {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(FieldError::new(
                    "ordering_key",
                    format!("`{p}` is not a JSON pointer: write it like \"/data/user_id\""),
                ));
            }
        }
        Ok(())
    }
}

impl SourceConfig for RedisSourceConfig {
    fn format(&self) -> Format {
        self.format
    }

    fn check(&self) -> Result<(), FieldError> {
        RedisSourceConfig::check(self)
    }

    fn build<'a>(
        &'a self,
        cx: &'a SourceContext,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move { Ok(Box::new(RedisSource::open(self, cx).await?) as Box<dyn Source>) })
    }

    fn laravel_queue(&self) -> Option<(String, String)> {
        // RedisJob's getQueue(): the name, without prefix or `queues:`.
        Some(("redis".into(), self.queue.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_laravels() {
        let c: RedisSourceConfig = toml::from_str("").unwrap();
        assert_eq!(c.url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.queue, "default");
        assert_eq!(c.prefix, "");
        assert_eq!(c.retry_after_secs, 90);
        assert_eq!(c.block_for_secs, 5);
        assert_eq!(c.format, Format::Laravel);
        assert_eq!(c.dead_letter_key(), "sluice:failed:default");
        c.check().unwrap();
        let c: RedisSourceConfig =
            toml::from_str("prefix = 'laravel_database_'\ndead_letter_list = 'failed'").unwrap();
        assert_eq!(c.dead_letter_key(), "laravel_database_failed");
        assert_eq!(c.keys().queue, "laravel_database_queues:default");
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(toml::from_str::<RedisSourceConfig>("nope = 1").is_err());
        for (toml, field) in [
            ("url = 'http://x'", "url"),
            ("queue = ''", "queue"),
            ("retry_after_secs = 0", "retry_after_secs"),
            ("block_for_secs = 0", "block_for_secs"),
            ("block_for_secs = 61", "block_for_secs"),
            ("dead_letter_list = ''", "dead_letter_list"),
            ("ordering_key = 'user'", "ordering_key"),
        ] {
            let c: RedisSourceConfig = toml::from_str(toml).unwrap();
            let e = c.check().expect_err(toml);
            assert_eq!(e.field, field, "{toml}: {e:?}");
        }
    }
}
