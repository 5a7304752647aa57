//! A built pipeline: what one message goes through, and what to do after.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::job::{Job, JobError};
use super::retry::Backoff;
use crate::formats::Format;
use crate::sources::Message;
use crate::steps::Step;
use crate::telemetry::PipelineMetrics;

/// A pipeline, checked and ready to run.
pub struct Pipeline {
    pub name: String,
    pub concurrency: usize,
    pub max_body_bytes: u64,
    pub job_timeout: Duration,
    pub format: Format,
    pub steps: Vec<Box<dyn Step>>,
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.steps.iter().map(|s| s.kind()).collect();
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("steps", &kinds)
            .finish_non_exhaustive()
    }
}

/// How to settle a message after its job ran.
#[derive(Clone, Debug, PartialEq)]
pub enum Settle {
    Ack,
    Retry { delay: Duration, reason: String },
    DeadLetter { reason: String },
}

impl Pipeline {
    /// The step kinds, in order.
    pub fn step_kinds(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.kind()).collect()
    }

    /// Runs every step on `message`, within the job timeout, turning a
    /// panic into a retryable error.
    pub async fn process(
        &self,
        message: &Message,
        metrics: &PipelineMetrics,
    ) -> Result<(), JobError> {
        let run = AssertUnwindSafe(self.steps_on(message, metrics)).catch_unwind();
        match tokio::time::timeout(self.job_timeout, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string payload".into());
                Err(JobError::retry(format!("the job panicked: {what}")))
            }
            Err(_) => Err(JobError::retry(format!(
                "the job took longer than job_timeout_secs ({} s) and was stopped",
                self.job_timeout.as_secs()
            ))),
        }
    }

    async fn steps_on(&self, message: &Message, metrics: &PipelineMetrics) -> Result<(), JobError> {
        if let Some(len) = message.oversize {
            return Err(JobError::fail(format!(
                "message body is {len} bytes, over max_body_bytes ({}); raise the pipeline's \
                 max_body_bytes if such bodies are expected",
                self.max_body_bytes
            )));
        }
        let envelope = self
            .format
            .decode(&message.body)
            .map_err(|e| JobError::fail(format!("format {}: {e}", self.format.name())))?;
        let mut job = Job::new(message, envelope);
        for (i, step) in self.steps.iter().enumerate() {
            let started = Instant::now();
            let r = step.run(&mut job).await;
            if let Some(h) = metrics.step_duration.get(i) {
                h.record(started.elapsed());
            }
            r.map_err(|e| e.context(&format!("step {}", i + 1)))?;
        }
        Ok(())
    }

    /// What to do with a message whose attempt `attempt` ended in `result`.
    pub fn decide(&self, attempt: u32, result: Result<(), JobError>) -> Settle {
        match result {
            Ok(()) => Settle::Ack,
            Err(JobError::Fail { reason }) => Settle::DeadLetter { reason },
            Err(JobError::Retry { reason, .. }) if attempt >= self.max_attempts => {
                Settle::DeadLetter {
                    reason: format!(
                        "gave up after {attempt} attempts (retry.max_attempts); last error: {reason}"
                    ),
                }
            }
            Err(JobError::Retry { after, reason }) => Settle::Retry {
                delay: after.unwrap_or_else(|| self.backoff.delay(attempt)),
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(max_attempts: u32) -> Pipeline {
        Pipeline {
            name: "p".into(),
            concurrency: 1,
            max_body_bytes: 10,
            job_timeout: Duration::from_secs(1),
            format: Format::Json,
            steps: Vec::new(),
            max_attempts,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: false,
            },
        }
    }

    #[test]
    fn decisions() {
        let p = pipeline(3);
        assert_eq!(p.decide(1, Ok(())), Settle::Ack);
        assert_eq!(
            p.decide(2, Err(JobError::retry("x"))),
            Settle::Retry {
                delay: Duration::from_millis(200),
                reason: "x".into()
            }
        );
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            p.decide(
                1,
                Err(JobError::Retry {
                    after,
                    reason: "429".into()
                })
            ),
            Settle::Retry {
                delay: Duration::from_secs(7),
                reason: "429".into()
            }
        );
        match p.decide(3, Err(JobError::retry("503"))) {
            Settle::DeadLetter { reason } => {
                assert!(reason.contains("gave up after 3 attempts") && reason.contains("503"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.decide(1, Err(JobError::fail("404"))),
            Settle::DeadLetter {
                reason: "404".into()
            }
        );
    }

    #[tokio::test]
    async fn oversize_and_undecodable_bodies_fail_permanently() {
        let p = pipeline(3);
        let m = PipelineMetrics::new("p", &[]);
        let msg = Message {
            oversize: Some(11),
            ..Message::default()
        };
        let e = p.process(&msg, &m).await.unwrap_err();
        assert!(
            matches!(e, JobError::Fail { .. }) && e.reason().contains("11 bytes"),
            "{e}"
        );
        let msg = Message {
            body: bytes::Bytes::from_static(b"{oops"),
            ..Message::default()
        };
        let e = p.process(&msg, &m).await.unwrap_err();
        assert!(
            e.reason()
                .starts_with("format json: body is not valid JSON"),
            "{e}"
        );
    }
}
