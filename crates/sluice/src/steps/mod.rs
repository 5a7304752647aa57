//! The work a job does, one folder per step: `extract`, `fetch`, `template`,
//! `http`. Each folder holds the step's config (what a user writes in TOML)
//! and the step itself (what runs per job).
//!
//! A step gets the job's shared state and either succeeds, having set the
//! variables it is configured to set, or returns a [`JobError`] that says
//! whether trying again could help. A pipeline's steps together are one
//! [`Handler`]: [`Steps`], which decodes the body with the source's format
//! and runs each step in order.
//!
//! Adding a step: a folder here with its config and the step, and one
//! variant in [`StepConfig`].

pub mod extract;
pub mod fetch;
pub mod http;
pub mod template;

use std::fmt;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Deserialize;
use url::Url;

pub use crate::component::{FieldError, StepContext};
use crate::formats::Format;
use crate::handler::Handler;
use crate::job::{Job, JobError};

/// One step of a pipeline.
pub trait Step: Send + Sync + 'static {
    /// The step's type, for logs and metrics (`extract`, `http`...).
    fn kind(&self) -> &'static str;
    /// Runs the step on one job.
    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>>;
}

/// A `[[pipeline.step]]` table.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepConfig {
    Extract(extract::ExtractConfig),
    Fetch(fetch::FetchConfig),
    Template(template::TemplateConfig),
    Http(http::HttpConfig),
}

impl StepConfig {
    /// Checks the config and builds the step.
    pub fn build(&self, cx: &StepContext) -> Result<Box<dyn Step>, FieldError> {
        Ok(match self {
            StepConfig::Extract(c) => Box::new(c.build()?),
            StepConfig::Fetch(c) => Box::new(c.build()?),
            StepConfig::Template(c) => Box::new(c.build()?),
            StepConfig::Http(c) => Box::new(c.build(cx)?),
        })
    }
}

/// A pipeline's steps as one handler: decode the body, run each step.
pub struct Steps {
    format: Format,
    steps: Vec<Box<dyn Step>>,
    durations: Vec<metrics::Histogram>,
}

impl fmt::Debug for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.steps.iter().map(|s| s.kind()).collect();
        f.debug_struct("Steps")
            .field("format", &self.format)
            .field("steps", &kinds)
            .finish()
    }
}

impl Steps {
    /// `steps` run in order on bodies in `format`; their run times go to
    /// `sluice_step_duration_seconds{pipeline, step}`.
    pub fn new(pipeline: &str, format: Format, steps: Vec<Box<dyn Step>>) -> Steps {
        let durations = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                metrics::histogram!(
                    crate::telemetry::STEP_DURATION,
                    "pipeline" => pipeline.to_owned(),
                    "step" => format!("{}:{}", i + 1, s.kind())
                )
            })
            .collect();
        Steps {
            format,
            steps,
            durations,
        }
    }

    async fn run(&self, mut job: Job) -> Result<(), JobError> {
        let envelope = self
            .format
            .decode(&job.body)
            .map_err(|e| JobError::fail(format!("format {}: {e}", self.format.name())))?;
        job.set_envelope(envelope);
        for (i, step) in self.steps.iter().enumerate() {
            let started = Instant::now();
            let r = step.run(&mut job).await;
            self.durations[i].record(started.elapsed());
            r.map_err(|e| e.context(&format!("step {}", i + 1)))?;
        }
        Ok(())
    }
}

impl Handler for Steps {
    fn call(&self, job: Job) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.run(job))
    }
}

/// Compiles a template field, naming it on error.
pub(crate) fn compile(field: &str, source: &str) -> Result<crate::template::Template, FieldError> {
    crate::template::Template::new(source)
        .map_err(|e| FieldError::new(field, format!("template does not compile: {e}")))
}

/// Compiles a URL template field (values escaped for where they land),
/// naming it on error.
pub(crate) fn compile_url(
    field: &str,
    source: &str,
) -> Result<crate::template::Template, FieldError> {
    crate::template::Template::url(source)
        .map_err(|e| FieldError::new(field, format!("template does not compile: {e}")))
}

/// Checks a variable name a step writes to.
pub(crate) fn check_var_name(field: &str, name: &str) -> Result<(), FieldError> {
    const RESERVED: [&str; 3] = ["message", "body", "job"];
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(FieldError::new(
            field,
            format!("`{name}` is not a variable name: use letters, digits and `_`"),
        ));
    }
    if RESERVED.contains(&name) {
        return Err(FieldError::new(
            field,
            format!("`{name}` is reserved for the message itself; pick another name"),
        ));
    }
    Ok(())
}

/// A URL without its query and credentials, safe for logs and reasons.
pub(crate) fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => raw.split(['?', '@']).next().unwrap_or("").to_owned(),
    }
}
