//! Telemetry through one facade each: the `metrics` crate for numbers,
//! `tracing` for logs. Nothing here exports anything: the recorder the
//! [admin server](crate::admin) installs (`sluice run --admin`) picks the
//! metrics up and serves them at `/metrics`.
//!
//! Each thing that happens to a job is one typed [event](events): its
//! `emit` writes the log line and the count, once. The run report, the exit
//! code and the metrics read those same counts ([`PipelineCounts`]).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sluice_jobs_total` | counter | `pipeline`, `outcome` = `succeeded` \| `retried` \| `dead_lettered` \| `released` \| `revoked` \| `deferred` |
//! | `sluice_jobs_in_flight` | gauge | `pipeline` (received, job not over: running, waiting in its slot to retry, settling) |
//! | `sluice_jobs_pending_retry` | gauge | `pipeline` (handed back to the broker for a retry, not received again yet) |
//! | `sluice_job_duration_seconds` | histogram | `pipeline` |
//! | `sluice_step_duration_seconds` | histogram | `pipeline`, `step` (`1:extract`...) |
//! | `sluice_settle_errors_total` | counter | `pipeline` |
//! | `sluice_received_total` | counter | `pipeline` |
//! | `sluice_concurrency_limit` | gauge | `pipeline` |
//! | `sluice_pipeline_paused` | gauge | `pipeline`, `by` = `operator` \| `breaker` |
//! | `sluice_source_backlog` | gauge | `pipeline` (where the broker says: Kafka's lag summed, SQS's visible messages) |
//! | `sluice_http_requests_total` | counter | `pipeline`, `destination` (`scheme://host:port`), `status_class` = `2xx` \| `3xx` \| `4xx` \| `5xx` \| `error` |
//! | `sluice_sqs_requests_total` | counter | `queue`, `op` = `receive` \| `empty_receive` \| `delete` \| `visibility` \| `send` \| `attributes` \| `queue_url` |
//! | `sluice_kafka_consumer_lag` | gauge | `pipeline`, `topic`, `partition` |
//! | `sluice_kafka_commits_total` | counter | `pipeline`, `result` = `ok` \| `failed` |
//! | `sluice_kafka_rebalances_total` | counter | `pipeline`, `kind` = `assign` \| `revoke` |
//! | `sluice_kafka_paused` | gauge | `pipeline` |

pub mod events;

pub use events::{Event, PipelineCounts};

use metrics::{describe_counter, describe_gauge, describe_histogram};

pub const JOBS: &str = "sluice_jobs_total";
pub const IN_FLIGHT: &str = "sluice_jobs_in_flight";
pub const PENDING_RETRY: &str = "sluice_jobs_pending_retry";
pub const JOB_DURATION: &str = "sluice_job_duration_seconds";
pub const STEP_DURATION: &str = "sluice_step_duration_seconds";
pub const SETTLE_ERRORS: &str = "sluice_settle_errors_total";
pub const RECEIVED: &str = "sluice_received_total";
pub const CONCURRENCY_LIMIT: &str = "sluice_concurrency_limit";
pub const PIPELINE_PAUSED: &str = "sluice_pipeline_paused";
pub const SOURCE_BACKLOG: &str = "sluice_source_backlog";
pub const HTTP_REQUESTS: &str = "sluice_http_requests_total";
pub const SQS_REQUESTS: &str = "sluice_sqs_requests_total";
pub const KAFKA_LAG: &str = "sluice_kafka_consumer_lag";
pub const KAFKA_COMMITS: &str = "sluice_kafka_commits_total";
pub const KAFKA_REBALANCES: &str = "sluice_kafka_rebalances_total";
pub const KAFKA_PAUSED: &str = "sluice_kafka_paused";

/// Registers the descriptions of every metric with the installed recorder.
pub fn describe() {
    describe_counter!(JOBS, "Jobs settled, by outcome.");
    describe_gauge!(
        IN_FLIGHT,
        "Jobs received and not over: running, waiting in their slot to retry, or settling."
    );
    describe_gauge!(
        PENDING_RETRY,
        "Jobs handed back to the broker for a retry and not received again yet."
    );
    describe_histogram!(
        JOB_DURATION,
        metrics::Unit::Seconds,
        "One attempt of a job, steps and settling."
    );
    describe_histogram!(
        STEP_DURATION,
        metrics::Unit::Seconds,
        "One run of one step."
    );
    describe_counter!(
        SETTLE_ERRORS,
        "Acks, retries, dead letters or releases the source refused."
    );
    describe_counter!(RECEIVED, "Messages received from the source.");
    describe_gauge!(CONCURRENCY_LIMIT, "The pipeline's concurrency limit now.");
    describe_gauge!(
        PIPELINE_PAUSED,
        "1 while the pipeline takes no messages: paused by an operator, or by its circuit breaker."
    );
    describe_gauge!(
        SOURCE_BACKLOG,
        "Messages waiting in the source, where the broker reports it."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests of http steps, by destination and status class (error: no answer)."
    );
    describe_counter!(
        SQS_REQUESTS,
        "SQS API calls, by kind; empty_receive counts receives that returned nothing."
    );
    describe_gauge!(
        KAFKA_LAG,
        "Events of a partition not yet committed: its end minus the committed offset."
    );
    describe_counter!(KAFKA_COMMITS, "Offset commits, by result.");
    describe_counter!(
        KAFKA_REBALANCES,
        "Partitions assigned to or revoked from this process, by kind."
    );
    describe_gauge!(
        KAFKA_PAUSED,
        "1 while the partitions are paused because the pipeline takes no events."
    );
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs to stderr, every line passed through [`crate::redact`]; `RUST_LOG`
/// overrides `default_level` (`info`, `warn`...).
pub fn init_tracing(default_level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let writer = crate::redact::RedactingStderr;
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
