//! The open-files limit a config needs. Every job in flight may hold a
//! connection for each step that connects (`http`, `fetch`), and each
//! connection is a file descriptor: a concurrency the process limit cannot
//! hold fails jobs with "too many open files" once the run is under way.
//! `check` refuses such a config; `run` raises the soft limit (up to the
//! hard one) to what the config needs.

use std::io;
use std::sync::Mutex;

use rlimit::Resource;

use super::PipelineConfig;
use crate::steps::StepConfig;

/// Descriptors sluice needs whatever the concurrency: standard streams,
/// the runtime, the checkpoint and failures files, the SQS client's pool.
pub const MARGIN: u64 = 256;

/// About how many open files the pipelines need: per job in flight, one for
/// each step that connects and one more for a connection being replaced;
/// plus [`MARGIN`].
pub fn needed(pipelines: &[PipelineConfig]) -> u64 {
    pipelines.iter().fold(MARGIN, |sum, p| {
        sum.saturating_add((p.concurrency as u64).saturating_mul(files_per_job(p)))
    })
}

/// Open files one job of `p` in flight may hold: one for each step that
/// connects, and one more for a connection being replaced.
pub fn files_per_job(p: &PipelineConfig) -> u64 {
    let connecting = p
        .steps
        .iter()
        .filter(|s| matches!(s, StepConfig::Http(_) | StepConfig::Fetch(_)))
        .count() as u64;
    connecting + 1
}

/// What the running pipelines need now, as `run` raised the limit to and
/// as resizes since have changed it.
static IN_USE: Mutex<u64> = Mutex::new(0);

/// Records that `run` raised the limit for `needed` open files.
pub(crate) fn started(needed: u64) {
    *IN_USE.lock().unwrap_or_else(|p| p.into_inner()) = needed;
}

/// A pipeline goes from `from` to `to` jobs in flight, each holding up to
/// `per_job` open files: raises the soft limit when it grows, or says why
/// it cannot (the hard limit).
pub(crate) fn resize(from: usize, to: usize, per_job: u64) -> Result<(), (u64, u64)> {
    let mut in_use = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let base = (*in_use).max(MARGIN);
    let without = base.saturating_sub((from as u64).saturating_mul(per_job));
    let needed = without.saturating_add((to as u64).saturating_mul(per_job));
    if to > from {
        let hard = current().map(|(_, hard)| hard).unwrap_or(u64::MAX);
        if needed > hard {
            return Err((needed, hard));
        }
        raise(needed).map_err(|_| (needed, hard))?;
    }
    *in_use = needed;
    Ok(())
}

/// The process's open-files limits: (soft, hard).
pub fn current() -> io::Result<(u64, u64)> {
    Resource::NOFILE.get()
}

/// Why `needed` open files cannot be had under the hard limit `hard`, if
/// they cannot.
pub fn refusal(needed: u64, hard: u64) -> Option<String> {
    (needed > hard).then(|| {
        format!(
            "the configured concurrency needs about {needed} open files, over the \
             hard limit of {hard}: lower concurrency, or raise the hard limit \
             (`ulimit -Hn {needed}`, or LimitNOFILE={needed} under systemd)"
        )
    })
}

/// Raises the soft limit to `needed` when it is lower (the hard limit
/// allowing). Returns the soft limit now in force.
pub fn raise(needed: u64) -> Result<u64, String> {
    let (soft, hard) = current().map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    if needed <= soft {
        return Ok(soft);
    }
    if let Some(r) = refusal(needed, hard) {
        return Err(r);
    }
    Resource::NOFILE
        .set(needed, hard)
        .map_err(|e| format!("cannot raise the open-files limit to {needed}: {e}"))?;
    tracing::info!(from = soft, to = needed, "raised the open-files soft limit");
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_up_to_the_hard_one() {
        let (soft, hard) = current().unwrap();
        assert_eq!(raise(soft).unwrap(), soft, "nothing to raise");
        if soft < hard {
            let want = soft + 1;
            assert_eq!(raise(want).unwrap(), want);
            assert_eq!(current().unwrap(), (want, hard));
        }
        let e = raise(hard.saturating_add(1)).unwrap_err();
        assert!(e.contains("over the hard limit"), "{e}");
        assert_eq!(current().unwrap().1, hard);
    }
}
