//! Between visionq's own types and the gRPC messages: a result as `DetectResult`, a
//! refusal as a gRPC status (unary calls) or a `refused` reply (streams).

use std::time::Duration;

use axum::http::StatusCode;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use uuid::Uuid;
use visionq_contract::FrameResult;

use super::pb::{self, StreamReply, stream_reply};
use crate::refusal::Refusal;

fn bbox(b: [f32; 4]) -> pb::Box {
    pb::Box { x1: b[0], y1: b[1], x2: b[2], y2: b[3] }
}

/// A result as the gRPC message, with the whole result's JSON beside the typed fields.
pub(super) fn result(r: &FrameResult) -> pb::DetectResult {
    pb::DetectResult {
        frame_id: r.frame_id.to_string(),
        station: r.station.clone(),
        status: r.status.as_str().to_string(),
        error: r.error.clone().unwrap_or_default(),
        detections: r
            .detections
            .iter()
            .map(|d| pb::Detection {
                class_id: d.class_id,
                class_name: d.class_name.clone(),
                score: d.score,
                box_px: Some(bbox(d.box_px)),
                r#box: Some(bbox(d.bbox)),
                track_id: d.track_id,
                classification: d.classification.as_ref().map(|c| pb::Classification {
                    label: c.label.clone(),
                    score: c.score,
                    top_k: c.top_k.iter().map(|k| pb::ClassScore { label: k.label.clone(), score: k.score }).collect(),
                    model: c.model.clone(),
                }),
                text: d.text.as_ref().map(|t| pb::TextReading { value: t.value.clone(), score: t.score, model: t.model.clone() }),
            })
            .collect(),
        model_name: r.model.name.clone(),
        model_version: r.model.version.clone(),
        image_width: r.image.width,
        image_height: r.image.height,
        decision: r.decision.as_ref().map(|d| pb::Decision {
            outcome: d.outcome.as_str().to_string(),
            code: d.code.clone().unwrap_or_default(),
            class_name: d.class_name.clone().unwrap_or_default(),
            score: d.score.unwrap_or_default(),
            rule: d.rule.clone(),
            reason: d.reason.clone(),
        }),
        json: serde_json::to_string(r).expect("a result serialises"),
    }
}

/// The gRPC status code of a refusal's HTTP status.
fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        s if s.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// A refusal as the status that ends a unary call: the code of its HTTP status, its
/// message, and its machine-readable code in the trailer `visionq-code` (with
/// `retry-after` in seconds where one applies).
pub(super) fn status_of(r: &Refusal) -> Status {
    let mut status = Status::new(code_of(r.status), r.message.clone());
    let metadata = status.metadata_mut();
    metadata.insert("visionq-code", MetadataValue::from_static(r.code));
    if let Some(s) = r.retry_after_s {
        metadata.insert("retry-after", MetadataValue::from(s));
    }
    status
}

/// `status` naming the frame it is about in the trailer `visionq-frame-id`.
pub(super) fn with_frame_id(mut status: Status, frame_id: Uuid) -> Status {
    let id = MetadataValue::try_from(frame_id.to_string()).expect("a uuid is ASCII");
    status.metadata_mut().insert("visionq-frame-id", id);
    status
}

/// No result within the call's wait: the frame was accepted and still completes.
pub(super) fn deadline_exceeded(frame_id: Uuid, wait: Duration) -> Status {
    let message =
        format!("no result within {} ms; the frame was accepted and still completes: GET /v1/frames/{frame_id}", wait.as_millis());
    with_frame_id(Status::deadline_exceeded(message), frame_id)
}

/// A frame refused on a stream: its reply (the stream goes on).
pub(super) fn refused_reply(client_id: String, r: &Refusal) -> StreamReply {
    let refused = pb::Refused {
        code: r.code.to_string(),
        error: r.message.clone(),
        http_status: r.status.as_u16() as u32,
        retry_after_s: r.retry_after_s.unwrap_or_default(),
    };
    StreamReply { client_id, reply: Some(stream_reply::Reply::Refused(refused)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_code_and_retry_after() {
        let mut r = Refusal::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
        r.retry_after_s = Some(2);
        let s = status_of(&r);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "slow down");
        assert_eq!(s.metadata().get("visionq-code").unwrap(), "rate_limited");
        assert_eq!(s.metadata().get("retry-after").unwrap(), "2");
        let bad = Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_an_image", "no");
        assert_eq!(status_of(&bad).code(), Code::InvalidArgument);
        assert_eq!(status_of(&Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "who")).code(), Code::Unauthenticated);
    }
}
