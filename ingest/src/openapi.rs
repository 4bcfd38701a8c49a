//! The OpenAPI description of ingest's routes, derived from the handlers' own
//! annotations and types; the binary merges it with the other roles' documents.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(paths(crate::api::post_frame, crate::stream::station_stream, crate::selftest::selftest), tags((name = "ingest", description = "Posting frames")))]
pub struct IngestApi;
