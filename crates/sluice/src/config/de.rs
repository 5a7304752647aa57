//! Reading a config's substituted text into a [`Config`]: a string that is
//! one `${VAR}` only becomes the number a field takes, and an error names
//! the field's whole path, its line and what to write instead.

use std::ops::Range;

use toml_edit::{ImDocument, Item};

use super::env::Substituted;
use super::{Config, FieldPath, locate, registry};

/// A config that does not deserialize: where, which field, what to do.
#[derive(Debug)]
pub(super) struct Error {
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

/// Deserializes `substituted`; a lone `"${N}"` where the field takes a
/// number (or a boolean) is written bare and the text read again.
pub(super) fn deserialize(substituted: &mut Substituted) -> Result<Config, Error> {
    loop {
        // toml's own message quotes the offending line, which may hold a
        // substituted secret: keep only its message and position.
        let e = match toml::from_str(&substituted.text) {
            Ok(config) => return Ok(config),
            Err(e) => e,
        };
        let (span, mut message) = locate_error(&substituted.text, &e);
        if message.starts_with("invalid type: string") {
            let whole = substituted
                .whole
                .iter()
                .position(|w| Some(&w.span) == span.as_ref());
            if let Some(i) = whole {
                if substituted.make_bare(i) {
                    continue;
                }
                // Name the variable rather than print its value.
                let w = &substituted.whole[i];
                let quoted = format!("{:?}", w.value);
                message = message.replacen(&quoted, &format!("from `{}`", w.reference), 1);
            }
        }
        // serde quotes the value it could not read; one from the
        // environment is a secret (callers of `config::parse` print this).
        let message = crate::redact::redact(&message);
        return Err(describe(&substituted.text, span, &hint(&message)));
    }
}

/// The error at `span` of `text`, with its field and line.
fn describe(text: &str, span: Option<Range<usize>>, message: &str) -> Error {
    let Some(span) = span else {
        return Error {
            line: None,
            field: None,
            message: message.to_owned(),
        };
    };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let (field, line) = match named {
        // A field that is not there has no span of its own: name the
        // table around it, and find the field's own line.
        Some(name) => {
            let (table, header_line) = locate::table_at(text, span.start);
            let line = locate::key_line(text, header_line, name)
                .unwrap_or(locate::line_at(text, span.start));
            (table.key(name), line)
        }
        None => {
            let path = ImDocument::parse(text)
                .ok()
                .and_then(|doc| locate::path_at(&doc, span.start))
                .unwrap_or_else(|| locate::table_at(text, span.start).0);
            (path, locate::line_at(text, span.start))
        }
    };
    let field = field.to_string();
    Error {
        line: Some(line),
        field: (!field.is_empty()).then_some(field),
        message: message.to_owned(),
    }
}

/// Where a deserialization error is, and what it says. serde reads a
/// step's or a source's table whole (by its `type`), so its errors point at
/// the table: such a table is read again as its type's own config, whose
/// errors point at the value.
fn locate_error(text: &str, e: &toml::de::Error) -> (Option<Range<usize>>, String) {
    let message = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return (None, message);
    };
    let Ok(doc) = ImDocument::parse(text) else {
        return (Some(span), message);
    };
    let path =
        locate::path_at(&doc, span.start).unwrap_or_else(|| locate::table_at(text, span.start).0);
    if matches!(locate::item_at(&doc, &path), Some(Item::Value(v)) if !v.is_inline_table()) {
        // A value's own error: serde named it already.
        return (Some(span), message);
    }
    // The error names a table, or an array of them, which may not be the
    // one at fault: read each source and step again, from the pipeline
    // named on, in the order serde reads them; the first error is it.
    let first = path.pipeline_index().unwrap_or(0);
    let pipelines = doc
        .get("pipeline")
        .and_then(Item::as_array_of_tables)
        .map_or(0, |a| a.len());
    for i in first..pipelines {
        let at = FieldPath::default().key("pipeline").index(i);
        let steps = locate::item_at(&doc, &at.clone().key("step")).map_or(0, |s| {
            s.as_array_of_tables()
                .map(|a| a.len())
                .or(s.as_array().map(|a| a.len()))
                .unwrap_or(0)
        });
        let tables = std::iter::once(("source", at.clone().key("source")))
            .chain((0..steps).map(|j| ("step", at.clone().key("step").index(j))));
        for (kind, at) in tables {
            let mut table = match locate::item_at(&doc, &at) {
                Some(Item::Table(t)) => t.clone(),
                Some(Item::Value(toml_edit::Value::InlineTable(t))) => t.clone().into_table(),
                _ => continue,
            };
            let Some(ty) = table
                .remove("type")
                .and_then(|t| t.as_str().map(str::to_owned))
            else {
                continue;
            };
            let inner = registry::table_error(kind, &ty, table);
            if let Some(inner) = inner.filter(|i| i.span().is_some()) {
                return (inner.span(), inner.message().trim().to_owned());
            }
        }
    }
    (Some(span), message)
}

/// serde's message, with what to write instead.
fn hint(message: &str) -> String {
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e.trim());
    let fix = if message.starts_with("invalid type") || message.starts_with("invalid value") {
        match expected {
            Some("usize" | "u64") => "write a whole number, 0 or more, without quotes".into(),
            Some(small @ ("u32" | "u16" | "u8")) => {
                let max = match small {
                    "u8" => u32::from(u8::MAX),
                    "u16" => u32::from(u16::MAX),
                    _ => u32::MAX,
                };
                format!("write a whole number from 0 to {max}, without quotes")
            }
            Some("i64" | "i32") => "write a whole number, without quotes".into(),
            Some("f64" | "f32") => "write a number, without quotes".into(),
            Some("a boolean") => "write true or false, without quotes".into(),
            Some("a string") => "write a string, in quotes".into(),
            Some("a sequence") => "write a list: [ ... ]".into(),
            Some(e) if e.starts_with("struct") || e == "a map" => {
                "write a table: [section] or { key = value }".into()
            }
            _ => String::new(),
        }
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        format!("add `{name} = ...`")
    } else if message.starts_with("unknown field") {
        "remove it, or fix its name".into()
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        // A source or dead-letter target this binary was built without.
        let name = rest.split('`').next().unwrap_or("");
        let feature = match name {
            "file" | "sqs" | "kafka" | "redis" => Some(name),
            "failed_jobs" => Some("failed-jobs"),
            _ => None,
        };
        feature.map_or_else(String::new, |f| {
            format!(
                "this sluice was built without `{name}`: build it with the cargo feature \
                 `{f}` (cargo build --release --features {f})"
            )
        })
    } else {
        String::new()
    };
    if fix.is_empty() {
        message.to_owned()
    } else {
        format!("{message}: {fix}")
    }
}

#[cfg(test)]
mod tests {
    /// A source type this binary was built without names the cargo feature
    /// that adds it, not only serde's "unknown variant".
    #[test]
    fn a_compiled_out_source_names_its_feature() {
        let h = super::hint("unknown variant `kafka`, expected one of `file`, `sqs`");
        assert!(h.contains("cargo build --release --features kafka"), "{h}");
        let h = super::hint("unknown variant `failed_jobs`, expected `source`");
        assert!(h.contains("--features failed-jobs"), "{h}");
        let h = super::hint("unknown variant `rabbit`, expected one of `file`");
        assert_eq!(h, "unknown variant `rabbit`, expected one of `file`");
    }
}
