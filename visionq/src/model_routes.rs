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
use visionq_infer_worker::{ActivateError, Activated, CandidateReport, Ended, ModelControl, Plan};

/// What the routes work on: the control of each repository-served model (the
/// worker's own and those its stations name), or (none) the plain model file this
/// process serves, which can only be listed.
pub struct ModelsState {
    pub controls: Vec<Arc<ModelControl>>,
    pub serving: Option<ModelInfo>,
}

impl ModelsState {
    /// The control serving `name`, or the refusal.
    #[allow(clippy::result_large_err)]
    fn control(&self, name: &str) -> Result<&Arc<ModelControl>, Response> {
        if self.controls.is_empty() {
            return Err(no_repository());
        }
        self.controls.iter().find(|c| c.name() == name).ok_or_else(|| {
            let served = self.controls.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
            refusal(&ActivateError::NotServed { asked: name.into(), served })
        })
    }
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
    /// A candidate version running beside `serving` (a canary or a shadow run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateView>,
    /// The last candidate that ended here, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_candidate: Option<EndedView>,
}

/// A candidate version and what it has done.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidateView {
    pub version: String,
    /// `canary` (its results are published for `share` of the frames and all of
    /// `stations`') or `shadow` (it also runs `sample` of the frames, compared only).
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stations: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// RFC 3339.
    pub started_at: String,
    /// Frames it ran, and frames whose pass failed.
    pub frames: u64,
    pub errors: u64,
    /// Its mean pass time per frame, and the active version's over the same period (ms).
    pub ms_per_frame: Option<f64>,
    pub active_ms_per_frame: Option<f64>,
    /// A shadow run's agreement with the active version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<AgreementView>,
    /// Sampled frames not shadowed because the candidate was behind.
    pub skipped: u64,
}

/// Boxes of the candidate IoU-matched (≥ 0.5, same class) to the active version's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgreementView {
    /// Frames both versions ran.
    pub frames: u64,
    pub precision: f64,
    pub recall: f64,
    /// Harmonic mean of the two: compared with `candidate_min_agreement`.
    pub f1: f64,
    /// Mean score change of the matched boxes.
    pub score_shift: f64,
}

/// A candidate that ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndedView {
    pub candidate: CandidateView,
    pub ended_at: String,
    /// `error_rate`, `latency`, `agreement` (ended automatically: a line was
    /// crossed), `promoted`, `replaced`, `rolled_back` or `cancelled`.
    pub reason: String,
    pub detail: String,
}

impl From<CandidateReport> for CandidateView {
    fn from(r: CandidateReport) -> Self {
        let (mode, share, stations, sample) = match r.plan {
            Plan::Canary { share, stations } => ("canary", Some(share), Some(stations), None),
            Plan::Shadow { sample } => ("shadow", None, None, Some(sample)),
        };
        CandidateView {
            version: r.info.version,
            mode: mode.into(),
            share,
            stations,
            sample,
            started_at: r.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            frames: r.passes.frames,
            errors: r.passes.errors,
            ms_per_frame: r.passes.per_frame().map(|s| s * 1e3),
            active_ms_per_frame: r.active_passes.per_frame().map(|s| s * 1e3),
            agreement: r.agreement.map(|a| AgreementView {
                frames: a.frames,
                precision: a.precision(),
                recall: a.recall(),
                f1: a.f1(),
                score_shift: a.score_shift(),
            }),
            skipped: r.skipped,
        }
    }
}

impl From<Ended> for EndedView {
    fn from(e: Ended) -> Self {
        EndedView {
            candidate: e.report.into(),
            ended_at: e.ended_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: e.reason,
            detail: e.detail,
        }
    }
}

/// A candidate to start.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateRequest {
    pub version: String,
    /// `canary` or `shadow`.
    pub mode: String,
    /// Canary: the share of every station's frames (0–1).
    pub share: Option<f64>,
    /// Canary: stations all of whose frames go to the candidate.
    pub stations: Option<Vec<String>>,
    /// Shadow: the share of frames also run on the candidate (0–1; default 1).
    pub sample: Option<f64>,
}

impl CandidateRequest {
    fn plan(self) -> Result<(String, Plan), String> {
        let fraction = |key: &str, v: Option<f64>, default: f64| match v.unwrap_or(default) {
            v if (0.0..=1.0).contains(&v) => Ok(v),
            v => Err(format!("{key} must be within 0..1, not {v}")),
        };
        let plan = match self.mode.as_str() {
            "canary" => {
                if self.sample.is_some() {
                    return Err("sample is for a shadow run; a canary takes share and stations".into());
                }
                let (share, stations) = (fraction("share", self.share, 0.0)?, self.stations.unwrap_or_default());
                if let Some(bad) = stations.iter().find(|s| !visionq_contract::config::valid_station_id(s)) {
                    return Err(format!("station id `{bad}` is not valid"));
                }
                if share == 0.0 && stations.is_empty() {
                    return Err("a canary needs a share above 0 or stations".into());
                }
                Plan::Canary { share, stations }
            }
            "shadow" => {
                if self.share.is_some() || self.stations.is_some() {
                    return Err("share and stations are for a canary; a shadow run takes sample".into());
                }
                Plan::Shadow { sample: fraction("sample", self.sample, 1.0)? }
            }
            other => return Err(format!("mode must be `canary` or `shadow`, not `{other}`")),
        };
        Ok((self.version, plan))
    }
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
        "version_exists" | "no_active_version" | "no_previous_version" | "not_served" | "candidate_is_active" | "no_candidate" => {
            StatusCode::CONFLICT
        }
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
    let Some(control) = s.controls.first() else {
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
                candidate: None,
                last_candidate: None,
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
    let models = entries
        .into_iter()
        .map(|e| {
            let control = s.controls.iter().find(|c| c.name() == e.name);
            let (candidate, ended) = control.map(|c| c.candidate()).unwrap_or_default();
            ModelEntry {
                serving: control.map(|c| c.serving().version),
                candidate: candidate.map(CandidateView::from),
                last_candidate: ended.map(EndedView::from),
                active: e.track.as_ref().map(|t| t.active.clone()),
                activated_at: e.track.as_ref().map(|t| t.activated_at.clone()),
                previous: e.track.map(|t| t.previous).unwrap_or_default(),
                versions: e.versions,
                name: e.name,
            }
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
    let control = match s.control(&name) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
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
    let control = match s.control(&name) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match control.rollback(&name).await {
        Ok(a) => Json(Activation::from(a)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// Starts a candidate version beside the active one: a **canary** (`share` of every
/// station's frames and all of `stations`' run on it, and its results are the
/// published ones, labelled with its version) or a **shadow** run (`sample` of the
/// frames also run on it; its results are compared with the active version's and
/// never published). It is loaded and warmed first (refused like an activation when
/// it does not load or fit), and replaces a candidate running. It ends when a
/// version is activated (promoted, when it is that version), over `DELETE`, or by
/// itself when its error rate, latency or agreement crosses a configured line
/// (`candidate_*`). It is not recorded in the repository: each worker runs its own.
#[utoipa::path(
    post,
    path = "/v1/models/{name}/candidate",
    tag = "models",
    params(("name" = String, Path, description = "Model name")),
    request_body(content = CandidateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The candidate runs", body = CandidateView),
        (status = 400, description = "A bad body (`bad_parameter`)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "No such model or version (`unknown_model`, `unknown_version`)", body = ErrorBody),
        (status = 409, description = "The active version (`candidate_is_active`), not served here (`not_served`), or no repository", body = ErrorBody),
        (status = 422, description = "The version does not load, warm up or fit this worker (`model_refused`, `model_incompatible`, `bad_manifest`)", body = ErrorBody),
        (status = 503, description = "The repository or the worker is unavailable", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn start_candidate(State(s): State<Arc<ModelsState>>, Path(name): Path<String>, body: Bytes) -> Response {
    let control = match s.control(&name) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let request: CandidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!(
                "the body must be JSON {{\"version\", \"mode\": \"canary\"|\"shadow\", \"share\", \"stations\", \"sample\"}}: {e}"
            );
            return ApiError::bad("bad_parameter", "body", message).into_response();
        }
    };
    let (version, plan) = match request.plan() {
        Ok(p) => p,
        Err(message) => return ApiError::bad("bad_parameter", "body", message).into_response(),
    };
    match control.start_candidate(&name, &version, plan).await {
        Ok(r) => Json(CandidateView::from(r)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// Ends the candidate running (`cancelled`); the frames it has taken finish on it.
#[utoipa::path(
    delete,
    path = "/v1/models/{name}/candidate",
    tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "The candidate ended", body = EndedView),
        visionq_http::doc::AdminRefusals,
        (status = 409, description = "No candidate runs (`no_candidate`), not served here, or no repository", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn end_candidate(State(s): State<Arc<ModelsState>>, Path(name): Path<String>) -> Response {
    let control = match s.control(&name) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match control.end_candidate(&name).await {
        Ok(e) => Json(EndedView::from(e)).into_response(),
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
        .route("/v1/models/{name}/candidate", post(start_candidate).delete(end_candidate))
        .route_layer(axum::middleware::from_fn_with_state(admin, access::check))
        .with_state(state)
}
