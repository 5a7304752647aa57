//! Fuzz targets (bolero) for what reads untrusted text: config loading,
//! message decoding, template compiling and rendering, and redaction.
//!
//! `cargo test` runs each with a few thousand random inputs (the smoke run
//! in `scripts/test`). A longer run, documented in the README:
//!
//! ```sh
//! BOLERO_RANDOM_ITERATIONS=2000000 cargo test --release -p sluice --test fuzz
//! ```
//!
//! and, with a nightly toolchain and `cargo install cargo-bolero`,
//! coverage-guided: `cargo bolero test -p sluice --test fuzz config_text`.
//! A failing input prints its `BOLERO_RANDOM_SEED`; set it to replay.
//!
//! Each target asserts what must hold for every input: no panic, and the
//! property named by the target.

use std::panic::AssertUnwindSafe;

use bolero::check;
use sluice::config;
use sluice::formats::Format;
use sluice::template::Template;
use sluice::template::json::to_value;

/// Random inputs per target in the smoke run.
const SMOKE: usize = 3_000;

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// Config text, raw and spliced into a valid config at the places users
/// type values: loading and checking never panic, and an error names the
/// file.
#[test]
fn config_text() {
    check!().with_iterations(SMOKE).for_each(|input: &[u8]| {
        let raw = text(input);
        let spliced = format!(
            "[[pipeline]]\nname = \"p\"\nconcurrency = 4\n[pipeline.source]\ntype = \"file\"\n\
             path = \"/nonexistent/jobs.ndjson\"\n[[pipeline.step]]\ntype = \"http\"\n\
             url = \"http://127.0.0.1:9/{}\"\n{}\n",
            raw.replace(['"', '\\', '\n'], ""),
            raw
        );
        for t in [&raw, &spliced] {
            match config::parse("fuzz.toml", t, |k| (k == "SET").then(|| raw.clone())) {
                Ok(loaded) => {
                    if let Err(e) = loaded.check() {
                        assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
                    }
                }
                Err(e) => assert!(e.to_string().starts_with("fuzz.toml"), "{e}"),
            }
        }
    });
}

/// Message bodies in every format: decoding never panics, and a JSON body
/// that decodes is valid JSON.
#[test]
fn message_decoding() {
    check!().with_iterations(SMOKE).for_each(|input: &[u8]| {
        for format in [Format::Raw, Format::Json, Format::Laravel] {
            if let Err(e) = format.decode(input) {
                assert!(!e.to_string().is_empty());
            }
        }
        if Format::Json.decode(input).is_ok() {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(input).is_ok());
        }
        let _ = sluice::formats::laravel::RetryHints::parse(input);
    });
}

/// Laravel-shaped bodies with fuzzed fields: the payload checks and retry
/// hints never panic on any value in any field.
#[test]
fn laravel_payloads() {
    check!()
        .with_iterations(SMOKE)
        .with_type::<(String, String, i64, Option<String>, String)>()
        .for_each(|(job, command, attempts, backoff, until)| {
            let body = serde_json::json!({
                "uuid": "u",
                "displayName": job,
                "job": job,
                "maxTries": attempts,
                "backoff": backoff,
                "retryUntil": until,
                "attempts": attempts,
                "data": {"commandName": job, "command": command},
            });
            let bytes = serde_json::to_vec(&body).unwrap();
            let _ = Format::Laravel.decode(&bytes);
            let _ = sluice::formats::laravel::RetryHints::parse(&bytes);
        });
}

/// Template sources: compiling never panics, and a template that compiles
/// renders (or fails with an error naming the field) against a job-like
/// context.
#[test]
fn template_compile_and_render() {
    let ctx = to_value(&serde_json::json!({
        "body": {"id": 7, "name": "a b/c?d", "list": [1, 2], "nested": {"x": null}},
        "message": {"id": "m-1", "attributes": {}},
    }));
    // The engine catches panics; nothing here is shared between inputs.
    let ctx = AssertUnwindSafe(ctx);
    check!().with_iterations(SMOKE).for_each(|input: &[u8]| {
        let src = text(input);
        for s in [
            src.clone(),
            format!("{{{{ {src} }}}}"),
            format!("x{{{{ body.{src} }}}}"),
        ] {
            if let Ok(t) = Template::new(&s) {
                if let Err(e) = t.render_field("body", (*ctx).clone()) {
                    assert!(e.to_string().contains("`body`"), "{e}");
                }
            }
        }
    });
}

/// Fixed templates over fuzzed JSON values: rendering never panics.
#[test]
fn template_values() {
    let templates: Vec<Template> = [
        "{{ body | tojson }}",
        "http://h/x/{{ body.id }}?q={{ body.name }}",
        "{% for k in body %}{{ k }},{% endfor %}",
        "{{ body.id + 1 }}",
    ]
    .iter()
    .map(|s| Template::new(s).unwrap())
    .collect();
    let templates = AssertUnwindSafe(templates);
    check!().with_iterations(SMOKE).for_each(|input: &[u8]| {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) else {
            return;
        };
        let ctx = to_value(&serde_json::json!({ "body": v }));
        for t in templates.iter() {
            let _ = t.render(ctx.clone());
        }
    });
}

/// URL templates over fuzzed values: a value in the path or the query never
/// changes the host, adds a path segment or starts a query or fragment.
#[test]
fn url_escaping() {
    let t = AssertUnwindSafe(Template::url("http://h.example/jobs/{{ id }}?q={{ q }}").unwrap());
    check!()
        .with_iterations(SMOKE)
        .with_type::<(String, String)>()
        .for_each(|(id, q)| {
            let ctx = to_value(&serde_json::json!({ "id": id, "q": q }));
            let Ok(out) = t.render(ctx) else {
                // Only a whole `.`/`..` segment is refused.
                assert!(id == "." || id == "..", "{id:?}");
                return;
            };
            let u = url::Url::parse(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            assert_eq!(u.host_str(), Some("h.example"), "{out}");
            assert_eq!(u.path_segments().unwrap().count(), 2, "{out}");
            assert_eq!(u.query_pairs().count(), 1, "{out}");
            assert_eq!(u.query_pairs().next().unwrap().1, q.as_str(), "{out}");
            assert!(u.fragment().is_none(), "{out}");
        });
}

/// Redaction: a registered secret never survives, wherever it sits in the
/// text, and URL credentials never survive.
#[test]
fn redaction() {
    sluice::redact::register("hunter2-SECRET");
    check!()
        .with_iterations(SMOKE)
        .with_type::<(String, String)>()
        .for_each(|(a, b)| {
            let t = format!("{a}hunter2-SECRET{b} https://user:pw-9x@{a}/p");
            let r = sluice::redact::redact(&t);
            assert!(!r.contains("hunter2-SECRET"), "{r}");
            assert!(!r.contains("user:pw-9x@"), "{r}");
        });
}
