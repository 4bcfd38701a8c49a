//! The review queue (issue 15): the frames decided `needs_review` and not reviewed
//! yet, their kept images, and the review itself.
//!
//! Reading the queue and its images takes a token that reads every station
//! (operator, reviewer, admin). Reviewing takes a reviewer or admin token; the
//! token's name is stored as the reviewer (with authentication off, on a loopback
//! listener, the reviewer is `local`). A frame is reviewed once: the review is
//! stored in the results database beside the decision (which stays as the machine
//! made it), kept with the frame's image in the evidence store (so the dataset
//! export applies it: the sidecar of a kept frame, or a recent frame's image still
//! held — the reply's `evidence` says which, and says so when the image is gone),
//! and the frame's result is pushed again on the events — to the live
//! stream and the station's subscribers — with `review` set: its final word.

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use visionq_contract::auth::Scope;
use visionq_contract::config::valid_station_id;
use visionq_contract::decision::{Review, Verdict};
use visionq_contract::params::ParamError;
use visionq_contract::refusal::ErrorBody;
use visionq_contract::topology::event_routing_key;
use visionq_contract::{Detection, FrameResult};
use visionq_http::ApiError;
use visionq_http::access::{self, Caller};
use visionq_queue::Envelope;

use crate::api::{ResultsState, bad_value, query, store_error};
use crate::store::{Cursor, ReviewQuery};

/// Frames a page of the queue holds at most (and by default).
pub const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;

/// The queue's routes (behind the read gate that `routes::router` puts on them).
pub(crate) fn routes() -> Router<Arc<ResultsState>> {
    Router::new()
        .route("/v1/review", get(queue))
        .route("/v1/review/{frame_id}", post(review))
        .route("/v1/review/{frame_id}/image", get(image))
}

/// A page of the review queue, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewPage {
    pub items: Vec<FrameResult>,
    /// The cursor of the next page (`?after=`); absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The answer to a review: the frame's result with its review, and what became of
/// its image.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewReply {
    #[serde(flatten)]
    pub result: FrameResult,
    pub evidence: EvidenceNote,
}

/// Whether a reviewed frame's image is kept with its review (in the evidence store,
/// so `visionq dataset export` includes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceNote {
    pub kept: bool,
    /// `kept`; `image_gone`: its bytes are no longer held (it was not kept for review
    /// and its result came longer ago than `evidence_recent_s`, or the hold was
    /// full); `not_kept_here`: this process keeps no evidence (`evidence_max_bytes`
    /// 0); `failed`: the store could not write it.
    pub code: String,
    pub message: String,
}

impl EvidenceNote {
    fn of(image: Option<crate::evidence::ReviewedImage>) -> EvidenceNote {
        use crate::evidence::ReviewedImage;
        let (kept, code, message) = match image {
            Some(ReviewedImage::Kept) => (true, "kept", "the frame's image is kept with its review".to_string()),
            Some(ReviewedImage::Gone) => (
                false,
                "image_gone",
                "the review is stored, but the frame's image is no longer available (not kept for review, and its result came longer ago than evidence_recent_s): it cannot be exported".to_string(),
            ),
            Some(ReviewedImage::Failed(e)) => (false, "failed", format!("the review is stored, but its image could not be kept: {e}")),
            None => (false, "not_kept_here", "the review is stored; this process keeps no frame images (evidence_max_bytes is 0)".to_string()),
        };
        EvidenceNote { kept, code: code.into(), message }
    }
}

/// A reviewer's verdict, as posted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub verdict: Verdict,
    /// Index into the result's `detections`; absent: the decided detection (the
    /// best-scoring one of the decision's class), or, rejecting, the whole frame.
    #[serde(default)]
    pub detection: Option<usize>,
    /// The right class (`corrected`); a model class name.
    #[serde(default)]
    pub class_name: Option<String>,
    /// The right business code (`corrected`); absent: the code the station's label
    /// map gives the corrected class.
    #[serde(default)]
    pub code: Option<String>,
}

/// The checks the queue's routes share: decisions are made, and the caller reads
/// every station.
fn may_read_queue(s: &ResultsState, caller: &Caller) -> Result<(), ApiError> {
    if !caller.reads_all() {
        return Err(access::forbidden("the review queue takes an operator, reviewer or admin token"));
    }
    if !s.decider.enabled() {
        let message = "no decisions are made (no rules file: set VISIONQ_RULES_FILE), so nothing is queued for review";
        return Err(ApiError::new(StatusCode::CONFLICT, "decisions_off", message));
    }
    Ok(())
}

/// The checks of a route about one queued frame: the queue's, no query parameters,
/// and the frame id.
fn queued_frame(s: &ResultsState, caller: &Caller, raw: Option<String>, id: &str) -> Result<Uuid, ApiError> {
    may_read_queue(s, caller)?;
    query(raw).finish()?;
    Uuid::parse_str(id)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_frame_id", format!("`{id}` is not a frame id (a UUID)")))
}

/// The frames waiting for a review, oldest first.
#[utoipa::path(
    get,
    path = "/v1/review",
    tag = "results",
    params(
        ("station" = Option<String>, Query, description = "Only this station's frames"),
        ("after" = Option<String>, Query, description = "The previous page's `next`"),
        ("limit" = Option<usize>, Query, description = "Frames per page, 1-100 (default 20)"),
    ),
    responses(
        (status = 200, description = "A page of the queue", body = ReviewPage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "A station token", body = ErrorBody),
        (status = 409, description = "No decisions are made (`decisions_off`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable (`unavailable`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn queue(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = may_read_queue(&s, &caller) {
        return e.into_response();
    }
    let (station, after, limit) = match queue_params(raw) {
        Ok(v) => v,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(st) = station.as_deref().filter(|st| !valid_station_id(st)) {
        return bad_value("station", format!("`{st}` is not a station id (1-64 of A-Z a-z 0-9 . _ -)"));
    }
    let after = match after.as_deref().map(|a| Cursor::decode(a).ok_or(a)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(a)) => return bad_value("after", format!("`{a}` is not a cursor this route gave")),
    };
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    match s.store.review_queue(&ReviewQuery { station, after, limit }).await {
        Ok(items) => {
            let next = (items.len() == limit).then(|| items.last().map(|r| Cursor::of(r).encode())).flatten();
            Json(ReviewPage { items, next }).into_response()
        }
        Err(e) => store_error(e),
    }
}

type QueueParams = (Option<String>, Option<String>, Option<usize>);

fn queue_params(raw: Option<String>) -> Result<QueueParams, ParamError> {
    let mut p = query(raw);
    let params = (p.get("station")?, p.get("after")?, p.get_in("limit", 1, MAX_PAGE)?);
    p.finish()?;
    Ok(params)
}

/// The image of a frame kept for review (from the evidence store).
#[utoipa::path(
    get,
    path = "/v1/review/{frame_id}/image",
    tag = "results",
    params(("frame_id" = String, Path, description = "Frame id")),
    responses(
        (status = 200, description = "The frame's image as posted (JPEG, PNG or WebP)"),
        (status = 400, description = "Not a frame id", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "A station token", body = ErrorBody),
        (status = 404, description = "No image kept for the frame (`not_kept`)", body = ErrorBody),
        (status = 409, description = "No decisions are made (`decisions_off`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn image(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let id = match queued_frame(&s, &caller, raw, &id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let not_kept = || ApiError::new(StatusCode::NOT_FOUND, "not_kept", format!("no image is kept for frame {id}")).into_response();
    let Some(keeper) = &s.keeper else { return not_kept() };
    match keeper.image(id).await {
        Ok(Some((content_type, bytes))) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("image/jpeg")));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
            r
        }
        Ok(None) => not_kept(),
        Err(e) => {
            tracing::warn!(error = %e, frame_id = %id, "cannot read a kept image");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "evidence_unreadable", e.to_string()).into_response()
        }
    }
}

/// Reviews a frame's decision: confirmed, corrected or rejected. Answers the
/// frame's result with its review, which is also pushed on the live stream.
#[utoipa::path(
    post,
    path = "/v1/review/{frame_id}",
    tag = "results",
    params(("frame_id" = String, Path, description = "Frame id")),
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "Stored: the frame's result with its review, and whether its image is kept with it (`evidence`)", body = ReviewReply),
        (status = 400, description = "Not a frame id, a bad body, a detection the frame lacks, an unknown class, or a correction without a class or code", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Not a reviewer or admin token", body = ErrorBody),
        (status = 404, description = "No such frame (`not_found`)", body = ErrorBody),
        (status = 409, description = "No decisions are made, the frame has no decision, or it was reviewed already (`already_reviewed`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable (`unavailable`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn review(
    State(s): State<Arc<ResultsState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    if !caller.has(Scope::Reviewer) {
        return access::forbidden("reviewing takes a reviewer or admin token").into_response();
    }
    let id = match queued_frame(&s, &caller, raw, &id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let asked: ReviewRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            let message = format!(
                "expected {{\"verdict\": \"confirmed\" | \"corrected\" | \"rejected\", \"detection\"?, \"class_name\"?, \"code\"?}}: {e}"
            );
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_review", message).into_response();
        }
    };
    let mut result = match s.store.get(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no frame {id} is stored")).into_response(),
        Err(e) => return store_error(e),
    };
    if let Some(done) = &result.review {
        return already(id, done);
    }
    let reviewer = caller.name().to_string();
    let stored = match final_review(&s, &result, asked, reviewer) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match s.store.put_review(id, &stored).await {
        Ok(true) => {}
        // Another reviewer came first (or the frame went with retention meanwhile).
        Ok(false) => {
            return match s.store.get(id).await {
                Ok(Some(FrameResult { review: Some(done), .. })) => already(id, &done),
                Ok(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no frame {id} is stored")).into_response(),
                Err(e) => store_error(e),
            };
        }
        Err(e) => return store_error(e),
    }
    tracing::info!(frame_id = %id, station = %result.station, verdict = stored.verdict.as_str(), reviewer = stored.reviewer.as_deref().unwrap_or(""), "frame reviewed");
    s.metrics.reviews_total.with_label_values(&[stored.verdict.as_str()]).inc();
    result.review = Some(stored.clone());
    let image = match &s.keeper {
        Some(keeper) => Some(keeper.reviewed(&result, stored).await),
        None => None,
    };
    let body = serde_json::to_vec(&result).expect("result serialises");
    if let Err(e) = s.broker.publish_event(&event_routing_key(&result.station), Envelope::new(body)).await {
        tracing::warn!(error = %e, frame_id = %id, "cannot push a review (it is stored)");
    }
    Json(ReviewReply { result, evidence: EvidenceNote::of(image) }).into_response()
}

fn already(id: Uuid, done: &Review) -> Response {
    let who = done.reviewer.as_deref().unwrap_or("someone");
    let when = done.reviewed_at.map(|t| format!(" at {}", t.to_rfc3339())).unwrap_or_default();
    ApiError::new(StatusCode::CONFLICT, "already_reviewed", format!("frame {id} was {} by {who}{when}", done.verdict.as_str()))
        .into_response()
}

/// The decided detection: the best-scoring one of the decision's class.
fn decided(result: &FrameResult) -> Option<usize> {
    let class = result.decision.as_ref()?.class_name.as_deref()?;
    let best = result.detections.iter().enumerate().filter(|(_, d)| d.class_name == class);
    best.max_by(|(_, a), (_, b)| a.score.total_cmp(&b.score)).map(|(i, _)| i)
}

/// The review as stored: checked against the frame, with the final class and code.
fn final_review(s: &ResultsState, result: &FrameResult, asked: ReviewRequest, reviewer: String) -> Result<Review, ApiError> {
    let refuse = |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let Some(decision) = &result.decision else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_decision",
            format!("frame {} has no decision to review", result.frame_id),
        ));
    };
    if let Some(i) = asked.detection.filter(|&i| i >= result.detections.len()) {
        return Err(refuse(
            "bad_detection",
            format!("the frame has {} detections; there is no detection {i}", result.detections.len()),
        ));
    }
    let target = asked.detection.or_else(|| decided(result));
    let of_target = |f: fn(&Detection) -> String| target.map(|i| f(&result.detections[i]));
    let (class_name, code) = match asked.verdict {
        Verdict::Confirmed | Verdict::Rejected => {
            if asked.class_name.is_some() || asked.code.is_some() {
                let message = format!("`{}` takes no class_name or code: send `corrected` to change them", asked.verdict.as_str());
                return Err(refuse("bad_review", message));
            }
            match asked.detection {
                // Another detection than the decided one: its class, its code.
                Some(_) if target != decided(result) => {
                    let class = of_target(|d| d.class_name.clone());
                    let code = class.as_deref().and_then(|c| s.decider.code_for(&result.station, c));
                    (class, code)
                }
                _ => (decision.class_name.clone(), decision.code.clone()),
            }
        }
        Verdict::Corrected => {
            if asked.class_name.is_none() && asked.code.is_none() {
                return Err(refuse("bad_review", "`corrected` needs the right class_name, code or both".into()));
            }
            if target.is_none() && asked.class_name.is_some() {
                let message = "the frame has no decided detection: say which one (`detection`) the class is for".to_string();
                return Err(refuse("bad_detection", message));
            }
            if let (Some(c), Some(known)) = (&asked.class_name, &s.classes)
                && !known.iter().any(|k| k == c)
            {
                return Err(refuse("unknown_class", format!("`{c}` is not a class of the model")));
            }
            let class = asked.class_name.clone().or_else(|| of_target(|d| d.class_name.clone())).or(decision.class_name.clone());
            let code = asked.code.clone().or_else(|| class.as_deref().and_then(|c| s.decider.code_for(&result.station, c)));
            (class, code)
        }
    };
    // A rejection without a detection is of the whole frame.
    let detection = if asked.verdict == Verdict::Rejected { asked.detection } else { target };
    // Microseconds: what every store keeps, so the answer is what reads back.
    let reviewed_at = Some(Utc::now().trunc_subsecs(6));
    Ok(Review { verdict: asked.verdict, detection, class_name, code, reviewer: Some(reviewer), reviewed_at })
}
