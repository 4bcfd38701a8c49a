//! What every front door (the frames route, the WebSocket stream) does alike with a
//! frame: who posts and for which station, its rate limit, the image header and its
//! limits, the frame's metadata, and counting it accepted. Each check is written once
//! here, so a frame refused on one door is refused on the other with the same code.

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use visionq_contract::auth::Principal;
use visionq_contract::config::{ExifOrientation, SELFTEST_STATION, valid_station_id};
use visionq_contract::message::elapsed_ms;
use visionq_contract::{Config, FrameMeta, Timings};

use crate::header::{self as image_header, HeaderError};
use crate::refusal::Refusal;
use crate::state::IngestState;

/// Who posts, for which station, decided before any frame is read: the station id,
/// the token (an unauthenticated caller learns nothing, not even whether the station
/// exists), the station not being reserved, and it being known.
pub(crate) fn check_station(state: &IngestState, station: &str, token: Option<&str>) -> Result<Option<Arc<Principal>>, Refusal> {
    if !valid_station_id(station) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "bad_station", "station id must be 1-64 of A-Z a-z 0-9 . _ -"));
    }
    let principal = state.auth.post_frame(token, station)?;
    if station == SELFTEST_STATION {
        let message = format!("station id `{SELFTEST_STATION}` is reserved for the self-test (POST /v1/selftest)");
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "reserved_station", message));
    }
    if !state.config.station_known(station) {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "unknown_station", format!("station `{station}` is not configured")));
    }
    Ok(principal)
}

/// Takes one frame from the station's rate limit (`429 rate_limited` with
/// `Retry-After` when it is spent).
pub(crate) fn check_rate(state: &IngestState, station: &str) -> Result<(), Refusal> {
    let Some(limit) = state.config.rate_limit(station) else { return Ok(()) };
    state.limiter.take(station, limit).map_err(|wait| {
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("station `{station}` is over its rate limit of {} frames/s; retry later", limit.0),
        );
        r.retry_after_s = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        r
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
    if w > config.ingest.max_dimension || h > config.ingest.max_dimension || pixels > config.ingest.max_pixels {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_pixels",
            format!(
                "image is {w}x{h}; the limits are {} pixels and {} per side",
                config.ingest.max_pixels, config.ingest.max_dimension
            ),
        ));
    }
    let orientation = match config.exif_orientation(station) {
        ExifOrientation::Apply => header.orientation,
        ExifOrientation::Ignore => 1,
    };
    // Orientations 5–8 turn the image a quarter: it is shown `h` wide.
    Ok(if orientation >= 5 { (h, w, orientation) } else { (w, h, orientation) })
}

/// A frame whose bytes are in, as a front door received it.
pub(crate) struct Arrival<'a> {
    pub station: &'a str,
    pub image: &'a Bytes,
    pub received_at: DateTime<Utc>,
    pub captured_at: Option<DateTime<Utc>>,
    /// The station's deadline for this frame; `None`: the configured one.
    pub deadline_ms: Option<u64>,
    /// The station's own key for this frame (a stream's `key`, HTTP's
    /// `Idempotency-Key`): the frame id is derived from it, so a frame sent again
    /// after a lost answer is stored once.
    pub key: Option<&'a str>,
}

/// The frame id of a frame the station gave a key: the same station and key always
/// give the same id (SHA-256 of both, as a version-8 UUID), so the stores, which
/// write a frame id once, keep one frame however often it was sent.
pub(crate) fn keyed_frame_id(station: &str, key: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(b"visionq frame key\0").chain_update(station).chain_update([0]).chain_update(key).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A frame key as stations may give it: 1 to 128 printable ASCII characters.
pub(crate) fn valid_frame_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks the image's header against the limits and makes the frame's metadata (a
/// new id, the receive stage's time, the deadline), ready to publish.
pub(crate) fn frame_meta(config: &Config, arrival: Arrival<'_>) -> Result<FrameMeta, Refusal> {
    let Arrival { station, image, received_at, captured_at, deadline_ms, key } = arrival;
    let (width, height, orientation) = check_header(config, station, image)?;
    let published_at = Utc::now();
    // The first stage: the frame's bytes read and checked.
    let mut timings = Timings::new();
    timings.insert("receive".into(), elapsed_ms(received_at, published_at));
    Ok(FrameMeta {
        frame_id: key.map_or_else(Uuid::now_v7, |k| keyed_frame_id(station, k)),
        station: station.to_string(),
        width,
        height,
        orientation,
        captured_at,
        received_at,
        published_at,
        deadline: match deadline_ms.unwrap_or_else(|| config.deadline_ms(station)) {
            0 => None,
            ms => Some(received_at + chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64)),
        },
        timings_ms: timings,
    })
}

/// How a frame came in, the label of `visionq_ingest_accepted_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Door {
    /// HTTP, answered `202` at once.
    Async,
    /// HTTP, held for the result (`?wait_ms=`).
    Wait,
    /// The station's WebSocket.
    Stream,
    /// gRPC, unary or stream.
    Grpc,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Door::Async => "async",
            Door::Wait => "wait",
            Door::Stream => "stream",
            Door::Grpc => "grpc",
        }
    }
}

/// Counts a published frame (the broker confirmed it).
pub(crate) fn count_accepted(state: &IngestState, door: Door, station: &str) {
    state.metrics.ingest_accepted_total.with_label_values(&[door.label()]).inc();
    state.metrics.station_frame(station);
}

/// Counts a refused frame by its code, and logs it.
pub(crate) fn count_refused(state: &IngestState, refusal: &Refusal) {
    state.metrics.ingest_rejected_total.with_label_values(&[refusal.code]).inc();
    tracing::debug!(code = refusal.code, message = refusal.message, "frame refused");
}
