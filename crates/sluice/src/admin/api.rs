//! The JSON API: pipelines' live state, and the switches of
//! [`crate::runtime::control`]. See the [admin docs](super) for the routes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, Registered};
use crate::telemetry::events::Health;

/// An API error: a status and a sentence saying what to do.
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let text = crate::redact::redact(&self.1).into_owned();
        (self.0, Json(json!({ "error": text }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub(super) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: the API is under /api/pipelines and /api/failures",
            uri.path()
        ),
    )
}

pub(super) async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not how {} is used: reads are GET, a resize is PUT, pause and resume \
             are POST (see the admin server's docs)",
            uri.path()
        ),
    )
}

/// Checks a request that changes the daemon: the bearer token (when one
/// is set), a JSON content type and no foreign origin (a page elsewhere
/// cannot send either without the browser asking first, and we never
/// answer that question yes).
pub(super) async fn guard(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    match allowed(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Refuses a request whose `Host` is not an IP address, `localhost` or
/// an allowed name (see [`AdminState::with_allowed_hosts`]).
pub(super) async fn host_guard(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?"));
    match host {
        Some(host) if !host_allowed(&state.allowed_hosts, host) => ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "this admin server does not answer to the host name `{host}`: use its IP address, \
                 or add the name to [admin] allowed_hosts in the config"
            ),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// True for `127.0.0.1:9600`, `[::1]:9600`, `localhost`, or an allowed name.
pub(super) fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Checks the bearer token, when the daemon has one.
fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "this daemon has an admin token: send it as `Authorization: Bearer TOKEN` \
                     (sluice ctl reads SLUICE_ADMIN_TOKEN; the dashboard has a token field)"
                        .into(),
                ));
            }
            Some(t) if !same(t.as_bytes(), token.as_bytes()) => {
                return Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "wrong admin token: send the daemon's SLUICE_ADMIN_TOKEN".into(),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Reads of the API (failure reasons quote what the downstream answered)
/// need the token too, when the daemon has one; `/metrics` and the probes
/// do not.
pub(super) async fn read_guard(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    match authorized(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn allowed(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorized(state, headers)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send `Content-Type: application/json` (with a JSON body, `{}` when it takes none)"
                .into(),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        let same_host = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
        if !same_host {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "a request from another origin cannot change the daemon: use the dashboard this \
                 server serves, sluice ctl, or a client that sends no Origin header"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn find(state: &AdminState, name: &str) -> Result<Registered, ApiError> {
    state.pipeline(name).ok_or_else(|| {
        let known: Vec<String> = state
            .pipelines()
            .iter()
            .map(|p| p.counts.pipeline.clone())
            .collect();
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no pipeline `{name}`; the pipelines are: {}",
                if known.is_empty() {
                    "none yet".into()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

/// `p`, if it still runs: switching a stopped pipeline does nothing.
fn running(p: Registered) -> Result<Registered, ApiError> {
    if p.counts.health() == Health::Stopped {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "pipeline `{}` has stopped; nothing to change (its run is over or shutting down)",
                p.counts.pipeline
            ),
        ));
    }
    Ok(p)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A pipeline as the API shows it.
pub(super) fn describe(p: &Registered) -> Value {
    let c = &p.counts;
    let health = c.health();
    let paused = p.control.is_paused();
    let state = if paused && health != Health::Stopped {
        "paused"
    } else {
        health.as_str()
    };
    let all = c.latency();
    let recent = c.recent_latency();
    let destinations: Vec<Value> = p
        .control
        .destinations()
        .list()
        .into_iter()
        .map(|(d, paused)| json!({ "destination": d, "paused": paused }))
        .collect();
    let progress = p.progress.as_ref().map(|s| {
        use std::sync::atomic::Ordering::Relaxed;
        let total = s.total_bytes.load(Relaxed);
        json!({
            "read_bytes": s.read_bytes.load(Relaxed),
            "total_bytes": (total > 0).then_some(total),
        })
    });
    json!({
        "name": c.pipeline,
        "state": state,
        "health": health.as_str(),
        "paused": paused,
        "breaker_open": p.control.breaker_open(),
        "concurrency": p.control.concurrency(),
        "in_flight": c.in_flight(),
        "pending_retry": c.pending_retry(),
        "received": c.received.get(),
        "succeeded": c.succeeded.get(),
        "retried": c.retried.get(),
        "dead_lettered": c.dead_lettered.get(),
        "released": c.released.get(),
        "revoked": c.revoked.get(),
        "settle_errors": c.settle_errors.get(),
        "latency_ms": {
            "p50": ms(all.quantile(0.5)),
            "p99": ms(all.quantile(0.99)),
            "recent_p50": (!recent.is_empty()).then(|| ms(recent.quantile(0.5))),
            "recent_p99": (!recent.is_empty()).then(|| ms(recent.quantile(0.99))),
        },
        "backlog": p.backlog.as_ref().and_then(|b| b.get()),
        "progress": progress,
        "destinations": destinations,
    })
}

pub(super) async fn list(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let pipelines: Vec<Value> = state.pipelines().iter().map(describe).collect();
    Json(json!({ "pipelines": pipelines }))
}

pub(super) async fn one(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(describe(&find(&state, &name)?)))
}

/// Parses a JSON body, or says what shape it should have.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {shape}: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    concurrency: usize,
}

pub(super) async fn resize(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let p = running(find(&state, &name)?)?;
    let Resize { concurrency } = body(&bytes, r#"{"concurrency": 50}"#)?;
    p.control
        .set_concurrency(concurrency)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok(Json(describe(&p)))
}

pub(super) async fn pause(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult {
    let p = running(find(&state, &name)?)?;
    p.control.pause();
    Ok(Json(describe(&p)))
}

pub(super) async fn resume(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult {
    let p = running(find(&state, &name)?)?;
    p.control.resume();
    Ok(Json(describe(&p)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationBody {
    destination: String,
}

async fn switch_destination(
    state: Arc<AdminState>,
    name: String,
    bytes: Bytes,
    pause: bool,
) -> ApiResult {
    let p = running(find(&state, &name)?)?;
    let DestinationBody { destination } = body(&bytes, r#"{"destination": "https://host:443"}"#)?;
    let d = p.control.destinations();
    let r = if pause {
        d.pause(&destination)
    } else {
        d.resume(&destination)
    };
    r.map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Json(describe(&p)))
}

pub(super) async fn pause_destination(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    switch_destination(state, name, bytes, true).await
}

pub(super) async fn resume_destination(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    switch_destination(state, name, bytes, false).await
}

#[derive(Deserialize)]
pub(super) struct FailuresQuery {
    pipeline: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn failures(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<FailuresQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{e}: write it like /api/failures?pipeline=NAME&limit=20"),
        )
    })?;
    let limit = q.limit.unwrap_or(50).min(1000);
    let pipelines = match &q.pipeline {
        Some(name) => vec![find(&state, name)?],
        None => state.pipelines(),
    };
    let mut all: Vec<(String, crate::telemetry::events::Failure)> = pipelines
        .iter()
        .flat_map(|p| {
            let name = p.counts.pipeline.clone();
            p.counts
                .recent_failures()
                .into_iter()
                .map(move |f| (name.clone(), f))
        })
        .collect();
    all.sort_by_key(|(_, f)| std::cmp::Reverse(f.at));
    let failures: Vec<Value> = all
        .into_iter()
        .take(limit)
        .map(|(pipeline, f)| {
            json!({
                "time": rfc3339(f.at),
                "pipeline": pipeline,
                "message_id": f.message_id,
                "attempt": f.attempt,
                "outcome": f.outcome,
                "reason": f.reason,
            })
        })
        .collect();
    Ok(Json(json!({ "failures": failures })))
}

/// `2026-12-02T13:45:01.250Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_219_101_250);
        assert_eq!(rfc3339(t), "2026-12-02T13:45:01.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn hosts_are_addresses_localhost_or_allowed_names() {
        let allowed = vec!["sluice.internal".to_owned()];
        for ok in [
            "127.0.0.1:9600",
            "10.0.0.7",
            "[::1]:9600",
            "localhost:9600",
            "LOCALHOST",
            "sluice.internal:80",
        ] {
            assert!(host_allowed(&allowed, ok), "{ok}");
        }
        for refused in [
            "evil.example:9600",
            "evil.example",
            "127.0.0.1.evil.example",
            "sluice.internal.evil",
        ] {
            assert!(!host_allowed(&allowed, refused), "{refused}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}

#[cfg(test)]
mod router_tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::super::tests::{get, pipeline};
    use super::super::{AdminState, router};
    use crate::telemetry::Event;
    use crate::telemetry::events::{JobDeadLettered, JobRetried};

    async fn send(
        app: &axum::Router,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    /// A POST with the body `{}`.
    async fn post(app: &axum::Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        send(app, "POST", path, headers, "{}").await
    }

    #[tokio::test]
    async fn list_resize_pause_and_resume() {
        let state = Arc::new(AdminState::new(None));
        let p = pipeline("orders");
        state.register(p.clone());
        let app = router(state);
        let (status, body) = get(app.clone(), "/api/pipelines").await;
        assert_eq!(status, StatusCode::OK);
        let listed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed["pipelines"][0]["name"], "orders");
        assert_eq!(listed["pipelines"][0]["concurrency"], 8);
        assert_eq!(listed["pipelines"][0]["backlog"], Value::Null);

        let (status, body) = send(
            &app,
            "PUT",
            "/api/pipelines/orders/concurrency",
            &[JSON],
            r#"{"concurrency": 3}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["concurrency"], 3);
        assert_eq!(p.control.concurrency(), 3, "the control itself changed");

        for (bad, why) in [
            (r#"{"concurrency": 0}"#, "between 1 and"),
            (r#"{"concurrency": "many"}"#, "must be JSON like"),
            (r#"{"concurency": 4}"#, "must be JSON like"),
        ] {
            let (status, body) = send(
                &app,
                "PUT",
                "/api/pipelines/orders/concurrency",
                &[JSON],
                bad,
            )
            .await;
            assert!(status.is_client_error(), "{bad}: {status}");
            assert!(
                body["error"].as_str().unwrap().contains(why),
                "{bad}: {body}"
            );
        }
        assert_eq!(p.control.concurrency(), 3, "refused resizes change nothing");

        let (status, body) = post(&app, "/api/pipelines/orders/pause", &[JSON]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["paused"].clone(), body["state"].clone()),
            (true.into(), "paused".into())
        );
        assert!(p.control.is_paused());
        let (_, body) = post(&app, "/api/pipelines/orders/resume", &[JSON]).await;
        assert_eq!(body["paused"], false);
        assert!(!p.control.is_paused());

        let (status, body) = post(&app, "/api/pipelines/nope/pause", &[JSON]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("the pipelines are: orders"),
            "{body}"
        );
        let (status, body) = send(
            &app,
            "POST",
            "/api/pipelines/orders/destinations/pause",
            &[JSON],
            r#"{"destination": "http://elsewhere:80"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["error"].as_str().unwrap().contains("none yet"),
            "{body}"
        );

        p.counts
            .set_health(crate::telemetry::events::Health::Stopped);
        let (status, body) = post(&app, "/api/pipelines/orders/pause", &[JSON]).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(!p.control.is_paused(), "a stopped pipeline is not switched");
    }

    #[tokio::test]
    async fn mutations_need_the_token_json_and_no_foreign_origin() {
        let state = Arc::new(AdminState::new(None).with_token(Some("s3cret".into())));
        let p = pipeline("orders");
        state.register(p.clone());
        let app = router(state);
        let path = "/api/pipelines/orders/pause";
        let (status, body) = post(&app, path, &[JSON]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, _) = post(&app, path, &[JSON, ("authorization", "Bearer nope")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let auth = ("authorization", "Bearer s3cret");
        // A cross-site form can post text/plain without asking first.
        let (status, _) = post(&app, path, &[auth, ("content-type", "text/plain")]).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _) = post(
            &app,
            path,
            &[
                JSON,
                auth,
                ("host", "127.0.0.1:9600"),
                ("origin", "http://evil.example"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!p.control.is_paused(), "no refused request paused it");
        let (status, _) = post(
            &app,
            path,
            &[
                JSON,
                auth,
                ("host", "127.0.0.1:9600"),
                ("origin", "http://127.0.0.1:9600"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(p.control.is_paused());
        // DNS rebinding: the page's own origin, its name pointed at us.
        let (status, body) = post(
            &app,
            "/api/pipelines/orders/resume",
            &[
                JSON,
                auth,
                ("host", "evil.example:9600"),
                ("origin", "http://evil.example:9600"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("allowed_hosts"),
            "{body}"
        );
        assert!(p.control.is_paused(), "the rebinding page resumed nothing");
        let (status, _) = send(
            &app,
            "GET",
            "/api/failures",
            &[("host", "evil.example")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "nor can it read");
        let (status, _) = post(
            &app,
            path,
            &[JSON, auth, ("host", "127.0.0.1:9600"), ("origin", "null")],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "an opaque origin is foreign");
        // Reading the API needs the token too; the metrics and probes not.
        assert_eq!(
            get(app.clone(), "/api/pipelines/orders").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app.clone(), "/api/failures").await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, _) = send(&app, "GET", "/api/pipelines", &[auth], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "answered (not yet running), not refused"
        );
    }

    #[tokio::test]
    async fn failures_are_newest_first_and_redacted() {
        crate::redact::register("hunter2-token");
        let state = Arc::new(AdminState::new(None));
        let (a, b) = (pipeline("a"), pipeline("b"));
        state.register(a.clone());
        state.register(b.clone());
        JobRetried {
            id: "m-1",
            attempt: 1,
            delay: std::time::Duration::from_secs(1),
            reason: "http: POST answered 503",
        }
        .emit(&a.counts);
        std::thread::sleep(std::time::Duration::from_millis(2));
        JobDeadLettered {
            id: "m-2",
            attempt: 5,
            reason: "http: 400 token hunter2-token refused",
            target: "dlq",
        }
        .emit(&b.counts);
        let app = router(state);
        let (_, body) = get(app.clone(), "/api/failures").await;
        assert!(!body.contains("hunter2-token"), "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let f = v["failures"].as_array().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (
                f[0]["message_id"].clone(),
                f[0]["outcome"].clone(),
                f[0]["attempt"].clone()
            ),
            ("m-2".into(), "dead_lettered".into(), 5.into())
        );
        assert_eq!(f[1]["pipeline"], "a");
        let (_, body) = get(app.clone(), "/api/failures?pipeline=a&limit=5").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["failures"].as_array().unwrap().len(), 1);
        let (status, _) = get(app.clone(), "/api/failures?pipeline=zzz").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get(app.clone(), "/api/failures?limit=many").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains(r#""error":"#) && body.contains("limit=20"),
            "{body}"
        );
        let (status, body) = get(app, "/api/pipelines/a/pause").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("are POST"), "{body}");
    }
}
