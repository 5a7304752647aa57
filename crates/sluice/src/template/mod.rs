//! The one template engine every step uses: Jinja syntax through `minijinja`.
//!
//! A [`Template`] is compiled once, when the config is checked, so a syntax
//! error, or a filter, test or function that does not exist, is reported
//! with the field it came from before anything connects.
//! Rendering is strict: a variable the job does not have is an error, not an
//! empty string, because a webhook posted with a hole in it is worse than one
//! dead-lettered with a reason.
//!
//! Rendering is bounded: at most [`FUEL`] template instructions (a nested
//! `{% for %}` over a large message runs out of them rather than holding a
//! worker for ever), at most [`MAX_OUTPUT_BYTES`] of output and
//! [`RECURSION_LIMIT`] nested calls; past a limit the render fails with a
//! reason naming it, and the job is dead-lettered (the same input would
//! fail the same way again). A value a template grows inside one render (a
//! `namespace` string doubled in a loop) is not bounded by these: minijinja
//! offers no hook on its allocations, so such a template can still exhaust
//! memory. Templates are the config's, not the input's: keep loops driven
//! by input linear.
//!
//! URL templates ([`Template::url`]) escape each value for the part of the
//! URL it lands in (see [`url`](self::url)); `{{ x | raw_url }}` opts out.
//! JSON numbers reach templates, and leave them through `tojson`, with their
//! exact text (see [`json`]).
//!
//! ```
//! use sluice::template::Template;
//! use minijinja::context;
//!
//! let t = Template::new(r#"{"id": {{ id | tojson }}}"#).unwrap();
//! assert_eq!(t.render(context! { id => "r-1" }).unwrap(), r#"{"id": "r-1"}"#);
//! assert!(t.render(context! {}).is_err());
//!
//! let u = Template::url("http://h/jobs/{{ id }}?q={{ q }}").unwrap();
//! let out = u.render(context! { id => "../a?b", q => "x&y=z" }).unwrap();
//! assert_eq!(out, "http://h/jobs/..%2Fa%3Fb?q=x%26y%3Dz");
//! ```

pub mod json;
mod url;

use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// A compiled template. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    inner: Inner,
    /// Values are escaped for the part of the URL they land in.
    url: bool,
}

#[derive(Clone)]
enum Inner {
    /// Text without any template syntax: rendering is a copy.
    Literal(Arc<str>),
    Compiled(Arc<Environment<'static>>),
}

/// The name the template is stored under in its own environment.
const NAME: &str = "t";

/// Template instructions one render may run (minijinja's fuel): a few
/// hundred for a webhook body, some tens of milliseconds of CPU at most.
pub const FUEL: u64 = 2_000_000;

/// Bytes one render may write.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Nested macro calls and includes one render may make.
pub const RECURSION_LIMIT: usize = 100;

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
        Template::compile(source, false)
    }

    /// Compiles `source` as a URL: each value is percent-encoded for the
    /// part of the URL it lands in, unless marked `raw_url` (or `safe`).
    pub fn url(source: &str) -> Result<Template, CompileError> {
        Template::compile(source, true)
    }

    fn compile(source: &str, url: bool) -> Result<Template, CompileError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Template {
                inner: Inner::Literal(source.into()),
                url,
            });
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Bodies are JSON, URLs and headers, never HTML.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        // Ours: exact numbers, and an undefined value is an error.
        env.add_filter("tojson", tojson);
        if url {
            env.set_formatter(url::mark);
            env.add_filter("raw_url", url::raw_url);
        }
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| CompileError(describe(&e, source)))?;
        check_names(&env, source)?;
        Ok(Template {
            inner: Inner::Compiled(Arc::new(env)),
            url,
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
                let t = env.get_template(NAME).expect("added when compiled");
                let mut out = Capped::default();
                t.render_captured_to(ctx, &mut out)
                    .map_err(|e| RenderError {
                        field: String::new(),
                        reason: if out.over {
                            format!(
                                "its output passed {} MiB, the most one render may write",
                                MAX_OUTPUT_BYTES >> 20
                            )
                        } else if e.kind() == minijinja::ErrorKind::OutOfFuel {
                            format!(
                                "it ran out of instructions ({FUEL}, the most one render may \
                                 run): a loop over a large value, or one nested in another"
                            )
                        } else {
                            describe(&e, t.source())
                        },
                    })?;
                // The formatter and filters write only whole strings.
                let out = String::from_utf8(out.bytes).map_err(|_| RenderError {
                    field: String::new(),
                    reason: "its output is not UTF-8".into(),
                })?;
                if !self.url {
                    return Ok(out);
                }
                url::finish(&out).map_err(|reason| RenderError {
                    field: String::new(),
                    reason,
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

/// A render's output, refused past [`MAX_OUTPUT_BYTES`]: the render stops
/// with an error at the write that passes it.
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    /// A write was refused: the output passed the cap.
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.over = true;
            return Err(std::io::Error::other("template output over its limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tojson` with every number exact, and an undefined value an error: the
/// builtin turns it into `null` even in strict mode, so a misspelt variable
/// would post `null` instead of failing.
fn tojson(
    value: &Value,
    indent: Option<usize>,
    args: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => args.get::<Option<usize>>("indent")?,
    };
    args.assert_all_used()?;
    let kind = if value.is_undefined() {
        minijinja::ErrorKind::UndefinedError
    } else {
        minijinja::ErrorKind::BadSerialization
    };
    json::tojson(value, indent)
        .map(Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(kind, e))
}

/// Refuses filters, tests and functions the environment lacks: minijinja
/// looks them up only when a job reaches them, so a misspelt filter would
/// fail every job instead of the config.
fn check_names(env: &Environment<'static>, source: &str) -> Result<(), CompileError> {
    use minijinja::machinery::{Instruction, get_compiled_template};
    let t = env
        .get_template(NAME)
        .map_err(|e| CompileError(describe(&e, source)))?;
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

/// minijinja's error with its detail, the expression that failed (for an
/// undefined value, the variable's name) and its line, on one line.
fn describe(e: &minijinja::Error, source: &str) -> String {
    let expr = e
        .range()
        .and_then(|r| expression(source, r))
        .map(str::trim)
        .filter(|x| !x.is_empty());
    let mut s = match (e.kind(), expr, e.detail()) {
        (minijinja::ErrorKind::UndefinedError, Some(x), _) => {
            format!("`{x}` is undefined (the job has no such variable or field)")
        }
        (kind, Some(x), Some(d)) => format!("{kind}: {d} (in `{x}`)"),
        (kind, Some(x), None) => format!("{kind} (in `{x}`)"),
        (kind, None, Some(d)) => format!("{kind}: {d}"),
        (kind, None, None) => kind.to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

/// The expression at `range`, widened to the start of a dotted name
/// (minijinja points at `.name` of `user.name`); for a filter (`x | f`),
/// the expression it was given.
fn expression(source: &str, range: std::ops::Range<usize>) -> Option<&str> {
    let name = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let before = source.get(..range.start)?.trim_end_matches(name);
    if let Some(piped) = before.trim_end().strip_suffix('|') {
        let open = piped.rfind("{{").map_or(0, |i| i + 2);
        return piped.get(open..);
    }
    source.get(before.len()..range.end)
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

    /// A CPU-bound template (nested loops over a large message) runs out
    /// of fuel, and output past the cap is refused: each fails, naming the
    /// limit, instead of holding a worker or the process's memory.
    #[test]
    fn renders_are_bounded_in_instructions_and_output() {
        let items: Vec<u32> = (0..3000).collect();
        let t = Template::new("{% for a in items %}{% for b in items %}.{% endfor %}{% endfor %}")
            .unwrap();
        let started = std::time::Instant::now();
        let e = t.render(context! { items }).unwrap_err().to_string();
        assert!(e.contains("ran out of instructions"), "{e}");
        println!("out of fuel after {:?}", started.elapsed());
        let t = Template::new("{% for i in range(80) %}{{ s }}{% endfor %}").unwrap();
        let s = "x".repeat(1 << 20);
        let e = t.render(context! { s }).unwrap_err().to_string();
        assert!(e.contains("output passed 64 MiB"), "{e}");
        let t = Template::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
        assert!(t.render(context! {}).is_err());
    }

    #[test]
    fn literal_text_is_not_compiled() {
        let t = Template::new("http://example.com/a").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(context! {}).unwrap(), "http://example.com/a");
    }

    #[test]
    fn tojson_embeds_structured_values() {
        let t = Template::new("{{ report | tojson }}").unwrap();
        let report = json::to_value(&serde_json::json!({"a": [1, 2], "b": "x"}));
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
        assert!(err.contains("`nope` is undefined"), "{err}");
        let t = Template::new("{{ n | tojson(indent=2) }}").unwrap();
        assert_eq!(t.render(context! { n => 1 }).unwrap(), "1");
    }

    #[test]
    fn undefined_variables_are_named() {
        let t = Template::new("a {{ body.user.name }} b").unwrap();
        let ctx = json::to_value(&serde_json::json!({"body": {"user": {}}}));
        let msg = t.render_field("body", ctx).unwrap_err().to_string();
        assert!(msg.contains("template `body`"), "{msg}");
        assert!(msg.contains("`body.user.name`"), "{msg}");
        let t = Template::url("http://h/{{ nope }}").unwrap();
        let msg = t.render_field("url", context! {}).unwrap_err().to_string();
        assert!(
            msg.contains("template `url`") && msg.contains("`nope`"),
            "{msg}"
        );
    }

    #[test]
    fn url_values_are_escaped_for_where_they_land() {
        let t = Template::url("http://h:1/json/{{ id }}?a={{ q }}&b=1#{{ f }}").unwrap();
        let r = |id: &str, q: &str| t.render(context! { id, q, f => "x y" });
        assert_eq!(
            r("../../a?b=c#d", "1&b=2").unwrap(),
            "http://h:1/json/..%2F..%2Fa%3Fb%3Dc%23d?a=1%26b%3D2&b=1#x%20y"
        );
        assert_eq!(
            r("%2e%2e", "a+b=c").unwrap(),
            "http://h:1/json/%252e%252e?a=a%2Bb%3Dc&b=1#x%20y"
        );
        assert_eq!(r("a\\b", "").unwrap(), "http://h:1/json/a%5Cb?a=&b=1#x%20y");
        for climbing in ["..", "."] {
            let e = r(climbing, "").unwrap_err().to_string();
            assert!(e.contains("path segment"), "{climbing}: {e}");
        }
        // A dot-segment made of two values, or of a value and literal dots.
        let t = Template::url("http://h/{{ a }}{{ b }}/x").unwrap();
        assert!(t.render(context! { a => ".", b => "." }).is_err());
        let t = Template::url("http://h/.{{ a }}/x").unwrap();
        assert!(t.render(context! { a => "." }).is_err());
        assert_eq!(t.render(context! { a => "a" }).unwrap(), "http://h/.a/x");
        // In the query, dots are data.
        let t = Template::url("http://h/x?p={{ a }}").unwrap();
        assert_eq!(t.render(context! { a => ".." }).unwrap(), "http://h/x?p=..");
    }

    #[test]
    fn url_values_before_the_path_and_raw_ones_are_kept() {
        let t = Template::url("{{ base }}/jobs/{{ id }}").unwrap();
        assert_eq!(
            t.render(context! { base => "http://h:8080/api", id => "a/b" })
                .unwrap(),
            "http://h:8080/api/jobs/a%2Fb"
        );
        let t = Template::url("http://h/{{ p | raw_url }}/{{ p }}").unwrap();
        assert_eq!(
            t.render(context! { p => "a/b?c" }).unwrap(),
            "http://h/a/b?c/a%2Fb%3Fc"
        );
        let t = Template::url("http://h/{{ nope | raw_url }}").unwrap();
        let e = t.render_field("url", context! {}).unwrap_err().to_string();
        assert!(e.contains("`nope` is undefined"), "{e}");
        let t = Template::url("http://h/{{ p | safe }}").unwrap();
        assert_eq!(t.render(context! { p => "a/b" }).unwrap(), "http://h/a/b");
        // A value cannot forge the markers the escaping uses.
        let t = Template::url("http://h/{{ p }}").unwrap();
        assert_eq!(
            t.render(context! { p => "\u{E000}2f\u{E001}" }).unwrap(),
            "http://h/%EE%80%802f%EE%80%81"
        );
    }

    #[test]
    fn no_html_escaping() {
        let t = Template::new("{{ s }}").unwrap();
        assert_eq!(t.render(context! { s => "<a&b>" }).unwrap(), "<a&b>");
    }
}
