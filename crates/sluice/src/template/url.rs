//! Escaping template values for the part of a URL they land in.
//!
//! A URL template renders in two passes. The engine's formatter writes each
//! value between two markers (its text hex-encoded, so no value can forge a
//! marker); [`finish`] then walks the output, looks at the URL written
//! before each value and
//!
//! - before the path (scheme, host, port: `{{ base }}/x`) inserts it as it
//!   is: such a value chooses the destination, it is not data. But once the
//!   template has written `scheme://`, a value there is part of the host,
//!   and one holding `@`, `/`, `\`, `?`, `#` or whitespace is refused: it
//!   would move the request, and its credentials, to another host
//!   (`https://api.example.com{{ id }}` with an id of `@evil.example`);
//! - in the path, the query or the fragment percent-encodes every byte but
//!   the unreserved `A-Z a-z 0-9 - . _ ~`, so `/`, `?`, `#`, `&`, `=`, `+`,
//!   `%` and `\` are data, never structure;
//! - refuses a path segment that a value makes `.` or `..`: percent-encoded
//!   or not, URL parsers resolve those, and `..` would climb out of the path.
//!
//! A value marked safe (`{{ x | raw_url }}`, or minijinja's `safe`) is
//! inserted as it is wherever it lands.

use std::fmt::Write as _;

use minijinja::value::Value;
use minijinja::{Error, ErrorKind, Output, State};

const START: char = '\u{E000}';
const PRIVATE_USE: &str =
    "the URL template or a `raw_url` value holds the private-use character U+E000";
const END: char = '\u{E001}';

/// The formatter of URL templates: each value between markers, to be
/// escaped by [`finish`].
pub(super) fn mark(
    out: &mut Output<'_>,
    _state: &State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    if value.is_undefined() {
        // What the strict default formatter would say.
        return Err(Error::new(ErrorKind::UndefinedError, "undefined value"));
    }
    if value.is_safe() {
        return write!(out, "{value}").map_err(Error::from);
    }
    let text = value.to_string();
    out.write_char(START).map_err(Error::from)?;
    for b in text.bytes() {
        write!(out, "{b:02x}").map_err(Error::from)?;
    }
    out.write_char(END).map_err(Error::from)
}

/// `raw_url`: the value as it is, not escaped.
pub(super) fn raw_url(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(ErrorKind::UndefinedError, "undefined value"));
    }
    Ok(Value::from_safe_string(value.to_string()))
}

/// Where in a URL the next character goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Scheme, host, port: before the path starts.
    Origin,
    Path,
    /// The query or the fragment.
    After,
}

fn part(so_far: &str) -> Part {
    let Some(i) = so_far.find("://") else {
        return Part::Origin;
    };
    let after = &so_far[i + 3..];
    let Some(p) = after.find(['/', '?', '#']) else {
        return Part::Origin;
    };
    if after[p..].contains(['?', '#']) {
        Part::After
    } else {
        Part::Path
    }
}

/// What a value in the host may not hold.
const HOST_BREAKERS: &[char] = &['@', '/', '\\', '?', '#', ' ', '\t', '\n', '\r'];

/// The rendered URL with each marked value escaped for where it landed.
pub(super) fn finish(rendered: &str) -> Result<String, String> {
    let mut out = String::with_capacity(rendered.len());
    // Byte ranges of `out` that came from values in the path.
    let mut in_path = Vec::new();
    let mut rest = rendered;
    while let Some(i) = rest.find(START) {
        out.push_str(&rest[..i]);
        let after = &rest[i + START.len_utf8()..];
        let j = after.find(END).ok_or(PRIVATE_USE)?;
        let text = unhex(&after[..j]).ok_or(PRIVATE_USE)?;
        match part(&out) {
            Part::Origin if out.contains("://") && text.contains(HOST_BREAKERS) => {
                return Err(
                    "a value lands in the URL's host and holds `@`, `/`, `\\`, `?`, `#` or \
                     a space, which would send the request to another host; put values after \
                     the host (`https://host/{{ id }}`), or mark a trusted one `raw_url`"
                        .into(),
                );
            }
            Part::Origin => out.push_str(&text),
            Part::Path => {
                let start = out.len();
                encode(&text, &mut out);
                in_path.push(start..out.len());
            }
            Part::After => encode(&text, &mut out),
        }
        rest = &after[j + END.len_utf8()..];
    }
    out.push_str(rest);
    for span in in_path {
        let start = out[..span.start].rfind('/').map_or(0, |i| i + 1);
        let end = out[span.end..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| span.end + i);
        let segment = &out[start..end];
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "a value makes the path segment `{segment}`, which URLs resolve as a move \
                 up the path; the value cannot be used in a URL path"
            ));
        }
    }
    Ok(out)
}

fn unhex(hex: &str) -> Option<String> {
    let bytes = hex.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    let digits = bytes
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(digits).ok()
}

/// Every byte but the unreserved `A-Z a-z 0-9 - . _ ~` (RFC 3986).
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes every byte of `text` but the unreserved ones.
fn encode(text: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(text, ESCAPED));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part_is_read_from_the_url_so_far() {
        assert_eq!(part(""), Part::Origin);
        assert_eq!(part("http://h"), Part::Origin);
        assert_eq!(part("http://h:80/"), Part::Path);
        assert_eq!(part("file:///a/"), Part::Path);
        assert_eq!(part("http://h/a?x="), Part::After);
        assert_eq!(part("http://h/a#"), Part::After);
    }

    #[test]
    fn encoding_keeps_only_unreserved_bytes() {
        let mut s = String::new();
        encode("a/b?c#d%e&f=g+h i\\j.k~é", &mut s);
        assert_eq!(s, "a%2Fb%3Fc%23d%25e%26f%3Dg%2Bh%20i%5Cj.k~%C3%A9");
    }

    #[test]
    fn a_value_in_the_host_cannot_move_the_request_elsewhere() {
        let hex = |t: &str| {
            let mut s = String::from(START);
            t.bytes().for_each(|b| s.push_str(&format!("{b:02x}")));
            s.push(END);
            s
        };
        for bad in ["@evil.example/x", "/evil", "x?y", "x#y", "a b", "x\\y"] {
            let r = finish(&format!("https://api.example.com{}", hex(bad)));
            assert!(r.unwrap_err().contains("another host"), "{bad}");
        }
        // A port, a subdomain: still this host's part.
        assert_eq!(
            finish(&format!(
                "https://api{}.example.com:{}/x",
                hex("-eu"),
                hex("8443")
            ))
            .unwrap(),
            "https://api-eu.example.com:8443/x"
        );
        // A value that is the whole origin chooses the destination.
        assert_eq!(
            finish(&format!("{}/x", hex("https://h.example"))).unwrap(),
            "https://h.example/x"
        );
    }
}
