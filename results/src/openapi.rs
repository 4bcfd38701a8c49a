//! The OpenAPI description of the read side's routes (a frame, a station's history
//! and counts, the stations seen, the live stream, the review queue), derived from the handlers' own
//! annotations and types; the binary merges it with the other roles' documents
//! (the dashboard's routes, served beside this role's, describe themselves).

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        crate::api::get_frame,
        crate::api::station_results,
        crate::api::station_counts,
        crate::api::stations,
        crate::api::stream,
        crate::expectations::get_expectation,
        crate::expectations::put_expectation,
        crate::expectations::delete_expectation,
        crate::reviews::queue,
        crate::reviews::image,
        crate::reviews::review,
        crate::rules_api::reload,
        crate::drift_api::rows,
    ),
    tags((name = "results", description = "Reading results: one frame, a station's history and counts, the stations, the live stream; a station's expectation; the review queue; model drift")),
)]
pub struct ResultsApi;
