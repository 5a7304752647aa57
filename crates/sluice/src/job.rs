//! One job: a decoded message, the variables its steps set, and the error
//! type that says what to do when a step fails.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use minijinja::Value;

use crate::formats::Envelope;
use crate::sources::Message;

/// The state one message's steps share.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub attempt: u32,
    pub body: Bytes,
    pub attributes: BTreeMap<String, String>,
    pub envelope: Envelope,
    vars: BTreeMap<String, Value>,
    /// The template context, rebuilt only after a variable changes.
    context: Option<Value>,
}

impl Job {
    pub fn new(message: &Message, envelope: Envelope) -> Job {
        Job {
            id: message.id.clone(),
            attempt: message.attempt,
            body: message.body.clone(),
            attributes: message.attributes.clone(),
            envelope,
            vars: BTreeMap::new(),
            context: None,
        }
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

    /// What templates see: the variables at top level, plus `message`
    /// (`id`, `attempt`, `attributes`), `body` (text, bytes or parsed JSON)
    /// and, for Laravel payloads, `job`.
    pub fn context(&mut self) -> Value {
        if let Some(ctx) = &self.context {
            return ctx.clone();
        }
        let mut map: BTreeMap<String, Value> = self.vars.clone();
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
            Envelope::Json(v) => Value::from_serialize(v),
            Envelope::Laravel(v) => {
                let v = Value::from_serialize(v);
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
