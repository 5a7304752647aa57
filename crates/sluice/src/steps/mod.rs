//! The work a job does, one folder per step: `extract`, `fetch`, `template`,
//! `http`. Each folder holds the step's config (what a user writes in TOML)
//! and the step itself (what runs per job).
//!
//! A step gets the job's shared state and either succeeds, having set the
//! variables it is configured to set, or returns a [`JobError`] that says
//! whether trying again could help. A pipeline's steps together are one
//! [`Handler`]: [`Steps`], which decodes the body with the source's format
//! and runs each step in order.
//!
//! Adding a step: a folder here with its config and the step, and one
//! variant in [`StepConfig`].

pub mod extract;
pub mod fetch;
pub mod http;
pub mod template;

use std::fmt;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Deserialize;
use url::Url;

pub use crate::component::{FieldError, StepContext};
use crate::formats::Decoder;
use crate::handler::Handler;
use crate::job::{Job, JobError};

/// One step of a pipeline.
pub trait Step: Send + Sync + 'static {
    /// The step's type, for logs and metrics (`extract`, `http`...).
    fn kind(&self) -> &'static str;
    /// Runs the step on one job.
    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>>;
}

/// A `[[pipeline.step]]` table.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepConfig {
    Extract(extract::ExtractConfig),
    Fetch(fetch::FetchConfig),
    Template(template::TemplateConfig),
    Http(http::HttpConfig),
}

impl StepConfig {
    /// Checks the config and builds the step.
    pub fn build(&self, cx: &StepContext) -> Result<Box<dyn Step>, FieldError> {
        Ok(match self {
            StepConfig::Extract(c) => Box::new(c.build()?),
            StepConfig::Fetch(c) => Box::new(c.build()?),
            StepConfig::Template(c) => Box::new(c.build()?),
            StepConfig::Http(c) => Box::new(c.build(cx)?),
        })
    }
}

/// A pipeline's steps as one handler: decode the body, run each step.
pub struct Steps {
    decoder: Decoder,
    steps: Vec<Box<dyn Step>>,
    durations: Vec<metrics::Histogram>,
}

impl fmt::Debug for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.steps.iter().map(|s| s.kind()).collect();
        f.debug_struct("Steps")
            .field("format", &self.decoder.format())
            .field("steps", &kinds)
            .finish()
    }
}

impl Steps {
    /// `steps` run in order on bodies decoded by `decoder` (a
    /// [`Format`](crate::formats::Format), or a [`Decoder`] with keys);
    /// their run times go to `sluice_step_duration_seconds{pipeline, step}`.
    pub fn new(pipeline: &str, decoder: impl Into<Decoder>, steps: Vec<Box<dyn Step>>) -> Steps {
        let durations = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                metrics::histogram!(
                    crate::telemetry::STEP_DURATION,
                    "pipeline" => pipeline.to_owned(),
                    "step" => format!("{}:{}", i + 1, s.kind())
                )
            })
            .collect();
        Steps {
            decoder: decoder.into(),
            steps,
            durations,
        }
    }

    async fn run(&self, mut job: Job) -> Result<(), JobError> {
        let envelope = self
            .decoder
            .decode(&job.body)
            .map_err(|e| JobError::fail(format!("format {}: {e}", self.decoder.format().name())))?;
        job.set_envelope(envelope);
        for (i, step) in self.steps.iter().enumerate() {
            let started = Instant::now();
            let r = step.run(&mut job).await;
            self.durations[i].record(started.elapsed());
            r.map_err(|e| e.context(&format!("step {}", i + 1)))?;
        }
        Ok(())
    }
}

impl Handler for Steps {
    fn call(&self, job: Job) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.run(job))
    }
}

/// Compiles a template field, naming it on error.
pub(crate) fn compile(field: &str, source: &str) -> Result<crate::template::Template, FieldError> {
    crate::template::Template::new(source)
        .map_err(|e| FieldError::new(field, format!("template does not compile: {e}")))
}

/// Compiles a URL template field (values escaped for where they land),
/// naming it on error.
pub(crate) fn compile_url(
    field: &str,
    source: &str,
) -> Result<crate::template::Template, FieldError> {
    crate::template::Template::url(source)
        .map_err(|e| FieldError::new(field, format!("template does not compile: {e}")))
}

/// Checks a variable name a step writes to.
pub(crate) fn check_var_name(field: &str, name: &str) -> Result<(), FieldError> {
    const RESERVED: [&str; 3] = ["message", "body", "job"];
    // The sources' top-level template fields (`Message::fields`).
    const FIELDS: [&str; 6] = [
        "topic",
        "partition",
        "offset",
        "key",
        "timestamp",
        "headers",
    ];
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(FieldError::new(
            field,
            format!("`{name}` is not a variable name: use letters, digits and `_`"),
        ));
    }
    if RESERVED.contains(&name) {
        return Err(FieldError::new(
            field,
            format!("`{name}` is reserved for the message itself; pick another name"),
        ));
    }
    if FIELDS.contains(&name) {
        return Err(FieldError::new(
            field,
            format!(
                "`{name}` is reserved for the message's own fields (Kafka's topic, partition, \
                 offset, key, timestamp, headers); pick another name"
            ),
        ));
    }
    Ok(())
}

/// A URL without its query, fragment and credentials, and with registered
/// secrets cut: safe for logs and reasons. Text that is not a URL loses
/// everything up to its last `@` too, since it may be `user:password@host`
/// with the `scheme://` missing.
pub(crate) fn shown_url(raw: &str) -> String {
    let shown = match Url::parse(raw) {
        Ok(u) if u.has_host() || u.scheme() == "file" => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        _ => {
            let text = raw.split(['?', '#']).next().unwrap_or("");
            let text = crate::redact::redact(text);
            match text.rfind('@') {
                Some(i) if !text[..i].ends_with(crate::redact::REDACTED) => {
                    format!("{}{}", crate::redact::REDACTED, &text[i..])
                }
                _ => text.into_owned(),
            }
        }
    };
    crate::redact::redact(&shown).into_owned()
}

/// A step's failure with everything secret cut from its reason, which goes
/// to logs, the failures files and dead-letter attributes:
/// - `url` (the rendered URL, which libraries' errors may quote whole) as
///   [`shown_url`] shows it, and its query and each query value cut;
/// - each of `secrets` (values of credential headers the step sent,
///   credential options);
/// - then what [`crate::redact`] cuts (registered secrets, URL credentials).
///
/// Longest first, so a secret that contains another is cut whole.
pub(crate) fn scrub(e: JobError, url: Option<&str>, secrets: &[String]) -> JobError {
    let clean = |reason: String| {
        let mut r = reason;
        let mut cut: Vec<&str> = secrets.iter().map(String::as_str).collect();
        if let Some(url) = url {
            if r.contains(url) {
                r = r.replace(url, &shown_url(url));
            }
            // The query, and each of its values (a signature, a token).
            if let Some((_, query)) = url.split_once('?') {
                let query = query.split('#').next().unwrap_or("");
                cut.push(query);
                cut.extend(
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('=').map(|x| x.1)),
                );
            }
        }
        cut.retain(|s| s.len() >= crate::redact::MIN_SECRET_LEN);
        cut.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in cut {
            if r.contains(s) {
                r = r.replace(s, crate::redact::REDACTED);
            }
        }
        crate::redact::redact(&r).into_owned()
    };
    match e {
        JobError::Retry { after, reason } => JobError::Retry {
            after,
            reason: clean(reason),
        },
        JobError::Fail { reason } => JobError::Fail {
            reason: clean(reason),
        },
    }
}

/// The secrets a URL carries in its userinfo, as they may appear in text:
/// as written, percent-decoded, and as the `Basic` credential an HTTP
/// client makes of them.
pub(crate) fn url_credentials(url: &Url) -> Vec<String> {
    use base64::Engine as _;
    let (user, pass) = (url.username(), url.password());
    if user.is_empty() && pass.is_none() {
        return Vec::new();
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut out = Vec::new();
    // The user name alone is left to the userinfo cutting of `redact`.
    for (u, p) in [
        (user.to_owned(), pass.map(str::to_owned)),
        (decode(user), pass.map(decode)),
    ] {
        let basic = format!("{u}:{}", p.clone().unwrap_or_default());
        out.push(base64::engine::general_purpose::STANDARD.encode(&basic));
        out.push(basic);
        out.extend(p);
    }
    out
}

/// What a URL template fixes before its first `{{`, `{%` or `{#`: checked
/// when the config is, since every job's URL starts with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlStart {
    /// The scheme, lower-cased, when the text fixes it.
    pub scheme: Option<String>,
    /// What stands between `//` and the path, when the text fixes all of
    /// it; `""` for `file:///x`.
    pub authority: Option<String>,
}

/// Reads the fixed start of the URL template `source`; an error when no
/// rendering can make it a URL (`not a url`, `://x`).
pub(crate) fn url_start(source: &str) -> Result<UrlStart, String> {
    let end = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|m| source.find(m))
        .min()
        .unwrap_or(source.len());
    let (fixed, whole) = (&source[..end], end == source.len());
    let not_a_url = || {
        format!(
            "`{}` is not a URL: write it like https://host/path",
            shown_template(source)
        )
    };
    let run = fixed
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .unwrap_or(fixed.len());
    if run == fixed.len() && !whole {
        // `{{ base }}/x`, `ht{{ s }}`: the template makes the scheme.
        return Ok(UrlStart::default());
    }
    if !fixed[run..].starts_with(':') || !fixed.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(not_a_url());
    }
    let scheme = fixed[..run].to_ascii_lowercase();
    let rest = &fixed[run + 1..];
    let Some(after) = rest.strip_prefix("//") else {
        if !whole && "/".starts_with(rest) {
            return Ok(UrlStart {
                scheme: Some(scheme),
                authority: None,
            });
        }
        return Err(format!(
            "`{}` is not a URL: write `{scheme}://` and the host",
            shown_template(source)
        ));
    };
    let authority = match after.find(['/', '?', '#']) {
        Some(i) => Some(after[..i].to_owned()),
        None if whole => Some(after.to_owned()),
        None => None,
    };
    Ok(UrlStart {
        scheme: Some(scheme),
        authority,
    })
}

/// A URL template as written, for a config error: without its query, and
/// without credentials and secrets.
pub(crate) fn shown_template(source: &str) -> String {
    let before_query = source.split(['?', '#']).next().unwrap_or("");
    crate::redact::redact(before_query).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(s: &str) -> (Option<&'static str>, Option<String>) {
        let u = url_start(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (u.scheme.map(|s| &*s.leak()), u.authority)
    }

    #[test]
    fn url_starts() {
        assert_eq!(
            start("https://h.example/x/{{ id }}"),
            (Some("https"), Some("h.example".into()))
        );
        assert_eq!(start("HTTP://h:80"), (Some("http"), Some("h:80".into())));
        assert_eq!(start("http:///x"), (Some("http"), Some(String::new())));
        assert_eq!(
            start("file:///x/{{ id }}"),
            (Some("file"), Some(String::new()))
        );
        assert_eq!(start("https://{{ host }}/x"), (Some("https"), None));
        assert_eq!(start("https://h.example{{ path }}"), (Some("https"), None));
        assert_eq!(start("{{ base }}/x"), (None, None));
        assert_eq!(start("ht{{ s }}://x"), (None, None));
        assert_eq!(start("http:{{ rest }}"), (Some("http"), None));
        for bad in [
            "not a url",
            "not a url/{{ id }}",
            "://x",
            "/x/{{ id }}",
            "1http://x",
            "http:x",
            "http:/x/{{ id }}",
        ] {
            assert!(url_start(bad).is_err(), "{bad}");
        }
    }
}
