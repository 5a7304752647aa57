//! What components (sources, steps) are built from: the small context each
//! config gets, and the error that names the field a value came from.
//!
//! Components depend on this module, never on [`crate::config`] or
//! [`crate::runtime`]: a config file is one way of building them, code is
//! another.

use std::time::Duration;

use sluice_pool::Rate;

/// What a source needs to know about its pipeline when it is opened.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// The pipeline's name, for logs.
    pub pipeline: String,
    /// Jobs in flight at once: a source never buffers more.
    pub concurrency: usize,
    /// Bodies longer than this are cut and their jobs dead-lettered.
    pub max_body_bytes: u64,
    /// The pipeline stores its dead letters in a target of its own
    /// (`[pipeline.dead_letter]`): the source need not have one, and must
    /// not refuse to open for want of one.
    pub dead_letters_elsewhere: bool,
}

impl SourceContext {
    /// A context for pipeline `name` running `concurrency` jobs, with the
    /// default body limit (1 MiB).
    pub fn new(pipeline: impl Into<String>, concurrency: usize) -> SourceContext {
        SourceContext {
            pipeline: pipeline.into(),
            concurrency,
            max_body_bytes: 1 << 20,
            dead_letters_elsewhere: false,
        }
    }
}

/// A local file a component reads or writes ([`crate::sources::SourceConfig::files`]),
/// so the config can refuse two uses of one file: a failures file that is
/// also the input, two pipelines sharing one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    /// The config field that names it (`path`, `checkpoint`, `failures`).
    pub field: &'static str,
    /// The path as configured (relative to where sluice runs); `-` is stdin.
    pub path: std::path::PathBuf,
    /// Written to (a checkpoint, a failures file), or consumed (stdin): no
    /// other use of the same file may share it. An input file only read
    /// may be read by several pipelines.
    pub exclusive: bool,
}

/// What a step needs to know about its pipeline when it is built; make
/// one with [`StepContext::new`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StepContext {
    /// The pipeline's name, for metric labels.
    pub pipeline: String,
    /// The pipeline's job concurrency when it starts.
    pub concurrency: usize,
    /// The pipeline's destinations: `http` steps count their requests
    /// there and hold jobs for a paused one ([`crate::runtime::control`]).
    pub destinations: std::sync::Arc<crate::runtime::Destinations>,
}

impl StepContext {
    /// The context of `pipeline`'s steps, with a destination list of its own.
    pub fn new(pipeline: impl Into<String>, concurrency: usize) -> StepContext {
        let pipeline = pipeline.into();
        StepContext {
            destinations: std::sync::Arc::new(crate::runtime::Destinations::new(&pipeline)),
            pipeline,
            concurrency,
        }
    }
}

/// A config value that cannot be used, naming the field within the
/// component (`url`, `headers.authorization`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a rate: `"500/s"`, `"30/min"`, `"1000/h"`, `"5/100ms"`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad =
        || format!("`{s}` is not a rate: write a count per unit, like \"500/s\" or \"30/min\"");
    let (count, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    let per = per.trim();
    let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let n: u64 = if split == 0 {
        1
    } else {
        per[..split].parse().map_err(|_| bad())?
    };
    let unit = match &per[split..] {
        "ms" => Duration::from_millis(1),
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    let per = unit * u32::try_from(n).map_err(|_| bad())?;
    if per.is_zero() {
        return Err(bad());
    }
    Ok(Rate::new(count, per))
}

/// Reads a rate written as a string (`"500/s"`) in a config.
pub fn deserialize_rate<'de, D>(d: D) -> Result<Option<Rate>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_rate(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("500/s").unwrap();
        assert_eq!((r.count(), r.per()), (500, Duration::from_secs(1)));
        let r = parse_rate("30/min").unwrap();
        assert_eq!(r.per(), Duration::from_secs(60));
        let r = parse_rate("5/100ms").unwrap();
        assert_eq!(r.per(), Duration::from_millis(100));
        for bad in ["500", "x/s", "0/s", "5/fortnight", "5/0s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
