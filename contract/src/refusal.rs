//! The one shape of every refusal of the HTTP API: JSON `{error, code}`, with
//! `param` naming the query parameter or field refused, and `served_by` naming the
//! role that serves a route asked of a process that does not run it. Every role
//! renders its refusals through [`ErrorBody`], and the OpenAPI document describes
//! them by the same type.

use serde::Serialize;

use crate::params::ParamError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for a person to read.
    pub error: String,
    /// The reason, for a program: `bad_parameter`, `unknown_parameter`, `bad_station`,
    /// `unknown_station`, `unauthorized`, `forbidden`, `not_found`, `wrong_role`,
    /// `too_large`, `rate_limited`, `unavailable`, …
    pub code: String,
    /// The query parameter or body field refused, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The role that serves the route (`code` = `wrong_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, error: impl Into<String>) -> Self {
        ErrorBody { error: error.into(), code: code.into(), param: None, served_by: None }
    }

    /// Names the parameter or field refused.
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.param = Some(name.into());
        self
    }

    /// Names the role that serves the route.
    pub fn served_by(mut self, role: impl Into<String>) -> Self {
        self.served_by = Some(role.into());
        self
    }
}

impl From<ParamError> for ErrorBody {
    fn from(e: ParamError) -> Self {
        ErrorBody::new(e.code, e.message).param(e.param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_appear_only_when_set() {
        let plain = serde_json::to_value(ErrorBody::new("not_found", "no such route")).unwrap();
        assert_eq!(plain, serde_json::json!({"error": "no such route", "code": "not_found"}));
        let named = serde_json::to_value(ErrorBody::new("bad_parameter", "no").param("limit").served_by("results")).unwrap();
        assert_eq!(named["param"], "limit");
        assert_eq!(named["served_by"], "results");
    }
}
