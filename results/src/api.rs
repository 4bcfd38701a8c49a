//! The read side: a frame's result, a station's results (paginated; filtered by time, class, score and decision
//! outcome), its detections per class per interval, and the live stream; and a station's expectation ([`crate::expectations`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;
use visionq_contract::auth::Auth;
use visionq_contract::config::{SELFTEST_STATION, valid_station_id};
use visionq_contract::decision::Outcome;
use visionq_contract::params::{ParamError, Params};
use visionq_contract::refusal::ErrorBody;
use visionq_contract::topology::RESULT_EVENTS;
use visionq_contract::{Config, FrameResult, Metrics};
use visionq_decide::Decider;
use visionq_http::ApiError;
use visionq_http::access::{self, Caller};
use visionq_queue::{QueueError, SharedBroker};

use crate::drift::Drift;
use crate::evidence::Keeper;
use crate::store::{ClassCount, CountsQuery, Cursor, HistoryQuery, SharedStore, StationSummary, StoreError, parse_interval};

pub struct ResultsState {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub live: broadcast::Sender<Arc<FrameResult>>,
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    /// The class names of the model this process runs, when it runs one: `?class=`
    /// naming another is refused. None (a results role on its own): not checked.
    pub classes: Option<Vec<String>>,
    /// The decisions' rules and the stations' expectations (shared with the consumer).
    pub decider: Arc<Decider>,
    /// The evidence store's keeper, where this process keeps frames for review: the
    /// review queue's images come from it, and reviews are written into it.
    pub keeper: Option<Arc<Keeper>>,
    /// Where a review is pushed (the events, like every result).
    pub broker: SharedBroker,
    /// Each model version's drift at each station (shared with the consumer).
    pub drift: Arc<Drift>,
}

/// What the read side is made of, besides the broker it listens to.
pub struct ResultsParts {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    /// See [`ResultsState::classes`].
    pub classes: Option<Vec<String>>,
    pub decider: Arc<Decider>,
    pub keeper: Option<Arc<Keeper>>,
    pub drift: Arc<Drift>,
}

impl ResultsState {
    /// Subscribes to the completed results (and reviews) of every process, for the
    /// WebSocket clients.
    pub async fn start(broker: &SharedBroker, parts: ResultsParts) -> Result<Arc<Self>, QueueError> {
        let ResultsParts { store, metrics, config, auth, classes, decider, keeper, drift } = parts;
        let (live, _) = broadcast::channel(1024);
        let mut events = broker.subscribe_events(&[RESULT_EVENTS]).await?;
        let tx = live.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let Ok(r) = serde_json::from_slice::<FrameResult>(&e.body) {
                    let _ = tx.send(Arc::new(r));
                }
            }
        });
        Ok(Arc::new(ResultsState { store, metrics, live, config, auth, classes, decider, keeper, broker: broker.clone(), drift }))
    }
}

/// A refused query parameter value: `400 bad_parameter` naming it.
pub(crate) fn bad_value(param: &'static str, message: impl Into<String>) -> Response {
    ApiError::bad("bad_parameter", param, message).into_response()
}

/// The query of a route behind the gate (which reads `?token=` itself).
pub(crate) fn query(raw: Option<String>) -> Params {
    let mut p = Params::parse(raw.as_deref());
    p.allow("token");
    p
}

pub(crate) fn bad_station(station: &str) -> Option<Response> {
    let message = format!("`{station}` is not a station id: use 1-64 of A-Z a-z 0-9 . _ -");
    (!valid_station_id(station)).then(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_station", message).into_response())
}

pub(crate) fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()).into_response(),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string()).into_response(),
    }
}

/// One frame's result.
#[utoipa::path(
    get,
    path = "/v1/frames/{frame_id}",
    tag = "results",
    params(("frame_id" = String, Path, description = "The `frame_id` ingest answered with (a UUID)")),
    responses(
        (status = 200, description = "The result", body = FrameResult),
        (status = 400, description = "Not a frame id, or a query parameter", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 404, description = "No result for this frame (yet), or another station's", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn get_frame(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = query(raw).finish() {
        return ApiError::from(e).into_response();
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_frame_id", format!("`{id}` is not a frame id (a UUID)")).into_response();
    };
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no result for frame {id} (yet)")).into_response();
    match s.store.get(id).await {
        // Another station's frame reads as missing: a station learns nothing of others.
        Ok(Some(r)) if !caller.may_read(&r.station) => missing(),
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => missing(),
        Err(e) => store_error(e),
    }
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Frames received at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Frames received before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Only frames with a detection of this class, and only those detections.
    class: Option<String>,
    /// Only frames with a detection scoring at least this (0–1), and only those detections.
    #[param(minimum = 0.0, maximum = 1.0)]
    min_score: Option<f32>,
    /// Only frames whose decision has this outcome (decisions are made with a rules file).
    #[param(value_type = Option<Outcome>)]
    outcome: Option<Outcome>,
    /// The `next` of the previous page.
    before: Option<String>,
    /// Results per page (1–1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl HistoryParams {
    fn parse(raw: Option<String>) -> Result<Self, ParamError> {
        let mut p = query(raw);
        let params = HistoryParams {
            since: p.get("since")?,
            until: p.get("until")?,
            class: p.get("class")?,
            min_score: p.get_in("min_score", 0.0, 1.0)?,
            outcome: p.get("outcome")?,
            before: p.get("before")?,
            limit: p.get_in("limit", 1, MAX_LIMIT)?,
        };
        p.finish()?;
        Ok(params)
    }
}

const MAX_LIMIT: usize = 1000;

/// One page of history. Serialised from the results themselves (not through
/// `json!`, which widens f32 scores to f64), so scores read as in every reply.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Page<'a> {
    station: &'a str,
    /// Newest first.
    results: &'a [FrameResult],
    /// Present when the page is full: the `before` of the next, older page.
    next: Option<String>,
}

/// Refuses a class the model does not have (when this process knows the model's classes).
fn unknown_class(classes: Option<&[String]>, class: Option<&str>) -> Option<Response> {
    let (classes, class) = (classes?, class?);
    if classes.iter().any(|c| c == class) {
        return None;
    }
    let shown: Vec<&str> = classes.iter().take(100).map(String::as_str).collect();
    Some(bad_value("class", format!("`class={class}` is not a class of the model; its classes are: {}", shown.join(", "))))
}

/// A station's results, newest first, one page at a time: `next` (present when the
/// page is full) is the `before` of the following page. Each result carries its
/// decision when one was made; `?outcome=` keeps the frames decided so.
#[utoipa::path(
    get,
    path = "/v1/stations/{station}/results",
    tag = "results",
    params(("station" = String, Path, description = "Station id"), HistoryParams),
    responses(
        (status = 200, description = "A page of results", body = Page),
        (status = 400, description = "A bad station id, parameter or cursor; a class the model does not have", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Another station's token", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn station_results(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = bad_station(&station) {
        return r;
    }
    if !caller.may_read(&station) {
        return access::not_yours(&station);
    }
    let p = match HistoryParams::parse(raw) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(r) = unknown_class(s.classes.as_deref(), p.class.as_deref()) {
        return r;
    }
    let before = match p.before.as_deref().map(|b| Cursor::decode(b).ok_or(b)).transpose() {
        Ok(c) => c,
        Err(b) => return bad_value("before", format!("`before={b}` is not a cursor from `next`")),
    };
    let q = HistoryQuery {
        station,
        since: p.since,
        until: p.until,
        class: p.class,
        min_score: p.min_score,
        outcome: p.outcome,
        before,
        limit: p.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
    };
    match s.store.history(&q).await {
        Ok(results) => {
            let next = (results.len() == q.limit).then(|| results.last().map(|r| Cursor::of(r).encode())).flatten();
            Json(Page { station: &q.station, results: &results, next }).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CountsParams {
    /// Bucket width: seconds (`90`) or `30s`, `5m`, `1h`, `1d` (default `1h`; buckets
    /// aligned to the Unix epoch, UTC).
    interval: Option<String>,
    /// Start of the range, inclusive (default: 24 h before `until`).
    since: Option<DateTime<Utc>>,
    /// End of the range, exclusive (default: now).
    until: Option<DateTime<Utc>>,
    /// Only detections scoring at least this (0–1).
    #[param(minimum = 0.0, maximum = 1.0)]
    min_score: Option<f32>,
}

/// Detections per class per bucket of a station.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Counts {
    station: String,
    interval_s: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// By bucket, then class id; buckets without detections are left out.
    counts: Vec<ClassCount>,
}

impl CountsParams {
    fn parse(raw: Option<String>) -> Result<Self, ParamError> {
        let mut p = query(raw);
        let params = CountsParams {
            interval: p.get("interval")?,
            since: p.get("since")?,
            until: p.get("until")?,
            min_score: p.get_in("min_score", 0.0, 1.0)?,
        };
        p.finish()?;
        Ok(params)
    }
}

/// Most buckets one counts request may span.
const MAX_BUCKETS: i64 = 10_000;

/// Detections per class per interval: `?interval=1h` (`s`, `m`, `h`, `d`; default
/// 1h), `since` (default: 24 h before `until`), `until` (default: now).
#[utoipa::path(
    get,
    path = "/v1/stations/{station}/counts",
    tag = "results",
    params(("station" = String, Path, description = "Station id"), CountsParams),
    responses(
        (status = 200, description = "Detections per class per interval", body = Counts),
        (status = 400, description = "A bad station id or parameter; more than 10,000 intervals", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Another station's token", body = ErrorBody),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn station_counts(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = bad_station(&station) {
        return r;
    }
    if !caller.may_read(&station) {
        return access::not_yours(&station);
    }
    let p = match CountsParams::parse(raw) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let interval = p.interval.as_deref().unwrap_or("1h");
    let Some(interval_s) = parse_interval(interval) else {
        return bad_value("interval", format!("`interval={interval}`: use a number of seconds, or 30s, 5m, 1h, 1d"));
    };
    let until = p.until.unwrap_or_else(Utc::now);
    let since = p.since.unwrap_or(until - chrono::Duration::hours(24));
    if since >= until {
        return bad_value("since", "`since` must be before `until`");
    }
    if (until - since).num_seconds() / interval_s > MAX_BUCKETS {
        return bad_value("interval", format!("more than {MAX_BUCKETS} intervals: widen `interval` or narrow the range"));
    }
    let q = CountsQuery { station, interval_s, since, until, min_score: p.min_score };
    match s.store.counts(&q).await {
        Ok(counts) => Json(Counts { station: q.station, interval_s, since, until, counts }).into_response(),
        Err(e) => store_error(e),
    }
}

/// The live results (`?station=` for one station; all stations need an operator token).
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "results",
    description = "A WebSocket: one result object (as `FrameResult`) per text message, for one station or (operators) all \
                   but the self-test's.",
    params(("station" = Option<String>, Query, description = "One station's results; omit for all stations (operator token)")),
    responses(
        (status = 101, description = "Switching to the WebSocket; each message is a result", body = FrameResult),
        (status = 400, description = "A bad station id or parameter, or not a WebSocket request", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Another station's, or all stations with a station token", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn stream(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let mut p = query(raw);
    let station = match p.get::<String>("station").and_then(|st| p.finish().map(|()| st)) {
        Ok(st) => st,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(r) = station.as_deref().and_then(bad_station) {
        return r;
    }
    // Who may watch is decided before the upgrade is looked at.
    match &station {
        Some(station) if !caller.may_read(station) => return access::not_yours(station),
        None if !caller.reads_all() => return access::not_yours("every station"),
        _ => {}
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(e.status(), "not_websocket", format!("{}: connect with a WebSocket client", e.body_text()))
                .into_response();
        }
    };
    let rx = s.live.subscribe();
    let metrics = s.metrics.clone();
    ws.on_upgrade(move |socket| push(socket, rx, station, metrics))
}

/// The stations seen, with when their latest frame came, how many frames are stored
/// and the latest one's status. A station token sees only its own station; the
/// self-test's station is left out, as from the all-stations stream.
#[utoipa::path(
    get,
    path = "/v1/stations",
    tag = "results",
    responses(
        (status = 200, description = "Every station seen, by id", body = StationList),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn stations(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = query(raw).finish() {
        return ApiError::from(e).into_response();
    }
    match s.store.stations().await {
        Ok(all) => {
            let stations = all.into_iter().filter(|st| st.station != SELFTEST_STATION && caller.may_read(&st.station)).collect();
            Json(StationList { stations }).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /v1/stations`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StationList {
    stations: Vec<StationSummary>,
}

async fn push(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<FrameResult>>, station: Option<String>, metrics: Arc<Metrics>) {
    metrics.websocket_clients.inc();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(r) => {
                    // One station's stream, or all stations' (the self-test's only when asked for).
                    let wanted = match &station {
                        Some(s) => *s == r.station,
                        None => r.station != SELFTEST_STATION,
                    };
                    if !wanted {
                        continue;
                    }
                    let text = serde_json::to_string(&*r).expect("result serialises");
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a WebSocket client fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    metrics.websocket_clients.dec();
}
