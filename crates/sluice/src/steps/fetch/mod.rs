//! `fetch`: read an object into a job variable, from `s3://`, `gs://`,
//! `az://`, `file://` or `http(s)://`, through the `object_store` crate.
//!
//! ```toml
//! [[pipeline.step]]
//! type = "fetch"
//! url = "s3://reports/report-{{ id }}.json"
//! into = "report"
//! decode = "json"                 # text (default) | json | bytes
//! [pipeline.step.options]         # object_store options, e.g. for an emulator
//! aws_endpoint = "http://127.0.0.1:5000"
//! aws_allow_http = "true"
//! ```
//!
//! A missing object fails the job permanently (dead-letter, key in the
//! reason); timeouts and server errors are retried. Objects over `max_bytes`
//! fail permanently without being read. Credentials come from the standard
//! environment variables of each store (`AWS_ACCESS_KEY_ID`...), or `options`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::BoxFuture;
use minijinja::Value;
use object_store::ObjectStore;
use serde::Deserialize;
use url::Url;

use super::{
    FieldError, Step, check_var_name, compile_url, scrub, shown_template, shown_url,
    url_credentials, url_start,
};
use crate::job::{Job, JobError};
use crate::template::Template;

/// `type = "fetch"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// The object's URL (a template).
    pub url: String,
    /// The variable to read it into.
    pub into: String,
    /// How to read it: `text` (UTF-8), `json` or `bytes`.
    #[serde(default)]
    pub decode: Decode,
    /// Objects larger than this fail the job. Default 16 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Give up on one read after this long (retried). Default 30 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Options for the object store (`aws_endpoint`, `aws_region`,
    /// `aws_allow_http`, `aws_virtual_hosted_style_request`...). Environment
    /// variables fill in what is not set here.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_max_bytes() -> u64 {
    16 << 20
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// How a fetched object becomes a variable.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    #[default]
    Text,
    Json,
    Bytes,
}

/// The built step.
#[derive(Debug)]
pub struct Fetch {
    url: Template,
    into: String,
    decode: Decode,
    max_bytes: u64,
    timeout: Duration,
    stores: Stores,
    /// Option values that are credentials (`aws_secret_access_key`...):
    /// cut from every reason.
    secrets: Vec<String>,
}

impl FetchConfig {
    pub fn build(&self) -> Result<Fetch, FieldError> {
        check_var_name("into", &self.into)?;
        let url = compile_url("url", &self.url)?;
        check_url_template(&self.url).map_err(|e| FieldError::new("url", e))?;
        let stores = Stores {
            options: self.options.clone(),
            by_base: Arc::default(),
        };
        if url.is_literal() {
            // A fixed URL can be checked now rather than per job.
            stores
                .resolve(&self.url)
                .map_err(|e| FieldError::new("url", e.reason().to_owned()))?;
        }
        Ok(Fetch {
            url,
            into: self.into.clone(),
            decode: self.decode,
            max_bytes: self.max_bytes,
            timeout: Duration::from_millis(self.timeout_ms),
            stores,
            secrets: self
                .options
                .iter()
                .filter(|(k, _)| crate::redact::is_sensitive_header(k) || k.contains("key"))
                .map(|(_, v)| v.clone())
                .collect(),
        })
    }
}

/// Checks what the URL template fixes: a scheme `object_store` knows, and a
/// host where the scheme needs one.
fn check_url_template(source: &str) -> Result<(), String> {
    let start = url_start(source)?;
    let Some(scheme) = start.scheme else {
        return Ok(());
    };
    let recognised = |host: &str| {
        Url::parse(&format!("{scheme}://{host}/x"))
            .is_ok_and(|u| object_store::ObjectStoreScheme::parse(&u).is_ok())
    };
    // `file:///x` has no host; `s3://bucket/x` must have one. (`http:///x`
    // parses with host `x`, so the host form is tried first.)
    let needs_host = recognised("sluice.invalid");
    if !needs_host && !recognised("") {
        return Err(format!(
            "`{scheme}://` is not a scheme fetch can read: use s3://, gs://, az://, file:// or http(s)://"
        ));
    }
    match start.authority {
        Some(a) if needs_host && a.rsplit('@').next().unwrap_or("").is_empty() => Err(format!(
            "`{}` has no bucket or host: write it like {scheme}://bucket/key",
            shown_template(source)
        )),
        Some(a) if !needs_host && !a.is_empty() => Err(format!(
            "`{}`: {scheme}:// takes no host; write {scheme}:///absolute/path",
            shown_template(source)
        )),
        _ => Ok(()),
    }
}

/// One object store per bucket/host, made on first use and then shared.
#[derive(Debug)]
struct Stores {
    options: BTreeMap<String, String>,
    by_base: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl Stores {
    fn resolve(
        &self,
        raw: &str,
    ) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path), JobError> {
        let shown = shown_url(raw);
        let url = Url::parse(raw)
            .map_err(|e| JobError::fail(format!("fetch: `{shown}` is not a URL: {e}")))?;
        let base = &url[..url::Position::BeforePath];
        let path = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| JobError::fail(format!("fetch: bad object path in `{shown}`: {e}")))?;
        let mut map = self.by_base.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = map.get(base) {
            return Ok((store.clone(), path));
        }
        let (store, _) = object_store::parse_url_opts(&url, self.options.iter()).map_err(|e| {
            JobError::fail(format!(
                "fetch: cannot open an object store for `{shown}`: {e} \
                 (schemes: s3://, gs://, az://, file://, http(s)://)"
            ))
        })?;
        let store: Arc<dyn ObjectStore> = store.into();
        map.insert(base.to_owned(), store.clone());
        Ok((store, path))
    }
}

impl Fetch {
    async fn fetch(&self, job: &mut Job) -> Result<(), JobError> {
        let url = self.url.render_field("url", job.context())?;
        let mut secrets = self.secrets.clone();
        if let Ok(u) = Url::parse(&url) {
            secrets.extend(url_credentials(&u));
        }
        self.read(job, &url)
            .await
            .map_err(|e| scrub(e, Some(&url), &secrets))
    }

    async fn read(&self, job: &mut Job, url: &str) -> Result<(), JobError> {
        let (store, path) = self.stores.resolve(url)?;
        // Reasons and logs never carry a query string or credentials.
        let raw = shown_url(url);
        let read = async {
            let got = store.get(&path).await.map_err(|e| classify(&raw, e))?;
            if got.meta.size > self.max_bytes {
                return Err(too_big(&raw, got.meta.size, self.max_bytes));
            }
            if matches!(got.payload, object_store::GetResultPayload::File(..)) {
                // A local file: its size was checked, and one read on the
                // blocking pool beats a stream of chunked ones.
                return got.bytes().await.map_err(|e| classify(&raw, e));
            }
            let mut buf = BytesMut::with_capacity(got.meta.size as usize);
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| classify(&raw, e))?;
                if (buf.len() + chunk.len()) as u64 > self.max_bytes {
                    return Err(too_big(
                        &raw,
                        (buf.len() + chunk.len()) as u64,
                        self.max_bytes,
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| {
                JobError::retry(format!(
                    "fetch: `{raw}` timed out after {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        let value = match self.decode {
            Decode::Bytes => Value::from_bytes(bytes.to_vec()),
            Decode::Text => match String::from_utf8(bytes.to_vec()) {
                Ok(s) => Value::from(s),
                Err(e) => {
                    return Err(JobError::fail(format!(
                        "fetch: `{raw}` is not UTF-8 text (bad byte at offset {}); \
                         use decode = \"bytes\"",
                        e.utf8_error().valid_up_to()
                    )));
                }
            },
            Decode::Json => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    JobError::fail(format!("fetch: `{raw}` is not valid JSON: {e}"))
                })?;
                crate::template::json::to_value(&v)
            }
        };
        job.set(&self.into, value);
        Ok(())
    }
}

fn too_big(url: &str, size: u64, max: u64) -> JobError {
    JobError::fail(format!(
        "fetch: `{url}` is {size} bytes, over max_bytes ({max}); raise the step's max_bytes"
    ))
}

/// Missing objects and refused requests are permanent; the rest is retried.
fn classify(url: &str, e: object_store::Error) -> JobError {
    match e {
        object_store::Error::NotFound { .. } => {
            JobError::fail(format!("fetch: object `{url}` not found"))
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => JobError::fail(format!(
            "fetch: access to `{url}` denied: {e}; check the credentials"
        )),
        other => JobError::retry(format!("fetch: reading `{url}` failed: {other}")),
    }
}

impl Step for Fetch {
    fn kind(&self) -> &'static str {
        "fetch"
    }

    fn run<'a>(&'a self, job: &'a mut Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.fetch(job))
    }
}
