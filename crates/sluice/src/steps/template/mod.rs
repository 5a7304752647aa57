//! `template`: render a string into a job variable, for a body built once and
//! used by several steps, or just to keep the `http` step short.
//!
//! ```toml
//! [[pipeline.step]]
//! type = "template"
//! into = "payload"
//! template = '{"id": {{ id | tojson }}, "report": {{ report | tojson }}}'
//! ```
//!
//! A template that fails to render (a missing variable, a bad filter
//! argument) fails the job permanently: the same job renders the same way.

use futures::future::BoxFuture;
use minijinja::Value;
use serde::Deserialize;

use super::{FieldError, Step, check_var_name, compile};
use crate::job::{Job, JobError};
use crate::template::Template;

/// `type = "template"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The variable to set.
    pub into: String,
    /// The Jinja template to render.
    pub template: String,
}

/// The built step.
#[derive(Debug)]
pub struct Render {
    into: String,
    template: Template,
}

impl TemplateConfig {
    pub fn build(&self) -> Result<Render, FieldError> {
        check_var_name("into", &self.into)?;
        Ok(Render {
            into: self.into.clone(),
            template: compile("template", &self.template)?,
        })
    }
}

impl Step for Render {
    fn kind(&self) -> &'static str {
        "template"
    }

    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>> {
        let r = self
            .template
            .render_field("template", job.context())
            .map(|s| job.set(&self.into, Value::from(s)))
            .map_err(JobError::from);
        Box::pin(std::future::ready(r))
    }
}
