//! Keeping frames for review and retraining (issue 15): a frame whose decision is
//! `needs_review` (or whose best score is in its review band) is written to the
//! evidence store (`visionq-evidence`) — its original image bytes and its decided
//! result — once its result is persisted; so is a frame a reviewer reviews while its
//! image is still at hand.
//!
//! Where the bytes come from: the image travels ingest → frames queue → preprocess
//! (or an inline infer-worker). Two ways reach the results role:
//! - a process that runs both ingest and results (embedded `visionq run`, `demo`,
//!   `detect`, or an all-roles `visionq run` on RabbitMQ) puts a [`FrameHold`] in
//!   front of ingest's broker: each frame published is held by id until its result
//!   comes through the consumer, and for `evidence_recent_s` after (see
//!   `frame_hold`);
//! - with `evidence_forward_min_score` set, preprocess carries the image on after
//!   the tensor and the infer-worker after the result, when a detection scores at
//!   least that much (`visionq_stage::attach_original`): the results role takes it
//!   from the message. So a separate `visionq results` Deployment keeps evidence.
//!
//! Without either, a frame meant to be kept is counted `unavailable`. Nor are frames
//! replayed from the embedded journal after a restart kept (their bytes were never
//! published through the hold in this process).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;
use visionq_contract::decision::Outcome;
use visionq_contract::{Config, FrameResult, Metrics};
use visionq_evidence::{Bounds, Evidence, EvidenceError, KeptFor, LocalDir, Review, SharedEvidence};

pub use crate::frame_hold::{FrameHold, HOLD_MAX_BYTES, SENT_ON_MAX_BYTES};

/// What became of a frame meant for the evidence store (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Kept,
    /// Its bytes are not in this process (see the module docs).
    Unavailable,
    /// The store could not write it.
    Failed,
    /// Deleted by the store's bounds.
    Pruned,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Kept => "kept",
            Kept::Unavailable => "unavailable",
            Kept::Failed => "failed",
            Kept::Pruned => "pruned",
        }
    }
}

/// What became of a reviewed frame's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewedImage {
    /// Kept with the review (it was kept already, or its bytes were still held).
    Kept,
    /// Its bytes are no longer at hand: the review is stored, the image is not kept.
    Gone,
    /// The store could not write it (the reason).
    Failed(String),
}

/// Decides which results are kept and writes them to the store.
pub struct Keeper {
    store: SharedEvidence,
    hold: Option<Arc<FrameHold>>,
    metrics: Arc<Metrics>,
}

impl Keeper {
    /// The keeper of `config`'s evidence store (a local directory); `hold` has the
    /// frames' bytes published in this process and the recent ones. `None` when
    /// `evidence_max_bytes` is 0.
    pub fn open(config: &Config, metrics: Arc<Metrics>, hold: Option<Arc<FrameHold>>) -> Result<Option<Arc<Keeper>>, EvidenceError> {
        if config.evidence.evidence_max_bytes == 0 {
            return Ok(None);
        }
        let days = u64::from(config.evidence.evidence_max_days);
        let bounds =
            Bounds { max_bytes: config.evidence.evidence_max_bytes, max_age: (days > 0).then(|| Duration::from_secs(days * 86_400)) };
        let store = LocalDir::open(&config.evidence_dir(), bounds)?;
        tracing::info!(dir = %config.evidence_dir().display(), frames = store.len(), "evidence store open");
        Ok(Some(Arc::new(Keeper { store: Arc::new(store), hold, metrics })))
    }

    /// A keeper over any store (tests, another backend).
    pub fn with_store(store: SharedEvidence, hold: Option<Arc<FrameHold>>, metrics: Arc<Metrics>) -> Arc<Keeper> {
        Arc::new(Keeper { store, hold, metrics })
    }

    /// The bytes of a decided result's frame when it is to be kept: decided
    /// `needs_review`, or its best score in the review band (`in_review_band`, under
    /// the station's rules) whatever the decision. `sent` is the image that came
    /// with the result (an infer-worker sends it on), else the hold has it. A frame
    /// not to be kept stays in the hold as a recent frame (a reviewer may still ask
    /// for it).
    pub fn claim(&self, result: &FrameResult, in_review_band: bool, sent: Option<Bytes>) -> Option<Bytes> {
        let id = result.frame_id;
        let wanted = in_review_band || result.decision.as_ref().is_some_and(|d| d.outcome == Outcome::NeedsReview);
        if !wanted {
            if let Some(h) = &self.hold {
                h.finish(id, sent);
            }
            return None;
        }
        let held = self.hold.as_ref().and_then(|h| h.take(id));
        let bytes = sent.or(held);
        if bytes.is_none() {
            self.count(Kept::Unavailable, 1);
        }
        bytes
    }

    fn count(&self, outcome: Kept, n: u64) {
        self.metrics.evidence_frames_total.with_label_values(&[outcome.as_str()]).inc_by(n);
    }

    /// Writes a claimed frame to the store, then prunes it to its bounds.
    pub async fn keep(&self, result: FrameResult, image: Bytes) {
        let frame_id = result.frame_id;
        match self.store.put(Evidence::new(result, KeptFor::ReviewBand, Utc::now()), image).await {
            Ok(()) => self.count(Kept::Kept, 1),
            Err(e) => {
                self.count(Kept::Failed, 1);
                tracing::warn!(%frame_id, error = %e, "cannot keep a frame for review");
            }
        }
        self.prune().await;
    }

    /// A kept frame's image: its content type and bytes.
    pub async fn image(&self, frame_id: Uuid) -> Result<Option<(String, Bytes)>, EvidenceError> {
        Ok(self.store.get(frame_id).await?.map(|(e, bytes)| (e.image.content_type, bytes)))
    }

    /// Keeps a stored review with the frame's image, so the dataset export applies
    /// it: written into the sidecar of a kept frame; a frame not kept yet (outside
    /// the review band) is kept now if its bytes are still held (a recent frame).
    /// `result` is the frame's result as stored.
    pub async fn reviewed(&self, result: &FrameResult, review: Review) -> ReviewedImage {
        let frame_id = result.frame_id;
        let outcome = match visionq_evidence::record_review(self.store.as_ref(), frame_id, review.clone()).await {
            Ok(()) => ReviewedImage::Kept,
            Err(EvidenceError::NotFound(_)) => match self.hold.as_ref().and_then(|h| h.take(frame_id)) {
                Some(image) => {
                    let mut evidence = Evidence::new(result.clone(), KeptFor::Reviewed, Utc::now());
                    evidence.review = Some(review);
                    match self.store.put(evidence, image).await {
                        Ok(()) => {
                            self.count(Kept::Kept, 1);
                            ReviewedImage::Kept
                        }
                        Err(e) => {
                            self.count(Kept::Failed, 1);
                            ReviewedImage::Failed(e.to_string())
                        }
                    }
                }
                None => ReviewedImage::Gone,
            },
            Err(e) => ReviewedImage::Failed(e.to_string()),
        };
        match &outcome {
            ReviewedImage::Kept => self.prune().await,
            ReviewedImage::Gone => {
                tracing::info!(%frame_id, "a reviewed frame's image is no longer held; the review is stored without it")
            }
            ReviewedImage::Failed(e) => tracing::warn!(%frame_id, error = %e, "cannot keep a reviewed frame's image"),
        }
        outcome
    }

    /// Deletes what is beyond the store's bounds (oldest first).
    pub async fn prune(&self) {
        match self.store.prune(Utc::now()).await {
            Ok(p) if p.frames > 0 => {
                self.count(Kept::Pruned, p.frames);
                tracing::debug!(frames = p.frames, bytes = p.bytes, "evidence pruned");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the evidence store"),
        }
        self.metrics.evidence_store_bytes.set(self.store.bytes().await as i64);
    }

    /// Prunes every `interval` (the age bound passes with time, not only with
    /// writes) until `shutdown`.
    pub async fn run_pruning(self: Arc<Self>, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.prune().await;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
