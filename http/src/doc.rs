//! The refusals many routes share, as OpenAPI response sets: a route's
//! `#[utoipa::path(responses(...))]` lists its own answers and names one of these
//! for the access check's, instead of writing the same 401/403 rows again. The
//! descriptions are the document's; the refusals themselves are [`crate::ApiError`]s
//! made by [`crate::access`].

use visionq_contract::refusal::ErrorBody;

/// A route that takes any valid token (station, operator, reviewer or admin).
#[derive(utoipa::IntoResponses)]
pub enum TokenRefusals {
    /// No valid token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}

/// A route behind the admin scope.
#[derive(utoipa::IntoResponses)]
pub enum AdminRefusals {
    /// No valid token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not an admin token
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// A route for operators (and admins).
#[derive(utoipa::IntoResponses)]
pub enum OperatorRefusals {
    /// No valid token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not an operator token
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

#[cfg(test)]
mod tests {
    use utoipa::IntoResponses;
    use utoipa::openapi::RefOr;

    use super::*;

    /// Each set's statuses, descriptions, and a body that refers to ErrorBody.
    fn described<T: IntoResponses>() -> Vec<(String, String, String)> {
        T::responses()
            .into_iter()
            .map(|(status, r)| {
                let RefOr::T(r) = r else { panic!("{status}: a reference, not a response") };
                let schema = serde_json::to_value(&r.content["application/json"].schema).unwrap();
                (status, r.description, schema["$ref"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    #[test]
    fn the_sets_say_what_the_access_check_answers() {
        let body = "#/components/schemas/ErrorBody".to_string();
        assert_eq!(described::<TokenRefusals>(), [("401".into(), "No valid token".into(), body.clone())]);
        assert_eq!(
            described::<AdminRefusals>(),
            [("401".into(), "No valid token".into(), body.clone()), ("403".into(), "Not an admin token".into(), body.clone())]
        );
        assert_eq!(
            described::<OperatorRefusals>(),
            [("401".into(), "No valid token".into(), body.clone()), ("403".into(), "Not an operator token".into(), body)]
        );
    }
}
