//! What a process answers for a request no route of it takes: a `{error, code}`
//! refusal like every other, and, when the path belongs to a role this process does
//! not run (history asked of an ingest-only process), the role that serves it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use visionq_http::ApiError;

use crate::role::Role;

fn name(role: Role) -> &'static str {
    match role {
        Role::Ingest => "ingest",
        Role::Preprocess => "preprocess",
        Role::Infer => "infer",
        Role::Results => "results",
    }
}

/// The role whose routes include `path`, if any role's do.
pub fn serving_role(path: &str) -> Option<Role> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "stations", _, "frames" | "ws"] | ["v1", "selftest"] => Some(Role::Ingest),
        // gRPC (`/<package.Service>/<Method>`): ingest's services.
        ["visionq.v1.Detector" | "grpc.health.v1.Health", _] => Some(Role::Ingest),
        ["v1", "frames", _] | ["v1", "stream"] | ["v1", "stations"] | ["v1", "dashboard", ..] | ["dashboard", ..] | [""] => {
            Some(Role::Results)
        }
        ["v1", "stations", _, "results" | "counts" | "latest.jpg" | "expectation"] => Some(Role::Results),
        ["v1", "review", ..] | ["v1", "rules", "reload"] | ["v1", "alerts"] => Some(Role::Results),
        ["v1", "models", ..] => Some(Role::Infer),
        _ => None,
    }
}

/// Adds the JSON 404 and 405 answers to `app`, which serves `roles`.
pub fn install(app: Router, roles: &BTreeSet<Role>) -> Router {
    let roles = Arc::new(roles.clone());
    let not_found = move |method: Method, uri: Uri| {
        let roles = roles.clone();
        async move {
            let path = uri.path();
            match serving_role(path) {
                Some(role) if !roles.contains(&role) => {
                    let here: Vec<&str> = roles.iter().map(|r| name(*r)).collect();
                    let message = format!(
                        "`{method} {path}` is served by the {} role; this process runs {}: send it to the {} role's address",
                        name(role),
                        here.join(", "),
                        name(role)
                    );
                    ApiError::new(StatusCode::NOT_FOUND, "wrong_role", message).served_by(name(role)).into_response()
                }
                _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route `{method} {path}`")).into_response(),
            }
        }
    };
    let not_allowed = |method: Method, uri: Uri| async move {
        let message = format!("`{method}` is not allowed on `{}`", uri.path());
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).into_response()
    };
    app.fallback(not_found).method_not_allowed_fallback(not_allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_role_that_serves_them() {
        assert_eq!(serving_role("/v1/stations/cam-1/frames"), Some(Role::Ingest));
        assert_eq!(serving_role("/v1/selftest"), Some(Role::Ingest));
        assert_eq!(serving_role("/v1/stations/cam-1/ws"), Some(Role::Ingest));
        assert_eq!(serving_role("/v1/frames/0190a1b2"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations/cam-1/results"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations/cam-1/counts"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stream"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations"), Some(Role::Results));
        assert_eq!(serving_role("/"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations/cam-1/expectation"), Some(Role::Results));
        assert_eq!(serving_role("/v1/review"), Some(Role::Results));
        assert_eq!(serving_role("/v1/review/0190a1b2/image"), Some(Role::Results));
        assert_eq!(serving_role("/v1/rules/reload"), Some(Role::Results));
        assert_eq!(serving_role("/v1/alerts"), Some(Role::Results));
        assert_eq!(serving_role("/visionq.v1.Detector/DetectStream"), Some(Role::Ingest));
        assert_eq!(serving_role("/grpc.health.v1.Health/Check"), Some(Role::Ingest));
        assert_eq!(serving_role("/v1/models/yolo/activate"), Some(Role::Infer));
        assert_eq!(serving_role("/v1/nothing"), None);
        assert_eq!(serving_role("/v1/stations/cam-1/frames/extra"), None);
    }
}
