//! Keeping secrets out of every text sluice prints or stores.
//!
//! Three kinds of secret are redacted wherever text leaves the process (log
//! lines, failure reasons, dead-letter attributes, the run summary):
//!
//! - every value a config took from the environment (`${VAR}`) that is at
//!   least [`MIN_SECRET_LEN`] bytes long, [registered](register) when the
//!   config is loaded: shorter values, and numbers of fewer than
//!   [`MIN_SECRET_DIGITS`] digits (a port, a concurrency, a timeout), cannot
//!   be told apart from ordinary text and are left alone;
//! - the credentials in a URL (`scheme://user:password@host` keeps the
//!   scheme and host: `scheme://[redacted]@host`);
//! - the values of headers whose name says they carry a credential
//!   ([`is_sensitive_header`]): callers print `[redacted]` for them.
//!
//! The log writer installed by [`crate::telemetry::init_tracing`] passes
//! every line through [`redact`], so a secret that reaches a log line by a
//! path nobody foresaw (an error body that echoes a header) is still cut.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not registered as secrets.
pub const MIN_SECRET_LEN: usize = 4;

/// Values made only of digits are registered from this many on.
pub const MIN_SECRET_DIGITS: usize = 8;

static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Registers a secret: from now on [`redact`] replaces it everywhere.
/// Values shorter than [`MIN_SECRET_LEN`], and numbers of fewer than
/// [`MIN_SECRET_DIGITS`] digits, are ignored.
pub fn register(secret: &str) {
    let digits = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_digit());
    if secret.len() < MIN_SECRET_LEN || (digits && secret.len() < MIN_SECRET_DIGITS) {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|x| x == secret) {
        s.push(secret.to_owned());
        // Longest first, so a secret containing another is cut whole.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// True when a header of this name carries a credential: `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, and any name containing
/// `token`, `secret`, `password`, `api-key`/`apikey`, `signature` or
/// `session`.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "password",
        "passwd",
        "api-key",
        "api_key",
        "apikey",
        "signature",
        "session",
        "auth",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// `text` with every registered secret and every URL credential replaced by
/// [`REDACTED`]. Borrowed when there was nothing to cut.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
    }
    match strip_userinfo(&out) {
        Some(s) => Cow::Owned(s),
        None => out,
    }
}

/// [`redact`] for text cut short (an excerpt of a response body): also
/// cuts a tail that may be the start of a secret — the beginning of a
/// registered value, or an unfinished URL authority — since what the cut
/// left of a secret no longer matches it whole. Callers redact the whole
/// text before cutting it, then pass the excerpt here, with the secrets of
/// their own (`also`: a request's credential headers) beside the
/// registered ones.
pub fn redact_cut(text: &str, also: &[String]) -> String {
    let mut out = redact(text).into_owned();
    {
        let registered = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        let secrets: Vec<&String> = registered.iter().chain(also).collect();
        // The longest tail that starts a secret, where a token starts (a
        // secret is a value: `Bearer x`, `token=x`), so that an excerpt
        // ending in `more` is not cut for a secret that starts with `e`.
        let tail = out
            .char_indices()
            .filter(|&(i, _)| {
                out[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !c.is_alphanumeric())
            })
            .map(|(i, _)| i)
            .find(|&i| secrets.iter().any(|s| s.starts_with(&out[i..])));
        if let Some(i) = tail {
            out.truncate(i);
            out.push_str(REDACTED);
        }
    }
    // `scheme://user:pa` cut before its `@`.
    if let Some(at) = out.rfind("://") {
        let rest = &out[at + 3..];
        let open =
            !rest.contains(|c: char| matches!(c, '/' | '?' | '#' | '"' | '@') || c.is_whitespace());
        if open && rest.contains(':') {
            out.truncate(at + 3);
            out.push_str(REDACTED);
        }
    }
    out
}

/// Replaces the `user:password` of every `scheme://user:password@host` in
/// `text`; `None` when there is none.
fn strip_userinfo(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut done = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let start = from + at + 3;
        // The authority ends at the first `/`, `?`, `#` or whitespace.
        let end = text[start..]
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .map_or(text.len(), |i| start + i);
        if let Some(i) = text[start..end].rfind('@') {
            let o = out.get_or_insert_with(String::new);
            o.push_str(&text[done..start]);
            o.push_str(REDACTED);
            done = start + i;
        }
        from = end.max(start);
    }
    out.map(|mut o| {
        o.push_str(&text[done..]);
        o
    })
}

/// A `MakeWriter` for `tracing_subscriber` that redacts each log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingStderr;

/// One log line, buffered, redacted and written to stderr when dropped.
#[derive(Debug, Default)]
pub struct LineWriter(Vec<u8>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        use std::io::Write;
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(redact(&text).as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_cut_and_the_host_kept() {
        assert_eq!(
            redact("GET https://bob:hunter2@api.example.com/x failed"),
            "GET https://[redacted]@api.example.com/x failed"
        );
        assert_eq!(
            redact("a http://u@h/ and b s3://k:s@bucket?x"),
            "a http://[redacted]@h/ and b s3://[redacted]@bucket?x"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(
            redact("http://h/path@notuserinfo"),
            "http://h/path@notuserinfo"
        );
    }

    #[test]
    fn registered_values_are_cut_everywhere_short_ones_ignored() {
        register("s3cr3t-\"quoted\\value");
        register("ab");
        register("1000");
        register("8675309123");
        let t = redact("token=s3cr3t-\"quoted\\value; ab stays; 1000 stays; pin 8675309123");
        assert_eq!(t, "token=[redacted]; ab stays; 1000 stays; pin [redacted]");
    }

    fn redact_cut_(text: &str) -> String {
        redact_cut(text, &["own-secret-7".to_owned()])
    }

    #[test]
    fn a_secret_cut_short_is_still_cut() {
        assert_eq!(redact_cut_("header: own-sec"), "header: [redacted]");
        register("envtoken-QQQQ-cut-test");
        assert_eq!(
            redact_cut_("echo: Bearer envtoken-QQ"),
            "echo: Bearer [redacted]"
        );
        assert_eq!(
            redact_cut_("echo: Bearer envtoken-QQQQ-cut-test and more"),
            "echo: Bearer [redacted] and more"
        );
        assert_eq!(redact_cut_("nothing secret here"), "nothing secret here");
        assert_eq!(redact_cut_("token=e"), "token=[redacted]");
        assert_eq!(
            redact_cut_("GET https://bob:hunt"),
            "GET https://[redacted]"
        );
        assert_eq!(
            redact_cut_("see https://host:8080/x"),
            "see https://host:8080/x"
        );
    }

    #[test]
    fn credential_headers_are_recognised() {
        for h in ["Authorization", "X-Api-Key", "x-auth-token", "Cookie"] {
            assert!(is_sensitive_header(h), "{h}");
        }
        for h in ["content-type", "x-request-id", "accept"] {
            assert!(!is_sensitive_header(h), "{h}");
        }
    }
}
