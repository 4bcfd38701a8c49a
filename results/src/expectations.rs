//! A station's expectation over HTTP (issue 15): `PUT /v1/stations/{s}/expectation`
//! tells the station what it should see (a reference such as a delivery-note id and
//! the codes, quantities optional), `GET` reads it back, `DELETE` clears it.
//!
//! Where it lives: in the results role's [`Decider`](visionq_decide::Decider), which
//! decides every later result of the station against it, and in the results
//! database (`expectations` table), written before the Decider is told, so a restart
//! keeps it (loaded at start by [`load`]). With several results replicas, each learns
//! an expectation at its own start or when the request reaches it: set expectations
//! on a single results role, or restart the others after a change.
//!
//! Who may: reading it takes any token that may read the station (a station's own
//! token, operators, admins). Setting or clearing it takes an **admin** token: it
//! changes the station's decisions, and the operator scope is read-only by design
//! (`visionq_contract::auth`). Without a rules file no decisions are made, so a
//! change is refused (`409 decisions_off`) rather than silently doing nothing.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use visionq_contract::auth::Scope;
use visionq_contract::decision::Expectation;
use visionq_contract::refusal::ErrorBody;
use visionq_decide::Decider;
use visionq_http::ApiError;
use visionq_http::access::{self, Caller};

use crate::api::{ResultsState, bad_station, query, store_error};
use crate::store::{SharedStore, StoreError};

/// Longest reference and code, in characters.
pub const MAX_TEXT: usize = 128;
/// Most codes one expectation may list.
pub const MAX_CODES: usize = 1000;

/// Hands every stored expectation to the Decider (at start); returns how many.
pub async fn load(store: &SharedStore, decider: &Decider) -> Result<usize, StoreError> {
    let all = store.expectations().await?;
    let n = all.len();
    for (station, e) in all {
        decider.set_expectation(&station, Some(e));
    }
    Ok(n)
}

/// A refused body: `400 bad_expectation` naming the field at fault.
fn refuse(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad("bad_expectation", param, message)
}

fn text_problem(what: &str, s: &str) -> Option<String> {
    if s.trim().is_empty() {
        Some(format!("{what} is empty"))
    } else if s.chars().count() > MAX_TEXT {
        Some(format!("{what} is longer than {MAX_TEXT} characters"))
    } else if s.chars().any(char::is_control) || s.trim() != s {
        Some(format!("{what} has control characters or surrounding spaces"))
    } else {
        None
    }
}

/// Parses and checks a body: `{reference, codes: [{code, quantity?}]}`, the
/// reference and each code 1–128 characters, 1–1000 distinct codes, quantities ≥ 1.
fn parse(body: &[u8]) -> Result<Expectation, ApiError> {
    let e: Expectation = serde_json::from_slice(body).map_err(|e| {
        refuse("body", format!("the body is not an expectation `{{\"reference\", \"codes\": [{{\"code\", \"quantity\"?}}]}}`: {e}"))
    })?;
    if let Some(p) = text_problem("`reference`", &e.reference) {
        return Err(refuse("reference", p));
    }
    if e.codes.is_empty() {
        return Err(refuse("codes", "`codes` is empty: list what the station should see (DELETE clears an expectation)"));
    }
    if e.codes.len() > MAX_CODES {
        return Err(refuse("codes", format!("`codes` lists {} codes; at most {MAX_CODES}", e.codes.len())));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in e.codes.iter().enumerate() {
        if let Some(p) = text_problem(&format!("`codes[{i}].code`"), &c.code) {
            return Err(refuse("codes", p));
        }
        if c.quantity == Some(0) {
            return Err(refuse("codes", format!("`codes[{i}].quantity` is 0: leave it out, or expect at least 1")));
        }
        if !seen.insert(c.code.as_str()) {
            return Err(refuse("codes", format!("`{}` is listed twice", c.code)));
        }
    }
    Ok(e)
}

/// The checks every method of the route shares: no query parameters, a valid
/// station id the caller may read.
fn checked(caller: &Caller, station: &str, raw: Option<String>) -> Option<Response> {
    if let Err(e) = query(raw).finish() {
        return Some(ApiError::from(e).into_response());
    }
    if let Some(r) = bad_station(station) {
        return Some(r);
    }
    (!caller.may_read(station)).then(|| access::not_yours(station))
}

/// Setting or clearing: admins only (see the module doc), with decisions on.
fn may_change(s: &ResultsState, caller: &Caller) -> Option<Response> {
    if !caller.has(Scope::Admin) {
        return Some(access::forbidden("setting or clearing an expectation takes an admin token").into_response());
    }
    (!s.decider.enabled()).then(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "decisions_off",
            "no decisions are made (no rules file: set VISIONQ_RULES_FILE), so an expectation would do nothing",
        )
        .into_response()
    })
}

/// What a station is told to expect.
#[utoipa::path(
    get,
    path = "/v1/stations/{station}/expectation",
    tag = "results",
    params(("station" = String, Path, description = "Station id")),
    responses(
        (status = 200, description = "The station's expectation", body = Expectation),
        (status = 400, description = "A bad station id, or a query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Another station's token", body = ErrorBody),
        (status = 404, description = "The station has no expectation", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn get_expectation(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = checked(&caller, &station, raw) {
        return r;
    }
    match s.decider.expectation(&station) {
        Some(e) => Json(e.as_ref().clone()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("station `{station}` has no expectation")).into_response(),
    }
}

/// Tells a station what it should see (replacing what it was told before): its
/// later results are decided against it — a code seen that is not listed, or a
/// listed quantity not met, is a `mismatch` carrying the `reference`. Stored in the
/// results database, so a restart keeps it. Admin token.
#[utoipa::path(
    put,
    path = "/v1/stations/{station}/expectation",
    tag = "results",
    params(("station" = String, Path, description = "Station id")),
    request_body(content = Expectation, content_type = "application/json",
        description = "`reference` and each `code`: 1–128 characters; 1–1000 distinct codes; `quantity` ≥ 1 when given"),
    responses(
        (status = 200, description = "Stored; later results of the station are decided against it", body = Expectation),
        (status = 400, description = "A bad station id, parameter or body (`bad_expectation`, `param` names the field)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 409, description = "No rules file: decisions are off", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn put_expectation(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = checked(&caller, &station, raw).or_else(|| may_change(&s, &caller)) {
        return r;
    }
    let e = match parse(&body) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    // Stored first: what a restart would load is never behind what is in use.
    if let Err(err) = s.store.put_expectation(&station, &e).await {
        return store_error(err);
    }
    s.decider.set_expectation(&station, Some(e.clone()));
    tracing::info!(station, reference = e.reference, codes = e.codes.len(), "expectation set");
    Json(e).into_response()
}

/// Clears a station's expectation (whether or not it had one).
#[utoipa::path(
    delete,
    path = "/v1/stations/{station}/expectation",
    tag = "results",
    params(("station" = String, Path, description = "Station id")),
    responses(
        (status = 204, description = "The station has no expectation now"),
        (status = 400, description = "A bad station id, or a query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 409, description = "No rules file: decisions are off", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn delete_expectation(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = checked(&caller, &station, raw).or_else(|| may_change(&s, &caller)) {
        return r;
    }
    if let Err(err) = s.store.delete_expectation(&station).await {
        return store_error(err);
    }
    s.decider.set_expectation(&station, None);
    tracing::info!(station, "expectation cleared");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_body_parses() {
        let e = parse(br#"{"reference": "DN-1042", "codes": [{"code": "K9-01", "quantity": 2}, {"code": "BIKE-7"}]}"#).unwrap();
        assert_eq!(e.reference, "DN-1042");
        assert_eq!((e.codes[0].quantity, e.codes[1].quantity), (Some(2), None));
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_naming_the_field() {
        let long = "x".repeat(MAX_TEXT + 1);
        let many: Vec<String> = (0..=MAX_CODES).map(|i| format!("{{\"code\":\"C{i}\"}}")).collect();
        let many = format!("{{\"reference\":\"r\",\"codes\":[{}]}}", many.join(","));
        for (body, want) in [
            ("not json".to_string(), "body"),
            (r#"{"codes": [{"code": "A"}]}"#.to_string(), "body"),
            (r#"{"reference": "", "codes": [{"code": "A"}]}"#.to_string(), "reference"),
            (format!(r#"{{"reference": "{long}", "codes": [{{"code": "A"}}]}}"#), "reference"),
            (r#"{"reference": "DN", "codes": []}"#.to_string(), "codes"),
            (r#"{"reference": "DN", "codes": [{"code": " "}]}"#.to_string(), "codes"),
            (r#"{"reference": "DN", "codes": [{"code": "A", "quantity": 0}]}"#.to_string(), "codes"),
            (r#"{"reference": "DN", "codes": [{"code": "A", "quantity": -1}]}"#.to_string(), "body"),
            (r#"{"reference": "DN", "codes": [{"code": "A"}, {"code": "A"}]}"#.to_string(), "codes"),
            (r#"{"reference": "DN", "codes": ["A"]}"#.to_string(), "body"),
            (many, "codes"),
        ] {
            let refused = parse(body.as_bytes()).expect_err(&body);
            assert_eq!(refused.body.param.as_deref(), Some(want), "{body}: {}", refused.body.error);
        }
        // As a response: 400 with {error, code, param}.
        let r = parse(b"{}").unwrap_err().into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap()).unwrap();
        assert_eq!((v["code"].as_str(), v["param"].as_str()), (Some("bad_expectation"), Some("body")), "{v}");
        assert!(v["error"].as_str().unwrap().contains("reference"), "{v}");
    }
}
