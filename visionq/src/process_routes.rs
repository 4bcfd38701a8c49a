//! The routes every process serves whatever roles it runs: liveness, readiness,
//! Prometheus metrics (all open: probes and scrapers call them, and they hold no
//! frame or result), the effective configuration (admins only) and the OpenAPI
//! document of this process's own routes (open: it describes, it holds no data).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use visionq_contract::auth::{Auth, Scope};
use visionq_contract::{Config, Metrics};
use visionq_http::access::{self, Gate};
use visionq_queue::SharedBroker;
use visionq_results::store::SharedStore;

/// What `/readyz` checks.
pub struct Health {
    pub broker: SharedBroker,
    pub store: Option<SharedStore>,
    pub model_ready: Arc<AtomicBool>,
    pub needs_model: bool,
    pub metrics: Arc<Metrics>,
}

/// Whether the process runs.
#[utoipa::path(get, path = "/livez", tag = "process", responses((status = 200, description = "`ok`", body = String)))]
pub(crate) async fn livez() -> &'static str {
    "ok\n"
}

/// Whether the process can do its work: the broker, the database (results role) and
/// the model (infer role) are checked.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "process",
    responses(
        (status = 200, description = "`ready`", body = String),
        (status = 503, description = "`not ready: ` and what is missing", body = String),
    ),
)]
pub(crate) async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    let up = |dependency: &str, ok: bool| h.metrics.dependency_up.with_label_values(&[dependency]).set(ok as u8 as f64);
    let broker_ok = h.broker.is_ready().await;
    up("broker", broker_ok);
    if !broker_ok {
        problems.push("broker unreachable".to_string());
    }
    if let Some(store) = &h.store {
        let ping = store.ping().await;
        up("database", ping.is_ok());
        if let Err(e) = ping {
            problems.push(format!("database: {e}"));
        }
    }
    if h.needs_model {
        let loaded = h.model_ready.load(Ordering::Relaxed);
        up("model", loaded);
        if !loaded {
            problems.push("model not loaded".to_string());
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; ")))
    }
}

/// Prometheus metrics of this process (docs/OPERATIONS.md lists them).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "process",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)),
)]
pub(crate) async fn metrics_text(State(h): State<Arc<Health>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], h.metrics.render())
}

/// The effective configuration, secrets redacted, `listen` as actually bound.
#[utoipa::path(
    get,
    path = "/v1/config",
    tag = "process",
    responses(
        (status = 200, description = "The configuration", body = Config),
        visionq_http::doc::AdminRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn config(State(shown): State<Arc<Config>>) -> Json<Config> {
    Json(shown.as_ref().clone())
}

/// The OpenAPI document of the routes this process serves (its roles' and these).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "process",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi(State(doc): State<Arc<String>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.as_ref().clone()).into_response()
}

/// These routes, for a process running `roles`; `shown` is the configuration as
/// `/v1/config` shows it.
/// The process's own routes; `document` is the OpenAPI document of its roles (JSON),
/// served at `/v1/openapi.json`.
pub fn router(health: Arc<Health>, shown: Arc<Config>, auth: Arc<Auth>, document: String) -> Router {
    let document = Arc::new(document);
    let admin = Gate::new(auth, Some(Scope::Admin));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
        .merge(
            Router::new()
                .route("/v1/config", get(config))
                .route_layer(axum::middleware::from_fn_with_state(admin, access::check))
                .with_state(shown),
        )
        .merge(Router::new().route("/v1/openapi.json", get(openapi)).with_state(document))
}
