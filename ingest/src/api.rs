//! `POST /v1/stations/{station}/frames`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;
use visionq_contract::auth::{self, Auth, Denied, Principal, Scope};
use visionq_contract::config::{ExifOrientation, SELFTEST_STATION, valid_station_id};
use visionq_contract::message::elapsed_ms;
use visionq_contract::params::{ParamError, Params};
use visionq_contract::refusal::ErrorBody;
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{Config, FrameMeta, FrameResult, Metrics, Timings, telemetry};
use visionq_queue::{Envelope, QueueError, SharedBroker, WorkQueue};

use crate::header::{self as image_header, Format, HeaderError};
use crate::limits::RateLimiter;
use crate::waiters::Waiters;

pub struct IngestState {
    pub broker: SharedBroker,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub waiters: Arc<Waiters>,
    /// Who may post for which station (and run the self-test).
    pub auth: Arc<Auth>,
    pub limiter: RateLimiter,
    /// Turns true when the process stops taking frames: requests still held for a
    /// result are then answered `202 queued` (the frame is safe in the queue) instead
    /// of being cut when the process exits.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// How a held request ended.
pub(crate) enum Waited {
    Result(Box<FrameResult>),
    TimedOut,
    Stopping,
}

impl Refusal {
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }
}

/// A refusal: status, a machine-readable code (also the metric reason) and a message.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
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

    fn param(mut self, name: &str) -> Self {
        self.param = Some(name.to_string());
        self
    }

    fn before_body(mut self) -> Self {
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

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.code, self.message);
        body.param = self.param;
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.challenge {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if self.body_unread {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// `?wait_ms=`, `?captured_at=`, `?deadline_ms=`; anything else is refused.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FrameParams {
    /// Hold the request up to this many ms (at most `max_wait_ms`) and answer with
    /// the result; without it the answer is `202 queued` at once.
    wait_ms: Option<u64>,
    /// When the station captured the frame (RFC 3339); a body field of the same name wins.
    captured_at: Option<DateTime<Utc>>,
    /// Live frame: report it `expired` instead of running it after this many ms.
    deadline_ms: Option<u64>,
}

impl FrameParams {
    fn parse(query: Option<&str>) -> Result<FrameParams, ParamError> {
        let mut p = Params::parse(query);
        let params =
            FrameParams { wait_ms: p.get("wait_ms")?, captured_at: p.get("captured_at")?, deadline_ms: p.get("deadline_ms")? };
        p.finish()?;
        Ok(params)
    }
}

/// `captured_at` is read as text so that a bad one is refused by its name.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct JsonFrame {
    /// The JPEG, PNG or WebP, base64; a data URL (`data:image/png;base64,…`) declares
    /// its type, which the bytes must be.
    image: String,
    /// When the station captured the frame (RFC 3339).
    #[schema(format = DateTime)]
    captured_at: Option<String>,
}

/// A raw JPEG, PNG or WebP body, of the type its `Content-Type` declares.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // describes the body for the OpenAPI document; the handler reads the bytes
pub(crate) struct ImageBody(Vec<u8>);

/// A multipart upload: the part `image` (alias `file`) and optionally `captured_at`;
/// any other part is refused.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the form for the OpenAPI document; the handler reads it part by part
pub(crate) struct FrameForm {
    /// The JPEG, PNG or WebP (of its part's type, when it has one).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// When the station captured the frame (RFC 3339).
    #[schema(format = DateTime)]
    captured_at: Option<String>,
}

/// A frame taken but not yet answered: `202` (queued), or `504` when `wait_ms`
/// passed first (`error` says so; the frame still completes).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Queued {
    pub frame_id: Uuid,
    /// Always `queued`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Queued {
    fn new(frame_id: Uuid) -> Self {
        Queued { frame_id, status: "queued", error: None }
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    // The transport limit leaves room for base64 (4/3) and multipart framing; the
    // JPEG itself is held to `max_body_bytes` once extracted.
    let transport_limit = state.config.max_body_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/v1/stations/{station}/frames", post(post_frame))
        .route("/v1/selftest", post(crate::selftest::selftest))
        .layer(DefaultBodyLimit::max(transport_limit))
        .with_state(state)
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("frame is larger than the limit of {limit} bytes"))
}

fn body_error(e: impl std::error::Error + 'static, limit: usize) -> Refusal {
    if let Some(t) = visionq_contract::http::body_timed_out(&e) {
        // The listener closes the connection after this answer: what is left of the
        // body must not be read as a next request.
        return Refusal::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", t.to_string()).before_body();
    }
    let text = e.to_string();
    if text.contains("length limit") {
        too_large(limit)
    } else {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_body", format!("cannot read the request body: {text}"))
    }
}

/// The media types a frame may be posted as, with JPEG's common aliases.
fn image_type(mime: &str) -> Option<Format> {
    match mime {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Format::Jpeg),
        "image/png" => Some(Format::Png),
        "image/webp" => Some(Format::WebP),
        _ => None,
    }
}

/// A media type without its parameters, lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Extracts the image (and an optional capture time) from any of the accepted
/// encodings (see [`ACCEPTED`]). Where the image's type is declared — the request's
/// `Content-Type`, a multipart part's, a data URL's — its bytes must be of that type.
async fn read_image(state: &IngestState, req: Request) -> Result<(Bytes, Option<DateTime<Utc>>), Refusal> {
    let limit = state.config.max_body_bytes;
    let mime = essence(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let transport_limit = limit / 3 * 4 + 64 * 1024;
    let (image, declared, captured_at) = match mime.as_str() {
        "multipart/form-data" => {
            let mut form = Multipart::from_request(req, &())
                .await
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_multipart", format!("cannot read multipart body: {e}")))?;
            let (mut image, mut captured) = (None, None);
            while let Some(field) = form.next_field().await.map_err(|e| body_error(e, limit))? {
                let name = field.name().unwrap_or("").to_string();
                match name.as_str() {
                    "captured_at" => {
                        let text = field.text().await.map_err(|e| body_error(e, limit))?;
                        captured = Some(parse_time(&text)?);
                    }
                    "image" | "file" => {
                        if image.is_some() {
                            let message = "multipart body has more than one image part (`image`, or its alias `file`)";
                            return Err(Refusal::new(StatusCode::BAD_REQUEST, "duplicate_part", message).param(&name));
                        }
                        // A part without a type, or typed as plain bytes (what a browser
                        // sends for an unknown extension), is told by its signature.
                        let declared = match field.content_type().map(essence).as_deref() {
                            None | Some("" | "application/octet-stream") => None,
                            Some(t) => Some(image_type(t).ok_or_else(|| unsupported(&format!("{t}` (part `{name}`")).param(&name))?),
                        };
                        image = Some((field.bytes().await.map_err(|e| body_error(e, limit))?, declared));
                    }
                    other => {
                        let message = format!(
                            "multipart part `{other}` is not taken: the frame goes in a part named `image` (or `file`), with an optional `captured_at`"
                        );
                        return Err(Refusal::new(StatusCode::BAD_REQUEST, "unknown_part", message).param(other));
                    }
                }
            }
            let (image, declared) =
                image.ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no_image", "multipart body has no `image` part"))?;
            (image, declared, captured)
        }
        "application/json" => {
            let body = axum::body::to_bytes(req.into_body(), transport_limit).await.map_err(|e| body_error(e, limit))?;
            let frame: JsonFrame = serde_json::from_slice(&body).map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, "bad_json", format!("expected {{\"image\": \"<base64 image>\"}}: {e}"))
            })?;
            // Browser clients often send a data URL, which declares the type.
            let (declared, b64) = match frame.image.split_once(";base64,") {
                Some((prefix, data)) if prefix.starts_with("data:") => match &prefix["data:".len()..] {
                    "" => (None, data),
                    t => (
                        Some(image_type(&essence(t)).ok_or_else(|| unsupported(&format!("{t}` (the data URL's")).param("image"))?),
                        data,
                    ),
                },
                _ => (None, frame.image.as_str()),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_base64", format!("`image` is not valid base64: {e}")))?;
            (Bytes::from(bytes), declared, frame.captured_at.as_deref().map(parse_time).transpose()?)
        }
        other => {
            // Anything else — no type, application/octet-stream, a form — is refused
            // before its body is read.
            let format = image_type(other).ok_or_else(|| unsupported(other).before_body())?;
            let body = axum::body::to_bytes(req.into_body(), transport_limit).await.map_err(|e| body_error(e, limit))?;
            (body, Some(format), None)
        }
    };
    if image.len() > limit {
        return Err(too_large(limit));
    }
    if image.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "empty", "the frame is empty"));
    }
    // The declared type must be what the bytes are (their signature).
    if let (Some(declared), Some(actual)) = (declared, Format::sniff(&image))
        && declared != actual
    {
        let message = format!("the frame is declared `{}` but its bytes are a {} image", declared.mime(), actual.name());
        return Err(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_mismatch", message));
    }
    Ok((image, captured_at))
}

/// What a frame may be posted as, for refusals.
const ACCEPTED: &str = "send image/jpeg, image/png or image/webp, multipart/form-data with an `image` part (alias `file`), or application/json {\"image\": \"<base64>\"}";

fn unsupported(mime: &str) -> Refusal {
    let message = match mime {
        "" => format!("the request has no Content-Type: {ACCEPTED}"),
        m => format!("Content-Type `{m}` is not accepted: {ACCEPTED}"),
    };
    Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, Refusal> {
    DateTime::parse_from_rfc3339(s.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        let message = format!("`captured_at` is not an RFC 3339 time such as 2026-11-22T10:00:00Z: {e}");
        Refusal::new(StatusCode::BAD_REQUEST, "bad_captured_at", message).param("captured_at")
    })
}

/// The frame's size as shown and the orientation preprocessing applies: a JPEG's
/// EXIF orientation where `station` applies it (`exif_orientation`), else 1.
fn check_header(config: &Config, station: &str, image: &[u8]) -> Result<(u32, u32, u8), Refusal> {
    let header = image_header::read(image).map_err(|e| match e {
        HeaderError::NotAnImage => Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_an_image", e.to_string()),
        HeaderError::Truncated(..) | HeaderError::Corrupt(..) => Refusal::new(StatusCode::BAD_REQUEST, "bad_header", e.to_string()),
    })?;
    let (w, h) = (header.width, header.height);
    let pixels = w as u64 * h as u64;
    if w > config.max_dimension || h > config.max_dimension || pixels > config.max_pixels {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_pixels",
            format!("image is {w}x{h}; the limits are {} pixels and {} per side", config.max_pixels, config.max_dimension),
        ));
    }
    let orientation = match config.exif_orientation(station) {
        ExifOrientation::Apply => header.orientation,
        ExifOrientation::Ignore => 1,
    };
    // Orientations 5–8 turn the image a quarter: it is shown `h` wide.
    Ok(if orientation >= 5 { (h, w, orientation) } else { (w, h, orientation) })
}

/// Posts a frame: a raw JPEG, PNG or WebP, multipart with an `image` part, or JSON
/// with base64; any other content type is refused (415).
#[utoipa::path(
    post,
    path = "/v1/stations/{station}/frames",
    tag = "ingest",
    params(("station" = String, Path, description = "Station id: 1-64 of A-Z a-z 0-9 . _ -"), FrameParams),
    request_body(
        description = "The frame",
        content(
            (ImageBody = "image/jpeg"),
            (ImageBody = "image/png"),
            (ImageBody = "image/webp"),
            (FrameForm = "multipart/form-data"),
            (JsonFrame = "application/json"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the broker (or, embedded, the fsynced journal) holds the frame", body = Queued),
        (status = 200, description = "The result (with `wait_ms`)", body = FrameResult),
        (status = 504, description = "No result within `wait_ms`; the frame still completes", body = Queued),
        (status = 400, description = "Bad parameter, body, header or station id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another station's token", body = ErrorBody),
        (status = 404, description = "Station not in the allow-list", body = ErrorBody),
        (status = 413, description = "Too many bytes or pixels", body = ErrorBody),
        (status = 415, description = "A content type not accepted, a body that is no JPEG, PNG or WebP, or one whose declared type is not its format", body = ErrorBody),
        (status = 429, description = "Over the station's rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "The pipeline cannot take the frame now (`Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn post_frame(
    State(state): State<Arc<IngestState>>,
    Path(station): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> Response {
    match accept(&state, station, query.as_deref(), headers, req).await {
        Ok(r) => r,
        Err(refusal) => {
            state.metrics.ingest_rejected_total.with_label_values(&[refusal.code]).inc();
            tracing::debug!(code = refusal.code, message = refusal.message, "frame refused");
            refusal.into_response()
        }
    }
}

/// Everything decided before the body is read: the station id, who posts (an
/// unauthenticated caller learns nothing, not even whether the station exists), the
/// station being known, and its rate limit.
fn check_caller(state: &IngestState, station: &str, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, Refusal> {
    let config = &state.config;
    if !valid_station_id(station) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "bad_station", "station id must be 1-64 of A-Z a-z 0-9 . _ -"));
    }
    let principal = state.auth.post_frame(token(headers), station)?;
    if station == SELFTEST_STATION {
        let message = format!("station id `{SELFTEST_STATION}` is reserved for the self-test (POST /v1/selftest)");
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "reserved_station", message));
    }
    if !config.station_known(station) {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "unknown_station", format!("station `{station}` is not configured")));
    }
    let Some(limit) = config.rate_limit(station) else { return Ok(principal) };
    if let Err(wait) = state.limiter.take(station, limit) {
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("station `{station}` is over its rate limit of {} frames/s; retry later", limit.0),
        );
        r.retry_after_s = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        return Err(r);
    }
    Ok(principal)
}

async fn accept(
    state: &IngestState,
    station: String,
    query: Option<&str>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, Refusal> {
    let received_at = Utc::now();
    let config = &state.config;
    let principal = check_caller(state, &station, &headers).map_err(Refusal::before_body)?;
    let params = FrameParams::parse(query).map_err(|e| Refusal::from(e).before_body())?;
    let (image, captured_in_body) = read_image(state, req).await?;
    let (width, height, orientation) = check_header(config, &station, &image)?;
    let wait = params.wait_ms.map(|ms| Duration::from_millis(ms.min(config.max_wait_ms)));

    let published_at = Utc::now();
    // The first stage: the request's body read and checked.
    let mut timings = Timings::new();
    timings.insert("receive".into(), elapsed_ms(received_at, published_at));
    let meta = FrameMeta {
        frame_id: Uuid::now_v7(),
        station: station.clone(),
        width,
        height,
        orientation,
        captured_at: captured_in_body.or(params.captured_at),
        received_at,
        published_at,
        deadline: match params.deadline_ms.unwrap_or_else(|| config.deadline_ms(&station)) {
            0 => None,
            ms => Some(received_at + chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64)),
        },
        timings_ms: timings,
    };
    let frame_id = meta.frame_id;
    let traceparent = headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok());
    // Listen before publishing, so a fast result cannot slip past.
    let waiting = wait.map(|_| state.waiters.wait_for(frame_id));
    publish_frame(state, &meta, image, traceparent).await?;
    let mode = if wait.is_some() { "wait" } else { "async" };
    state.metrics.ingest_accepted_total.with_label_values(&[mode]).inc();
    state.metrics.station_frame(&station);
    if let Some(p) = &principal {
        tracing::trace!(frame_id = %frame_id, token = p.name, "frame posted");
    }

    let queued = Queued::new(frame_id);
    match (wait, waiting) {
        (Some(wait), Some(mut waiting)) => match wait_result(state, wait, &mut waiting.rx).await {
            Waited::Result(result) => Ok((StatusCode::OK, Json(result)).into_response()),
            Waited::Stopping => Ok((StatusCode::ACCEPTED, Json(queued)).into_response()),
            Waited::TimedOut => {
                let error = format!(
                    "no result within {} ms; the frame is still being processed (GET /v1/frames/{frame_id})",
                    wait.as_millis()
                );
                Ok((StatusCode::GATEWAY_TIMEOUT, Json(Queued { error: Some(error), ..queued })).into_response())
            }
        },
        _ => Ok((StatusCode::ACCEPTED, Json(queued)).into_response()),
    }
}

/// Publishes a validated frame with its trace context (the station's `traceparent`,
/// or a new one) and waits for the broker's confirm; a refusal is `503` with `Retry-After`.
pub(crate) async fn publish_frame(
    state: &IngestState,
    meta: &FrameMeta,
    jpeg: Bytes,
    traceparent: Option<&str>,
) -> Result<(), Refusal> {
    let traceparent = match traceparent.filter(|tp| telemetry::trace_id(tp).is_some()) {
        Some(tp) => tp.to_string(),
        None => telemetry::new_traceparent(meta.frame_id),
    };
    let bytes = jpeg.len();
    let envelope = Envelope::new(jpeg)
        .with_header(META_HEADER, serde_json::to_string(meta).expect("meta serialises"))
        .with_header(TRACEPARENT_HEADER, traceparent.clone());
    if let Err(e) = state.broker.publish(WorkQueue::Frames, envelope).await {
        let (code, message) = match &e {
            QueueError::Full(_) => ("queue_full", "the pipeline is at capacity; retry later".to_string()),
            _ => ("unavailable", format!("the pipeline cannot take frames right now: {e}")),
        };
        tracing::warn!(error = %e, station = meta.station, "frame not accepted");
        let mut r = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        r.retry_after_s = Some(state.config.retry_after_s);
        return Err(r);
    }
    state.metrics.ingest_body_bytes.observe(bytes as f64);
    tracing::debug!(
        frame_id = %meta.frame_id,
        station = meta.station,
        width = meta.width,
        height = meta.height,
        bytes,
        trace_id = telemetry::trace_id(&traceparent),
        "frame accepted"
    );
    Ok(())
}

/// Holds a request until its frame's result arrives, up to `wait` or until the
/// process stops (counted in flight meanwhile).
pub(crate) async fn wait_result(state: &IngestState, wait: Duration, rx: &mut tokio::sync::oneshot::Receiver<FrameResult>) -> Waited {
    let gauge = state.metrics.in_flight.with_label_values(&["ingest_wait"]);
    gauge.inc();
    let mut stopping = state.stopping.clone();
    let waited = tokio::select! {
        r = tokio::time::timeout(wait, rx) => match r {
            Ok(Ok(result)) => Waited::Result(Box::new(result)),
            _ => Waited::TimedOut,
        },
        _ = stopping.wait_for(|s| *s) => Waited::Stopping,
    };
    gauge.dec();
    waited
}
