//! The second pass: the parsed nodes turned into a [`PhpValue`] tree,
//! references expanded into copies under a budget, cycles cut.

use std::ops::Range;

use super::parse::{KeyText, Node, PropName};
use super::{
    Key, MAX_COPIED_BYTES, MAX_COPIED_VALUES, MAX_DEPTH, Object, PhpValue, Property,
    UnserializeError as Error, Visibility, lossy,
};

/// Builds the tree rooted at node `root`.
pub(super) fn build(input: &[u8], nodes: &[Node], root: usize) -> Result<PhpValue, Error> {
    Builder {
        input,
        nodes,
        on_path: vec![false; nodes.len()],
        values_left: nodes.len() + MAX_COPIED_VALUES,
        bytes_left: input.len() + MAX_COPIED_BYTES,
    }
    .build(root, 0, None)
}

struct Builder<'a> {
    input: &'a [u8],
    nodes: &'a [Node],
    /// The arrays and objects being built, outermost first: a reference to
    /// one of them is a cycle.
    on_path: Vec<bool>,
    values_left: usize,
    bytes_left: usize,
}

impl Builder<'_> {
    /// Builds node `idx` at nesting `depth`; `via` is the offset of the
    /// reference whose copy this is, if any.
    fn build(&mut self, idx: usize, depth: usize, via: Option<usize>) -> Result<PhpValue, Error> {
        let nodes = self.nodes;
        if let Node::Ref { target, at } = nodes[idx] {
            let via = via.or(Some(at));
            if self.on_path[target] {
                self.charge_value(via)?;
                return Ok(PhpValue::Recursion);
            }
            return self.build(target, depth, via);
        }
        self.charge_value(via)?;
        Ok(match &nodes[idx] {
            Node::Null => PhpValue::Null,
            Node::Bool(b) => PhpValue::Bool(*b),
            Node::Int(n) => PhpValue::Int(*n),
            Node::Float(f) => PhpValue::Float(*f),
            Node::Str(text) => PhpValue::String(self.bytes(text, via)?),
            Node::Array { entries, at } => {
                self.enter(idx, depth, via.unwrap_or(*at))?;
                let mut out = Vec::with_capacity(entries.len());
                for (key, child) in entries {
                    let key = match key {
                        KeyText::Int(n) => Key::Int(*n),
                        KeyText::Str(text) => Key::String(self.bytes(text, via)?),
                    };
                    out.push((key, self.build(*child, depth + 1, via)?));
                }
                self.on_path[idx] = false;
                PhpValue::Array(out)
            }
            Node::Object { class, props, at } => {
                self.enter(idx, depth, via.unwrap_or(*at))?;
                let class = self.text(class, via)?;
                let mut properties = Vec::with_capacity(props.len());
                for (name, child) in props {
                    let (name, visibility) = match name {
                        PropName::Int(n) => (n.to_string(), Visibility::Public),
                        PropName::Str {
                            mangled,
                            class,
                            name,
                        } => {
                            self.charge_bytes(mangled.len(), via)?;
                            let visibility = match class {
                                None => Visibility::Public,
                                Some(c) if &self.input[c.clone()] == b"*" => Visibility::Protected,
                                Some(c) => Visibility::Private {
                                    class: lossy(&self.input[c.clone()]),
                                },
                            };
                            (lossy(&self.input[name.clone()]), visibility)
                        }
                    };
                    let value = self.build(*child, depth + 1, via)?;
                    properties.push(Property {
                        name,
                        visibility,
                        value,
                    });
                }
                self.on_path[idx] = false;
                PhpValue::Object(Object { class, properties })
            }
            Node::Custom { class, raw } => PhpValue::Custom {
                class: self.text(class, via)?,
                raw: self.bytes(raw, via)?,
            },
            Node::Enum { class, case } => PhpValue::Enum {
                class: self.text(class, via)?,
                case: self.text(case, via)?,
            },
            Node::Ref { .. } => unreachable!("references are resolved above"),
        })
    }

    /// Marks an array or object as being built, if the tree is not too
    /// deep there.
    fn enter(&mut self, idx: usize, depth: usize, offset: usize) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep { offset });
        }
        self.on_path[idx] = true;
        Ok(())
    }

    /// Counts one value against the budget. Without references the
    /// input's own size never exhausts it; with them, the copies do.
    fn charge_value(&mut self, via: Option<usize>) -> Result<(), Error> {
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or(Error::TooManyCopies {
                offset: via.unwrap_or(0),
            })?;
        Ok(())
    }

    /// Counts `len` bytes of text against the budget.
    fn charge_bytes(&mut self, len: usize, via: Option<usize>) -> Result<(), Error> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(len)
            .ok_or(Error::TooManyCopies {
                offset: via.unwrap_or(0),
            })?;
        Ok(())
    }

    fn bytes(&mut self, text: &Range<usize>, via: Option<usize>) -> Result<Vec<u8>, Error> {
        self.charge_bytes(text.len(), via)?;
        Ok(self.input[text.clone()].to_vec())
    }

    fn text(&mut self, text: &Range<usize>, via: Option<usize>) -> Result<String, Error> {
        self.charge_bytes(text.len(), via)?;
        Ok(lossy(&self.input[text.clone()]))
    }
}
