//! `POST /v1/selftest`: pushes a synthetic frame (a 64×64 gradient, encoded here, so
//! no image ships with the binary) through the whole pipeline as station `selftest`,
//! waits for its result and reports each stage's latency — for operators checking the
//! system without a camera.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;
use visionq_contract::instrument::Stage;
use visionq_contract::params::Params;
use visionq_contract::refusal::ErrorBody;
use visionq_contract::topology::TRACEPARENT_HEADER;
use visionq_contract::{FrameMeta, FrameResult, ResultStatus, Timings};

use crate::pipeline::{Waited, publish_frame, wait_result};
use crate::refusal::{Refusal, check_admin};
use crate::state::IngestState;

/// The station the self-test posts as (reserved: see the contract).
pub use visionq_contract::config::SELFTEST_STATION;
const SIDE: u16 = 64;
const DEFAULT_WAIT_MS: u64 = 10_000;

/// The bundled test frame: a baseline JPEG of a colour gradient.
pub fn test_jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
    JPEG.get_or_init(|| {
        let side = SIDE as u32;
        let mut rgb = Vec::with_capacity((side * side * 3) as usize);
        for y in 0..side {
            for x in 0..side {
                rgb.extend([(x * 255 / side) as u8, (y * 255 / side) as u8, ((x + y) * 127 / side) as u8]);
            }
        }
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 85)
            .encode(&rgb, SIDE, SIDE, jpeg_encoder::ColorType::Rgb)
            .expect("encoding a fixed gradient cannot fail");
        out
    })
}

/// What a self-test answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SelftestReport {
    /// `ok`, `error` (the frame's result is an error) or `timeout`.
    pub status: &'static str,
    pub frame_id: Uuid,
    /// From the request to the result.
    pub total_ms: f64,
    /// The result's per-stage milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, f64>>)]
    pub stages_ms: Option<Timings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<FrameResult>>,
    /// Why no result came (`timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs a synthetic frame through every stage and reports each stage's time.
#[utoipa::path(
    post,
    path = "/v1/selftest",
    tag = "ingest",
    params(("wait_ms" = Option<u64>, Query, description = "How long to wait for the result (ms)")),
    responses(
        (status = 200, description = "The frame went through every stage", body = SelftestReport),
        (status = 502, description = "The frame's result is an error", body = SelftestReport),
        (status = 504, description = "No result in time: a role is missing or stuck", body = SelftestReport),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        visionq_http::doc::AdminRefusals,
        (status = 404, description = "The self-test's station is not in the allow-list", body = ErrorBody),
        (status = 503, description = "The pipeline cannot take the frame now", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn selftest(State(state): State<Arc<IngestState>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    if let Err(refusal) = check_admin(&state, &headers) {
        return refusal.into_response();
    }
    // An allow-list is kept by the self-test too: it runs only where it is listed.
    if !state.config.station_known(SELFTEST_STATION) {
        let message = format!(
            "the self-test posts as station `{SELFTEST_STATION}`, which `stations` (VISIONQ_STATIONS) does not list: add it to run the self-test"
        );
        return Refusal::new(StatusCode::NOT_FOUND, "unknown_station", message).into_response();
    }
    let mut params = Params::parse(query.as_deref());
    let wait_ms = match params.get::<u64>("wait_ms").and_then(|w| params.finish().map(|()| w)) {
        Ok(w) => w,
        Err(e) => return Refusal::from(e).into_response(),
    };
    let started = Instant::now();
    let wait = Duration::from_millis(wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(state.config.ingest.max_wait_ms));
    let now = Utc::now();
    let meta = FrameMeta {
        frame_id: Uuid::now_v7(),
        station: SELFTEST_STATION.to_string(),
        width: SIDE as u32,
        height: SIDE as u32,
        orientation: 1,
        captured_at: None,
        received_at: now,
        published_at: now,
        deadline: None,
        timings_ms: Timings::new(),
    };
    let frame_id = meta.frame_id;
    let count = |outcome: &str| state.metrics.selftest_runs_total.with_label_values(&[outcome]).inc();
    let mut waiting = state.waiters.wait_for(frame_id);
    let traceparent = headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok());
    if let Err(refusal) = publish_frame(&state, &meta, Bytes::from_static(test_jpeg()), traceparent).await {
        count("refused");
        tracing::warn!(code = refusal.code(), "self-test frame not accepted");
        return refusal.into_response();
    }
    let result = match wait_result(&state, wait, &mut waiting.rx).await {
        Waited::Result(result) => result,
        Waited::TimedOut | Waited::Stopping => {
            count("timeout");
            let body = SelftestReport {
                status: "timeout",
                frame_id,
                total_ms: started.elapsed().as_secs_f64() * 1e3,
                stages_ms: None,
                result: None,
                error: Some(format!("no result within {} ms: is every role running?", wait.as_millis())),
            };
            return (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response();
        }
    };
    let total = started.elapsed().as_secs_f64();
    state.metrics.observe_stage(Stage::Selftest, total);
    let ok = result.status == ResultStatus::Ok;
    count(if ok { "ok" } else { "error" });
    tracing::info!(%frame_id, ok, total_ms = total * 1e3, "self-test done");
    let body = SelftestReport {
        status: if ok { "ok" } else { "error" },
        frame_id,
        total_ms: total * 1e3,
        stages_ms: Some(result.timings_ms.clone()),
        result: Some(result),
        error: None,
    };
    let status = if ok { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_frame_is_a_valid_jpeg() {
        let jpeg = super::test_jpeg();
        assert_eq!(crate::jpeg::dimensions(jpeg).unwrap(), (64, 64));
    }
}
