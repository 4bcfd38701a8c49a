//! The dashboard's routes, mounted by the results role: the page and its assets,
//! its configuration, a coalesced live feed, each station's latest frame, and the
//! other roles' metrics for the pipeline view. All read-only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;
use visionq_contract::auth::{Auth, Scope};
use visionq_contract::params::Params;
use visionq_contract::refusal::ErrorBody;
use visionq_contract::{Config, Metrics};

use crate::assets::{self, Asset};
use crate::previews::{Cursor, Previews};
use visionq_http::ApiError;
use visionq_http::access::{self, Gate};

pub struct DashboardState {
    pub previews: Arc<Previews>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    http: reqwest::Client,
}

impl DashboardState {
    pub fn new(previews: Arc<Previews>, config: Arc<Config>, metrics: Arc<Metrics>, auth: Arc<Auth>) -> Arc<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().expect("HTTP client builds");
        Arc::new(DashboardState { previews, config, metrics, auth, http })
    }
}

/// How often the live feed sends what changed, and the longest it stays silent
/// (the page takes a longer silence for a dead connection).
const TICK: Duration = Duration::from_millis(250);
const HEARTBEAT: Duration = Duration::from_secs(2);

/// The page only talks to its own origin: this policy is also what guarantees that
/// nothing is loaded from a CDN.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; \
                   script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

/// The page, its assets and its configuration are open (the page must load to ask
/// for a token); every route that shows the plant's data needs an operator token.
/// The paths `router` serves the page at besides `/`.
pub const PAGE_ALIASES: [&str; 2] = ["/dashboard", "/dashboard/"];

pub fn router(state: Arc<DashboardState>) -> Router {
    let operator = Gate::new(state.auth.clone(), Some(Scope::Operator));
    let data = Router::new()
        .route("/v1/dashboard/stations", get(stations))
        .route("/v1/dashboard/stream", get(stream))
        .route("/v1/dashboard/metrics/{source}", get(metrics_source))
        .route("/v1/stations/{station}/latest.jpg", get(latest_jpeg))
        .route_layer(middleware::from_fn_with_state(operator, access::check));
    Router::new()
        .route("/", get(index))
        .route(PAGE_ALIASES[0], get(index))
        .route(PAGE_ALIASES[1], get(index))
        .route("/dashboard/{file}", get(asset))
        .route("/station/{station}", get(station_page))
        .route("/v1/dashboard/config", get(page_config))
        .merge(data)
        .with_state(state)
}

/// The query of a dashboard data route, which the access check reads `token` from.
fn params(raw: Option<&str>) -> Params {
    let mut p = Params::parse(raw);
    p.allow("token");
    p
}

/// The refusal of a query with any parameter but `token`, if it has one.
fn any_params(raw: Option<String>) -> Option<Response> {
    params(raw.as_deref()).finish().err().map(|e| ApiError::from(e).into_response())
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = assets::etag();
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut r = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response();
    if asset.name.ends_with(".html") {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    r
}

/// The dashboard page (also at `/dashboard` and `/dashboard/`).
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 304, description = "Not modified (`ETag`)")),
)]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&assets::INDEX, &headers)
}

/// The station page: the device's camera streamed to `station` over its WebSocket,
/// the last answered frame shown with its boxes and decision (open, like the
/// dashboard page: the station's token is asked for by the page, and whether the
/// station exists is not told here).
#[utoipa::path(
    get,
    path = "/station/{station}",
    tag = "dashboard",
    params(("station" = String, Path, description = "The station the camera sends as")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 304, description = "Not modified (`ETag`)"),
        (status = 400, description = "Not a station id (`bad_station`)", body = ErrorBody),
    ),
)]
pub(crate) async fn station_page(Path(station): Path<String>, headers: HeaderMap) -> Response {
    if !visionq_contract::config::valid_station_id(&station) {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_station", "station id must be 1-64 of A-Z a-z 0-9 . _ -").into_response();
    }
    serve(&assets::STATION, &headers)
}

/// One of the pages' files (`app.js` and the ES modules it imports, `app.css`, `boxes.js`, `station.js`, `station.css`, `icon.svg`).
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    params(("file" = String, Path, description = "The file's name")),
    responses(
        (status = 200, description = "The file", body = String),
        (status = 304, description = "Not modified (`ETag`)"),
        (status = 404, description = "No such file", body = ErrorBody),
    ),
)]
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match assets::get(&file) {
        Some(a) => serve(a, &headers),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no dashboard file `{file}`")).into_response(),
    }
}

/// What the page needs to know of the configuration (open: it tells the page
/// whether to ask for a token; the other roles' addresses are left out when
/// authentication is on).
#[utoipa::path(
    get,
    path = "/v1/dashboard/config",
    tag = "dashboard",
    responses((status = 200, description = "What the page needs of the configuration", body = PageConfig)),
)]
pub(crate) async fn page_config(State(s): State<Arc<DashboardState>>) -> Response {
    let c = &s.config;
    let mut sources = vec![MetricsSource { name: "this process".into(), url: "/metrics".into() }];
    for (i, url) in c.dashboard.dashboard_metrics_urls.iter().enumerate() {
        let name = if s.auth.enabled() { format!("role {}", i + 1) } else { visionq_contract::config::redact_url(url) };
        sources.push(MetricsSource { name, url: format!("/v1/dashboard/metrics/{i}") });
    }
    Json(PageConfig {
        accept_threshold: as_shown(c.dashboard.accept_threshold),
        low_threshold: as_shown(c.dashboard.dashboard_low_threshold),
        stale_after_ms: c.dashboard.dashboard_stale_after_ms,
        preview_interval_ms: c.dashboard.dashboard_preview_interval_ms,
        mode: if c.broker.amqp_url.is_some() { "distributed" } else { "embedded" },
        metrics_sources: sources,
        auth: AuthRequired { required: s.auth.enabled() },
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

/// `GET /v1/dashboard/config`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PageConfig {
    /// Scores at or above it are drawn as accepted (green).
    accept_threshold: f64,
    /// Scores below it are drawn dim (amber).
    low_threshold: f64,
    /// A station silent for longer is shown STALLED.
    stale_after_ms: u64,
    preview_interval_ms: u64,
    /// `embedded` or `distributed`.
    mode: &'static str,
    /// Where the pipeline view reads metrics: this process, then the other roles (relayed).
    metrics_sources: Vec<MetricsSource>,
    auth: AuthRequired,
    version: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MetricsSource {
    name: String,
    url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuthRequired {
    /// Whether the page must ask for a token.
    required: bool,
}

/// A message of the live feed, and the answer of `GET /v1/dashboard/stations`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Feed {
    /// `snapshot` (every station) or `update` (the stations that changed).
    #[serde(rename = "type")]
    kind: &'static str,
    now: chrono::DateTime<Utc>,
    /// Per station: `station`, `frames`, `errors`, `detections`, `last_seen`, `age_ms`,
    /// `latest` (the latest result in brief) and `preview` (the frame shown, its URL and result).
    stations: Vec<serde_json::Value>,
    /// Stations forgotten since the previous message.
    removed: Vec<String>,
}

/// An f32 as the JSON of results writes it (shortest text: 0.85, not
/// 0.8500000238…), so the page compares thresholds and scores alike.
fn as_shown(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn feed_message(kind: &'static str, previews: &Previews, cursor: &mut Cursor) -> Feed {
    let (stations, removed) = previews.changes(cursor);
    Feed { kind, now: Utc::now(), stations, removed }
}

/// Every station as the live feed's first message describes it.
#[utoipa::path(
    get,
    path = "/v1/dashboard/stations",
    tag = "dashboard",
    responses((status = 200, description = "Every station's tile", body = Feed), visionq_http::doc::OperatorRefusals),
    security((), ("bearer" = [])),
)]
pub(crate) async fn stations(State(s): State<Arc<DashboardState>>) -> Response {
    Json(feed_message("snapshot", &s.previews, &mut Cursor::default())).into_response()
}

/// The page's live feed.
#[utoipa::path(
    get,
    path = "/v1/dashboard/stream",
    tag = "dashboard",
    description = "A WebSocket: a `snapshot` message, then every 250 ms the stations that changed (`update`), at least every 2 s.",
    responses(
        (status = 101, description = "Switching to the WebSocket; each message is a feed message", body = Feed),
        (status = 400, description = "A query parameter, or not a WebSocket request", body = ErrorBody),
        visionq_http::doc::OperatorRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn stream(
    State(s): State<Arc<DashboardState>>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(r) = any_params(raw) {
        return r;
    }
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| feed(socket, s)),
        Err(e) => {
            ApiError::new(e.status(), "not_websocket", format!("{}: connect with a WebSocket client", e.body_text())).into_response()
        }
    }
}

/// The live feed: a snapshot, then every [`TICK`] the stations that changed
/// (coalesced, so a tablet watching 50 stations at 30 fps gets a few small messages
/// a second, not 1,500 results), and at least every [`HEARTBEAT`] a message.
async fn feed(mut socket: WebSocket, s: Arc<DashboardState>) {
    s.metrics.websocket_clients.inc();
    let mut cursor = Cursor::default();
    let mut last_sent;
    let mut message = feed_message("snapshot", &s.previews, &mut cursor);
    loop {
        let text = serde_json::to_string(&message).expect("feed message serialises");
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
        last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        s.metrics.websocket_clients.dec();
                        return;
                    }
                    Some(Ok(_)) => continue,
                },
            }
            message = feed_message("update", &s.previews, &mut cursor);
            let quiet = message.stations.is_empty() && message.removed.is_empty();
            if !quiet || last_sent.elapsed() >= HEARTBEAT {
                break;
            }
        }
    }
    s.metrics.websocket_clients.dec();
}

/// The latest frame shown for a station (`?frame_id=` asks for that one frame:
/// 404 once a newer one replaced it, so boxes are never drawn on another frame).
#[utoipa::path(
    get,
    path = "/v1/stations/{station}/latest.jpg",
    tag = "dashboard",
    params(
        ("station" = String, Path, description = "Station id"),
        ("frame_id" = Option<String>, Query, description = "That frame only (a UUID): 404 once a newer one replaced it"),
    ),
    responses(
        (status = 200, description = "The JPEG (`x-visionq-frame-id` names its frame)", content_type = "image/jpeg", body = String),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        visionq_http::doc::OperatorRefusals,
        (status = 404, description = "No frame of this station to show (yet)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn latest_jpeg(
    State(s): State<Arc<DashboardState>>,
    Path(station): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut p = params(raw.as_deref());
    let frame_id = match p.get::<Uuid>("frame_id").and_then(|id| p.finish().map(|()| id)) {
        Ok(id) => id,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match s.previews.latest_jpeg(&station, frame_id) {
        Some((id, jpeg)) => {
            // A frame id names immutable bytes; the bare URL always means "the latest".
            let cache = if frame_id.is_some() { "private, max-age=300, immutable" } else { "no-store" };
            let id = HeaderValue::from_str(&id.to_string()).expect("uuid is a valid header");
            let mut r = ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, cache)], jpeg).into_response();
            r.headers_mut().insert("x-visionq-frame-id", id);
            r
        }
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no frame of `{station}` to show (yet)")).into_response(),
    }
}

/// Another role's `/metrics`, fetched by this process (`dashboard_metrics_urls`), so
/// the pipeline view can read every role while the page only talks to its origin.
#[utoipa::path(
    get,
    path = "/v1/dashboard/metrics/{source}",
    tag = "dashboard",
    params(("source" = usize, Path, description = "Index into `dashboard_metrics_urls`, from 0")),
    responses(
        (status = 200, description = "That role's Prometheus metrics", content_type = "text/plain", body = String),
        visionq_http::doc::OperatorRefusals,
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 502, description = "The source does not answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn metrics_source(State(s): State<Arc<DashboardState>>, Path(source): Path<String>) -> Response {
    let Some(url) = source.parse::<usize>().ok().and_then(|i| s.config.dashboard.dashboard_metrics_urls.get(i)) else {
        let n = s.config.dashboard.dashboard_metrics_urls.len();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no metrics source `{source}`: there are {n}, numbered from 0"),
        )
        .into_response();
    };
    let fetched = async {
        let r = s.http.get(url).send().await?.error_for_status()?;
        r.text().await
    };
    match fetched.await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            let shown = visionq_contract::config::redact_url(url);
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", format!("cannot read {shown}: {}", e.without_url()))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn thresholds_read_as_results_write_scores() {
        assert_eq!(as_shown(0.85), 0.85);
        assert_eq!(serde_json::to_string(&json!(as_shown(0.65))).unwrap(), "0.65");
    }

    #[test]
    fn every_asset_is_served_and_the_page_names_only_its_own() {
        for name in ["app.js", "app.css", "icon.svg"] {
            assert!(assets::get(name).is_some_and(|a| !a.body.is_empty()), "{name}");
            assert!(assets::INDEX.body.contains(&format!("/dashboard/{name}")), "{name}");
        }
        assert!(!assets::INDEX.body.contains("://"), "no external resource");
    }
}
