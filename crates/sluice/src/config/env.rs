//! `${VAR}` in a config file: secrets and endpoints from the environment.
//!
//! `${VAR}` in a string value is replaced by the variable's value and is an
//! error when it is unset; `${VAR:-default}` falls back to `default`; `$${`
//! is a literal `${`.
//!
//! Substitution happens inside string values after the file is parsed, so
//! the value a field gets is exactly what the environment holds: quotes,
//! backslashes, newlines or a `${` in a variable's value are kept as they
//! are, never read as TOML (a header value of `tok", "x-injected" = "yes`
//! stays one header value) nor substituted again. Keys are never
//! substituted; a key holding `${` is refused.
//!
//! A reference must stand inside a string. A string that is one reference
//! and nothing else (`concurrency = "${WORKERS}"`) is read as a number or a
//! boolean where the field takes one; anywhere else it stays a string.
//! `concurrency = ${WORKERS}`, outside quotes, is refused with that advice.
//!
//! A value taken from the environment is
//! [registered](crate::redact::register) as a secret, so no log line,
//! failure reason or error message prints it — unless it lands where a
//! name goes ([`IDENTITY_FIELDS`]: a queue, a topic, a group, a table, a
//! path...), which logs and metric labels must show as they are; in a URL
//! field (`url`, `endpoint`, `*_url`), a value that lands in the URL's
//! scheme, host or port is not a secret (the `destination` label shows
//! them), one in its `user:password@`, path or query is (a webhook URL may
//! carry its secret in the path).
//! Headers, bodies, keys, tokens, passwords and every other field: secret.
//!
//! ```
//! use sluice::config::env::substitute;
//!
//! let env = |name: &str| (name == "TOKEN").then(|| r#"a"b\c"#.to_owned());
//! let out = substitute("token = \"Bearer ${TOKEN}\"\n", env).unwrap();
//! assert_eq!(out.text, "token = \"Bearer a\\\"b\\\\c\"\n");
//! ```

use std::ops::Range;

/// Fields whose values are names, shown as they are in logs and metric
/// labels: a value from the environment there is not a secret (a queue
/// named `reports` must not turn every label into `[redacted]`).
pub const IDENTITY_FIELDS: &[&str] = &[
    "name",
    "queue",
    "queue_url",
    "dead_letter_queue_url",
    "topics",
    "topic",
    "dead_letter_topic",
    "group_id",
    "prefix",
    "table",
    "connection",
    "path",
    "checkpoint",
    "failures",
    "dead_letter_list",
    "region",
    "format",
    "brokers",
    "ordering",
    "ordering_key",
    "listen",
    "tls_ca_file",
];

/// Where a string value sits, by the key that holds it: what of a value
/// from the environment there is a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// A name: nothing.
    Identity,
    /// A URL: what lands in its userinfo or query.
    Url,
    /// Anything else: all of it.
    Other,
    /// A table of free-form names (`headers`, `options`): whatever its keys
    /// are called (a header named `name`), its values are [`Place::Other`].
    FreeForm,
}

impl Place {
    /// The place of `key`'s value, inside a value at `self`.
    fn child(self, key: &str) -> Place {
        if self == Place::FreeForm {
            Place::Other
        } else {
            Place::of(key)
        }
    }

    fn of(key: &str) -> Place {
        if key == "headers" || key == "options" {
            Place::FreeForm
        } else if IDENTITY_FIELDS.contains(&key) {
            Place::Identity
        } else if key == "url" || key == "endpoint" || key.ends_with("_url") {
            Place::Url
        } else {
            Place::Other
        }
    }
}

/// The byte ranges of `url` that may carry credentials: its
/// `user:password@`, and its path, query and fragment.
fn credential_ranges(url: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    // Not a URL: nothing says which part is a name.
    let Some(authority_start) = url.find("://").map(|i| i + 3) else {
        return std::iter::once(0..url.len()).collect();
    };
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    if let Some(at) = url[authority_start..authority_end].rfind('@') {
        out.push(authority_start..authority_start + at);
    }
    if authority_end < url.len() {
        out.push(authority_end..url.len());
    }
    out
}

use toml_edit::{ImDocument, Item, Value};

/// A config's text with every string value that held a `${...}` written
/// again, escaped, holding the substituted value. Every line stays where it
/// was, so line numbers in later errors are those of the file.
#[derive(Debug)]
pub struct Substituted {
    pub text: String,
    /// Strings that were one reference and nothing else: candidates for a
    /// number or a boolean where the field takes one.
    pub whole: Vec<Whole>,
}

/// A string value of [`Substituted::text`] that was one `${...}` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whole {
    /// Where the string (with its quotes) is in the text.
    pub span: Range<usize>,
    /// Its value.
    pub value: String,
    /// The reference as written in the string: `${WORKERS}`.
    pub reference: String,
}

impl Substituted {
    /// Rewrites the string at `whole[i]` as a bare TOML value (its number or
    /// boolean) when its value is one; false when it is not.
    pub fn make_bare(&mut self, i: usize) -> bool {
        let w = &self.whole[i];
        let bare = w.value.trim();
        let scalar = matches!(
            bare.parse::<Value>(),
            Ok(Value::Integer(_) | Value::Float(_) | Value::Boolean(_))
        );
        if !scalar || self.text[w.span.clone()].contains('\n') {
            return false;
        }
        let w = self.whole.remove(i);
        let bare = w.value.trim().to_owned();
        self.text.replace_range(w.span.clone(), &bare);
        let shrink = w.span.len() - bare.len();
        for other in &mut self.whole {
            if other.span.start > w.span.start {
                other.span = other.span.start - shrink..other.span.end - shrink;
            }
        }
        true
    }
}

/// Substitutes `${...}` in every string value of the TOML `text`; `lookup`
/// reads a variable.
///
/// A text that is not TOML comes back as it is, for the parser to report,
/// unless a `${` outside quotes is the reason. On error returns the 1-based
/// line and a message naming the variable.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Substituted, (usize, String)> {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            if let Some(at) = e.span().map(|s| s.start) {
                if text[at..].starts_with("${") {
                    let name: String = text[at + 2..]
                        .chars()
                        .take_while(|c| *c != '}' && *c != '\n')
                        .collect();
                    return Err((
                        line_at(text, at),
                        format!(
                            "`${{{name}}}` stands outside a string: write it in quotes, \"${{{name}}}\" \
                             (a string that is only one variable is read as a number or a boolean \
                             where the field takes one)"
                        ),
                    ));
                }
            }
            return Ok(Substituted {
                text: text.to_owned(),
                whole: Vec::new(),
            });
        }
    };
    let mut found = Vec::new();
    walk_item(text, doc.as_item(), Place::Other, &mut found)?;
    found.sort_by_key(|(span, _, _)| span.start);

    let mut out = String::with_capacity(text.len());
    let mut whole = Vec::new();
    let mut copied = 0;
    for (span, value, place) in found {
        let expanded = expand(&value, &lookup, place).map_err(|(reference, msg)| {
            // The reference's own line, in a string of several lines.
            let at = text[span.clone()]
                .find(&reference)
                .map_or(span.start, |i| span.start + i);
            (line_at(text, at), msg)
        })?;
        out.push_str(&text[copied..span.start]);
        let start = out.len();
        let newlines = text[span.clone()].matches('\n').count();
        encode(&expanded.value, newlines, &mut out);
        if expanded.whole {
            whole.push(Whole {
                span: start..out.len(),
                value: expanded.value,
                reference: value,
            });
        }
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    Ok(Substituted { text: out, whole })
}

/// Collects the strings that hold a `${` (with their spans), and refuses
/// keys that hold a `${`.
/// A string holding a `${`: where it is, its value, and what of it is
/// secret.
type Found = (Range<usize>, String, Place);

fn walk_item(
    text: &str,
    item: &Item,
    place: Place,
    found: &mut Vec<Found>,
) -> Result<(), (usize, String)> {
    match item {
        Item::None => {}
        Item::Value(v) => walk_value(text, v, place, found)?,
        Item::Table(t) => {
            for (k, item) in t.iter() {
                check_key(text, k, t.key(k).and_then(|k| k.span()))?;
                walk_item(text, item, place.child(k), found)?;
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                for (k, item) in t.iter() {
                    check_key(text, k, t.key(k).and_then(|k| k.span()))?;
                    walk_item(text, item, place.child(k), found)?;
                }
            }
        }
    }
    Ok(())
}

fn walk_value(
    text: &str,
    v: &Value,
    place: Place,
    found: &mut Vec<Found>,
) -> Result<(), (usize, String)> {
    match v {
        // `$${` holds `${` too: it is unescaped like a reference.
        Value::String(s) if s.value().contains("${") => {
            if let Some(span) = s.span() {
                found.push((span, s.value().clone(), place));
            }
        }
        // The elements of a list are the key's (`topics = [...]`).
        Value::Array(a) => {
            for v in a.iter() {
                walk_value(text, v, place, found)?;
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                check_key(text, k, t.key(k).and_then(|k| k.span()))?;
                walk_value(text, v, place.child(k), found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_key(text: &str, key: &str, span: Option<Range<usize>>) -> Result<(), (usize, String)> {
    if key.contains("${") {
        return Err((
            span.map_or(1, |s| line_at(text, s.start)),
            format!("key `{key}`: `${{...}}` is substituted in string values only, never in keys"),
        ));
    }
    Ok(())
}

/// A string value after substitution.
#[derive(Debug, PartialEq, Eq)]
struct Expanded {
    value: String,
    /// The string was one reference and nothing else.
    whole: bool,
}

/// Replaces every `${...}` in one string value. On error returns the
/// reference as written (to find its line) and the message.
fn expand(
    value: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    place: Place,
) -> Result<Expanded, (String, String)> {
    let mut out = String::with_capacity(value.len());
    // Where each value from the environment landed in `out`.
    let mut from_env: Vec<Range<usize>> = Vec::new();
    let mut references = 0;
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(inner_start) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = inner_start.find('}') else {
            return Err((
                "${".into(),
                "`${` without a closing `}`; write `$${` for a literal `${`".into(),
            ));
        };
        let inner = &inner_start[..end];
        let reference = format!("${{{inner}}}");
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err((
                reference,
                format!(
                    "`${{{inner}}}` is not an environment variable reference; write `$${{` for a literal `${{`"
                ),
            ));
        }
        match (lookup(name), default) {
            (Some(v), _) => {
                from_env.push(out.len()..out.len() + v.len());
                out.push_str(&v);
            }
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err((
                    reference,
                    format!(
                        "environment variable `{name}` is not set; set it, or write `${{{name}:-default}}`"
                    ),
                ));
            }
        }
        references += 1;
        rest = &inner_start[end + 1..];
        if references == 1 && rest.is_empty() && tail.len() == value.len() {
            register_secrets(&out, &from_env, place);
            return Ok(Expanded {
                value: out,
                whole: true,
            });
        }
    }
    out.push_str(rest);
    register_secrets(&out, &from_env, place);
    Ok(Expanded {
        value: out,
        whole: false,
    })
}

/// Registers what of `value` is secret: the parts at `from_env` that came
/// from the environment, by the `place` the value is in.
fn register_secrets(value: &str, from_env: &[Range<usize>], place: Place) {
    let credentials = match place {
        Place::Identity => return,
        Place::Url => credential_ranges(value),
        Place::Other | Place::FreeForm => std::iter::once(0..value.len()).collect(),
    };
    for r in from_env {
        if credentials
            .iter()
            .any(|c| r.start < c.end && c.start < r.end)
        {
            crate::redact::register(&value[r.clone()]);
        }
    }
}

/// Writes `value` as a TOML basic string spanning `newlines` + 1 lines, so
/// the lines after it keep their numbers: a string written over several
/// lines becomes a multi-line string whose line breaks are all escaped.
fn encode(value: &str, newlines: usize, out: &mut String) {
    let quotes = if newlines == 0 { "\"" } else { "\"\"\"" };
    out.push_str(quotes);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    if newlines > 0 {
        // A `\` ending a line drops the line break and the whitespace
        // after it: the string holds none of these lines.
        out.push('\\');
        for _ in 0..newlines {
            out.push('\n');
        }
    }
    out.push_str(quotes);
}

fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "PORT" => Some("8080".into()),
            "QUOTE" => Some(r#"tok", "x-injected" = "yes"#.into()),
            "BACKSLASH" => Some(r"a\nb\u0041\\".into()),
            "NEWLINE" => Some("line1\nline2\r\n\tend\u{7}".into()),
            "DOLLAR" => Some("${TOKEN} $${PORT}".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    /// The substituted text parsed back: what a field would get.
    fn value_of(text: &str, key: &str) -> toml::Value {
        let out = substitute(text, env).unwrap();
        let table: toml::Table =
            toml::from_str(&out.text).unwrap_or_else(|e| panic!("not TOML: {e}\n{}", out.text));
        table[key].clone()
    }

    fn string_of(text: &str, key: &str) -> String {
        value_of(text, key).as_str().unwrap().to_owned()
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        let text = "a = \"${TOKEN}\"\nport = \"${PORT}\"\nb = \"${NOPE:-x}\"\nc = \"$${LIT} $5\"\nd = 'x${TOKEN}'";
        assert_eq!(string_of(text, "a"), "s3cr3t");
        assert_eq!(string_of(text, "port"), "8080");
        assert_eq!(string_of(text, "b"), "x");
        assert_eq!(string_of(text, "c"), "${LIT} $5");
        assert_eq!(string_of(text, "d"), "xs3cr3t");
        assert_eq!(string_of("e = \"${EMPTY}\"", "e"), "");
        assert_eq!(string_of("e = \"${NOPE:-}\"", "e"), "");
    }

    #[test]
    fn values_are_exactly_what_the_environment_holds() {
        for var in ["QUOTE", "BACKSLASH", "NEWLINE", "DOLLAR"] {
            let want = env(var).unwrap();
            let text = format!("v = \"${{{var}}}\"\n");
            assert_eq!(string_of(&text, "v"), want, "{var}");
            let text = format!("v = 'pre ${{{var}}} post'\n");
            assert_eq!(string_of(&text, "v"), format!("pre {want} post"), "{var}");
        }
    }

    #[test]
    fn a_quote_cannot_add_keys() {
        let text = "[h]\nauthorization = \"Bearer ${QUOTE}\"\n";
        let v = value_of(text, "h");
        let h = v.as_table().unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            h["authorization"].as_str().unwrap(),
            format!("Bearer {}", env("QUOTE").unwrap())
        );
        // The same inside an inline table and an array.
        let text = "h = { a = \"${QUOTE}\" }\nl = [\"${QUOTE}\", \"b\"]\n";
        let h = value_of(text, "h");
        assert_eq!(h.as_table().unwrap().len(), 1);
        let l = value_of(text, "l");
        assert_eq!(l.as_array().unwrap().len(), 2);
    }

    #[test]
    fn lines_stay_where_they_were() {
        let text = "a = \"\"\"\n${NEWLINE}\nx\"\"\"\nb = '''\n${QUOTE}\n'''\nc = \"${NOPE}\"\n";
        let (line, msg) = substitute(text, env).unwrap_err();
        assert_eq!(line, 7, "{msg}");
        let text = "a = \"\"\"\n${NEWLINE}\nx\"\"\"\nb = '''\n${QUOTE}\n'''\nc = 1\n";
        let out = substitute(text, env).unwrap();
        assert_eq!(
            out.text.lines().count(),
            text.lines().count(),
            "{}",
            out.text
        );
        assert_eq!(out.text.lines().nth(6), Some("c = 1"));
        assert_eq!(
            string_of(text, "a"),
            format!("{}\nx", env("NEWLINE").unwrap())
        );
        assert_eq!(string_of(text, "b"), format!("{}\n", env("QUOTE").unwrap()));
    }

    #[test]
    fn whole_references_can_become_numbers() {
        let text = "n = \"${PORT}\"\ns = \"port ${PORT}\"\nt = \"${TOKEN}\"\n";
        let mut out = substitute(text, env).unwrap();
        assert_eq!(out.whole.len(), 2, "{:?}", out.whole);
        assert_eq!(out.whole[0].value, "8080");
        assert!(out.make_bare(0));
        assert!(!out.make_bare(0), "s3cr3t is not a number");
        let table: toml::Table = toml::from_str(&out.text).unwrap();
        assert_eq!(table["n"].as_integer(), Some(8080));
        assert_eq!(table["s"].as_str(), Some("port 8080"));
    }

    #[test]
    fn unset_variable_names_line_and_variable() {
        let (line, msg) = substitute("a = 1\nb = \"${MISSING}\"", env).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("`MISSING` is not set"), "{msg}");
    }

    #[test]
    fn malformed_references() {
        for bad in [
            "a = \"${oops\"",
            "a = \"${1X}\"",
            "a = \"${}\"",
            "a = \"${A B}\"",
        ] {
            assert!(substitute(bad, env).is_err(), "{bad}");
        }
    }

    #[test]
    fn bare_references_and_keys_are_refused() {
        let (line, msg) = substitute("a = 1\nn = ${PORT}\n", env).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("write it in quotes, \"${PORT}\""), "{msg}");
        let (line, msg) = substitute("[h]\n\"${TOKEN}\" = \"x\"\n", env).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("never in keys"), "{msg}");
    }

    #[test]
    fn comments_are_not_substituted() {
        let out = substitute("# ${MISSING}\na = \"x\" # ${MISSING}\n", env).unwrap();
        assert_eq!(out.text, "# ${MISSING}\na = \"x\" # ${MISSING}\n");
    }

    /// Names (a queue, a topic, a table) from the environment stay
    /// readable; a URL's host too, but not its password, path or query;
    /// headers, tokens and everything else are secrets.
    #[test]
    fn only_values_in_credential_places_become_secrets() {
        let lookup = |name: &str| Some(format!("value-of-{name}-77"));
        substitute(
            "queue = \"${QUEUE}\"\ntopics = [\"${TOPIC}\"]\nname = \"p-${NAME}\"\n\
             url = \"redis://:${PASS}@${HOST}/0\"\nendpoint = \"https://${EHOST}/p?sig=${SIG}\"\n\
             webhook_url = \"https://hooks.example/${HOOKPATH}\"\n\
             headers = { authorization = \"Bearer ${TOKEN}\", name = \"${HNAME}\" }\n\
             app_key = \"${KEY}\"\n",
            lookup,
        )
        .unwrap();
        let shown = |name: &str| {
            let v = format!("value-of-{name}-77");
            crate::redact::redact(&v) == v
        };
        for name in ["QUEUE", "TOPIC", "NAME", "HOST", "EHOST"] {
            assert!(shown(name), "{name} is not a secret");
        }
        for name in ["PASS", "SIG", "HOOKPATH", "TOKEN", "HNAME", "KEY"] {
            assert!(!shown(name), "{name} is a secret");
        }
    }

    #[test]
    fn environment_values_become_secrets() {
        let lookup = |_: &str| Some("env-secret-4711".to_owned());
        substitute("a = \"${ANY}\"", lookup).unwrap();
        assert_eq!(
            crate::redact::redact("x env-secret-4711 y"),
            format!("x {} y", crate::redact::REDACTED)
        );
    }
}
