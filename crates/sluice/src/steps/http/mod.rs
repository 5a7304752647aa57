//! `http`: deliver the job over HTTP.
//!
//! ```toml
//! [[pipeline.step]]
//! type = "http"
//! url = "https://ingest.example.com/reports/{{ id }}"
//! body = '{"id": {{ id | tojson }}, "report": {{ report | tojson }}}'
//! headers = { authorization = "Bearer ${INGEST_TOKEN}" }
//! max_in_flight = 200      # per destination (scheme://host:port)
//! rate = "500/s"           # per destination
//! [pipeline.step.signing]  # Standard Webhooks
//! secret = "${WEBHOOK_SECRET}"
//! ```
//!
//! Statuses: `success_statuses` (default `["2xx"]`) ack the job;
//! `retry_statuses` (default `[408, 429, "5xx"]`) retry it, after the
//! response's `Retry-After` when it asks for a wait (else the backoff);
//! every other status fails it permanently. Timeouts and connection errors
//! are retried.
//!
//! Values in `url` are escaped for the part of the URL they land in (see
//! [`crate::template`]). Failure reasons never carry the values of
//! credential headers, URL credentials or query values, or registered
//! secrets, and quote at most a one-line excerpt of a response body.
//!
//! One HTTP client, with its connection pool, serves every step of the
//! process. Per-destination limits hold a slot of a [`sluice_pool::Pool`]
//! keyed by destination for each request, run in the job's own task.

mod keep_alive;
mod signing;

pub use signing::SigningKey;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use minijinja::Value;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sluice_pool::{KeyLimit, Pool, Rate};
use url::Url;

use super::{
    FieldError, Step, StepContext, check_var_name, compile, compile_url, scrub, shown_template,
    shown_url, url_credentials, url_start,
};
use crate::job::{Job, JobError};
use crate::template::Template;

/// `type = "http"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The request method. Default `POST`.
    #[serde(default = "default_method", deserialize_with = "method")]
    pub method: Method,
    /// The URL (a template).
    pub url: String,
    /// Request headers; values are templates. `content-type` defaults to
    /// `application/json` when there is a body.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body (a template). None sends no body.
    pub body: Option<String>,
    /// Give up on one request after this long (retried). Default 30 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Statuses that mean success: numbers or classes like `"2xx"`.
    #[serde(default = "default_success")]
    pub success_statuses: Vec<StatusSpec>,
    /// Statuses worth retrying. Everything neither success nor retry fails
    /// the job permanently.
    #[serde(default = "default_retry")]
    pub retry_statuses: Vec<StatusSpec>,
    /// At most this many requests in flight per destination.
    pub max_in_flight: Option<usize>,
    /// At most this many request starts per destination, e.g. `"500/s"`,
    /// `"30/min"`.
    #[serde(default, deserialize_with = "crate::component::deserialize_rate")]
    pub rate: Option<Rate>,
    /// How many starts may come at once within `rate`. Default: 10 ms worth
    /// of the rate (at least 1), which absorbs timer granularity so that
    /// `"500/s"` really gives 500 a second.
    pub burst: Option<u32>,
    /// The longest `Retry-After` honoured; longer ones are cut to this.
    /// Default 300 s.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
    /// Keep the response body (as text) in this variable.
    pub into: Option<String>,
    /// The most of a response body that is read. A success whose body is
    /// longer fails the job when `into` keeps it (a cut body would be
    /// passed on as if whole); otherwise the rest is dropped unread.
    /// Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Sign requests per Standard Webhooks.
    pub signing: Option<SigningConfig>,
}

/// `[pipeline.step.signing]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// `whsec_` + base64 key. Use `${VAR}` to keep it out of the file.
    pub secret: String,
    /// The `webhook-id` (a template); the same on every retry so the
    /// receiver can deduplicate. Default: the message id.
    #[serde(default = "default_signing_id")]
    pub id: String,
}

/// A status (`404`) or a class of statuses (`"4xx"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusSpec {
    Code(u16),
    /// The hundreds digit: 4 for `"4xx"`.
    Class(u8),
}

impl StatusSpec {
    fn range(self) -> (u16, u16) {
        match self {
            StatusSpec::Code(c) => (c, c),
            StatusSpec::Class(h) => (u16::from(h) * 100, u16::from(h) * 100 + 99),
        }
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StatusSpec, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Class(String),
        }
        let bad = |what: &dyn std::fmt::Display| {
            serde::de::Error::custom(format!(
                "{what} is not a status: use a number (404) or a class (\"4xx\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Code(c) if (100..600).contains(&c) => Ok(StatusSpec::Code(c as u16)),
            Raw::Code(c) => Err(bad(&c)),
            Raw::Class(c)
                if c.len() == 3
                    && c[1..].eq_ignore_ascii_case("xx")
                    && (b'1'..=b'5').contains(&c.as_bytes()[0]) =>
            {
                Ok(StatusSpec::Class(c.as_bytes()[0] - b'0'))
            }
            Raw::Class(c) => Err(bad(&format!("\"{c}\""))),
        }
    }
}

fn method<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
    let s = String::deserialize(d)?;
    Method::from_str(&s.to_ascii_uppercase())
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an HTTP method")))
}

fn default_method() -> Method {
    Method::POST
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_success() -> Vec<StatusSpec> {
    vec![StatusSpec::Class(2)]
}
fn default_retry() -> Vec<StatusSpec> {
    vec![
        StatusSpec::Code(408),
        StatusSpec::Code(429),
        StatusSpec::Class(5),
    ]
}
fn default_max_retry_after_secs() -> u64 {
    300
}
fn default_signing_id() -> String {
    "{{ message.id }}".into()
}

/// Inclusive status ranges.
#[derive(Clone, Debug)]
struct Statuses(Vec<(u16, u16)>);

impl Statuses {
    fn new(specs: &[StatusSpec]) -> Statuses {
        Statuses(specs.iter().map(|s| s.range()).collect())
    }

    fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// The built step.
#[derive(Debug)]
pub struct Http {
    method: Method,
    url: Template,
    /// Name, the field as written (`headers.X-User`), value.
    headers: Vec<(HeaderName, String, Template)>,
    body: Option<Template>,
    default_content_type: bool,
    timeout: Duration,
    success: Statuses,
    retry: Statuses,
    max_retry_after: Duration,
    into: Option<String>,
    max_response_bytes: usize,
    signing: Option<(SigningKey, Template)>,
    limit: Option<KeyLimit>,
    /// Made on first use, inside the runtime.
    limits: OnceLock<Pool>,
    /// Paused destinations and request counts, shared by the pipeline.
    destinations: Arc<crate::runtime::Destinations>,
}

impl HttpConfig {
    pub fn build(&self, cx: &StepContext) -> Result<Http, FieldError> {
        let method = self.method.clone();
        let url = compile_url("url", &self.url)?;
        check_url_template(&self.url, url.is_literal()).map_err(|e| FieldError::new("url", e))?;
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let hn = HeaderName::from_str(name)
                .map_err(|_| FieldError::new(&field, format!("`{name}` is not a header name")))?;
            let t = compile(&field, value)?;
            headers.push((hn, field, t));
        }
        let default_content_type =
            self.body.is_some() && !headers.iter().any(|(n, _, _)| *n == CONTENT_TYPE);
        let body = match &self.body {
            Some(b) => Some(compile("body", b)?),
            None => None,
        };
        if let Some(into) = &self.into {
            check_var_name("into", into)?;
        }
        let signing = match &self.signing {
            Some(s) => Some((
                SigningKey::parse(&s.secret).map_err(|e| FieldError::new("signing.secret", e))?,
                compile("signing.id", &s.id)?,
            )),
            None => None,
        };
        if self.max_in_flight == Some(0) {
            return Err(FieldError::new("max_in_flight", "must be at least 1"));
        }
        let rate = match self.rate {
            Some(rate) => {
                let burst = match self.burst {
                    Some(0) => return Err(FieldError::new("burst", "must be at least 1")),
                    Some(b) => b,
                    None => default_burst(rate),
                };
                Some(rate.with_burst(burst))
            }
            None => None,
        };
        let limit = match (self.max_in_flight, rate) {
            (None, None) => None,
            (n, r) => {
                let mut l = n.map_or_else(KeyLimit::unlimited, KeyLimit::concurrency);
                if let Some(r) = r {
                    l = l.with_rate(r);
                }
                Some(l)
            }
        };
        if self.timeout_ms == 0 {
            return Err(FieldError::new("timeout_ms", "must be more than 0"));
        }
        Ok(Http {
            method,
            url,
            headers,
            body,
            default_content_type,
            timeout: Duration::from_millis(self.timeout_ms),
            success: Statuses::new(&self.success_statuses),
            retry: Statuses::new(&self.retry_statuses),
            max_retry_after: Duration::from_secs(self.max_retry_after_secs),
            into: self.into.clone(),
            max_response_bytes: self.max_response_bytes,
            signing,
            limit,
            destinations: cx.destinations.clone(),
            limits: OnceLock::new(),
        })
    }
}

/// 10 ms worth of `rate`, at least 1.
fn default_burst(rate: sluice_pool::Rate) -> u32 {
    let per_10ms = f64::from(rate.count()) * 0.010 / rate.per().as_secs_f64();
    (per_10ms.ceil() as u32).max(1)
}

/// Checks what the URL template fixes (all of it when it is `literal`): an
/// http(s) scheme and a host.
fn check_url_template(source: &str, literal: bool) -> Result<(), String> {
    let start = url_start(source)?;
    if let Some(s) = &start.scheme {
        if s != "http" && s != "https" {
            return Err(format!(
                "`{s}://` is not an HTTP URL; use http:// or https://"
            ));
        }
        if let Some(authority) = &start.authority {
            let host = authority.rsplit('@').next().unwrap_or("");
            if host.is_empty() || host.starts_with(':') {
                return Err(format!(
                    "`{}` has no host: write it like https://host/path",
                    shown_template(source)
                ));
            }
            Url::parse(&format!("{s}://{authority}/"))
                .map_err(|e| format!("`{}` is not a URL: {e}", shown_template(source)))?;
        }
    }
    if literal {
        check_url(source)?;
    }
    Ok(())
}

fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{}` is not a URL: {e}", shown_url(raw)))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        s => Err(format!(
            "`{s}://` is not an HTTP URL; use http:// or https://"
        )),
    }
}

/// The one HTTP client of the process: pooled connections, shared by steps.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // A 3xx is judged like any other status: following it would
            // turn a POST into a GET and carry custom headers elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(keep_alive::IDLE_TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's TLS backend initialises")
    })
}

/// What came back, read inside the destination's slot.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Bytes,
    /// The body was longer than `max_response_bytes`: `body` is its start.
    cut: bool,
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

/// Sends `req` and reads at most `max` bytes of the answer's body (the
/// rest is dropped with the connection).
async fn exchange(req: reqwest::RequestBuilder, max: usize) -> Result<Answer, reqwest::Error> {
    let mut resp = req.send().await?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = BytesMut::new();
    let mut cut = false;
    while let Some(chunk) = resp.chunk().await? {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            cut = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        retry_after,
        body: body.freeze(),
        cut,
    })
}

/// What a failure's reason must not show: the rendered URL and the
/// credentials the request carried.
#[derive(Default)]
struct Sent {
    url: Option<String>,
    secrets: Vec<String>,
}

impl Http {
    async fn deliver(&self, job: &mut Job, sent: &mut Sent) -> Result<(), JobError> {
        let ctx = job.context();
        let raw_url = self.url.render_field("url", ctx.clone())?;
        sent.url = Some(raw_url.clone());
        let url = check_url(&raw_url).map_err(|e| JobError::fail(format!("http: {e}")))?;
        sent.secrets.extend(url_credentials(&url));
        let shown = shown_url(&raw_url);
        let destination = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        // Held here while an operator has it paused (not counted by the
        // job timeout; a stop releases the job's message), before anything
        // time-stamped is made: a webhook signed before a long hold would
        // arrive with an expired timestamp.
        let gate = self.destinations.admit(&destination, &job.hold).await;
        let body = match &self.body {
            Some(t) => Some(t.render_field("body", ctx.clone())?),
            None => None,
        };
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 4);
        for (name, field, t) in &self.headers {
            let v = t.render_field(field, ctx.clone())?;
            if crate::redact::is_sensitive_header(name.as_str()) {
                sent.secrets.push(v.clone());
                // `Bearer xyz`: the token may be echoed on its own.
                if let Some((_, token)) = v.split_once(' ') {
                    sent.secrets.push(token.trim().to_owned());
                }
            }
            let v = HeaderValue::from_str(&v).map_err(|_| {
                JobError::fail(format!(
                    "http: header `{name}` renders to a value HTTP cannot carry"
                ))
            })?;
            headers.insert(name.clone(), v);
        }
        if self.default_content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // A literal URL has one destination; a templated one may name
        // thousands, and only so many keep idle connections.
        if !self.url.is_literal() && !keep_alive::keeps(&destination) {
            headers.insert(
                reqwest::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        if let Some((key, id)) = &self.signing {
            let id = id.render_field("signing.id", ctx)?;
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sig = key.sign(&id, ts, body.as_deref().unwrap_or("").as_bytes());
            sent.secrets.push(sig.clone());
            let id = HeaderValue::from_str(&id).map_err(|_| {
                JobError::fail("http: signing.id renders to a value HTTP cannot carry")
            })?;
            headers.insert("webhook-id", id);
            headers.insert("webhook-timestamp", HeaderValue::from(ts));
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&sig).expect("base64 is a valid header value"),
            );
        }
        let mut req = client()
            .request(self.method.clone(), url)
            .headers(headers)
            .timeout(self.timeout);
        if let Some(b) = body {
            req = req.body(b);
        }
        let answer = match &self.limit {
            None => exchange(req, self.max_response_bytes).await,
            Some(limit) => {
                let limit = *limit;
                let pool = self.limits.get_or_init(|| {
                    // The per-destination limits are the limits: the
                    // pipeline's pool bounds the total, whatever it is
                    // resized to.
                    Pool::builder()
                        .concurrency(crate::runtime::control::MAX_CONCURRENCY)
                        .queue_capacity(0)
                        .per_key(limit)
                        .build()
                });
                // The request runs here, in the job's own task, inside a
                // slot of its destination: dropped with the job (timeout,
                // shutdown), it gives the slot back.
                let _slot = pool
                    .key(destination)
                    .acquire()
                    .await
                    .map_err(|_| JobError::retry("http: shutting down"))?;
                exchange(req, self.max_response_bytes).await
            }
        };
        // reqwest's errors quote the full URL, query and credentials
        // included: strip it before it reaches a log or a reason.
        gate.answered(answer.as_ref().ok().map(|a| a.status.as_u16()));
        let answer = answer.map_err(|e| self.transport_error(&shown, &e.without_url()))?;
        let status = answer.status.as_u16();
        if self.success.contains(status) {
            if let Some(into) = &self.into {
                if answer.cut {
                    return Err(JobError::fail(format!(
                        "http: {} {shown} answered {} with a body over max_response_bytes \
                         ({}): `{into}` would keep only its start; raise the step's \
                         max_response_bytes",
                        self.method, answer.status, self.max_response_bytes
                    )));
                }
                job.set(
                    into,
                    Value::from(String::from_utf8_lossy(&answer.body).into_owned()),
                );
            }
            return Ok(());
        }
        let reason = format!(
            "http: {} {shown} answered {}{}",
            self.method,
            answer.status,
            snippet(&answer.body, &sent.secrets)
        );
        if self.retry.contains(status) {
            let after = answer
                .retry_after
                .as_deref()
                .and_then(parse_retry_after)
                .map(|d| d.min(self.max_retry_after));
            Err(JobError::Retry { after, reason })
        } else {
            Err(JobError::Fail { reason })
        }
    }

    fn transport_error(&self, shown: &str, e: &reqwest::Error) -> JobError {
        if e.is_timeout() {
            JobError::retry(format!(
                "http: {} {shown} timed out after {} ms",
                self.method,
                self.timeout.as_millis()
            ))
        } else if e.is_builder() {
            JobError::fail(format!("http: cannot build the request to {shown}: {e}"))
        } else {
            // Connection refused or reset, a broken body: the server may
            // well answer next time.
            JobError::retry(format!(
                "http: {} {shown} failed: {}",
                self.method,
                crate::error_chain(e)
            ))
        }
    }
}

/// How much of a response body a failure's reason quotes.
const SNIPPET_CHARS: usize = 160;

/// The start of a response body, for a failure's reason: at most
/// [`SNIPPET_CHARS`] characters on one line. Credentials (`secrets`, the
/// request's own, and every registered one) are cut before the body is,
/// and a tail that may be the start of one is cut too
/// ([`crate::redact::redact_cut`]): the reason is stored and logged.
fn snippet(body: &[u8], secrets: &[String]) -> String {
    // Enough of the body for the excerpt after its whitespace is folded,
    // with room for a secret that straddles the excerpt's end.
    const WINDOW: usize = 64 * SNIPPET_CHARS;
    let cut_short = body.len() > WINDOW;
    let mut text = String::from_utf8_lossy(&body[..body.len().min(WINDOW)]).into_owned();
    let mut own: Vec<&String> = secrets
        .iter()
        .filter(|s| s.len() >= crate::redact::MIN_SECRET_LEN)
        .collect();
    own.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in own {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), crate::redact::REDACTED);
        }
    }
    let text = crate::redact::redact(&text);
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    if line.is_empty() {
        return String::new();
    }
    match line.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!(": {}…", crate::redact::redact_cut(&line[..cut], secrets)),
        None if cut_short => format!(": {}…", crate::redact::redact_cut(&line, secrets)),
        None => format!(": {line}"),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date; `None` (use the
/// pipeline's backoff) when it asks for no wait at all: `0`, a date that has
/// passed (a server whose clock is behind would otherwise be hammered with
/// retries a millisecond apart), or something that is neither form.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(SystemTime::now())
            .ok()?,
    };
    (!wait.is_zero()).then_some(wait)
}

impl Step for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let mut sent = Sent::default();
            let r = self.deliver(job, &mut sent).await;
            r.map_err(|e| scrub(e, sent.url.as_deref(), &sent.secrets))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let specs: Vec<StatusSpec> = serde_json::from_str(r#"[408, "5xx"]"#).unwrap();
        assert_eq!(specs, [StatusSpec::Code(408), StatusSpec::Class(5)]);
        let s = Statuses::new(&specs);
        assert!(s.contains(408) && s.contains(503) && !s.contains(404));
        for bad in [r#""6xx""#, "99", r#""4x""#] {
            let e = serde_json::from_str::<StatusSpec>(bad).unwrap_err();
            assert!(e.to_string().contains("is not a status"), "{bad}: {e}");
        }
    }

    #[test]
    fn default_burst_is_ten_ms_of_the_rate() {
        use crate::component::parse_rate;
        assert_eq!(default_burst(parse_rate("500/s").unwrap()), 5);
        assert_eq!(default_burst(parse_rate("20/s").unwrap()), 1);
        assert_eq!(default_burst(parse_rate("10000/s").unwrap()), 100);
    }

    #[test]
    fn retry_after_both_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn retry_after_without_a_wait_falls_back_to_the_backoff() {
        let past = SystemTime::now() - Duration::from_secs(3600);
        for v in [
            httpdate::fmt_http_date(past).as_str(),
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "0",
            "-1",
            "-30",
            "1.5",
            "",
            "tomorrow",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(v), None, "{v:?}");
        }
    }

    #[test]
    fn redaction_drops_query_and_credentials() {
        assert_eq!(
            shown_url("https://user:pw@h.example:8443/p/q?token=secret"),
            "https://h.example:8443/p/q"
        );
        // Not URLs, credentials and all.
        for (raw, shown) in [
            ("http://user:hunter22@", "http://[redacted]@"),
            ("htp:/user:hunter22@host x", "[redacted]@host x"),
            ("user:hunter22@host/x?t=1", "[redacted]@host/x"),
            ("http://u:hunter22@[::1/x", "http://[redacted]@[::1/x"),
        ] {
            assert_eq!(shown_url(raw), shown, "{raw}");
        }
    }

    fn snippet_(body: &[u8]) -> String {
        snippet(body, &[])
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet_(b""), "");
        assert_eq!(snippet_(b" \n "), "");
        assert_eq!(snippet_(b"no\n  such\tthing "), ": no such thing");
        let long = "é".repeat(1000);
        let s = snippet_(long.as_bytes());
        assert_eq!(s.chars().count(), 2 + SNIPPET_CHARS + 1, "{s}");
    }

    /// A downstream that echoes a credential after N characters of
    /// padding: wherever the excerpt's end falls, no part of it shows.
    #[test]
    fn a_secret_at_the_excerpts_end_shows_no_prefix() {
        let secret = "envtoken-QQQQQQQQQQQQQQQQ-snippet";
        crate::redact::register(secret);
        for pad in 130..SNIPPET_CHARS + 2 {
            let body = format!("{} you sent Bearer {secret} back", "x".repeat(pad));
            let s = snippet(body.as_bytes(), &[]);
            assert!(!s.contains("envt"), "padding {pad}: {s}");
            // Padding as whitespace the excerpt folds away.
            let body = format!("{}Bearer {secret}", " \n".repeat(pad * 20));
            let s = snippet(body.as_bytes(), &[]);
            assert!(!s.contains("envt"), "whitespace {pad}: {s}");
            // A header's literal value, the request's own secret.
            let own = "Bearer literal-token-in-the-config".to_owned();
            let body = format!("{} you sent authorization: {own}", "y".repeat(pad));
            let s = snippet(body.as_bytes(), std::slice::from_ref(&own));
            assert!(!s.contains("liter"), "own secret, padding {pad}: {s}");
        }
    }

    #[test]
    fn reasons_lose_every_credential() {
        let url = "http://bob:pa55word@h.example/hook?sig=abcdef123";
        let parsed = Url::parse(url).unwrap();
        let mut secrets = url_credentials(&parsed);
        secrets.push("Bearer tok-123456".into());
        secrets.push("tok-123456".into());
        let reason = format!(
            "http: GET {url} answered 400: you sent authorization: Bearer tok-123456, \
             authorization: Basic Ym9iOnBhNTV3b3Jk, pa55word, abcdef123"
        );
        let e = scrub(JobError::fail(reason), Some(url), &secrets);
        let r = e.reason();
        for secret in [
            "pa55word",
            "tok-123456",
            "Ym9iOnBhNTV3b3Jk",
            "abcdef123",
            "bob:",
        ] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("http://h.example/hook answered 400"), "{r}");
    }
}
