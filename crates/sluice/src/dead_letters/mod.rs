//! `[pipeline.dead_letter]`: where a pipeline's failed jobs are stored.
//!
//! By default each source keeps its own ([`Source::dead_letters`]: the SQS
//! dead-letter queue, the Kafka dead-letter topic, the failures file, the
//! Redis list). A pipeline may name another target instead, whatever its
//! source:
//!
//! ```toml
//! [pipeline.dead_letter]
//! type = "failed_jobs"                     # Laravel's failed-jobs table
//! url = "mysql://root@127.0.0.1:3306/app"  # or postgres://...
//! ```
//!
//! | `type` | stores each failed job as |
//! |---|---|
//! | `source` | the source's own target (the default) |
//! | `failed_jobs` | a row of Laravel's `failed_jobs` table ([`failed_jobs`]), so `php artisan queue:failed` lists it and `queue:retry` re-queues it |
//!
//! The runtime removes a job from its source only after the target stored
//! it; a target that cannot store sends the job back to the broker, to
//! come round again.
//!
//! [`Source::dead_letters`]: crate::sources::Source::dead_letters

#[cfg(feature = "failed-jobs")]
pub mod failed_jobs;

use std::sync::Arc;

use serde::Deserialize;

use crate::sources::{DeadLetterTarget, FieldError, SourceConfig, SourceError};

/// `[pipeline.dead_letter]`, by `type`.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeadLetterConfig {
    /// The source's own target.
    #[default]
    Source,
    /// Laravel's `failed_jobs` table.
    #[cfg(feature = "failed-jobs")]
    FailedJobs(failed_jobs::FailedJobsConfig),
}

impl DeadLetterConfig {
    /// Checks what can be checked without connecting, against the
    /// pipeline's source (which may supply defaults); names the field.
    pub fn check(&self, source: &dyn SourceConfig) -> Result<(), FieldError> {
        let _ = source;
        match self {
            DeadLetterConfig::Source => Ok(()),
            #[cfg(feature = "failed-jobs")]
            DeadLetterConfig::FailedJobs(c) => c.check(source),
        }
    }

    /// Connects the target; `None` for the source's own.
    pub async fn build(
        &self,
        source: &dyn SourceConfig,
    ) -> Result<Option<Arc<dyn DeadLetterTarget>>, SourceError> {
        let _ = source;
        match self {
            DeadLetterConfig::Source => Ok(None),
            #[cfg(feature = "failed-jobs")]
            DeadLetterConfig::FailedJobs(c) => Ok(Some(Arc::new(c.connect(source).await?))),
        }
    }
}
