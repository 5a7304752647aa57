//! A built pipeline: what one message goes through, and what to do after.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::job::{Job, JobError};
use super::retry::Backoff;
use crate::formats::{Format, RetryHints};
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
    /// Whether the config set them; if not, a message's own retry hints
    /// (Laravel's `maxTries`, `backoff`) win.
    pub max_attempts_set: bool,
    pub backoff_set: bool,
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
    /// Also returns the retry hints the message carried, if any.
    pub async fn process(
        &self,
        message: &Message,
        metrics: &PipelineMetrics,
    ) -> (Result<(), JobError>, Option<RetryHints>) {
        let mut hints = None;
        let run = AssertUnwindSafe(self.steps_on(message, metrics, &mut hints)).catch_unwind();
        let result = match tokio::time::timeout(self.job_timeout, run).await {
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
        };
        (result, hints)
    }

    async fn steps_on(
        &self,
        message: &Message,
        metrics: &PipelineMetrics,
        hints: &mut Option<RetryHints>,
    ) -> Result<(), JobError> {
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
        *hints = envelope.retry_hints();
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
    /// `hints` are the message's own retry settings, used where the config
    /// set none.
    pub fn decide(
        &self,
        attempt: u32,
        result: Result<(), JobError>,
        hints: Option<&RetryHints>,
    ) -> Settle {
        let (max, why_max) = match hints.and_then(|h| h.max_tries) {
            Some(n) if !self.max_attempts_set => {
                (if n == 0 { u32::MAX } else { n }, "the job's maxTries")
            }
            _ => (self.max_attempts, "retry.max_attempts"),
        };
        // As in Laravel: while a job's retryUntil is ahead, it is retried
        // whatever its attempts; once passed, it is not retried again.
        let until = hints.and_then(|h| h.retry_until);
        let max = if until.is_some() { u32::MAX } else { max };
        match result {
            Ok(()) => Settle::Ack,
            Err(JobError::Fail { reason }) => Settle::DeadLetter { reason },
            Err(JobError::Retry { reason, .. }) if attempt >= max => Settle::DeadLetter {
                reason: format!(
                    "gave up after {attempt} attempts ({why_max}); last error: {reason}"
                ),
            },
            Err(JobError::Retry { reason, .. })
                if hints
                    .and_then(|h| h.retry_until)
                    .is_some_and(|until| std::time::SystemTime::now() >= until) =>
            {
                Settle::DeadLetter {
                    reason: format!("the job's retryUntil has passed; last error: {reason}"),
                }
            }
            Err(JobError::Retry { after, reason }) => {
                let from_job = hints
                    .filter(|h| !self.backoff_set && !h.backoff.is_empty())
                    .map(|h| h.backoff[(attempt.max(1) as usize - 1).min(h.backoff.len() - 1)]);
                Settle::Retry {
                    delay: after
                        .or(from_job)
                        .unwrap_or_else(|| self.backoff.delay(attempt)),
                    reason,
                }
            }
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
            max_attempts_set: false,
            backoff_set: false,
        }
    }

    fn decide(p: &Pipeline, attempt: u32, r: Result<(), JobError>) -> Settle {
        p.decide(attempt, r, None)
    }

    #[test]
    fn a_jobs_own_retry_hints_apply_unless_the_config_sets_them() {
        let mut p = pipeline(3);
        let hints = RetryHints {
            max_tries: Some(5),
            backoff: vec![Duration::from_secs(1), Duration::from_secs(7)],
            retry_until: None,
        };
        let retry = || Err(JobError::retry("503"));
        assert!(
            matches!(p.decide(4, retry(), Some(&hints)), Settle::Retry { delay, .. } if delay == Duration::from_secs(7))
        );
        assert!(
            matches!(p.decide(1, retry(), Some(&hints)), Settle::Retry { delay, .. } if delay == Duration::from_secs(1))
        );
        match p.decide(5, retry(), Some(&hints)) {
            Settle::DeadLetter { reason } => assert!(reason.contains("maxTries"), "{reason}"),
            other => panic!("{other:?}"),
        }
        p.max_attempts_set = true;
        p.backoff_set = true;
        assert!(matches!(
            p.decide(3, retry(), Some(&hints)),
            Settle::DeadLetter { .. }
        ));
        assert!(
            matches!(p.decide(1, retry(), Some(&hints)), Settle::Retry { delay, .. } if delay == Duration::from_millis(100))
        );
        let ahead = RetryHints {
            retry_until: Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
            ..RetryHints::default()
        };
        assert!(
            matches!(p.decide(50, retry(), Some(&ahead)), Settle::Retry { .. }),
            "a retryUntil ahead outranks max_attempts, as in Laravel"
        );
        let past = RetryHints {
            retry_until: Some(std::time::SystemTime::now() - Duration::from_secs(1)),
            ..RetryHints::default()
        };
        match p.decide(1, retry(), Some(&past)) {
            Settle::DeadLetter { reason } => assert!(reason.contains("retryUntil"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decisions() {
        let p = pipeline(3);
        assert_eq!(decide(&p, 1, Ok(())), Settle::Ack);
        assert_eq!(
            decide(&p, 2, Err(JobError::retry("x"))),
            Settle::Retry {
                delay: Duration::from_millis(200),
                reason: "x".into()
            }
        );
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            decide(
                &p,
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
        match decide(&p, 3, Err(JobError::retry("503"))) {
            Settle::DeadLetter { reason } => {
                assert!(reason.contains("gave up after 3 attempts") && reason.contains("503"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&p, 1, Err(JobError::fail("404"))),
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
        let e = p.process(&msg, &m).await.0.unwrap_err();
        assert!(
            matches!(e, JobError::Fail { .. }) && e.reason().contains("11 bytes"),
            "{e}"
        );
        let msg = Message {
            body: bytes::Bytes::from_static(b"{oops"),
            ..Message::default()
        };
        let e = p.process(&msg, &m).await.0.unwrap_err();
        assert!(
            e.reason()
                .starts_with("format json: body is not valid JSON"),
            "{e}"
        );
    }
}
