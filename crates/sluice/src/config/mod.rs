//! The TOML config: what a user writes, checked before anything connects.
//!
//! ```toml
//! shutdown_timeout_secs = 30
//!
//! [[pipeline]]
//! name = "webhooks"
//! concurrency = 500
//! [pipeline.source]
//! type = "file"
//! path = "users.ndjson"
//! [[pipeline.step]]
//! type = "http"
//! url = "https://hooks.example.com/{{ body.user_id }}"
//! [pipeline.retry]
//! max_attempts = 5
//! backoff = { initial_ms = 500, max_ms = 60000, jitter = true }
//! ```
//!
//! Unknown fields are errors. Every error names the file, the line and the
//! field. `${VAR}` anywhere in the file is replaced from the environment
//! (see [`env`]).

pub mod env;
mod locate;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sluice_pool::Rate;

pub use locate::FieldPath;

use crate::formats::Format;
use crate::runtime::pipeline::Pipeline;
use crate::runtime::retry::Backoff;
use crate::sources::file::FileSourceConfig;
use crate::sources::sqs::SqsSourceConfig;
use crate::steps::{BuildContext, FieldError, StepConfig};

/// A whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// After SIGTERM/SIGINT, how long in-flight jobs get to finish before
    /// the rest are released back to their source. Default 30.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// The pipelines; at least one.
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<PipelineConfig>,
}

/// `[[pipeline]]`: one source, its steps, and how to run them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline in logs and metrics.
    pub name: String,
    /// Jobs in flight at once. Default 100.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Messages with a larger body are dead-lettered unread. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// A job running longer is stopped and retried. Default 60.
    #[serde(default = "default_job_timeout_secs")]
    pub job_timeout_secs: u64,
    /// Where jobs come from.
    pub source: SourceConfig,
    /// What each job does, in order.
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
    /// Retries and backoff.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `[pipeline.source]`, by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Newline-delimited jobs from a file or stdin.
    File(FileSourceConfig),
    /// An Amazon SQS queue.
    Sqs(SqsSourceConfig),
}

impl SourceConfig {
    pub fn format(&self) -> Format {
        match self {
            SourceConfig::File(c) => c.format,
            SourceConfig::Sqs(c) => c.format,
        }
    }
}

/// `[pipeline.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; then the job is dead-lettered.
    /// Default 5, or a Laravel job's own `maxTries` when it has one.
    pub max_attempts: Option<u32>,
    /// The delay before each retry. Default below, or a Laravel job's own
    /// `backoff` list when it has one.
    pub backoff: Option<BackoffConfig>,
}

/// Exponential backoff: `initial_ms`, times `multiplier` per attempt, at
/// most `max_ms`; with `jitter`, a random point in the upper half of that.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Default 500.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Default 60000.
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Default 2.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Default true: spreads retries of jobs that failed together.
    #[serde(default = "default_true")]
    pub jitter: bool,
}

impl Default for BackoffConfig {
    fn default() -> BackoffConfig {
        BackoffConfig {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            multiplier: default_multiplier(),
            jitter: true,
        }
    }
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}
fn default_concurrency() -> usize {
    100
}
fn default_max_body_bytes() -> u64 {
    1 << 20
}
fn default_job_timeout_secs() -> u64 {
    60
}
fn default_max_attempts() -> u32 {
    5
}
fn default_initial_ms() -> u64 {
    500
}
fn default_max_ms() -> u64 {
    60_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_true() -> bool {
    true
}

/// A config that cannot be used: where, which field, and what to do.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A parsed config with the text it came from, to locate later errors.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    file: String,
    text: String,
}

/// Reads, substitutes and parses the config at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        field: None,
        message: format!("cannot read the config: {e}"),
    })?;
    parse(&file, &text, |k| std::env::var(k).ok())
}

/// Parses config `text`; `file` names it in errors; `lookup` reads
/// environment variables.
pub fn parse(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let err = |line, field, message| ConfigError {
        file: file.to_owned(),
        line,
        field,
        message,
    };
    let text = env::substitute(text, lookup).map_err(|(line, msg)| err(Some(line), None, msg))?;
    // toml's own message quotes the offending line, which may hold a
    // substituted secret: keep only its message and position.
    let config: Config = toml::from_str(&text).map_err(|e| {
        let message = e.message().trim().to_owned();
        let Some(span) = e.span() else {
            return err(None, None, message);
        };
        // serde reads a tagged table (a step, a source) whole, so its errors
        // point at the table: name the table, and find the field's own line.
        let (table, header_line) = locate::table_at(&text, span.start);
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let (field, line) = match named {
            Some(name) => (
                table.clone().key(name),
                locate::key_line(&text, header_line, name)
                    .unwrap_or(locate::line_at(&text, span.start)),
            ),
            None => (table, locate::line_at(&text, span.start)),
        };
        let field = field.to_string();
        err(Some(line), (!field.is_empty()).then_some(field), message)
    })?;
    if config.pipelines.is_empty() {
        return Err(err(
            None,
            Some("pipeline".into()),
            "no pipeline: add a [[pipeline]] table".into(),
        ));
    }
    Ok(Loaded {
        config,
        file: file.to_owned(),
        text,
    })
}

impl Loaded {
    /// The error for `path`, with its line.
    pub fn error_at(&self, path: &FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: locate::line_of(&self.text, path),
            field: Some(path.to_string()),
            message: message.into(),
        }
    }

    /// Checks everything that can be checked without connecting, and builds
    /// the pipelines.
    pub fn build(&self) -> Result<Vec<Pipeline>, ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, p) in self.config.pipelines.iter().enumerate() {
            let at = FieldPath::default().key("pipeline").index(i);
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(self.error_at(
                    &at.clone().key("name"),
                    format!(
                        "pipeline names must be unique and non-empty; `{}` is not",
                        p.name
                    ),
                ));
            }
            if p.concurrency == 0 {
                return Err(self.error_at(&at.clone().key("concurrency"), "must be at least 1"));
            }
            if p.job_timeout_secs == 0 {
                return Err(
                    self.error_at(&at.clone().key("job_timeout_secs"), "must be at least 1")
                );
            }
            if p.steps.is_empty() {
                return Err(self.error_at(
                    &at.clone().key("step"),
                    "the pipeline has no steps: add [[pipeline.step]] tables",
                ));
            }
            let source_at = at.clone().key("source");
            let checked = match &p.source {
                SourceConfig::File(c) => c.check(),
                SourceConfig::Sqs(c) => c.check(),
            };
            checked.map_err(|e| self.error_at(&source_at.clone().key(&e.field), e.message))?;
            let cx = BuildContext {
                concurrency: p.concurrency,
            };
            let mut steps = Vec::new();
            for (j, s) in p.steps.iter().enumerate() {
                let step_at = at.clone().key("step").index(j);
                let step = s.build(&cx).map_err(|FieldError { field, message }| {
                    self.error_at(&step_at.clone().key(&field), message)
                })?;
                steps.push(step);
            }
            let retry_at = at.clone().key("retry");
            if p.retry.max_attempts == Some(0) {
                return Err(self.error_at(&retry_at.key("max_attempts"), "must be at least 1"));
            }
            let default_backoff = BackoffConfig::default();
            let b = p.retry.backoff.as_ref().unwrap_or(&default_backoff);
            if !(b.multiplier >= 1.0 && b.multiplier.is_finite()) || b.initial_ms > b.max_ms {
                return Err(self.error_at(
                    &retry_at.key("backoff"),
                    "needs multiplier >= 1 and initial_ms <= max_ms",
                ));
            }
            out.push(Pipeline {
                name: p.name.clone(),
                concurrency: p.concurrency,
                max_body_bytes: p.max_body_bytes,
                job_timeout: Duration::from_secs(p.job_timeout_secs),
                format: p.source.format(),
                steps,
                max_attempts: p.retry.max_attempts.unwrap_or_else(default_max_attempts),
                max_attempts_set: p.retry.max_attempts.is_some(),
                backoff_set: p.retry.backoff.is_some(),
                backoff: Backoff {
                    initial: Duration::from_millis(b.initial_ms),
                    max: Duration::from_millis(b.max_ms),
                    multiplier: b.multiplier,
                    jitter: b.jitter,
                },
            });
        }
        Ok(out)
    }
}

/// Parses a rate: `"500/s"`, `"30/min"`, `"1000/h"`, `"5/100ms"`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad =
        || format!("`{s}` is not a rate: write a count per unit, like \"500/s\" or \"30/min\"");
    let (count, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    let per = per.trim();
    let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let n: u64 = if split == 0 {
        1
    } else {
        per[..split].parse().map_err(|_| bad())?
    };
    let unit = match &per[split..] {
        "ms" => Duration::from_millis(1),
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    let per = unit * u32::try_from(n).map_err(|_| bad())?;
    if per.is_zero() {
        return Err(bad());
    }
    Ok(Rate::new(count, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_name_line_and_path() {
        let text = "[[pipeline]]\nname = \"p\"\n[pipeline.source]\ntype = \"file\"\npath = \"x\"\n[[pipeline.step]]\ntype = \"http\"\n\nurll = \"http://h\"\n";
        let e = parse("c.toml", text, |_| None).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        assert_eq!(e.field.as_deref(), Some("pipeline[0].step[0].urll"), "{e}");
        assert!(
            e.to_string()
                .starts_with("c.toml:9: pipeline[0].step[0].urll: unknown field `urll`"),
            "{e}"
        );
    }

    #[test]
    fn secrets_stay_out_of_parse_errors() {
        let text = "[[pipeline]]\nname = \"p\"\ntoken = \"${TOKEN}\" oops\n";
        let e = parse("c.toml", text, |_| Some("hunter2".into())).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn rates() {
        let r = parse_rate("500/s").unwrap();
        assert_eq!((r.count(), r.per()), (500, Duration::from_secs(1)));
        let r = parse_rate("30/min").unwrap();
        assert_eq!(r.per(), Duration::from_secs(60));
        let r = parse_rate("5/100ms").unwrap();
        assert_eq!(r.per(), Duration::from_millis(100));
        for bad in ["500", "x/s", "0/s", "5/fortnight", "5/0s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
