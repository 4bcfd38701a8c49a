//! What a process answers for a request no route of it takes: a `{error, code}`
//! refusal like every other, and, when the path belongs to a role this process does
//! not run (history asked of an ingest-only process), the role that serves it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use visionq_contract::refusal::ErrorBody;

use crate::compose::Role;

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
        ["v1", "stations", _, "frames"] | ["v1", "selftest"] => Some(Role::Ingest),
        ["v1", "frames", _] | ["v1", "stream"] | ["v1", "stations"] | ["v1", "dashboard", ..] | ["dashboard", ..] | [""] => {
            Some(Role::Results)
        }
        ["v1", "stations", _, "results" | "counts" | "latest.jpg"] => Some(Role::Results),
        _ => None,
    }
}

fn refuse(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(body)).into_response()
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
                    refuse(StatusCode::NOT_FOUND, ErrorBody::new("wrong_role", message).served_by(name(role)))
                }
                _ => refuse(StatusCode::NOT_FOUND, ErrorBody::new("not_found", format!("no route `{method} {path}`"))),
            }
        }
    };
    let not_allowed = |method: Method, uri: Uri| async move {
        let message = format!("`{method}` is not allowed on `{}`", uri.path());
        refuse(StatusCode::METHOD_NOT_ALLOWED, ErrorBody::new("method_not_allowed", message))
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
        assert_eq!(serving_role("/v1/frames/0190a1b2"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations/cam-1/results"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations/cam-1/counts"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stream"), Some(Role::Results));
        assert_eq!(serving_role("/v1/stations"), Some(Role::Results));
        assert_eq!(serving_role("/"), Some(Role::Results));
        assert_eq!(serving_role("/v1/nothing"), None);
        assert_eq!(serving_role("/v1/stations/cam-1/frames/extra"), None);
    }
}
