//! `extract`: pull variables out of the body (or any value a template
//! sees) with a regex's named captures or with JSON pointers.
//!
//! ```toml
//! [[pipeline.step]]
//! type = "extract"
//! regex = 'report-(?P<id>[^.]+)\.json'      # sets `id`
//!
//! [[pipeline.step]]
//! type = "extract"
//! pointers = { user = "/user/id", email = "/user/email" }
//!
//! [[pipeline.step]]                         # a Laravel job's serialized command
//! type = "extract"
//! from = "job.data.command"
//! regex = '"file";s:\d+:"(?P<file>[^"]+)"'
//! ```
//!
//! `from` is `body` (the default: the raw body text for a regex, the parsed
//! JSON for pointers), a variable, or a dotted path into what templates see
//! (`job.data.command`, `body.user`, `report.meta`). A regex reads only text:
//! a `from` that is an object or a number fails the job saying so, rather
//! than matching over some rendering of it.
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
    /// What to read: `body` (the default: the raw text for `regex`, the
    /// parsed JSON for `pointers`), a variable, or a dotted path into what
    /// templates see (`job.data.command`, `body.user`).
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
    /// The dotted path to read; `None` for the body itself.
    from: Option<Vec<String>>,
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
            path => {
                let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
                let valid = parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !p.starts_with(|c: char| c.is_ascii_digit())
                });
                if !valid {
                    return Err(FieldError::new(
                        "from",
                        format!(
                            "`{path}` is not a variable or a dotted path: write `body`, a \
                             variable's name, or a path like `job.data.command`"
                        ),
                    ));
                }
                Some(parts)
            }
        };
        Ok(Extract { rule, from })
    }
}

impl Extract {
    fn source_name(&self) -> String {
        match &self.from {
            None => "body".into(),
            Some(path) => format!("`{}`", path.join(".")),
        }
    }

    /// The value at `from` in what templates see.
    fn lookup(job: &mut Job, path: &[String]) -> Result<Value, JobError> {
        let mut v = job.context();
        for (i, part) in path.iter().enumerate() {
            v = v.get_attr(part).unwrap_or(Value::UNDEFINED);
            if v.is_undefined() {
                let at = path[..=i].join(".");
                return Err(JobError::fail(if i == 0 {
                    format!("extract: no variable `{at}` to read")
                } else {
                    format!("extract: `{at}` is not set for this job")
                }));
            }
        }
        Ok(v)
    }

    fn apply(&self, job: &mut Job) -> Result<(), JobError> {
        match &self.rule {
            Rule::Regex { re, names } => {
                let text: String = match &self.from {
                    None => job.body_text()?.to_owned(),
                    Some(path) => {
                        let v = Self::lookup(job, path)?;
                        match v.as_str() {
                            Some(s) => s.to_owned(),
                            None => {
                                return Err(JobError::fail(format!(
                                    "extract: {} is {}, not a string: a regex reads only \
                                     text; point `from` at a string, or use `pointers` for JSON",
                                    self.source_name(),
                                    kind_name(&v)
                                )));
                            }
                        }
                    }
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
                    Some(path) => {
                        let v = Self::lookup(job, path)?;
                        owned = crate::template::json::from_value(&v).map_err(|e| {
                            JobError::fail(format!(
                                "extract: {} is not JSON: {e}",
                                self.source_name()
                            ))
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

/// What a value is, for a reason: `an object`, `a number`...
fn kind_name(v: &Value) -> &'static str {
    use minijinja::value::ValueKind;
    if v.downcast_object_ref::<crate::template::json::JsonNumber>()
        .is_some()
    {
        return "a number";
    }
    match v.kind() {
        ValueKind::Map => "an object",
        ValueKind::Seq | ValueKind::Iterable => "a list",
        ValueKind::Number => "a number",
        ValueKind::Bool => "a boolean",
        ValueKind::None => "null",
        ValueKind::Bytes => "bytes",
        _ => "some other value",
    }
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

    const LARAVEL: &[u8] = br#"{"uuid":"u1","displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","data":{"commandName":"App\\Jobs\\SendReport","command":"O:19:\"App\\Jobs\\SendReport\":1:{s:4:\"file\";s:14:\"report-42.json\";}"},"meta":{"n":5}}"#;

    #[test]
    fn regex_reads_a_laravel_command_as_text() {
        let step = cfg(r#"regex = '"file";s:\d+:"(?P<file>[^"]+)"'
from = "job.data.command""#)
        .build()
        .unwrap();
        let mut j = job(Format::Laravel, LARAVEL);
        step.apply(&mut j).unwrap();
        assert_eq!(j.get("file").unwrap().as_str(), Some("report-42.json"));
        // Over the raw body the quotes are escaped (`\"`): the same regex
        // does not match there.
        let raw = cfg(r#"regex = '"file";s:\d+:"(?P<file>[^"]+)"'"#)
            .build()
            .unwrap();
        let err = raw.apply(&mut job(Format::Laravel, LARAVEL)).unwrap_err();
        assert!(err.reason().contains("does not match the body"), "{err}");
    }

    #[test]
    fn a_regex_over_something_that_is_not_text_says_so() {
        for (from, says) in [
            ("job.data", "`job.data` is an object, not a string"),
            ("body.meta.n", "`body.meta.n` is a number, not a string"),
            ("job.data.nope", "`job.data.nope` is not set"),
            ("nope", "no variable `nope`"),
        ] {
            let step = cfg(&format!("regex = '(?P<x>.)'\nfrom = \"{from}\""))
                .build()
                .unwrap();
            let err = step.apply(&mut job(Format::Laravel, LARAVEL)).unwrap_err();
            assert!(matches!(err, JobError::Fail { .. }));
            assert!(err.reason().contains(says), "{from}: {err}");
        }
    }

    #[test]
    fn pointers_read_a_path() {
        let step = cfg(r#"pointers = { n = "/n" }
from = "body.meta""#)
        .build()
        .unwrap();
        let mut j = job(Format::Laravel, LARAVEL);
        step.apply(&mut j).unwrap();
        assert_eq!(j.get("n").unwrap().as_i64(), Some(5));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for bad in ["a..b", "a.", "1x", "a-b", ""] {
            let e = cfg(&format!("regex = '(?P<x>.)'\nfrom = \"{bad}\""))
                .build()
                .err()
                .unwrap();
            assert_eq!(e.field, "from", "{bad}");
        }
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
