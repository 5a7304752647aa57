//! One job: what a [handler](crate::worker::Handler) gets for each message,
//! and the error that says what to do when it fails.
//!
//! A job carries the message as its source received it (`id`, `attempt`,
//! `body`, `attributes`, ordering `key`), the decoded body once a format
//! decoded it, and the variables the configured steps set for each other
//! and for templates.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use minijinja::Value;

/// One message's job.
#[derive(Debug)]
pub struct Job {
    /// The broker's id for the message (a line's byte offset for files).
    pub id: String,
    /// Which attempt this is: 1 the first time. The broker's delivery count
    /// where it keeps one (SQS `ApproximateReceiveCount`).
    pub attempt: u32,
    /// The body as received.
    pub body: Bytes,
    /// Broker attributes or headers.
    pub attributes: BTreeMap<String, String>,
    /// The ordering key the source gave the message, if any.
    pub key: Option<String>,
    /// The source's own fields, seen by templates at the top level
    /// ([`crate::sources::Message::fields`]).
    pub fields: BTreeMap<&'static str, serde_json::Value>,
    /// The body decoded by a format; `Raw` until one does.
    pub envelope: Envelope,
    vars: BTreeMap<String, Value>,
    /// The template context, rebuilt only after a variable changes.
    context: Option<Value>,
    /// Time held by a paused destination, which the job timeout skips.
    pub(crate) hold: crate::runtime::control::Hold,
}

/// A decoded body (see [`crate::formats`]).
#[derive(Clone, Debug, Default)]
pub enum Envelope {
    /// Not decoded: `body` in templates is the text (bytes if not UTF-8).
    #[default]
    Raw,
    Json(serde_json::Value),
    /// A Laravel queue payload; templates also see it as `job`.
    Laravel(serde_json::Value),
}

impl Envelope {
    /// The parsed JSON, for `json` and `laravel` bodies.
    pub fn json(&self) -> Option<&serde_json::Value> {
        match self {
            Envelope::Raw => None,
            Envelope::Json(v) | Envelope::Laravel(v) => Some(v),
        }
    }
}

impl Job {
    /// A job for a message with `id`, `attempt` and `body`; attributes and
    /// key empty.
    pub fn new(id: impl Into<String>, attempt: u32, body: Bytes) -> Job {
        Job {
            id: id.into(),
            attempt,
            body,
            attributes: BTreeMap::new(),
            key: None,
            fields: BTreeMap::new(),
            envelope: Envelope::Raw,
            vars: BTreeMap::new(),
            context: None,
            hold: Default::default(),
        }
    }

    /// The same job with these attributes.
    pub fn with_attributes(mut self, attributes: BTreeMap<String, String>) -> Job {
        self.attributes = attributes;
        self
    }

    /// Sets the decoded body.
    pub fn set_envelope(&mut self, envelope: Envelope) {
        self.envelope = envelope;
        self.context = None;
    }

    /// Sets a job variable, visible to later steps and templates.
    pub fn set(&mut self, name: &str, value: Value) {
        self.vars.insert(name.to_owned(), value);
        self.context = None;
    }

    /// A job variable.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }

    /// The body as text, or why it is not text.
    pub fn body_text(&self) -> Result<&str, JobError> {
        std::str::from_utf8(&self.body).map_err(|e| {
            JobError::fail(format!(
                "body is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ))
        })
    }

    /// What templates see: the variables and the source's fields at top
    /// level, plus `message` (`id`, `attempt`, `attributes`), `body` (text,
    /// bytes or parsed JSON) and, for Laravel payloads, `job`.
    pub fn context(&mut self) -> Value {
        if let Some(ctx) = &self.context {
            return ctx.clone();
        }
        let mut map: BTreeMap<String, Value> = self.vars.clone();
        for (name, v) in &self.fields {
            map.insert((*name).to_owned(), crate::template::json::to_value(v));
        }
        let message = BTreeMap::from([
            ("id", Value::from(self.id.as_str())),
            ("attempt", Value::from(self.attempt)),
            ("attributes", Value::from_serialize(&self.attributes)),
        ]);
        map.insert("message".into(), Value::from_serialize(message));
        let body = match &self.envelope {
            Envelope::Raw => match std::str::from_utf8(&self.body) {
                Ok(s) => Value::from(s),
                Err(_) => Value::from_bytes(self.body.to_vec()),
            },
            Envelope::Json(v) => crate::template::json::to_value(v),
            Envelope::Laravel(v) => {
                let v = crate::template::json::to_value(v);
                map.insert("job".into(), v.clone());
                v
            }
        };
        map.insert("body".into(), body);
        let ctx = Value::from(map);
        self.context = Some(ctx.clone());
        ctx
    }
}

/// Why a step failed, and what to do about it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Worth trying again: after `after` if the step knows (a 429's
    /// Retry-After), else after the pipeline's backoff.
    #[error("{reason}")]
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never succeed as it is: dead-letter it with the reason.
    #[error("{reason}")]
    Fail { reason: String },
}

impl JobError {
    pub fn retry(reason: impl Into<String>) -> JobError {
        JobError::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn fail(reason: impl Into<String>) -> JobError {
        JobError::Fail {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            JobError::Retry { reason, .. } | JobError::Fail { reason } => reason,
        }
    }

    /// The same error with `context: ` before its reason.
    pub fn context(self, context: &str) -> JobError {
        match self {
            JobError::Retry { after, reason } => JobError::Retry {
                after,
                reason: format!("{context}: {reason}"),
            },
            JobError::Fail { reason } => JobError::Fail {
                reason: format!("{context}: {reason}"),
            },
        }
    }
}

impl From<crate::template::RenderError> for JobError {
    fn from(e: crate::template::RenderError) -> JobError {
        JobError::fail(e.to_string())
    }
}

impl JobError {
    /// Retry after exactly `after` (a 429's `Retry-After`).
    pub fn retry_after(after: Duration, reason: impl Into<String>) -> JobError {
        JobError::Retry {
            after: Some(after),
            reason: reason.into(),
        }
    }
}
