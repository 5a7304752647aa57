//! Finds the line of a field in a config file, for error messages.

use std::fmt;

use toml_edit::{ImDocument, Item};

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
    let mut span = None;
    for seg in &path.0 {
        let next = match seg {
            Segment::Key(k) => item.get(k.as_str()),
            Segment::Index(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                item = n;
                span = n.span().or(span);
            }
            None => break,
        }
    }
    // Tables from `[[header]]`s have no span of their own in toml_edit;
    // fall back to the header line of the array-of-tables entry.
    if span.is_none() {
        if let Some(t) = item.as_table() {
            span = t.span();
        }
    }
    span.map(|s| line_at(text, s.start))
}

/// The 1-based line of byte offset `at`.
pub fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

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
