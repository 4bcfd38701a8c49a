//! The model admin API of a process running the infer role (issue 16): the models
//! of the repository with the active and the serving version, activation and
//! rollback. Admin scope only; every refusal is `{error, code}`. The work is the
//! infer-worker's [`ModelControl`]; this module is only its HTTP side.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use visionq_contract::ModelInfo;
use visionq_contract::auth::{Auth, Scope};
use visionq_contract::refusal::ErrorBody;
use visionq_http::ApiError;
use visionq_http::access::{self, Gate};
use visionq_infer_worker::{ActivateError, Activated, ModelControl};

/// What the routes work on: the control of a repository-served model, or (None)
/// the plain model file this process serves, which can only be listed.
pub struct ModelsState {
    pub control: Option<Arc<ModelControl>>,
    pub serving: Option<ModelInfo>,
}

/// The models this process knows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// The model repository (`model_repository`); absent when the process serves a
    /// plain model file (`model`), which cannot be activated or rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub models: Vec<ModelEntry>,
}

/// One model name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelEntry {
    pub name: String,
    /// Its versions in the repository, ascending.
    pub versions: Vec<String>,
    /// The active version recorded in the repository (what a starting worker serves).
    pub active: Option<String>,
    /// When `active` was activated (RFC 3339).
    pub activated_at: Option<String>,
    /// The versions active before, oldest first: a rollback goes to the last.
    pub previous: Vec<String>,
    /// The version this process serves now (absent: it serves another name).
    pub serving: Option<String>,
}

/// The version to activate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub version: String,
}

/// What an activation or rollback did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Activation {
    pub name: String,
    /// Serving now, and recorded as active.
    pub version: String,
    /// Serving before.
    pub previous: String,
    /// Whether the serving model changed (false when the version was already serving).
    pub switched: bool,
}

impl From<Activated> for Activation {
    fn from(a: Activated) -> Self {
        Activation { name: a.name, version: a.version, previous: a.previous, switched: a.switched }
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn refusal(e: &ActivateError) -> Response {
    let status = match e.code() {
        "bad_parameter" => StatusCode::BAD_REQUEST,
        "unknown_model" | "unknown_version" => StatusCode::NOT_FOUND,
        "version_exists" | "no_active_version" | "no_previous_version" | "not_served" => StatusCode::CONFLICT,
        "model_refused" | "model_incompatible" | "bad_manifest" => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    if status.is_server_error() || status == StatusCode::UNPROCESSABLE_ENTITY {
        tracing::warn!(error = %e, "model change refused");
    }
    refuse(status, e.code(), e.to_string())
}

fn no_repository() -> Response {
    refuse(
        StatusCode::CONFLICT,
        "no_repository",
        "this process serves a plain model file (`model`); set `model_repository` to activate and roll back versions",
    )
}

/// The models: the repository's names with their versions, the active one and the
/// one this process serves.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses(
        (status = 200, description = "The models", body = ModelList),
        visionq_http::doc::AdminRefusals,
        (status = 503, description = "The repository cannot be read (`repository_unavailable`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list(State(s): State<Arc<ModelsState>>) -> Response {
    let Some(control) = &s.control else {
        let models = s
            .serving
            .iter()
            .map(|m| ModelEntry {
                name: m.name.clone(),
                versions: vec![m.version.clone()],
                active: Some(m.version.clone()),
                activated_at: None,
                previous: Vec::new(),
                serving: Some(m.version.clone()),
            })
            .collect();
        return Json(ModelList { repository: None, models }).into_response();
    };
    let repo = control.repository().clone();
    let entries = match tokio::task::spawn_blocking(move || repo.list()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return refusal(&ActivateError::Repository(e)),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    };
    let serving = control.serving();
    let models = entries
        .into_iter()
        .map(|e| ModelEntry {
            serving: (e.name == serving.name).then(|| serving.version.clone()),
            active: e.track.as_ref().map(|t| t.active.clone()),
            activated_at: e.track.as_ref().map(|t| t.activated_at.clone()),
            previous: e.track.map(|t| t.previous).unwrap_or_default(),
            versions: e.versions,
            name: e.name,
        })
        .collect();
    Json(ModelList { repository: Some(control.repository().root().display().to_string()), models }).into_response()
}

/// Activates a version: it is loaded and warmed beside the serving one, recorded as
/// active in the repository, switched to between two batches (frames in flight
/// finish on the version that started them), and announced to the other workers.
/// A version that does not load or warm up is refused and the serving one stays.
#[utoipa::path(
    post,
    path = "/v1/models/{name}/activate",
    tag = "models",
    params(("name" = String, Path, description = "Model name")),
    request_body(content = ActivateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Serving the version", body = Activation),
        (status = 400, description = "A bad name, version or body (`bad_parameter`)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "No such model or version (`unknown_model`, `unknown_version`)", body = ErrorBody),
        (status = 409, description = "Not served here (`not_served`), or no repository (`no_repository`)", body = ErrorBody),
        (status = 422, description = "The version does not load, warm up or fit this worker (`model_refused`, `model_incompatible`, `bad_manifest`); the serving one stays", body = ErrorBody),
        (status = 503, description = "The repository or the worker is unavailable", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn activate(State(s): State<Arc<ModelsState>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(control) = &s.control else { return no_repository() };
    let request: ActivateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("the body must be JSON {{\"version\": \"…\"}}: {e}");
            return ApiError::bad("bad_parameter", "version", message).into_response();
        }
    };
    match control.activate(&name, &request.version).await {
        Ok(a) => Json(Activation::from(a)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// Goes back to the version active before the active one (loaded and switched to
/// as an activation is).
#[utoipa::path(
    post,
    path = "/v1/models/{name}/rollback",
    tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Serving the previous version", body = Activation),
        (status = 400, description = "A bad name (`bad_parameter`)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "No such model (`unknown_model`)", body = ErrorBody),
        (status = 409, description = "Nothing to go back to (`no_previous_version`), not served here, or no repository", body = ErrorBody),
        (status = 422, description = "The previous version does not load or fit any more; the serving one stays", body = ErrorBody),
        (status = 503, description = "The repository or the worker is unavailable", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn rollback(State(s): State<Arc<ModelsState>>, Path(name): Path<String>) -> Response {
    let Some(control) = &s.control else { return no_repository() };
    match control.rollback(&name).await {
        Ok(a) => Json(Activation::from(a)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// The model routes, for admins only.
pub fn router(state: Arc<ModelsState>, auth: Arc<Auth>) -> Router {
    let admin = Gate::new(auth, Some(Scope::Admin));
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/{name}/activate", post(activate))
        .route("/v1/models/{name}/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(admin, access::check))
        .with_state(state)
}
