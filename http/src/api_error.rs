//! The one refusal of the HTTP API.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use visionq_contract::auth::Denied;
use visionq_contract::params::ParamError;
use visionq_contract::refusal::ErrorBody;

/// A refused request: its status, the `{error, code}` body every route answers
/// with, and the headers the client needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: a refusal travels in `Result`s, which it keeps small.
    pub body: Box<ErrorBody>,
    /// `Retry-After`, in seconds (429, 503).
    pub retry_after_s: Option<u64>,
    /// `WWW-Authenticate` of a 401.
    pub challenge: Option<&'static str>,
    /// Answered before the request's body was read: the connection is closed after
    /// the answer (what is left of the body must not be read as the next request, and
    /// a client must not reuse the connection).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, body: Box::new(ErrorBody::new(code, message)), retry_after_s: None, challenge: None, close: false }
    }

    /// 400 with `code`, naming the parameter or field refused.
    pub fn bad(code: impl Into<String>, param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message).param(param)
    }

    /// Names the parameter or field refused.
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.body.param = Some(name.into());
        self
    }

    /// Names the role that serves the route.
    pub fn served_by(mut self, role: impl Into<String>) -> Self {
        self.body.served_by = Some(role.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The connection closes after this answer (see [`ApiError::close`]).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The machine-readable reason (also a metric label where one counts refusals).
    pub fn code(&self) -> &str {
        &self.body.code
    }
}

impl From<Denied> for ApiError {
    /// 401 with its challenge, or 403.
    fn from(d: Denied) -> Self {
        let status = StatusCode::from_u16(d.status()).expect("401 or 403");
        let mut e = ApiError::new(status, d.code(), d.to_string());
        e.challenge = d.challenge();
        e
    }
}

impl From<ParamError> for ApiError {
    /// 400 naming the parameter.
    fn from(e: ParamError) -> Self {
        let mut a = ApiError::new(StatusCode::BAD_REQUEST, "", "");
        *a.body = ErrorBody::from(e);
        a
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(*self.body)).into_response();
        let h = r.headers_mut();
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(e: ApiError) -> (u16, axum::http::HeaderMap, serde_json::Value) {
        let r = e.into_response();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_refusal_carries_its_body_and_headers() {
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", "full").retry_after(2).closing();
        assert_eq!(e.code(), "queue_full");
        let (status, h, body) = parts(e).await;
        assert_eq!(status, 503);
        assert_eq!(body, serde_json::json!({"error": "full", "code": "queue_full"}));
        assert_eq!((h["retry-after"].to_str().unwrap(), h["connection"].to_str().unwrap()), ("2", "close"));
        assert!(h.get("www-authenticate").is_none());
    }

    #[tokio::test]
    async fn denials_and_parameters_convert() {
        let (status, h, body) = parts(Denied::Missing.into()).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let (status, _, body) = parts(Denied::Forbidden("no".into()).into()).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
        let p = ParamError { param: "limit".into(), code: "bad_parameter", message: "too big".into() };
        let (status, _, body) = parts(p.into()).await;
        assert_eq!(body, serde_json::json!({"error": "too big", "code": "bad_parameter", "param": "limit"}));
        assert_eq!(status, 400);
        let (_, _, body) = parts(ApiError::bad("bad_review", "verdict", "no").served_by("results")).await;
        assert_eq!(body["param"], "verdict");
        assert_eq!(body["served_by"], "results");
    }
}
