//! The first pass: the input read into a flat list of [`Node`]s in the
//! order their text starts, which is also the order PHP numbers values in.
//! A reference becomes a node pointing at an earlier one; `build` turns the
//! list into the tree.

use std::ops::Range;

use super::{MAX_DEPTH, UnserializeError as Error};

const VALUE: &str = "a value (`N;` `b:` `i:` `d:` `s:` `a:` `O:` `C:` `E:` `r:` `R:`)";

/// Elements reserved up front, whatever a count declares: a count is only
/// a claim until the elements are there.
const PREALLOC: usize = 16;

/// Reads one value; returns the nodes and the index of the root among them.
pub(super) fn parse(input: &[u8]) -> Result<(Vec<Node>, usize), Error> {
    let mut parser = Parser {
        input,
        pos: 0,
        nodes: Vec::new(),
        slots: Vec::new(),
        first_custom: None,
    };
    let root = parser.value(0)?;
    Ok((parser.nodes, root))
}

/// A value as read; text is kept as ranges of the input.
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Range<usize>),
    Array {
        entries: Vec<(KeyText, usize)>,
        at: usize,
    },
    Object {
        class: Range<usize>,
        props: Vec<(PropName, usize)>,
        at: usize,
    },
    Custom {
        class: Range<usize>,
        raw: Range<usize>,
    },
    Enum {
        class: Range<usize>,
        case: Range<usize>,
    },
    /// `r:` or `R:`; `target` is never itself a `Ref`.
    Ref {
        target: usize,
        at: usize,
    },
}

pub(super) enum KeyText {
    Int(i64),
    Str(Range<usize>),
}

pub(super) enum PropName {
    /// PHP turns an integer key into a public property named by its digits.
    Int(i64),
    Str {
        /// The whole key as written.
        mangled: Range<usize>,
        /// `None`: public; `*`: protected; else private to that class.
        class: Option<Range<usize>>,
        name: Range<usize>,
    },
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    /// The node of each numbered value: `r:n`/`R:n` names `slots[n - 1]`.
    slots: Vec<usize>,
    /// The number of the first `C:` object, after which PHP's numbers are
    /// unknowable.
    first_custom: Option<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The error for finding something other than `expected` here.
    fn unexpected(&self, expected: &'static str) -> Error {
        match self.peek() {
            None => Error::Truncated {
                offset: self.pos,
                expected,
            },
            Some(found) => Error::Unexpected {
                offset: self.pos,
                found,
                expected,
            },
        }
    }

    fn eat(&mut self, byte: u8, expected: &'static str) -> Result<(), Error> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn colon(&mut self) -> Result<(), Error> {
        self.eat(b':', "`:`")
    }

    fn semicolon(&mut self) -> Result<(), Error> {
        self.eat(b';', "`;`")
    }

    /// Skips `[0-9]*`, returning how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `[0-9]+` as a length, count or value number.
    fn uint(&mut self) -> Result<usize, Error> {
        let start = self.pos;
        if self.digits() == 0 {
            return Err(self.unexpected("a digit"));
        }
        self.input[start..self.pos]
            .iter()
            .try_fold(0usize, |n, &b| {
                n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
            })
            .ok_or(Error::NumberOutOfRange { offset: start })
    }

    /// `[+-]?[0-9]+` as a PHP integer.
    fn int(&mut self) -> Result<i64, Error> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let digits_at = self.pos;
        if self.digits() == 0 {
            return Err(self.unexpected("a digit"));
        }
        let magnitude = self.input[digits_at..self.pos]
            .iter()
            .try_fold(0u64, |n, &b| {
                n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            });
        let value = match magnitude {
            Some(m) if negative => 0i64.checked_sub_unsigned(m),
            Some(m) => i64::try_from(m).ok(),
            None => None,
        };
        value.ok_or(Error::NumberOutOfRange { offset: start })
    }

    /// `NAN`, `INF`, `-INF`, or a decimal number with an optional exponent
    /// (php-src's `iv | nv | nvexp`).
    fn float(&mut self) -> Result<f64, Error> {
        let specials: [(&[u8], f64); 3] = [
            (b"NAN", f64::NAN),
            (b"INF", f64::INFINITY),
            (b"-INF", f64::NEG_INFINITY),
        ];
        for (text, value) in specials {
            if self.input[self.pos..].starts_with(text) {
                self.pos += text.len();
                return Ok(value);
            }
        }
        let start = self.pos;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let mut digits = self.digits();
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits += self.digits();
        }
        if digits == 0 {
            return Err(self.unexpected("a digit"));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected("a digit of the exponent"));
            }
        }
        // The text is ASCII and in a grammar Rust's parser accepts.
        std::str::from_utf8(&self.input[start..self.pos])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(Error::Unexpected {
                offset: start,
                found: self.input[start],
                expected: "a number",
            })
    }

    /// `LEN:"…"`: a byte count, then that many bytes in quotes.
    fn quoted(&mut self) -> Result<Range<usize>, Error> {
        let at = self.pos;
        let len = self.uint()?;
        self.colon()?;
        self.eat(b'"', "`\"`")?;
        if len > self.remaining() {
            return Err(Error::LengthPastEnd {
                offset: at,
                declared: len,
                remaining: self.remaining(),
            });
        }
        let text = self.pos..self.pos + len;
        self.pos += len;
        self.eat(b'"', "`\"` right after the declared number of bytes")?;
        Ok(text)
    }

    /// `LEN:"Class"`, checked as PHP checks an unknown class's name.
    fn class_name(&mut self) -> Result<Range<usize>, Error> {
        let at = self.pos;
        let name = self.quoted()?;
        if !valid_class_name(&self.input[name.clone()]) {
            return Err(Error::BadClassName { offset: at });
        }
        Ok(name)
    }

    /// `N:{`, an element count no larger than the rest of the input could
    /// hold (each element takes at least two bytes, as php-src reckons).
    fn count(&mut self, at: usize) -> Result<usize, Error> {
        let declared = self.uint()?;
        self.colon()?;
        self.eat(b'{', "`{`")?;
        if declared > self.remaining() / 2 {
            return Err(Error::CountTooLarge {
                offset: at,
                declared,
                remaining: self.remaining(),
            });
        }
        Ok(declared)
    }

    /// The `}` after the declared number of elements.
    fn close(&mut self) -> Result<(), Error> {
        self.eat(
            b'}',
            "`}` after the declared number of elements (is the count right?)",
        )
    }

    /// One value; returns its node.
    fn value(&mut self, depth: usize) -> Result<usize, Error> {
        let at = self.pos;
        let tag = match self.peek() {
            None => return Err(self.unexpected(VALUE)),
            Some(b'R') => return self.reference(at, false),
            Some(tag @ (b'N' | b'b' | b'i' | b'd' | b's' | b'a' | b'O' | b'C' | b'E' | b'r')) => {
                tag
            }
            Some(_) => return Err(self.unexpected(VALUE)),
        };
        // Numbered before its contents are read, as PHP does.
        let idx = self.nodes.len();
        self.slots.push(idx);
        self.nodes.push(Node::Null);
        if tag == b'r' {
            return self.reference(at, true);
        }
        self.pos += 1;
        if tag == b'N' {
            self.semicolon()?;
            return Ok(idx);
        }
        self.colon()?;
        let node = match tag {
            b'b' => {
                let value = match self.peek() {
                    Some(b'0') => false,
                    Some(b'1') => true,
                    _ => return Err(self.unexpected("`0` or `1`")),
                };
                self.pos += 1;
                self.semicolon()?;
                Node::Bool(value)
            }
            b'i' => {
                let value = self.int()?;
                self.semicolon()?;
                Node::Int(value)
            }
            b'd' => {
                let value = self.float()?;
                self.semicolon()?;
                Node::Float(value)
            }
            b's' => {
                let text = self.quoted()?;
                self.semicolon()?;
                Node::Str(text)
            }
            b'a' => self.array(at, depth)?,
            b'O' => self.object(idx, at, depth)?,
            b'C' => {
                let class = self.class_name()?;
                self.colon()?;
                let len_at = self.pos;
                let len = self.uint()?;
                self.colon()?;
                self.eat(b'{', "`{`")?;
                if len > self.remaining() {
                    return Err(Error::LengthPastEnd {
                        offset: len_at,
                        declared: len,
                        remaining: self.remaining(),
                    });
                }
                let raw = self.pos..self.pos + len;
                self.pos += len;
                self.eat(b'}', "`}` right after the declared number of bytes")?;
                self.first_custom.get_or_insert(self.slots.len());
                Node::Custom { class, raw }
            }
            _ => self.enumeration(at)?,
        };
        self.nodes[idx] = node;
        Ok(idx)
    }

    fn array(&mut self, at: usize, depth: usize) -> Result<Node, Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep { offset: at });
        }
        let count = self.count(at)?;
        let mut entries = Vec::with_capacity(count.min(PREALLOC));
        for _ in 0..count {
            let key = self.key()?;
            entries.push((key, self.value(depth + 1)?));
        }
        self.close()?;
        Ok(Node::Array { entries, at })
    }

    fn object(&mut self, idx: usize, at: usize, depth: usize) -> Result<Node, Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep { offset: at });
        }
        let class = self.class_name()?;
        self.colon()?;
        let count = self.count(at)?;
        // An `r:` inside may name this object before its properties are in.
        self.nodes[idx] = Node::Object {
            class: class.clone(),
            props: Vec::new(),
            at,
        };
        let mut props = Vec::with_capacity(count.min(PREALLOC));
        for _ in 0..count {
            let name_at = self.pos;
            let name = match self.key()? {
                KeyText::Int(n) => PropName::Int(n),
                KeyText::Str(mangled) => self.unmangle(mangled, name_at)?,
            };
            props.push((name, self.value(depth + 1)?));
        }
        self.close()?;
        Ok(Node::Object { class, props, at })
    }

    /// `E:LEN:"Class:Case";`
    fn enumeration(&mut self, at: usize) -> Result<Node, Error> {
        let text = self.quoted()?;
        self.semicolon()?;
        let bytes = &self.input[text.clone()];
        let colon = bytes
            .iter()
            .position(|&b| b == b':')
            .ok_or(Error::BadEnum { offset: at })?;
        if !valid_class_name(&bytes[..colon]) || colon + 1 == bytes.len() {
            return Err(Error::BadEnum { offset: at });
        }
        Ok(Node::Enum {
            class: text.start..text.start + colon,
            case: text.start + colon + 1..text.end,
        })
    }

    /// An array key or property name: `i:` or `s:` only, and unnumbered.
    fn key(&mut self) -> Result<KeyText, Error> {
        let at = self.pos;
        match self.peek() {
            Some(b'i') => {
                self.pos += 1;
                self.colon()?;
                let n = self.int()?;
                self.semicolon()?;
                Ok(KeyText::Int(n))
            }
            Some(b's') => {
                self.pos += 1;
                self.colon()?;
                let text = self.quoted()?;
                self.semicolon()?;
                Ok(KeyText::Str(text))
            }
            Some(b'}') => Err(self
                .unexpected("another key: the declared count is larger than the elements written")),
            Some(found) => Err(Error::BadKey { offset: at, found }),
            None => Err(self.unexpected("a key")),
        }
    }

    /// Splits `\0*\0name` and `\0Class\0name` (php-src's
    /// `zend_unmangle_property_name_ex`).
    fn unmangle(&self, mangled: Range<usize>, at: usize) -> Result<PropName, Error> {
        let bytes = &self.input[mangled.clone()];
        if bytes.first() != Some(&0) {
            return Ok(PropName::Str {
                name: mangled.clone(),
                mangled,
                class: None,
            });
        }
        // The class is non-empty and its closing NUL is not the last byte.
        let bad = Error::BadPropertyName { offset: at };
        if bytes.len() < 3 || bytes[1] == 0 {
            return Err(bad);
        }
        let end = bytes[1..bytes.len() - 1]
            .iter()
            .position(|&b| b == 0)
            .ok_or(bad)?
            + 1;
        Ok(PropName::Str {
            class: Some(mangled.start + 1..mangled.start + end),
            name: mangled.start + end + 1..mangled.end,
            mangled,
        })
    }

    /// `r:N;` (its own number already taken) or `R:N;` (unnumbered).
    fn reference(&mut self, at: usize, object: bool) -> Result<usize, Error> {
        self.pos = at + 1;
        self.colon()?;
        let number = self.uint()?;
        self.semicolon()?;
        // An `r:` may not name itself.
        let available = self.slots.len() - usize::from(object);
        if number > 0 {
            // Past a `C:` object our count may be short of PHP's.
            if let Some(custom) = self.first_custom.filter(|&custom| number > custom) {
                return Err(Error::AfterCustom {
                    offset: at,
                    number,
                    custom,
                });
            }
        }
        if number == 0 || number > available {
            return Err(Error::NoSuchValue {
                offset: at,
                number,
                available,
            });
        }
        let mut target = self.slots[number - 1];
        if let Node::Ref { target: t, .. } = self.nodes[target] {
            target = t;
        }
        if object
            && !matches!(
                self.nodes[target],
                Node::Object { .. } | Node::Custom { .. } | Node::Enum { .. }
            )
        {
            return Err(Error::NotAnObject { offset: at, number });
        }
        let node = Node::Ref { target, at };
        if object {
            let idx = self.slots[self.slots.len() - 1];
            self.nodes[idx] = node;
            Ok(idx)
        } else {
            self.nodes.push(node);
            Ok(self.nodes.len() - 1)
        }
    }
}

/// php-src's `zend_is_valid_class_name`, plus: not empty, and not starting
/// with the namespace separator.
fn valid_class_name(name: &[u8]) -> bool {
    name.first().is_some_and(|&b| b != b'\\')
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'\\' || b >= 0x80)
}
