//! sluice: drain message queues through I/O-heavy jobs with thousands in
//! flight, acknowledging each message only after its job succeeded.
//!
//! A config names pipelines; each reads messages from a [source](sources),
//! decodes them ([formats]), runs them through [steps] on a
//! [`sluice_pool`] worker pool, and settles each message exactly once
//! ([runtime]). The `sluice` binary is a thin shell over this library:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice::runtime::{self, Progress, RunOptions, Shutdown};
//!
//! let loaded = sluice::config::load("pipeline.toml".as_ref())?;
//! let report = runtime::run(&loaded, RunOptions { shutdown: Shutdown::new(), progress: Progress::Auto, stop_when_empty: false }).await?;
//! println!("{}", runtime::summary(&report));
//! # Ok(()) }
//! ```

pub mod config;
pub mod demo;
pub mod formats;
pub mod runtime;
pub mod sources;
pub mod steps;
pub mod telemetry;
pub mod template;
pub mod testkit;

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
