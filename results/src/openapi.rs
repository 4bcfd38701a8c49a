//! The OpenAPI description of the read side's routes (a frame, a station's history
//! and counts, the stations seen, the live stream), derived from the handlers' own
//! annotations and types; the binary merges it with the other roles' documents
//! (the dashboard's routes, which this role also mounts, describe themselves).

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        crate::api::get_frame,
        crate::api::station_results,
        crate::api::station_counts,
        crate::api::stations,
        crate::api::stream,
    ),
    tags((name = "results", description = "Reading results: one frame, a station's history and counts, the stations, the live stream")),
)]
pub struct ResultsApi;
