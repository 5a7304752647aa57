//! Telemetry through one facade each: the `metrics` crate for numbers,
//! `tracing` for logs. Nothing here exports anything: a recorder installed
//! by the binary (or a later admin server) picks the metrics up.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sluice_jobs_total` | counter | `pipeline`, `outcome` = `succeeded` \| `retried` \| `dead_lettered` \| `released` |
//! | `sluice_jobs_in_flight` | gauge | `pipeline` |
//! | `sluice_job_duration_seconds` | histogram | `pipeline` |
//! | `sluice_step_duration_seconds` | histogram | `pipeline`, `step` (`1:extract`...) |
//! | `sluice_settle_errors_total` | counter | `pipeline` |
//! | `sluice_received_total` | counter | `pipeline` |
//! | `sluice_sqs_requests_total` | counter | `queue`, `op` = `receive` \| `empty_receive` \| `delete` \| `visibility` \| `send` |

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

pub const JOBS: &str = "sluice_jobs_total";
pub const IN_FLIGHT: &str = "sluice_jobs_in_flight";
pub const JOB_DURATION: &str = "sluice_job_duration_seconds";
pub const STEP_DURATION: &str = "sluice_step_duration_seconds";
pub const SETTLE_ERRORS: &str = "sluice_settle_errors_total";
pub const RECEIVED: &str = "sluice_received_total";
pub const SQS_REQUESTS: &str = "sluice_sqs_requests_total";

/// Registers the descriptions of every metric with the installed recorder.
pub fn describe() {
    describe_counter!(JOBS, "Jobs settled, by outcome.");
    describe_gauge!(IN_FLIGHT, "Jobs running or settling.");
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
    describe_counter!(
        SQS_REQUESTS,
        "SQS API calls, by kind; empty_receive counts receives that returned nothing."
    );
}

/// One pipeline's metric handles, made once so a job costs no lookups.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    pub succeeded: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub released: Counter,
    pub settle_errors: Counter,
    pub received: Counter,
    pub in_flight: Gauge,
    pub job_duration: Histogram,
    pub step_duration: Vec<Histogram>,
}

impl PipelineMetrics {
    pub fn new(pipeline: &str, steps: &[&'static str]) -> PipelineMetrics {
        let p = pipeline.to_owned();
        let outcome = |o: &'static str| counter!(JOBS, "pipeline" => p.clone(), "outcome" => o);
        PipelineMetrics {
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            released: outcome("released"),
            settle_errors: counter!(SETTLE_ERRORS, "pipeline" => p.clone()),
            received: counter!(RECEIVED, "pipeline" => p.clone()),
            in_flight: gauge!(IN_FLIGHT, "pipeline" => p.clone()),
            job_duration: histogram!(JOB_DURATION, "pipeline" => p.clone()),
            step_duration: steps
                .iter()
                .enumerate()
                .map(|(i, kind)| {
                    histogram!(STEP_DURATION, "pipeline" => p.clone(), "step" => format!("{}:{kind}", i + 1))
                })
                .collect(),
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default_level` (`info`, `warn`...).
pub fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
