//! `POST /v1/stations/{station}/frames`: who posts, the parameters, the image header
//! and its limits, then the publish and, when asked, the wait for the result.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The header a station names its frame with (see [`crate::admit::keyed_frame_id`]).
const IDEMPOTENCY_KEY: &str = "idempotency-key";
use visionq_contract::FrameResult;
use visionq_contract::auth::Principal;
use visionq_contract::params::{ParamError, Params};
use visionq_contract::refusal::ErrorBody;
use visionq_contract::topology::TRACEPARENT_HEADER;

use crate::admit::{Arrival, Door, check_rate, check_station, count_accepted, count_refused, frame_meta};
use crate::body::{FrameForm, ImageBody, JsonFrame, read_image, transport_limit};
use crate::pipeline::{Waited, publish_frame, wait_result};
use crate::refusal::{Refusal, token};
use crate::state::IngestState;

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
    // The transport limit leaves room for base64 and multipart framing; the image
    // itself is held to `max_body_bytes` once extracted.
    let transport_limit = transport_limit(state.config.ingest.max_body_bytes);
    Router::new()
        .route("/v1/stations/{station}/frames", post(post_frame))
        .route("/v1/selftest", post(crate::selftest::selftest))
        .layer(DefaultBodyLimit::max(transport_limit))
        .route("/v1/stations/{station}/ws", get(crate::stream::station_stream))
        .with_state(state.clone())
        .merge(crate::grpc::routes(state))
}

/// Posts a frame: a raw JPEG, PNG or WebP, multipart with an `image` part, or JSON
/// with base64; any other content type is refused (415).
#[utoipa::path(
    post,
    path = "/v1/stations/{station}/frames",
    tag = "ingest",
    params(
        ("station" = String, Path, description = "Station id: 1-64 of A-Z a-z 0-9 . _ -"),
        ("Idempotency-Key" = Option<String>, Header, description = "The station's key for this frame (1-128 printable ASCII): \
            the frame id is derived from station and key, so a frame sent again under the same key (after a lost answer) \
            is stored once and answered with the same `frame_id`"),
        FrameParams,
    ),
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
        visionq_http::doc::TokenRefusals,
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
            count_refused(&state, &refusal);
            refusal.into_response()
        }
    }
}

/// Everything decided before the body is read: who posts for which station, then
/// its rate limit.
fn check_caller(state: &IngestState, station: &str, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, Refusal> {
    let principal = check_station(state, station, token(headers))?;
    check_rate(state, station)?;
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
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => match v.to_str().ok().filter(|k| crate::admit::valid_frame_key(k)) {
            Some(k) => Some(k.to_string()),
            None => {
                let message = "Idempotency-Key must be 1-128 printable ASCII characters";
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "bad_idempotency_key", message).before_body());
            }
        },
    };
    let (image, captured_in_body) = read_image(state, req).await?;
    let wait = params.wait_ms.map(|ms| Duration::from_millis(ms.min(config.ingest.max_wait_ms)));
    let arrival = Arrival {
        station: &station,
        image: &image,
        received_at,
        captured_at: captured_in_body.or(params.captured_at),
        deadline_ms: params.deadline_ms,
        key: key.as_deref(),
    };
    let meta = frame_meta(config, arrival)?;
    let frame_id = meta.frame_id;
    let traceparent = headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok());
    // Listen before publishing, so a fast result cannot slip past.
    let waiting = wait.map(|_| state.waiters.wait_for(frame_id));
    publish_frame(state, &meta, image, traceparent).await?;
    count_accepted(state, if wait.is_some() { Door::Wait } else { Door::Async }, &station);
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
