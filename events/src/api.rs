//! The admins' routes over the sinks: `GET /v1/sinks` (each sink with its outbox
//! depth and dead letters), `GET /v1/sinks/{name}/dead` (the events out of
//! attempts) and `POST /v1/sinks/{name}/dead/replay` (make them pending again, all or
//! those named); and, for any token (each caller sees the stations it may read),
//! the alerts of the alert rules, `GET /v1/alerts`, and the counts of the lines and
//! zones per interval, `GET /v1/counts`. Refusals are the one `{error, code}` shape.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use visionq_contract::Metrics;
use visionq_contract::auth::{Auth, Scope};
use visionq_contract::params::Params;
use visionq_contract::refusal::ErrorBody;
use visionq_contract::sink::SinkKind;
use visionq_http::ApiError;
use visionq_http::access::{self, Caller, Gate};

use crate::Events;
use crate::alerts::{Alert, AlertState};
use crate::outbox::{DeadEvent, OutboxError};

pub struct SinksState {
    /// None when no sink is configured.
    pub events: Option<Arc<Events>>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
}

/// The sinks' routes, behind an admin gate, and the alerts, behind any token's.
pub fn router(state: Arc<SinksState>) -> Router {
    let admin = Gate::new(state.auth.clone(), Some(Scope::Admin));
    let reader = Gate::new(state.auth.clone(), None);
    let sinks = Router::new()
        .route("/v1/sinks", get(list))
        .route("/v1/sinks/{name}/dead", get(dead))
        .route("/v1/sinks/{name}/dead/replay", post(replay))
        .route("/v1/events/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(admin, access::check))
        .with_state(state.clone());
    let alerts = Router::new()
        .route("/v1/alerts", get(alerts))
        .route("/v1/counts", get(counts))
        .route_layer(middleware::from_fn_with_state(reader, access::check))
        .with_state(state);
    sinks.merge(alerts)
}

/// The alerts a caller sees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alerts {
    /// How many alert rules are configured (`[[rule]]`).
    pub rules: usize,
    /// Firing now: the most severe first, then the oldest.
    pub firing: Vec<Alert>,
    /// The last changes (fired, resolved), newest first, at most `limit`.
    pub recent: Vec<Alert>,
}

/// A sink as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SinkStatus {
    pub name: String,
    pub kind: SinkKind,
    /// Events waiting to be delivered.
    pub pending: u64,
    /// Events out of attempts.
    pub dead: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SinkList {
    pub sinks: Vec<SinkStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub sink: String,
    /// Oldest first, at most `limit`.
    pub events: Vec<DeadEvent>,
}

/// Which dead events to replay; an empty body or no `event_ids` replays them all.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    pub event_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub sink: String,
    /// Dead events made pending again (they are delivered as new, with their ids).
    pub replayed: usize,
}

fn outbox_error(e: OutboxError) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "outbox_unavailable", e.to_string()).into_response()
}

fn params(raw: Option<String>) -> Params {
    let mut p = Params::parse(raw.as_deref());
    p.allow("token");
    p
}

/// The events of the sink `name`, if one is configured.
fn sink<'a>(s: &'a SinksState, name: &str) -> Option<&'a Arc<Events>> {
    s.events.as_ref().filter(|e| e.sink(name).is_some())
}

fn unknown_sink(name: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_sink", format!("no sink is named `{name}` ([[sink]] in the config)")).into_response()
}

/// Every configured sink, with its outbox depth and dead letters.
#[utoipa::path(
    get,
    path = "/v1/sinks",
    tag = "events",
    responses(
        (status = 200, description = "The configured sinks", body = SinkList),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 503, description = "The outbox cannot be read", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list(State(s): State<Arc<SinksState>>, RawQuery(raw): RawQuery) -> Response {
    if let Err(e) = params(raw).finish() {
        return ApiError::from(e).into_response();
    }
    let mut sinks = Vec::new();
    if let Some(events) = &s.events {
        for sink in events.sinks() {
            let (pending, dead) = match events.outbox().counts(&sink.name).await {
                Ok(c) => c,
                Err(e) => return outbox_error(e),
            };
            sinks.push(SinkStatus { name: sink.name.clone(), kind: sink.kind, pending, dead });
        }
    }
    Json(SinkList { sinks }).into_response()
}

/// A sink's dead letters: events out of attempts, oldest first.
#[utoipa::path(
    get,
    path = "/v1/sinks/{name}/dead",
    tag = "events",
    params(
        ("name" = String, Path, description = "The sink's name"),
        ("limit" = Option<usize>, Query, description = "At most this many (1-1000, default 100)"),
    ),
    responses(
        (status = 200, description = "The sink's dead events", body = DeadLetters),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "No sink of that name (`unknown_sink`)", body = ErrorBody),
        (status = 503, description = "The outbox cannot be read", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn dead(State(s): State<Arc<SinksState>>, Path(name): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let mut p = params(raw);
    let limit = match p.get_in::<usize>("limit", 1, 1000).and_then(|l| p.finish().map(|_| l)) {
        Ok(l) => l.unwrap_or(100),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(events) = sink(&s, &name) else { return unknown_sink(&name) };
    match events.outbox().dead_letters(&name, limit).await {
        Ok(list) => Json(DeadLetters { sink: name, events: list }).into_response(),
        Err(e) => outbox_error(e),
    }
}

/// Replays a sink's dead letters: they become pending with no attempts made and are
/// delivered again under their own event ids.
#[utoipa::path(
    post,
    path = "/v1/sinks/{name}/dead/replay",
    tag = "events",
    params(("name" = String, Path, description = "The sink's name")),
    request_body(content = ReplayRequest, content_type = "application/json",
        description = "Optional: `event_ids` to replay only those; no body replays every dead event"),
    responses(
        (status = 200, description = "How many were made pending again", body = Replayed),
        (status = 400, description = "A bad body (`bad_request`) or query parameter", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "No sink of that name (`unknown_sink`)", body = ErrorBody),
        (status = 503, description = "The outbox cannot be written", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn replay(
    State(s): State<Arc<SinksState>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = params(raw).finish() {
        return ApiError::from(e).into_response();
    }
    let request: ReplayRequest = match body.iter().all(u8::is_ascii_whitespace) {
        true => ReplayRequest::default(),
        false => match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("not a replay request: {e}")).into_response();
            }
        },
    };
    let Some(events) = sink(&s, &name) else { return unknown_sink(&name) };
    match events.outbox().replay(&name, request.event_ids).await {
        Ok(n) => {
            s.metrics.sink_events_total.with_label_values(&[&name, "replayed"]).inc_by(n as u64);
            tracing::info!(sink = %name, replayed = n, "dead events replayed (admin API)");
            events.wake(&name);
            Json(Replayed { sink: name, replayed: n }).into_response()
        }
        Err(e) => outbox_error(e),
    }
}

/// The alerts of the alert rules: those firing now and the last changes, of the
/// stations the caller may read (this process's view: docs/EVENTS.md).
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "events",
    params(
        ("station" = Option<String>, Query, description = "Only this station's alerts"),
        ("limit" = Option<usize>, Query, description = "Changes listed in `recent` at most (1-200, default 50)"),
    ),
    responses(
        (status = 200, description = "The alerts", body = Alerts),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn alerts(
    State(s): State<Arc<SinksState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut p = params(raw);
    let query = p.get::<String>("station").and_then(|st| p.get_in::<usize>("limit", 1, 200).map(|l| (st, l)));
    let (station, limit) = match query.and_then(|q| p.finish().map(|_| q)) {
        Ok((station, limit)) => (station, limit.unwrap_or(50)),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let shown = |a: &Alert| caller.may_read(&a.station) && station.as_ref().is_none_or(|st| *st == a.station);
    let engine = s.events.as_ref().and_then(|e| e.alerts());
    let body = match engine {
        None => Alerts { rules: 0, firing: Vec::new(), recent: Vec::new() },
        Some(e) => Alerts {
            rules: e.rules().len(),
            firing: e.firing().into_iter().filter(|a| shown(a)).collect(),
            recent: e.recent().into_iter().filter(|a| shown(a)).take(limit).collect(),
        },
    };
    Json(body).into_response()
}

/// Reads the config file again and takes its alert rules, lines and zones, as
/// SIGHUP does; sinks take a restart.
#[utoipa::path(
    post,
    path = "/v1/events/reload",
    tag = "events",
    responses(
        (status = 200, description = "The rules, lines and zones of the file are in use", body = crate::Reloaded),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 409, description = "Nothing to reload into (`events_off`: no sinks, rules, lines or zones at start; `no_config_file`), or the sinks changed (`restart_needed`); what is in use stays", body = ErrorBody),
        (status = 422, description = "The file does not load (`bad_config`, with the reason); what is in use stays", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn reload(State(s): State<Arc<SinksState>>, RawQuery(raw): RawQuery) -> Response {
    if let Err(e) = params(raw).finish() {
        return ApiError::from(e).into_response();
    }
    let Some(events) = s.events.clone() else {
        let why = "visionq started without sinks, rules, lines or zones: adding the first takes a restart";
        return ApiError::new(StatusCode::CONFLICT, "events_off", why).into_response();
    };
    let outcome = tokio::task::spawn_blocking(move || events.reload_from_file()).await;
    match outcome {
        Ok(Ok(r)) => {
            tracing::info!(
                rules = r.rules,
                lines = r.lines,
                zones = r.zones,
                "events configuration reloaded (POST /v1/events/reload)"
            );
            Json(r).into_response()
        }
        Ok(Err(e)) => {
            let (status, code) = match e {
                crate::ReloadError::SinksChanged => (StatusCode::CONFLICT, "restart_needed"),
                crate::ReloadError::NoConfigFile => (StatusCode::CONFLICT, "no_config_file"),
                crate::ReloadError::Config(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_config"),
            };
            ApiError::new(status, code, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string()).into_response(),
    }
}

/// The counts of the lines and zones a caller sees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// The interval each count covers, in seconds.
    pub interval_s: u64,
    /// From when (Unix milliseconds): `minutes` ago, rounded down to an interval.
    pub since_ms: i64,
    /// Per station, line or zone, kind (`crossed`, `entered`, `left`), direction
    /// and interval with at least one; oldest interval first.
    pub counts: Vec<crate::outbox::Count>,
}

/// How many objects crossed each line (per direction) and entered and left each
/// zone, per interval, on the stations the caller may read (this process's
/// tracker: docs/EVENTS.md).
#[utoipa::path(
    get,
    path = "/v1/counts",
    tag = "events",
    params(
        ("station" = Option<String>, Query, description = "Only this station's counts"),
        ("minutes" = Option<u64>, Query, description = "How far back (1-44640, default 60)"),
        ("interval_s" = Option<u64>, Query, description = "The interval counted in (1-86400 s, default 60)"),
    ),
    responses(
        (status = 200, description = "The counts", body = Counts),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 503, description = "The outbox cannot be read", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn counts(
    State(s): State<Arc<SinksState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut p = params(raw);
    let query = p.get::<String>("station").and_then(|st| {
        let minutes = p.get_in::<u64>("minutes", 1, 44_640)?;
        let interval = p.get_in::<u64>("interval_s", 1, 86_400)?;
        Ok((st, minutes.unwrap_or(60), interval.unwrap_or(60)))
    });
    let (station, minutes, interval_s) = match query.and_then(|q| p.finish().map(|_| q)) {
        Ok(q) => q,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let interval_ms = interval_s as i64 * 1000;
    let since_ms = (crate::outbox::now_ms() - minutes as i64 * 60_000) / interval_ms * interval_ms;
    let Some(events) = s.events.as_ref().filter(|e| e.tracking().is_some()) else {
        return Json(Counts { interval_s, since_ms, counts: Vec::new() }).into_response();
    };
    match events.outbox().track_counts(station, since_ms, interval_ms).await {
        Ok(rows) => {
            let counts = rows.into_iter().filter(|c| caller.may_read(&c.station)).collect();
            Json(Counts { interval_s, since_ms, counts }).into_response()
        }
        Err(e) => outbox_error(e),
    }
}

/// The routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, dead, replay, alerts, counts, reload),
    components(schemas(
        SinkList, SinkStatus, DeadLetters, DeadEvent, ReplayRequest, Replayed, SinkKind, Alerts, Alert, AlertState, Counts,
        crate::outbox::Count, crate::Reloaded
    )),
    tags((name = "events", description = "Event sinks (webhooks, MQTT): outbox depth and dead letters (admins only); alerts of the alert rules; counts of the lines and zones")),
)]
pub struct EventsApi;
