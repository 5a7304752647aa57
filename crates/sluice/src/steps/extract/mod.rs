//! `extract`: pull variables out of the body (or a variable) with a regex's
//! named captures or with JSON pointers.
//!
//! ```toml
//! [[pipeline.step]]
//! type = "extract"
//! regex = 'report-(?P<id>[^.]+)\.json'      # sets `id`
//!
//! [[pipeline.step]]
//! type = "extract"
//! pointers = { user = "/user/id", email = "/user/email" }
//! ```
//!
//! No match is a permanent failure: the same body will never match.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use minijinja::Value;
use regex::Regex;
use serde::Deserialize;

use super::{FieldError, Step, check_var_name};
use crate::job::{Job, JobError};

/// `type = "extract"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// A regex whose named groups (`(?P<name>...)`) become variables.
    pub regex: Option<String>,
    /// Variable name -> JSON pointer (`/a/0/b`) into the JSON being read.
    #[serde(default)]
    pub pointers: BTreeMap<String, String>,
    /// What to read: `body` (the default) or the name of a variable.
    #[serde(default = "default_from")]
    pub from: String,
}

fn default_from() -> String {
    "body".into()
}

#[derive(Debug)]
enum Rule {
    Regex { re: Regex, names: Vec<String> },
    Pointers(Vec<(String, String)>),
}

/// The built step.
#[derive(Debug)]
pub struct Extract {
    rule: Rule,
    from: Option<String>,
}

impl ExtractConfig {
    pub fn build(&self) -> Result<Extract, FieldError> {
        let rule = match (&self.regex, self.pointers.is_empty()) {
            (Some(_), false) | (None, true) => {
                return Err(FieldError::new(
                    "regex",
                    "set exactly one of `regex` or `pointers`",
                ));
            }
            (Some(src), true) => {
                let re = Regex::new(src)
                    .map_err(|e| FieldError::new("regex", format!("invalid regex: {e}")))?;
                let names: Vec<String> = re.capture_names().flatten().map(String::from).collect();
                if names.is_empty() {
                    return Err(FieldError::new(
                        "regex",
                        "the regex has no named group: write `(?P<name>...)` for each value to keep",
                    ));
                }
                for n in &names {
                    check_var_name("regex", n)?;
                }
                Rule::Regex { re, names }
            }
            (None, false) => {
                let mut rules = Vec::new();
                for (name, ptr) in &self.pointers {
                    let field = format!("pointers.{name}");
                    check_var_name(&field, name)?;
                    if !ptr.is_empty() && !ptr.starts_with('/') {
                        return Err(FieldError::new(
                            field,
                            format!("`{ptr}` is not a JSON pointer: it must start with `/`"),
                        ));
                    }
                    rules.push((name.clone(), ptr.clone()));
                }
                Rule::Pointers(rules)
            }
        };
        let from = match self.from.as_str() {
            "body" => None,
            name => {
                check_var_name("from", name)?;
                Some(name.to_owned())
            }
        };
        Ok(Extract { rule, from })
    }
}

impl Extract {
    fn source_name(&self) -> &str {
        self.from.as_deref().unwrap_or("body")
    }

    fn apply(&self, job: &mut Job) -> Result<(), JobError> {
        match &self.rule {
            Rule::Regex { re, names } => {
                let text: String = match &self.from {
                    None => job.body_text()?.to_owned(),
                    Some(var) => var_text(job, var)?,
                };
                let caps = re.captures(&text).ok_or_else(|| {
                    JobError::fail(format!(
                        "extract: regex `{}` does not match the {}",
                        re.as_str(),
                        self.source_name()
                    ))
                })?;
                let found: Vec<(String, String)> = names
                    .iter()
                    .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_owned())))
                    .collect();
                for (n, v) in found {
                    job.set(&n, Value::from(v));
                }
                Ok(())
            }
            Rule::Pointers(rules) => {
                let owned;
                let doc = match &self.from {
                    None => job.envelope.json().ok_or_else(|| {
                        JobError::fail(
                            "extract: `pointers` need a JSON body; set the source's format to \"json\"",
                        )
                    })?,
                    Some(var) => {
                        let v = job.get(var).ok_or_else(|| {
                            JobError::fail(format!("extract: no variable `{var}` to read"))
                        })?;
                        owned = crate::template::json::from_value(v).map_err(|e| {
                            JobError::fail(format!("extract: variable `{var}` is not JSON: {e}"))
                        })?;
                        &owned
                    }
                };
                let mut found = Vec::with_capacity(rules.len());
                for (name, ptr) in rules {
                    let v = doc.pointer(ptr).ok_or_else(|| {
                        JobError::fail(format!(
                            "extract: JSON pointer `{ptr}` (for `{name}`) finds nothing in the {}",
                            self.source_name()
                        ))
                    })?;
                    found.push((name, crate::template::json::to_value(v)));
                }
                for (name, v) in found {
                    job.set(name, v);
                }
                Ok(())
            }
        }
    }
}

fn var_text(job: &Job, var: &str) -> Result<String, JobError> {
    let v = job
        .get(var)
        .ok_or_else(|| JobError::fail(format!("extract: no variable `{var}` to read")))?;
    Ok(match v.as_str() {
        Some(s) => s.to_owned(),
        None => v.to_string(),
    })
}

impl Step for Extract {
    fn kind(&self) -> &'static str {
        "extract"
    }

    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>> {
        let r = self.apply(job);
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Format;

    fn job(format: Format, body: &[u8]) -> Job {
        let mut job = Job::new("1", 1, bytes::Bytes::copy_from_slice(body));
        job.set_envelope(format.decode(body).unwrap());
        job
    }

    fn cfg(toml_src: &str) -> ExtractConfig {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn regex_named_groups_become_variables() {
        let step = cfg(r#"regex = 'report-(?P<id>[^.]+)\.json'"#)
            .build()
            .unwrap();
        let mut j = job(Format::Raw, b"please send report-42.json now");
        step.apply(&mut j).unwrap();
        assert_eq!(j.get("id").unwrap().as_str(), Some("42"));
    }

    #[test]
    fn regex_miss_is_permanent_and_says_what_missed() {
        let step = cfg(r#"regex = 'report-(?P<id>\d+)'"#).build().unwrap();
        let mut j = job(Format::Raw, b"nothing here");
        let err = step.apply(&mut j).unwrap_err();
        assert!(matches!(err, JobError::Fail { .. }));
        assert!(err.reason().contains("does not match the body"), "{err}");
    }

    #[test]
    fn pointers_read_json() {
        let step = cfg(r#"pointers = { user = "/u/id", tags = "/t" }"#)
            .build()
            .unwrap();
        let mut j = job(Format::Json, br#"{"u": {"id": 7}, "t": ["a"]}"#);
        step.apply(&mut j).unwrap();
        assert_eq!(j.get("user").unwrap().as_i64(), Some(7));
        assert_eq!(j.get("tags").unwrap().len(), Some(1));
        let mut j = job(Format::Json, br#"{"u": {}}"#);
        let err = step.apply(&mut j).unwrap_err();
        assert!(err.reason().contains("`/t`"), "{err}");
    }

    #[test]
    fn regex_can_read_a_variable() {
        let step = cfg(r#"regex = '(?P<n>\d+)'
from = "name""#)
        .build()
        .unwrap();
        let mut j = job(Format::Raw, b"x");
        j.set("name", Value::from("file-12"));
        step.apply(&mut j).unwrap();
        assert_eq!(j.get("n").unwrap().as_str(), Some("12"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = cfg("regex = '(unclosed'").build().err().unwrap();
        assert_eq!(e.field, "regex");
        let e = cfg("regex = 'no groups'").build().err().unwrap();
        assert!(e.message.contains("named group"));
        let e = cfg(r#"pointers = { a = "x" }"#).build().err().unwrap();
        assert_eq!(e.field, "pointers.a");
        let e = cfg("").build().err().unwrap();
        assert!(e.message.contains("exactly one"));
    }
}
