//! The admin server: one HTTP server in the daemon for operators and their
//! tools. `sluice run --admin 127.0.0.1:9600` starts it.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /metrics` | every metric ([`crate::telemetry`]) in Prometheus' text format, and the process's own (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`, `process_threads`...), read at each scrape |
//! | `GET /healthz` | 200 while the process serves: a liveness probe |
//! | `GET /readyz` | 200 when every pipeline is receiving, else 503; JSON naming each pipeline's state (`starting`, `running`, `failing`: its source cannot reach its broker, `stopped`) |
//!
//! It binds where it is told, 127.0.0.1 unless given another address; a
//! non-loopback address needs a token (`SLUICE_ADMIN_TOKEN`), which the
//! control endpoints that change a running daemon will require. No
//! response carries a secret: metric labels are pipeline, step and source
//! names, and the text passes through [`crate::redact`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::telemetry::PipelineCounts;
use crate::telemetry::events::Health;

/// What the endpoints read: the Prometheus recorder's handle and each
/// pipeline's counts, registered once its worker is built.
#[derive(Default)]
pub struct AdminState {
    prometheus: Option<PrometheusHandle>,
    process: metrics_process::Collector,
    pipelines: RwLock<Vec<Arc<PipelineCounts>>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("pipelines", &self.health())
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
            pipelines: RwLock::default(),
        }
    }

    /// Adds a pipeline to `/readyz`.
    pub fn register(&self, counts: Arc<PipelineCounts>) {
        self.pipelines
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(counts);
    }

    fn health(&self) -> Vec<(String, Health)> {
        self.pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| (c.pipeline.clone(), c.health()))
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
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
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

/// Why an admin address is refused, if it is: a non-loopback address
/// without a token.
pub fn refusal(addr: SocketAddr, token: Option<&str>) -> Option<String> {
    let has_token = token.is_some_and(|t| !t.trim().is_empty());
    (!addr.ip().is_loopback() && !has_token).then(|| {
        format!(
            "--admin {addr}: a non-loopback address needs a token: set SLUICE_ADMIN_TOKEN (the \
             control endpoints will require it), or bind 127.0.0.1 behind a proxy"
        )
    })
}

/// Binds `addr` and serves the admin routes until the process exits.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admin server stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
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
        let a = Arc::new(PipelineCounts::new("a"));
        let b = Arc::new(PipelineCounts::new("b"));
        state.register(a.clone());
        state.register(b.clone());
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
        assert_eq!(refusal(any, Some("s3cret-token")), None);
    }
}
