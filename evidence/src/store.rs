//! The storage trait evidence is kept behind: narrow, so an object store can follow
//! the local directory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Evidence, EvidenceError, KeptFor, Review};

/// Which kept frames to list: by the frame's `received_at` (`since` inclusive,
/// `until` exclusive) and station. Empty: all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub station: Option<String>,
}

impl Query {
    pub fn matches(&self, station: &str, received_at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| received_at >= s)
            && self.until.is_none_or(|u| received_at < u)
            && self.station.as_deref().is_none_or(|s| s == station)
    }
}

/// What a store holds at most; pruning deletes the oldest frames (by `received_at`)
/// until both hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Bytes of images and sidecars together.
    pub max_bytes: u64,
    /// Age of a frame; `None`: no age bound.
    pub max_age: Option<Duration>,
}

/// What one pruning step deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub frames: u64,
    pub bytes: u64,
}

#[async_trait::async_trait]
pub trait EvidenceStore: Send + Sync {
    /// Keeps `image` and `evidence` (whose `image` field the store fills in),
    /// replacing what was kept for the same frame.
    async fn put(&self, evidence: Evidence, image: Bytes) -> Result<(), EvidenceError>;
    /// The sidecars of the frames `query` selects, oldest first.
    async fn list(&self, query: &Query) -> Result<Vec<Evidence>, EvidenceError>;
    /// A frame's sidecar and image bytes.
    async fn get(&self, frame_id: Uuid) -> Result<Option<(Evidence, Bytes)>, EvidenceError>;
    /// Deletes a frame's image and sidecar; false when none was kept.
    async fn delete(&self, frame_id: Uuid) -> Result<bool, EvidenceError>;
    /// Deletes the oldest frames until the store is within its bounds at `now`.
    async fn prune(&self, now: DateTime<Utc>) -> Result<Pruned, EvidenceError>;
    /// Bytes held (images and sidecars).
    async fn bytes(&self) -> u64;
}

pub type SharedEvidence = Arc<dyn EvidenceStore>;

/// Stores a reviewer's verdict in a kept frame's sidecar (the review queue's hook).
pub async fn record_review(store: &dyn EvidenceStore, frame_id: Uuid, review: Review) -> Result<(), EvidenceError> {
    let (mut evidence, image) = store.get(frame_id).await?.ok_or(EvidenceError::NotFound(frame_id))?;
    evidence.review = Some(review);
    evidence.kept_for = KeptFor::Reviewed;
    store.put(evidence, image).await
}
