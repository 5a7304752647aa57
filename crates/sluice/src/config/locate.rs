//! Finds the line of a field in a config file, for error messages.

use std::fmt;

use std::ops::Range;

use toml_edit::{ImDocument, Item, Value};

/// A field's path: `pipeline[0].step[2].regex`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn key(mut self, k: &str) -> FieldPath {
        // A step's own field paths may be dotted (`headers.authorization`).
        for part in k.split('.') {
            self.0.push(Segment::Key(part.to_owned()));
        }
        self
    }

    /// Appends one key, dots and all (a key may hold a dot: `"a.b" = 1`).
    pub fn push_key(mut self, k: &str) -> FieldPath {
        self.0.push(Segment::Key(k.to_owned()));
        self
    }

    /// The path without its last part.
    pub fn parent(&self) -> FieldPath {
        let mut p = self.clone();
        p.0.pop();
        p
    }

    /// N, for a path that starts `pipeline[N]`.
    pub fn pipeline_index(&self) -> Option<usize> {
        match self.0.as_slice() {
            [Segment::Key(p), Segment::Index(i), ..] if p == "pipeline" => Some(*i),
            _ => None,
        }
    }

    pub fn index(mut self, i: usize) -> FieldPath {
        self.0.push(Segment::Index(i));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line of the deepest part of `path` present in `text`.
pub fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut item: &Item = doc.as_item();
    let mut found = FieldPath::default();
    for seg in &path.0 {
        let next = match seg {
            Segment::Key(k) => item.get(k.as_str()),
            Segment::Index(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                item = n;
                found.0.push(seg.clone());
            }
            None => break,
        }
    }
    match item {
        Item::Value(v) => v.span().map(|s| line_at(text, s.start)),
        // A `[table]` or `[[table]]` is found by its header: toml_edit gives
        // the tables of an array none of their own.
        _ => header_line(text, &found),
    }
}

/// The line of the first table header at or under `path`.
fn header_line(text: &str, path: &FieldPath) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            let (p, n) = table_at(text, offset);
            if p.0.starts_with(&path.0) {
                return Some(n);
            }
        }
        offset += line.len();
    }
    None
}

/// The path of the deepest item of `doc` whose span holds byte `at`: a
/// value (or an element of an array, a field of an inline table), or else a
/// table whose header holds it.
pub fn path_at(doc: &ImDocument<&str>, at: usize) -> Option<FieldPath> {
    in_item(doc.as_item(), at, FieldPath::default())
}

fn in_item(item: &Item, at: usize, path: FieldPath) -> Option<FieldPath> {
    match item {
        Item::None => None,
        Item::Value(v) => in_value(v, at, path),
        Item::Table(t) => in_table(t, at, path),
        Item::ArrayOfTables(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, t)| in_table(t, at, path.clone().index(i))),
    }
}

fn in_table(t: &toml_edit::Table, at: usize, path: FieldPath) -> Option<FieldPath> {
    for (k, item) in t.iter() {
        if let Some(p) = in_item(item, at, path.clone().push_key(k)) {
            return Some(p);
        }
    }
    t.span().filter(|s| contains(s, at)).map(|_| path)
}

fn in_value(v: &Value, at: usize, path: FieldPath) -> Option<FieldPath> {
    if !v.span().is_some_and(|s| contains(&s, at)) {
        return None;
    }
    let inner = match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| in_value(v, at, path.clone().index(i))),
        Value::InlineTable(t) => t
            .iter()
            .find_map(|(k, v)| in_value(v, at, path.clone().push_key(k))),
        _ => None,
    };
    inner.or(Some(path))
}

fn contains(span: &Range<usize>, at: usize) -> bool {
    span.start <= at && at < span.end.max(span.start + 1)
}

/// The item at `path` in `doc`, if it is there.
pub fn item_at<'d>(doc: &'d ImDocument<&str>, path: &FieldPath) -> Option<&'d Item> {
    let mut item = doc.as_item();
    for seg in &path.0 {
        item = match seg {
            Segment::Key(k) => item.get(k.as_str())?,
            Segment::Index(i) => item.get(*i)?,
        };
    }
    Some(item)
}

/// The path of the table whose header is the last one before byte `at`,
/// counting `[[array]]` entries: `pipeline[1].step[0]`.
pub fn table_at(text: &str, at: usize) -> (FieldPath, usize) {
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut current = String::new();
    let mut header_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if offset > at {
            break;
        }
        offset += line.len();
        let t = line.trim();
        let (name, array) = if let Some(x) = t.strip_prefix("[[").and_then(|x| x.split("]]").next())
        {
            (x.trim(), true)
        } else if let Some(x) = t.strip_prefix('[').and_then(|x| x.split(']').next()) {
            (x.trim(), false)
        } else {
            continue;
        };
        let name: String = name.split('.').map(str::trim).collect::<Vec<_>>().join(".");
        if array {
            *counts.entry(name.clone()).or_insert(0) += 1;
            let child = format!("{name}.");
            counts.retain(|k, _| !k.starts_with(&child));
        }
        current = name;
        header_line = n + 1;
    }
    let mut path = FieldPath::default();
    let mut prefix = String::new();
    for part in current.split('.').filter(|p| !p.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        path.0.push(Segment::Key(part.to_owned()));
        if let Some(&c) = counts.get(&prefix) {
            path.0.push(Segment::Index(c.saturating_sub(1)));
        }
    }
    (path, header_line)
}

/// The 1-based line of `key = ...` within the table starting at line
/// `header_line`, if it is there.
pub fn key_line(text: &str, header_line: usize, key: &str) -> Option<usize> {
    for (n, line) in text.lines().enumerate().skip(header_line) {
        let t = line.trim_start();
        if t.starts_with('[') {
            return None;
        }
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if t.contains('=') && k == key {
            return Some(n + 1);
        }
    }
    None
}

/// The 1-based line of byte offset `at`.
pub fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_table_around_an_offset() {
        let text = "[[pipeline]]\nname = \"a\"\n[[pipeline.step]]\nx = 1\n[[pipeline]]\n[pipeline.source]\ntype = \"file\"\n[[pipeline.step]]\n[[pipeline.step]]\nurll = 2\n";
        let at = text.find("urll").unwrap();
        let (path, line) = table_at(text, at);
        assert_eq!(path.to_string(), "pipeline[1].step[1]");
        assert_eq!(line, 9);
        assert_eq!(key_line(text, line, "urll"), Some(10));
        let (path, _) = table_at(text, text.find("type").unwrap());
        assert_eq!(path.to_string(), "pipeline[1].source");
    }

    #[test]
    fn finds_nested_fields() {
        let text = "[[pipeline]]\nname = \"a\"\n\n[[pipeline]]\nname = \"b\"\n[[pipeline.step]]\ntype = \"extract\"\nregex = \"(\"\n";
        let p = FieldPath::default()
            .key("pipeline")
            .index(1)
            .key("step")
            .index(0)
            .key("regex");
        assert_eq!(p.to_string(), "pipeline[1].step[0].regex");
        assert_eq!(line_of(text, &p), Some(8));
        let p = FieldPath::default().key("pipeline").index(1).key("name");
        assert_eq!(line_of(text, &p), Some(5));
    }
}
