//! `${VAR}` in a config file: secrets and endpoints from the environment.
//!
//! `${VAR}` is replaced by the variable's value and is an error when it is
//! unset; `${VAR:-default}` falls back to `default`; `$${` is a literal `${`.
//! Substitution happens on the text, before TOML parsing, so a value can
//! stand anywhere (inside a string, or as a number).

/// Replaces every `${...}` in `text`; `lookup` reads a variable.
///
/// On error returns the 1-based line and a message naming the variable.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
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
        let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
        let Some(end) = inner_start.find('}') else {
            return Err((line, "`${` without a closing `}`".into()));
        };
        let inner = &inner_start[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err((
                line,
                format!(
                    "`${{{inner}}}` is not an environment variable reference; write `$${{` for a literal `${{`"
                ),
            ));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err((
                    line,
                    format!(
                        "environment variable `{name}` is not set; set it, or write `${{{name}:-default}}`"
                    ),
                ));
            }
        }
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        let out = substitute(
            "a = \"${TOKEN}\"\nport = ${PORT}\nb = \"${NOPE:-x}\"\nc = \"$${LIT} $5\"",
            env,
        )
        .unwrap();
        assert_eq!(
            out,
            "a = \"s3cr3t\"\nport = 8080\nb = \"x\"\nc = \"${LIT} $5\""
        );
    }

    #[test]
    fn unset_variable_names_line_and_variable() {
        let (line, msg) = substitute("a = 1\nb = \"${MISSING}\"", env).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("`MISSING` is not set"), "{msg}");
    }

    #[test]
    fn malformed_references() {
        assert!(substitute("a = \"${oops\"", env).is_err());
        assert!(substitute("a = \"${1X}\"", env).is_err());
    }
}
