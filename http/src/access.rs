//! The access check of the read side (the dashboard's data routes, and the results
//! role's history, counts and streams) and of the admin routes. A [`Gate`] is mounted
//! as a route layer: it reads the bearer token from `Authorization`, or from
//! `?token=` where a browser cannot set headers (the WebSocket, `<img>`), checks it
//! against the scope the routes need, and hands the caller on to the handler as a
//! [`Caller`] (handlers that serve one station's data check that station).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use visionq_contract::auth::{self, Auth, Denied, Principal, Scope};

use crate::ApiError;

/// What a set of routes needs: a scope, or (None) any valid token, leaving the
/// per-station decision to the handler.
#[derive(Clone)]
pub struct Gate {
    auth: Arc<Auth>,
    scope: Option<Scope>,
}

impl Gate {
    pub fn new(auth: Arc<Auth>, scope: Option<Scope>) -> Self {
        Gate { auth, scope }
    }
}

/// Who passed the gate: None when authentication is off.
#[derive(Clone)]
pub struct Caller(pub Option<Arc<Principal>>);

impl Caller {
    /// Whether this caller may read `station`'s data.
    pub fn may_read(&self, station: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.may_read_station(station))
    }

    /// Whether this caller may read every station's data.
    pub fn reads_all(&self) -> bool {
        self.has(Scope::Operator)
    }

    /// Whether this caller's scope reaches `scope` (everyone's does with
    /// authentication off).
    pub fn has(&self, scope: Scope) -> bool {
        self.0.as_ref().is_none_or(|p| p.scope >= scope)
    }

    /// The name of the caller's token; `local` with authentication off.
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("local", |p| p.name.as_str())
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// The token of a request: `Authorization: Bearer …`, else `?token=`.
fn presented(request: &Request) -> Option<String> {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(t) = auth::bearer(header) {
        return Some(t.to_string());
    }
    Query::<TokenParam>::try_from_uri(request.uri()).ok().and_then(|q| q.0.token)
}

pub async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let token = presented(&request);
    let checked = match gate.scope {
        Some(scope) => gate.auth.require(token.as_deref(), scope),
        None => gate.auth.authenticate(token.as_deref()),
    };
    match checked {
        Ok(who) => {
            request.extensions_mut().insert(Caller(who));
            next.run(request).await
        }
        Err(d) => denied(d),
    }
}

/// A refusal as every visionq API gives it: JSON `error` and `code`, and on 401 the
/// `WWW-Authenticate` challenge.
pub fn denied(d: Denied) -> Response {
    ApiError::from(d).into_response()
}

/// The 403 of a caller without the scope a route needs, saying what it needs.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    Denied::Forbidden(message.into()).into()
}

/// The 403 of a station token reaching for another station's data.
pub fn not_yours(station: &str) -> Response {
    forbidden(format!("this token may not read `{station}`: stations read only their own data")).into_response()
}
