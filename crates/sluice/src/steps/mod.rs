//! The work a job does, one folder per step: `extract`, `fetch`, `template`,
//! `http`. Each folder holds the step's config (what a user writes in TOML)
//! and the step itself (what runs per job).
//!
//! A step gets the job's shared state and either succeeds, having set the
//! variables it is configured to set, or returns a [`JobError`] that says
//! whether trying again could help.

pub mod extract;
pub mod fetch;
pub mod http;
pub mod template;

use futures::future::BoxFuture;
use serde::Deserialize;
use url::Url;

use crate::runtime::job::{Job, JobError};

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

/// What a step needs to know about its pipeline when it is built.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The pipeline's job concurrency: no step has more in flight.
    pub concurrency: usize,
}

/// A config value that cannot be used, naming the field within the step.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl StepConfig {
    /// Checks the config and builds the step.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Step>, FieldError> {
        Ok(match self {
            StepConfig::Extract(c) => Box::new(c.build()?),
            StepConfig::Fetch(c) => Box::new(c.build()?),
            StepConfig::Template(c) => Box::new(c.build()?),
            StepConfig::Http(c) => Box::new(c.build(cx)?),
        })
    }
}

/// Compiles a template field, naming it on error.
pub(crate) fn compile(field: &str, source: &str) -> Result<crate::template::Template, FieldError> {
    crate::template::Template::new(source)
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
