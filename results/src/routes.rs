//! The results role's route table: the read side's handlers (`api`), the
//! expectations, the review queue and the rules reload, behind one read gate. Its
//! own module so that the handlers' modules import the shared state from `api`
//! without `api` importing them back.

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, put};
use visionq_http::access::{self, Gate};

use crate::api::{ResultsState, get_frame, station_counts, station_results, stations, stream};
use crate::{drift_api, expectations, reviews, rules_api};

/// The read side. Any valid token passes the gate; operators (and reviewers and
/// admins) read everything, a station token its own station's frames, history,
/// counts and stream.
pub fn router(state: Arc<ResultsState>) -> Router {
    let reader = Gate::new(state.auth.clone(), None);
    Router::new()
        .route("/v1/frames/{frame_id}", get(get_frame))
        .route("/v1/stations/{station}/results", get(station_results))
        .route("/v1/stations/{station}/counts", get(station_counts))
        .route(
            "/v1/stations/{station}/expectation",
            put(expectations::put_expectation).get(expectations::get_expectation).delete(expectations::delete_expectation),
        )
        .route("/v1/stations", get(stations))
        .route("/v1/drift", get(drift_api::rows))
        .route("/v1/stream", get(stream))
        .merge(reviews::routes())
        .route("/v1/rules/reload", axum::routing::post(rules_api::reload))
        .route_layer(middleware::from_fn_with_state(reader, access::check))
        .with_state(state)
}
