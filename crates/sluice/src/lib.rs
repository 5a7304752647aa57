//! sluice: drain message queues through I/O-heavy jobs with thousands in
//! flight, acknowledging each message only after its job succeeded.
//!
//! A [`Worker`] takes messages from a [source](sources), runs each through
//! a [`Handler`] on a [`sluice_pool`] worker pool, and settles each message
//! exactly once: ack after success, retry with backoff ([`retry`]), store
//! with a dead-letter target and remove after failing for good, release at
//! shutdown. Bring your own handler (this is `examples/custom-handler.rs`,
//! run by `scripts/test`):
//!
//! ```no_run
#![doc = include_str!("../examples/custom-handler.rs")]
//! ```
//!
//! The `sluice` binary is a thin shell over the same library: a TOML
//! [config] builds one worker per pipeline, whose handler is the configured
//! [steps] (extract, fetch, template, http) over a message [format](formats)
//! (raw, json, laravel).
//!
//! Modules import each other in one direction: `config` builds `worker`s,
//! which run on `runtime`, which drives `sources` and a `handler`; `steps`
//! are handlers; beneath them all lie `job`, `retry`, `formats`,
//! `component`, `template` and `telemetry`. No source or step knows the
//! runtime or the config.
//!
//! Cargo features: `file` and `sqs` (both on by default) each bring one
//! source; a library user who needs only files builds with
//! `default-features = false, features = ["file"]`.

pub mod admin;
pub mod component;
pub mod config;
pub mod dead_letters;
#[cfg(feature = "file")]
pub mod demo;
pub mod formats;
pub mod handler;
pub mod job;
pub mod redact;
pub mod retry;
pub mod runtime;
#[cfg(any(feature = "redis", feature = "sqs"))]
pub mod send;
pub mod sources;
pub mod steps;
pub mod telemetry;
pub mod template;
pub mod testkit;
pub mod worker;

pub use component::SourceContext;
pub use handler::Handler;
pub use job::{Job, JobError};
pub use retry::{Backoff, Retry, RetryPolicy};
pub use runtime::{PipelineReport, Shutdown};
pub use worker::Worker;

/// An error and its sources on one line (`a: b: c`), for reasons and logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
