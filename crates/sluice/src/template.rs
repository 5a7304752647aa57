//! The one template engine every step uses: Jinja syntax through `minijinja`.
//!
//! A [`Template`] is compiled once, when the config is checked, so a syntax
//! error, or a filter, test or function that does not exist, is reported
//! with the field it came from before anything connects.
//! Rendering is strict: a variable the job does not have is an error, not an
//! empty string, because a webhook posted with a hole in it is worse than one
//! dead-lettered with a reason.
//!
//! ```
//! use sluice::template::Template;
//! use minijinja::context;
//!
//! let t = Template::new(r#"{"id": {{ id | tojson }}}"#).unwrap();
//! assert_eq!(t.render(context! { id => "r-1" }).unwrap(), r#"{"id": "r-1"}"#);
//! assert!(t.render(context! {}).is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// A compiled template. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// Text without any template syntax: rendering is a copy.
    Literal(Arc<str>),
    Compiled(Arc<Environment<'static>>),
}

/// The name the template is stored under in its own environment.
const NAME: &str = "t";

/// A template that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(String);

/// A template that failed to render for one job.
#[derive(Debug, thiserror::Error)]
#[error("template `{field}` failed to render: {reason}")]
pub struct RenderError {
    field: String,
    reason: String,
}

impl Template {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Template, CompileError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Template {
                inner: Inner::Literal(source.into()),
            });
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Bodies are JSON, URLs and headers, never HTML.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        // The builtin turns an undefined value into `null` even in strict
        // mode: a misspelt variable would post `null` instead of failing.
        env.add_filter("tojson", tojson_strict);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| CompileError(describe(&e)))?;
        check_names(&env)?;
        Ok(Template {
            inner: Inner::Compiled(Arc::new(env)),
        })
    }

    /// True when the template has no template syntax.
    pub fn is_literal(&self) -> bool {
        matches!(self.inner, Inner::Literal(_))
    }

    /// Renders with `ctx` (any serializable value; usually a job's context).
    pub fn render(&self, ctx: Value) -> Result<String, RenderError> {
        match &self.inner {
            Inner::Literal(s) => Ok(s.to_string()),
            Inner::Compiled(env) => {
                env.get_template(NAME)
                    .and_then(|t| t.render(ctx))
                    .map_err(|e| RenderError {
                        field: String::new(),
                        reason: describe(&e),
                    })
            }
        }
    }

    /// Renders, naming `field` in the error.
    pub fn render_field(&self, field: &str, ctx: Value) -> Result<String, RenderError> {
        self.render(ctx).map_err(|mut e| {
            e.field = field.to_owned();
            e
        })
    }
}

fn tojson_strict(
    value: &Value,
    indent: Option<Value>,
    args: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson was given an undefined value",
        ));
    }
    minijinja::filters::tojson(value, indent, args)
}

/// Refuses filters, tests and functions the environment lacks: minijinja
/// looks them up only when a job reaches them, so a misspelt filter would
/// fail every job instead of the config.
fn check_names(env: &Environment<'static>) -> Result<(), CompileError> {
    use minijinja::machinery::{Instruction, get_compiled_template};
    let t = env
        .get_template(NAME)
        .map_err(|e| CompileError(describe(&e)))?;
    let compiled = get_compiled_template(&t);
    // Names the template does not set itself (a macro, `set`) come from the
    // job, whose values are data, never callable.
    let from_job = t.undeclared_variables(false);
    let unknown = |expr: &str, kind: minijinja::ErrorKind| {
        env.compile_expression(expr)
            .and_then(|e| e.eval(()))
            .is_err_and(|e| e.kind() == kind)
    };
    let blocks = std::iter::once(&compiled.instructions).chain(compiled.blocks.values());
    for instructions in blocks {
        for i in 0..instructions.len() {
            let problem = match instructions.get(i as u32) {
                Some(Instruction::ApplyFilter(name, ..))
                    if unknown(&format!("0 | {name}"), minijinja::ErrorKind::UnknownFilter) =>
                {
                    format!("unknown filter `{name}`")
                }
                Some(Instruction::PerformTest(name, ..))
                    if unknown(&format!("0 is {name}"), minijinja::ErrorKind::UnknownTest) =>
                {
                    format!("unknown test `{name}`")
                }
                Some(Instruction::CallFunction(name, _))
                    if from_job.contains(*name)
                        && !["super", "loop", "caller"].contains(name)
                        && !env.globals().any(|(g, _)| g == *name) =>
                {
                    format!("unknown function `{name}`")
                }
                _ => continue,
            };
            let line = instructions
                .get_line(i as u32)
                .map(|l| format!(" (template line {l})"))
                .unwrap_or_default();
            return Err(CompileError(format!(
                "{problem}{line}: fix its name (the filters, tests and functions are \
                 minijinja's builtins, see the README)"
            )));
        }
    }
    Ok(())
}

/// minijinja's error with its detail and line, on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Literal(s) => f.debug_tuple("Template::Literal").field(s).finish(),
            Inner::Compiled(env) => {
                let src = env.get_template(NAME).map(|t| t.source().to_owned());
                f.debug_tuple("Template").field(&src.ok()).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn literal_text_is_not_compiled() {
        let t = Template::new("http://example.com/a").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(context! {}).unwrap(), "http://example.com/a");
    }

    #[test]
    fn tojson_embeds_structured_values() {
        let t = Template::new("{{ report | tojson }}").unwrap();
        let report = Value::from_serialize(serde_json::json!({"a": [1, 2], "b": "x"}));
        assert_eq!(
            t.render(context! { report }).unwrap(),
            r#"{"a":[1,2],"b":"x"}"#
        );
    }

    #[test]
    fn syntax_errors_are_found_at_compile_time() {
        let err = Template::new("{{ id ").unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn missing_variables_fail_and_name_the_field() {
        let t = Template::new("{{ nope }}").unwrap();
        let err = t.render_field("step[1].body", context! {}).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("step[1].body"), "{msg}");
        assert!(msg.contains("undefined"), "{msg}");
    }

    #[test]
    fn tojson_of_an_undefined_value_fails() {
        let t = Template::new("{{ nope | tojson }}").unwrap();
        let err = t.render(context! {}).unwrap_err().to_string();
        assert!(err.contains("undefined"), "{err}");
        let t = Template::new("{{ n | tojson(indent=2) }}").unwrap();
        assert_eq!(t.render(context! { n => 1 }).unwrap(), "1");
    }

    #[test]
    fn unknown_filters_tests_and_functions_fail_to_compile() {
        for (source, name) in [
            ("{{ id | nosuch }}", "unknown filter `nosuch`"),
            (
                "{% if x %}{{ id | upper | nosuch(1) }}{% endif %}",
                "unknown filter `nosuch`",
            ),
            (
                "{% filter nosuch %}x{% endfilter %}",
                "unknown filter `nosuch`",
            ),
            ("{{ id is nosuch }}", "unknown test `nosuch`"),
            ("{{ nosuch(1) }}", "unknown function `nosuch`"),
            (
                "{% for x in xs %}{{ nosuch(x) }}{% endfor %}",
                "unknown function `nosuch`",
            ),
        ] {
            let err = Template::new(source).unwrap_err().to_string();
            assert!(err.contains(name), "{source}: {err}");
        }
        for good in [
            "{{ id | upper | tojson }}",
            "{{ id is defined }}",
            "{% for i in range(3) %}{{ i }}{% endfor %}",
            "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}",
            "{% set ns = namespace(a=1) %}{{ ns.a }}",
            "{{ dict(a=1) | tojson }}",
            "{{ xs | map('upper') | join(',') }}",
        ] {
            Template::new(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn no_html_escaping() {
        let t = Template::new("{{ s }}").unwrap();
        assert_eq!(t.render(context! { s => "<a&b>" }).unwrap(), "<a&b>");
    }
}
