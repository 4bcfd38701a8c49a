//! `GET /v1/drift`: each model version's drift at each station ([`crate::drift`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use serde::Serialize;
use visionq_contract::refusal::ErrorBody;
use visionq_http::ApiError;
use visionq_http::access::Caller;

use crate::api::{ResultsState, query};
use crate::drift::DriftRow;

/// `GET /v1/drift`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DriftList {
    /// Frames a baseline takes, and the rolling window's length (`drift_baseline_frames`,
    /// `drift_window_frames`).
    baseline_frames: usize,
    window_frames: usize,
    /// The lines: a score PSI at or above `max_psi`, or detections per frame at
    /// `max_detections_ratio` times the baseline's or its inverse.
    max_psi: f64,
    max_detections_ratio: f64,
    /// Every model version at every station this process followed since it started
    /// (with the baselines stored before), by model, version and station.
    drift: Vec<DriftRow>,
}

/// Each model version's drift at each station: its baseline (the first frames it
/// answered there), its rolling window, the score PSI and detections-per-frame ratio
/// between them, and whether either crossed its line. A station token sees only its
/// own station.
#[utoipa::path(
    get,
    path = "/v1/drift",
    tag = "results",
    responses(
        (status = 200, description = "Every model version followed at every station", body = DriftList),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn rows(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DriftList>, ApiError> {
    query(raw).finish()?;
    let c = &s.config.drift;
    Ok(Json(DriftList {
        baseline_frames: c.drift_baseline_frames,
        window_frames: c.drift_window_frames,
        max_psi: c.drift_max_psi,
        max_detections_ratio: c.drift_max_detections_ratio,
        drift: s.drift.rows().into_iter().filter(|r| caller.may_read(&r.station)).collect(),
    }))
}
