//! What ingest does with the pipeline: publishing a validated frame with its trace
//! context, and holding a request until its frame's result arrives. Used by the
//! frames route, the streams and the self-test.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use visionq_contract::instrument::{InFlight, Stage};
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{FrameMeta, FrameResult, telemetry};
use visionq_queue::{Envelope, QueueError, WorkQueue};

use crate::refusal::Refusal;
use crate::state::IngestState;

/// How a held request ended.
pub(crate) enum Waited {
    Result(Box<FrameResult>),
    TimedOut,
    Stopping,
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
        r.retry_after_s = Some(state.config.ingest.retry_after_s);
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
    let _held = InFlight::new(&state.metrics, Stage::IngestWait, 1);
    let mut stopping = state.stopping.clone();
    let waited = tokio::select! {
        r = tokio::time::timeout(wait, rx) => match r {
            Ok(Ok(result)) => Waited::Result(Box::new(result)),
            _ => Waited::TimedOut,
        },
        _ = stopping.wait_for(|s| *s) => Waited::Stopping,
    };
    waited
}
