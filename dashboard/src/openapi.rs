//! The OpenAPI description of the dashboard's routes, derived from the handlers'
//! own annotations and types. The page is served at three paths (`/`, `/dashboard`,
//! `/dashboard/`) by one handler: the two aliases are given the same description.

use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

#[derive(OpenApi)]
#[openapi(
    paths(
        crate::http::index,
        crate::http::asset,
        crate::http::station_page,
        crate::http::page_config,
        crate::http::stations,
        crate::http::stream,
        crate::http::latest_jpeg,
        crate::http::metrics_source,
    ),
    tags((name = "dashboard", description = "The dashboard page and the data it reads")),
    modifiers(&PageAliases),
)]
pub struct DashboardApi;

struct PageAliases;

impl utoipa::Modify for PageAliases {
    fn modify(&self, doc: &mut Document) {
        let Some(page) = doc.paths.paths.get("/").cloned() else { return };
        for (alias, suffix) in crate::http::PAGE_ALIASES.into_iter().zip(["dashboard", "dashboard_slash"]) {
            let mut item = page.clone();
            // Operation ids are unique in a document.
            if let Some(op) = item.get.as_mut() {
                op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_{suffix}"));
            }
            doc.paths.paths.insert(alias.to_string(), item);
        }
    }
}
