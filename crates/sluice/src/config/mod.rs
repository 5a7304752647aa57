//! The TOML config: what a user writes, checked before anything connects.
//!
//! ```toml
//! shutdown_timeout_secs = 30
//!
//! [admin]
//! listen = "127.0.0.1:9600"   # dashboard, API, /metrics, probes
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
//! Unknown fields are errors. Every error names the file, the line, the
//! field's whole path (`pipeline[0].step[1].timeout_ms`) and what to do.
//! `${VAR}` in a string value is replaced from the environment (see
//! [`env`]). [`Loaded::check`] refuses, before anything connects, what would
//! fail every job: a URL no job can reach, a template that calls an unknown
//! filter, an input file that is not there, a checkpoint that cannot be
//! written, a concurrency the open-files limit cannot hold (see [`limits`]).
//!
//! A config only builds [workers](crate::worker::Worker): each pipeline's
//! source builds itself from its own folder's config, its steps become one
//! handler ([`Steps`]), and [`run`] runs the workers side by side.

mod de;
pub mod env;
mod files;
pub mod limits;
mod locate;
mod registry;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use locate::FieldPath;
pub use registry::SourceTable;

use crate::component::{FieldError, SourceContext, StepContext};
use crate::formats::Format;
use crate::formats::laravel::LaravelRetry;
use crate::retry::{Backoff, Retry, RetryPolicy};
use crate::runtime::{Progress, RunReport, Shutdown};
use crate::steps::{StepConfig, Steps};
use crate::worker::Worker;

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
    /// `[admin]`: the admin server (dashboard, API, metrics, probes).
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `[admin]`: where `sluice run` serves the [admin server](crate::admin).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on, e.g. `"127.0.0.1:9600"`; `--admin`
    /// overrides it. Default: no admin server. A non-loopback address
    /// needs `SLUICE_ADMIN_TOKEN`.
    #[serde(default, deserialize_with = "listen_address")]
    pub listen: Option<std::net::SocketAddr>,
    /// Host names requests may address the server by, beside IP addresses
    /// and `localhost` (a DNS name, or a proxy's). Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an address to listen on: write an IP address and a port, like \
             \"127.0.0.1:9600\" (or \"0.0.0.0:9600\" with SLUICE_ADMIN_TOKEN set)"
        ))
    })
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
    pub source: SourceTable,
    /// What each job does, in order.
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
    /// Retries and backoff.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where failed jobs go. Default: the source's own target.
    #[serde(default)]
    pub dead_letter: crate::dead_letters::DeadLetterConfig,
    /// `[pipeline.laravel]`: the app's keys, to decrypt the commands of
    /// encrypted jobs (`format = "laravel"` only). Default none.
    #[serde(default)]
    pub laravel: Option<crate::formats::laravel::LaravelConfig>,
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
    /// After this many attempts in a row failed with a retryable error
    /// (5xx, timeouts, refused connections), the pipeline stops taking
    /// messages and its retries wait; one probe at a time tries the
    /// destination until one succeeds. Default 20; 0 never pauses.
    pub pause_after_failures: Option<u32>,
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
    let mut substituted =
        env::substitute(text, lookup).map_err(|(line, msg)| err(Some(line), None, msg))?;
    let config: Config =
        de::deserialize(&mut substituted).map_err(|e| err(e.line, e.field, e.message))?;
    let text = substituted.text;
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

    /// Checks everything that can be checked without connecting; returns
    /// the pipelines' names.
    pub fn check(&self) -> Result<Vec<String>, ConfigError> {
        Ok(self.plans()?.into_iter().map(|p| p.name).collect())
    }

    /// Checks every pipeline and builds what needs no connection.
    fn plans(&self) -> Result<Vec<Plan>, ConfigError> {
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
            if p.name.chars().any(char::is_control) {
                return Err(self.error_at(
                    &at.clone().key("name"),
                    format!(
                        "{:?} holds a control character (a newline would forge log lines): \
                         name the pipeline with printable characters",
                        p.name
                    ),
                ));
            }
            if p.concurrency == 0 {
                return Err(self.error_at(&at.clone().key("concurrency"), "must be at least 1"));
            }
            if p.max_body_bytes == 0 {
                return Err(self.error_at(
                    &at.clone().key("max_body_bytes"),
                    "must be at least 1: 0 would dead-letter every message unread",
                ));
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
            let source = p.source.config();
            source
                .check()
                .map_err(|e| self.error_at(&source_at.clone().key(&e.field), e.message))?;
            p.dead_letter.check(source).map_err(|e| {
                self.error_at(&at.clone().key("dead_letter").key(&e.field), e.message)
            })?;
            let cx = StepContext::new(&p.name, p.concurrency);
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
            let backoff = match &p.retry.backoff {
                None => None,
                Some(b)
                    if !(b.multiplier >= 1.0 && b.multiplier.is_finite())
                        || b.initial_ms > b.max_ms =>
                {
                    return Err(self.error_at(
                        &retry_at.key("backoff"),
                        "needs multiplier >= 1 and initial_ms <= max_ms",
                    ));
                }
                Some(b) => Some(Backoff {
                    initial: Duration::from_millis(b.initial_ms),
                    max: Duration::from_millis(b.max_ms),
                    multiplier: b.multiplier,
                    jitter: b.jitter,
                }),
            };
            let format = source.format();
            let decoder = crate::formats::Decoder::build(format, p.laravel.as_ref())
                .map_err(|e| self.error_at(&at.clone().key(&e.field), e.message))?;
            // A Laravel job's own retry rules apply where the config sets
            // none; other formats carry none.
            let retry: Arc<dyn RetryPolicy> = match format {
                Format::Laravel => Arc::new(LaravelRetry {
                    max_attempts: p.retry.max_attempts,
                    backoff,
                }),
                _ => {
                    let default = Retry::default();
                    Arc::new(Retry {
                        max_attempts: p.retry.max_attempts.unwrap_or(default.max_attempts),
                        backoff: backoff.unwrap_or(default.backoff),
                    })
                }
            };
            out.push(Plan {
                index: i,
                name: p.name.clone(),
                steps: Steps::new(&p.name, decoder, steps),
                retry,
                destinations: cx.destinations,
            });
        }
        let uses: Vec<files::Use<'_>> = self
            .config
            .pipelines
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.source
                    .config()
                    .files()
                    .into_iter()
                    .map(move |file| files::Use {
                        pipeline: i,
                        name: &p.name,
                        file,
                    })
            })
            .collect();
        if let Some(alias) = files::first_alias(&uses) {
            let at = FieldPath::default()
                .key("pipeline")
                .index(alias.pipeline)
                .key("source")
                .key(alias.field);
            return Err(self.error_at(&at, alias.message));
        }
        // The hard limit is what `run` can raise the soft one to.
        let needed = limits::needed(&self.config.pipelines);
        if let Some(why) = limits::current()
            .ok()
            .and_then(|(_, hard)| limits::refusal(needed, hard))
        {
            let (biggest, _) = self
                .config
                .pipelines
                .iter()
                .enumerate()
                .max_by_key(|(_, p)| p.concurrency)
                .expect("a config has a pipeline");
            let at = FieldPath::default()
                .key("pipeline")
                .index(biggest)
                .key("concurrency");
            return Err(self.error_at(&at, why));
        }
        Ok(out)
    }

    /// Checks the config, connects every source and builds one worker per
    /// pipeline. Nothing runs until the workers do.
    pub async fn workers(&self, opts: &RunOptions) -> Result<Vec<Worker>, ConfigError> {
        let plans = self.plans()?;
        let needed = limits::needed(&self.config.pipelines);
        limits::started(needed);
        limits::raise(needed).map_err(|message| ConfigError {
            file: self.file.clone(),
            line: None,
            field: None,
            message,
        })?;
        let mut workers = Vec::new();
        for plan in plans {
            let p = &self.config.pipelines[plan.index];
            let at = FieldPath::default()
                .key("pipeline")
                .index(plan.index)
                .key("source");
            let cx = SourceContext {
                pipeline: p.name.clone(),
                concurrency: p.concurrency,
                max_body_bytes: p.max_body_bytes,
                dead_letters_elsewhere: !matches!(
                    p.dead_letter,
                    crate::dead_letters::DeadLetterConfig::Source
                ),
            };
            let mut source = p
                .source
                .config()
                .build(&cx)
                .await
                .map_err(|e| self.error_at(&at, crate::error_chain(&e)))?;
            if opts.stop_when_empty {
                source.stop_when_empty();
            }
            let dead_letters = p.dead_letter.build(p.source.config()).await.map_err(|e| {
                self.error_at(
                    &FieldPath::default()
                        .key("pipeline")
                        .index(plan.index)
                        .key("dead_letter"),
                    crate::error_chain(&e),
                )
            })?;
            let mut builder = Worker::builder(&p.name);
            if let Some(target) = dead_letters {
                builder = builder.dead_letters(target);
            }
            let worker = builder
                .boxed_source(source)
                .handler(plan.steps)
                .shared_retry(plan.retry)
                .concurrency(p.concurrency)
                .destinations(plan.destinations)
                .files_per_job(limits::files_per_job(p))
                .job_timeout(Duration::from_secs(p.job_timeout_secs))
                .max_body_bytes(p.max_body_bytes)
                .shutdown(opts.shutdown.clone())
                .shutdown_timeout(Duration::from_secs(self.config.shutdown_timeout_secs))
                .pause_after_failures(
                    p.retry
                        .pause_after_failures
                        .unwrap_or(crate::worker::DEFAULT_PAUSE_AFTER_FAILURES),
                )
                .build()
                .map_err(|e| self.error_at(&at, e.to_string()))?;
            workers.push(worker);
        }
        Ok(workers)
    }
}

/// A pipeline checked and built as far as it can be without connecting.
struct Plan {
    index: usize,
    name: String,
    steps: Steps,
    retry: Arc<dyn RetryPolicy>,
    destinations: Arc<crate::runtime::Destinations>,
}

/// How a run is driven.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub shutdown: Shutdown,
    pub progress: Progress,
    /// Stop each pipeline once its source is empty and nothing is in
    /// flight (see [`crate::sources::Source::stop_when_empty`]).
    pub stop_when_empty: bool,
    /// The admin server's state: each pipeline is registered with it once
    /// built (`/readyz`).
    pub admin: Option<std::sync::Arc<crate::admin::AdminState>>,
}

/// Runs every pipeline of `loaded` until their sources end or a stop is
/// requested. Config errors, and sources that cannot be opened, come back
/// before anything runs.
pub async fn run(loaded: &Loaded, opts: RunOptions) -> Result<RunReport, ConfigError> {
    let workers = loaded.workers(&opts).await?;
    crate::telemetry::describe();
    if let Some(admin) = &opts.admin {
        for w in &workers {
            admin.register(crate::admin::Registered::of(w));
        }
    }
    let started = Instant::now();
    let shown = workers
        .iter()
        .map(|w| (w.name().to_owned(), w.counts(), w.progress()))
        .collect();
    let progress = crate::runtime::start_progress(opts.progress, shown);
    let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
    let mut pipelines = Vec::new();
    for t in tasks {
        pipelines.push(t.await.expect("a worker does not panic"));
    }
    progress.finish().await;
    Ok(RunReport {
        pipelines,
        elapsed: started.elapsed(),
    })
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

    const PIPELINE: &str = "[[pipeline]]\nname = \"p\"\nconcurrency = \"${N}\"\n[pipeline.source]\ntype = \"file\"\npath = \"x\"\nmax_pending = \"${N}\"\n[[pipeline.step]]\ntype = \"http\"\nurl = \"http://h/x\"\ntimeout_ms = \"${N}\"\nheaders = { x-n = \"${N}\" }\n";

    #[test]
    fn a_lone_reference_is_a_number_where_the_field_takes_one() {
        let loaded = parse("c.toml", PIPELINE, |_| Some("12".into())).unwrap();
        let p = &loaded.config.pipelines[0];
        assert_eq!(p.concurrency, 12);
        let crate::steps::StepConfig::Http(http) = &p.steps[0] else {
            panic!("an http step");
        };
        assert_eq!(http.timeout_ms, 12);
        assert_eq!(http.headers["x-n"], "12", "a string field stays a string");
    }

    #[test]
    fn type_errors_name_the_whole_path() {
        let e = parse("c.toml", PIPELINE, |_| Some("many".into())).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.field.as_deref(), Some("pipeline[0].concurrency"), "{e}");
        assert!(e.message.contains("write a whole number"), "{e}");
        let text = PIPELINE.replace("\"${N}\"\nheaders", "\"soon\"\nheaders");
        let e = parse("c.toml", &text, |_| Some("3".into())).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("pipeline[0].step[0].timeout_ms"),
            "{e}"
        );
        let text = format!("shutdown_timeout_secs = true\n{PIPELINE}");
        let e = parse("c.toml", &text, |_| Some("3".into())).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert_eq!(e.field.as_deref(), Some("shutdown_timeout_secs"), "{e}");
    }
}
