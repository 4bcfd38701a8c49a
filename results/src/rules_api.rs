//! `POST /v1/rules/reload` (admins): reads the rules file again, as SIGHUP does, and
//! says whether it took. A file that does not load is refused with its reason and
//! the rules in use stay.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use visionq_contract::auth::Scope;
use visionq_contract::refusal::ErrorBody;
use visionq_http::ApiError;
use visionq_http::access::{self, Caller};

use crate::api::{ResultsState, query};

/// A reload that took.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// The rules file read.
    pub rules_file: String,
}

/// Reads the rules file again; on an error the rules in use stay.
#[utoipa::path(
    post,
    path = "/v1/rules/reload",
    tag = "results",
    responses(
        (status = 200, description = "The rules file was read and is in use", body = Reloaded),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 409, description = "No rules file is configured (`decisions_off`)", body = ErrorBody),
        (status = 422, description = "The file does not load (`bad_rules`, with the reason); the rules in use stay", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn reload(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    if !caller.has(Scope::Admin) {
        return access::forbidden("reloading the rules takes an admin token").into_response();
    }
    if let Err(e) = query(raw).finish() {
        return ApiError::from(e).into_response();
    }
    let Some(path) = s.config.events.rules_file.as_ref().filter(|_| s.decider.enabled()) else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "decisions_off",
            "no rules file is configured (VISIONQ_RULES_FILE): there is nothing to reload",
        )
        .into_response();
    };
    match s.decider.reload() {
        Ok(()) => {
            tracing::info!(rules_file = %path.display(), "decision rules reloaded (admin API)");
            Json(Reloaded { rules_file: path.display().to_string() }).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "decision rules not reloaded (admin API); the rules in use stay");
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_rules", format!("{e}; the rules in use stay")).into_response()
        }
    }
}
