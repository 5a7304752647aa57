//! The admin server: one HTTP server in the daemon for operators and their
//! tools. `sluice run --admin 127.0.0.1:9600` starts it; `sluice demo`
//! always does.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /` | the dashboard: live charts of each pipeline, its recent failures, and controls to resize, pause and resume it (one page, embedded in the binary, no CDN) |
//! | `GET /metrics` | every metric ([`crate::telemetry`]) in Prometheus' text format, and the process's own (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`, `process_threads`...), read at each scrape |
//! | `GET /healthz` | 200 while the process serves: a liveness probe |
//! | `GET /readyz` | 200 when every pipeline is receiving (or paused by an operator), else 503; JSON naming each pipeline's state (`starting`, `running`, `failing`: its source cannot reach its broker, `stopped`) |
//! | `GET /api/pipelines`, `GET /api/pipelines/{name}` | each pipeline's live state and counts (below) |
//! | `PUT /api/pipelines/{name}/concurrency` `{"concurrency": 50}` | resizes it at once; no running job is interrupted |
//! | `POST /api/pipelines/{name}/pause`, `.../resume` | stops taking messages (they stay in the broker; jobs in flight finish), takes them again |
//! | `POST /api/pipelines/{name}/destinations/pause`, `.../resume` `{"destination": "https://host:443"}` | holds, then lets go, the jobs about to send to one destination ([`crate::runtime::control`]) |
//! | `GET /api/failures?pipeline=NAME&limit=N` | the most recent failed attempts, newest first: time, pipeline, message id, attempt, outcome, reason (secrets cut) |
//!
//! A pipeline reads `{"name", "state", "health", "paused", "breaker_open",
//! "concurrency", "in_flight", "received", "succeeded", "retried",
//! "dead_lettered", "released", "revoked", "settle_errors", "latency_ms":
//! {"p50", "p99", "recent_p50", "recent_p99"}, "backlog", "progress",
//! "destinations": [{"destination", "paused"}]}`. `state` is `paused`
//! while an operator paused it, else its health.
//!
//! Safe by default: it binds where it is told, 127.0.0.1 unless given
//! another address, and a non-loopback address needs a token
//! (`SLUICE_ADMIN_TOKEN`). With a token set, every request to `/api`
//! (reads too: failure reasons quote what the downstream answered) needs
//! `Authorization: Bearer TOKEN`; `/metrics`, the probes and the page
//! itself do not. Such requests must
//! also be `Content-Type: application/json` and come from no other origin
//! than the server's own, so a web page in the operator's browser cannot
//! forge one. A request must name this server by an IP address,
//! `localhost`, or a name in `[admin] allowed_hosts`: a page whose domain
//! was pointed at 127.0.0.1 (DNS rebinding) is refused before it can read
//! or change anything. No response carries a secret: metric labels are pipeline,
//! step, destination and source names, and the text passes through
//! [`crate::redact`]. `sluice ctl` drives the API from a terminal.

mod api;
pub mod ctl;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::runtime::Control;
use crate::sources::{Backlog, SourceProgress};
use crate::telemetry::PipelineCounts;
use crate::telemetry::events::Health;
use crate::worker::Worker;

/// One pipeline as the admin server sees it.
#[derive(Clone, Debug)]
pub struct Registered {
    pub counts: Arc<PipelineCounts>,
    pub control: Arc<Control>,
    pub backlog: Option<Arc<Backlog>>,
    pub progress: Option<Arc<SourceProgress>>,
}

impl Registered {
    /// What `worker` shows.
    pub fn of(worker: &Worker) -> Registered {
        Registered {
            counts: worker.counts(),
            control: worker.control(),
            backlog: worker.backlog(),
            progress: worker.progress(),
        }
    }
}

/// What the endpoints read: the Prometheus recorder's handle, the token
/// mutations need, and each pipeline, registered once its worker is built.
#[derive(Default)]
pub struct AdminState {
    prometheus: Option<PrometheusHandle>,
    process: metrics_process::Collector,
    token: Option<String>,
    /// Host names (beside IP addresses and `localhost`) requests may name.
    allowed_hosts: Vec<String>,
    pipelines: RwLock<Vec<Registered>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("pipelines", &self.health())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// State that renders `prometheus` at `/metrics`.
    pub fn new(prometheus: Option<PrometheusHandle>) -> AdminState {
        let process = metrics_process::Collector::default();
        process.describe();
        AdminState {
            prometheus,
            process,
            token: None,
            allowed_hosts: Vec::new(),
            pipelines: RwLock::default(),
        }
    }

    /// Requests that change the daemon need `Authorization: Bearer
    /// token`; a blank token is none.
    pub fn with_token(mut self, token: Option<String>) -> AdminState {
        self.token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if let Some(t) = &self.token {
            crate::redact::register(t);
        }
        self
    }

    /// Host names requests may be addressed to, beside IP addresses and
    /// `localhost` (`[admin] allowed_hosts`): a name behind a proxy or in
    /// DNS. Any other `Host` is refused, so a page whose name was made to
    /// point at this server (DNS rebinding) cannot talk to it.
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> AdminState {
        self.allowed_hosts = hosts;
        self
    }

    /// Adds a pipeline to `/readyz` and the API.
    pub fn register(&self, pipeline: Registered) {
        self.pipelines
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(pipeline);
    }

    fn pipelines(&self) -> Vec<Registered> {
        self.pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn pipeline(&self, name: &str) -> Option<Registered> {
        self.pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|p| p.counts.pipeline == name)
            .cloned()
    }

    fn health(&self) -> Vec<(String, Health)> {
        self.pipelines()
            .iter()
            .map(|p| (p.counts.pipeline.clone(), p.counts.health()))
            .collect()
    }
}

/// Installs the process-wide Prometheus recorder (durations get buckets
/// from 1 ms to 60 s) and returns its handle. Once per process.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    const SECONDS: [f64; 14] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder failed: {e}"))
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    let control = Router::new()
        .route("/api/pipelines/{name}/concurrency", put(api::resize))
        .route("/api/pipelines/{name}/pause", post(api::pause))
        .route("/api/pipelines/{name}/resume", post(api::resume))
        .route(
            "/api/pipelines/{name}/destinations/pause",
            post(api::pause_destination),
        )
        .route(
            "/api/pipelines/{name}/destinations/resume",
            post(api::resume_destination),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::guard,
        ));
    let reads = Router::new()
        .route("/api/pipelines", get(api::list))
        .route("/api/pipelines/{name}", get(api::one))
        .route("/api/failures", get(api::failures))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::read_guard,
        ));
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(reads)
        .merge(control)
        .method_not_allowed_fallback(api::wrong_method)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::host_guard,
        ))
        .with_state(state)
}

/// The dashboard page (`dashboard.html`, embedded).
async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Everything it needs is inline; it talks to this server only.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
        ],
        Html(include_str!("dashboard.html")),
    )
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match &state.prometheus {
        Some(handle) => {
            state.process.collect();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                crate::redact::redact(&handle.render()).into_owned(),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "no metrics recorder is installed\n".to_owned(),
        ),
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let health = state.health();
    let ready = !health.is_empty() && health.iter().all(|(_, h)| *h == Health::Running);
    let pipelines: serde_json::Map<String, serde_json::Value> = health
        .into_iter()
        .map(|(name, h)| (name, json!(h.as_str())))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "pipelines": pipelines })),
    )
}

/// The shortest token a non-loopback admin address takes: a guessable one
/// guards nothing where anyone on the network can try it.
pub const MIN_PUBLIC_TOKEN_BYTES: usize = 16;

/// Why an admin address is refused, if it is: a non-loopback address
/// without a token, or with one shorter than [`MIN_PUBLIC_TOKEN_BYTES`].
pub fn refusal(addr: SocketAddr, token: Option<&str>) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let len = token.map_or(0, |t| t.trim().len());
    match len {
        0 => Some(format!(
            "admin server {addr} (--admin or [admin] listen): a non-loopback address needs a token: set SLUICE_ADMIN_TOKEN (the \
             control endpoints then require it), or bind 127.0.0.1 behind a proxy"
        )),
        n if n < MIN_PUBLIC_TOKEN_BYTES => Some(format!(
            "admin server {addr} (--admin or [admin] listen): SLUICE_ADMIN_TOKEN is {n} bytes; a non-loopback address needs \
             at least {MIN_PUBLIC_TOKEN_BYTES} (e.g. `openssl rand -hex 16`), or bind 127.0.0.1 behind a proxy"
        )),
        _ => None,
    }
}

/// Binds `addr` and serves the admin routes until the process exits.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(accept(listener, app));
    Ok((bound, task))
}

/// Connections the admin server holds at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest one connection is kept, keep-alive included.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// The admin server's accept loop: at most [`MAX_CONNECTIONS`] at once,
/// each with [`HEADER_READ_TIMEOUT`] to send its headers, so half-open
/// connections (before any token check) cannot pile up, hold descriptors
/// the pipelines need to settle, or make `/healthz` unreachable.
async fn accept(listener: tokio::net::TcpListener, app: Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "the admin server could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closed at once, its descriptor freed.
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| app.clone().oneshot(req));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// A registered pipeline with no worker behind it.
    pub(super) fn pipeline(name: &str) -> Registered {
        let destinations = Arc::new(crate::runtime::Destinations::new(name));
        Registered {
            counts: Arc::new(PipelineCounts::new(name)),
            control: Arc::new(Control::new(name, 8, 0, destinations)),
            backlog: None,
            progress: None,
        }
    }

    pub(super) async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_is_ready_only_when_every_pipeline_receives() {
        let state = Arc::new(AdminState::new(None));
        let app = router(state.clone());
        let (status, _) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no pipeline yet");
        let (a, b) = (pipeline("a"), pipeline("b"));
        state.register(a.clone());
        state.register(b.clone());
        let (a, b) = (a.counts, b.counts);
        a.set_health(Health::Running);
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(r#""b":"starting""#), "{body}");
        b.set_health(Health::Running);
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.set_health(Health::Failing);
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""b":"failing""#), "{body}");
        assert_eq!(get(app, "/healthz").await, (StatusCode::OK, "ok\n".into()));
    }

    #[tokio::test]
    async fn metrics_render_in_prometheus_text() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            use crate::telemetry::Event;
            let counts = PipelineCounts::new("orders");
            crate::telemetry::events::Received { count: 3 }.emit(&counts);
        });
        let app = router(Arc::new(AdminState::new(Some(handle))));
        let (status, body) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(r#"sluice_received_total{pipeline="orders"} 3"#),
            "{body}"
        );
        let none = router(Arc::new(AdminState::new(None)));
        assert_eq!(get(none, "/metrics").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_non_loopback_address_needs_a_token() {
        let local: SocketAddr = "127.0.0.1:9600".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9600".parse().unwrap();
        assert_eq!(refusal(local, None), None);
        assert!(refusal(any, None).unwrap().contains("SLUICE_ADMIN_TOKEN"));
        assert!(refusal(any, Some(" ")).is_some());
        assert_eq!(refusal(any, Some("s3cret-token-of-16+")), None);
        let short = refusal(any, Some("x")).unwrap();
        assert!(
            short.contains("1 bytes") && short.contains("at least 16"),
            "{short}"
        );
        assert_eq!(refusal(local, Some("x")), None, "loopback takes any token");
    }
}
