//! `sluice ctl`: the admin API from a terminal.
//!
//! ```text
//! sluice ctl status                       # each pipeline: state, in flight / limit, counts, latency
//! sluice ctl resize reports 200           # effective at once
//! sluice ctl pause reports                # stop taking messages; in-flight jobs finish
//! sluice ctl resume reports
//! sluice ctl pause-destination reports https://ingest.example.com:443
//! sluice ctl failures --pipeline reports  # the most recent failed attempts
//! ```
//!
//! It talks to `--admin` (default `$SLUICE_ADMIN_URL`, else
//! `http://127.0.0.1:9600`) and sends `$SLUICE_ADMIN_TOKEN` as the bearer
//! token when it is set. `--json` prints the API's answer as it came.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// What to ask the daemon (also `sluice ctl`'s subcommands).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Request {
    /// Each pipeline: state, in flight against its limit, counts, latency.
    Status,
    /// Set a pipeline's concurrency, effective at once (running jobs are
    /// never interrupted).
    Resize {
        pipeline: String,
        concurrency: usize,
    },
    /// Stop a pipeline taking messages (they stay in the broker); jobs in
    /// flight finish.
    Pause { pipeline: String },
    /// Take messages again.
    Resume { pipeline: String },
    /// Hold the jobs about to send to one destination (scheme://host:port).
    PauseDestination {
        pipeline: String,
        destination: String,
    },
    /// Let a paused destination's jobs go.
    ResumeDestination {
        pipeline: String,
        destination: String,
    },
    /// The most recent failed attempts, newest first.
    Failures {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Why a request did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("`{0}` is not an admin URL like http://127.0.0.1:9600: {1}")]
    BadUrl(String, String),
    #[error(
        "cannot reach the admin server at {url}: {why}; is sluice running with --admin there? \
         (set --admin or SLUICE_ADMIN_URL)"
    )]
    Unreachable { url: String, why: String },
    #[error("the daemon refused: {0}")]
    Refused(String),
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends `request` to the admin server at `base`; returns the JSON answer.
pub async fn send(base: &str, token: Option<&str>, request: &Request) -> Result<Value, CtlError> {
    let base = base.trim_end_matches('/');
    let parsed = url::Url::parse(base).map_err(|e| CtlError::BadUrl(base.into(), e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CtlError::BadUrl(
            base.into(),
            "the scheme must be http or https".into(),
        ));
    }
    let client = crate::steps::http::client();
    let p = |name: &str| format!("{base}/api/pipelines/{}", segment(name));
    let (method, url, body) = match request {
        Request::Status => (reqwest::Method::GET, format!("{base}/api/pipelines"), None),
        Request::Resize {
            pipeline,
            concurrency,
        } => (
            reqwest::Method::PUT,
            format!("{}/concurrency", p(pipeline)),
            Some(json!({ "concurrency": concurrency })),
        ),
        Request::Pause { pipeline } => (
            reqwest::Method::POST,
            format!("{}/pause", p(pipeline)),
            Some(json!({})),
        ),
        Request::Resume { pipeline } => (
            reqwest::Method::POST,
            format!("{}/resume", p(pipeline)),
            Some(json!({})),
        ),
        Request::PauseDestination {
            pipeline,
            destination,
        } => (
            reqwest::Method::POST,
            format!("{}/destinations/pause", p(pipeline)),
            Some(json!({ "destination": destination })),
        ),
        Request::ResumeDestination {
            pipeline,
            destination,
        } => (
            reqwest::Method::POST,
            format!("{}/destinations/resume", p(pipeline)),
            Some(json!({ "destination": destination })),
        ),
        Request::Failures { pipeline, limit } => {
            let mut url = format!("{base}/api/failures?limit={limit}");
            if let Some(name) = pipeline {
                let _ = write!(url, "&pipeline={}", segment(name));
            }
            (reqwest::Method::GET, url, None)
        }
    };
    let mut req = client
        .request(method, &url)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
        req = req.bearer_auth(t.trim());
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_string());
    }
    let unreachable = |e: reqwest::Error| CtlError::Unreachable {
        url: base.to_owned(),
        why: crate::error_chain(&e.without_url()),
    };
    let res = req.send().await.map_err(unreachable)?;
    let status = res.status();
    let bytes = res.bytes().await.map_err(unreachable)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| CtlError::Unreachable {
        url: base.to_owned(),
        why: format!("{status}, and the answer is not the admin API's JSON ({e})"),
    })?;
    if !status.is_success() {
        let why = value["error"]
            .as_str()
            .map_or_else(|| format!("{status}"), |e| format!("{status}: {e}"));
        return Err(CtlError::Refused(printable(&why)));
    }
    Ok(value)
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |n| n.to_string())
}

fn millis(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |n| format!("{n:.1}"))
}

/// One pipeline on one line, for people.
pub fn pipeline_line(p: &Value) -> String {
    let mut state = p["state"].as_str().unwrap_or("?").to_owned();
    if p["breaker_open"] == true {
        state.push_str(" (breaker open)");
    }
    let mut line = format!(
        "{:<20} {:<22} in flight {:>6} / {:<6} succeeded {:>9}  retried {:>6}  dead-lettered {:>6}  p50 {} ms  p99 {} ms",
        p["name"].as_str().unwrap_or("?"),
        state,
        count(&p["in_flight"]),
        count(&p["concurrency"]),
        count(&p["succeeded"]),
        count(&p["retried"]),
        count(&p["dead_lettered"]),
        millis(&p["latency_ms"]["p50"]),
        millis(&p["latency_ms"]["p99"]),
    );
    if let Some(b) = p["backlog"].as_u64() {
        let _ = write!(line, "  backlog {b}");
    }
    for d in p["destinations"].as_array().into_iter().flatten() {
        if d["paused"] == true {
            let _ = write!(
                line,
                "\n{:<20} destination {} paused",
                "",
                d["destination"].as_str().unwrap_or("?")
            );
        }
    }
    line
}

/// The answer to `request`, for people, through [`printable`] (a message
/// id or reason may hold any character).
pub fn render(request: &Request, answer: &Value) -> String {
    printable(&render_text(request, answer))
}

/// `text` with control characters (but newlines) and bidirectional
/// overrides shown as `?`: what a broker carried cannot drive or disguise
/// the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n') || bidi {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn render_text(request: &Request, answer: &Value) -> String {
    match request {
        Request::Status => {
            let pipelines = answer["pipelines"].as_array().cloned().unwrap_or_default();
            if pipelines.is_empty() {
                return "no pipelines yet".into();
            }
            pipelines
                .iter()
                .map(pipeline_line)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Request::Failures { .. } => {
            let failures = answer["failures"].as_array().cloned().unwrap_or_default();
            if failures.is_empty() {
                return "no failures".into();
            }
            failures
                .iter()
                .map(|f| {
                    format!(
                        "{} {} message {} attempt {} {}: {}",
                        f["time"].as_str().unwrap_or("?"),
                        f["pipeline"].as_str().unwrap_or("?"),
                        f["message_id"].as_str().unwrap_or("?"),
                        count(&f["attempt"]),
                        f["outcome"].as_str().unwrap_or("?"),
                        f["reason"].as_str().unwrap_or("?"),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => pipeline_line(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_drive_the_terminal() {
        let answer = json!({ "failures": [{
            "time": "t", "pipeline": "p", "message_id": "id\u{1b}[2J", "attempt": 1,
            "outcome": "retried", "reason": "a\u{202E}b\u{7}c\u{9b}d"
        }]});
        let shown = render(
            &Request::Failures {
                pipeline: None,
                limit: 1,
            },
            &answer,
        );
        assert_eq!(shown, "t p message id?[2J attempt 1 retried: a?b?c?d");
        assert_eq!(printable("two\nlines\t"), "two\nlines?");
    }
}
