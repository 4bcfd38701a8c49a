//! A refused request: status, a machine-readable code (also the metric reason), a
//! message, and what the client needs to act on it (Retry-After, a challenge, the
//! parameter at fault, whether the connection closes). Every ingest route answers
//! its refusals through it, as the one `visionq_http::ApiError` every route answers with.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use visionq_contract::auth::{self, Denied, Scope};
use visionq_contract::params::ParamError;
use visionq_http::ApiError;

use crate::state::IngestState;

impl Refusal {
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }
}

/// A refusal: status, a machine-readable code (also the metric reason) and a message.
#[derive(Debug)]
pub struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after_s: Option<u64>,
    /// `WWW-Authenticate` of a 401.
    challenge: Option<&'static str>,
    /// The parameter or field refused, when one is.
    param: Option<String>,
    /// Refused before the body was read: the connection is closed after the answer
    /// (what is left of the body must not be read as the next request, and a
    /// client must not reuse it).
    body_unread: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into(), retry_after_s: None, challenge: None, param: None, body_unread: false }
    }

    pub(crate) fn param(mut self, name: &str) -> Self {
        self.param = Some(name.to_string());
        self
    }

    pub(crate) fn before_body(mut self) -> Self {
        self.body_unread = true;
        self
    }
}

impl From<ParamError> for Refusal {
    fn from(e: ParamError) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, e.code, e.message).param(&e.param)
    }
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Self {
        let status = StatusCode::from_u16(d.status()).expect("401 or 403");
        let mut r = Refusal::new(status, d.code(), d.to_string());
        r.challenge = d.challenge();
        r
    }
}

/// The request's bearer token, if it carries one.
pub(crate) fn token(headers: &HeaderMap) -> Option<&str> {
    auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// The self-test runs a frame through the whole pipeline: admins only.
pub(crate) fn check_admin(state: &IngestState, headers: &HeaderMap) -> Result<(), Refusal> {
    state.auth.require(token(headers), Scope::Admin).map(drop).map_err(Refusal::from)
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let mut e = ApiError::new(r.status, r.code, r.message);
        e.body.param = r.param;
        e.retry_after_s = r.retry_after_s;
        e.challenge = r.challenge;
        e.close = r.body_unread;
        e
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
