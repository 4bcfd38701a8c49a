//! The store trait every database implements, and the choice of one by URL.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use visionq_contract::FrameResult;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("unsupported database URL `{0}`: use postgres://…, or sqlite://PATH")]
    UnsupportedUrl(String),
}

/// A station's results, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub station: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only frames with a detection of this class (and only those detections).
    pub class: Option<String>,
    /// Only frames with a detection scoring at least this (and only those detections).
    pub min_score: Option<f32>,
    pub limit: usize,
}

#[async_trait::async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Writes results in one transaction; a frame already stored is left as it is.
    /// Returns how many were new.
    async fn write_batch(&self, results: &[FrameResult]) -> Result<usize, StoreError>;
    async fn get(&self, frame_id: Uuid) -> Result<Option<FrameResult>, StoreError>;
    async fn history(&self, q: &HistoryQuery) -> Result<Vec<FrameResult>, StoreError>;
    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn ResultStore>;

/// Opens (and migrates) the store a URL names.
pub async fn open_store(url: &str) -> Result<SharedStore, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(crate::postgres::PgStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(crate::sqlite::SqliteStore::open(path).await?))
    } else {
        Err(StoreError::UnsupportedUrl(visionq_contract::config::redact_url(url)))
    }
}

/// The detections a history query shows of a result.
pub(crate) fn keep_detection(q: &HistoryQuery, class_name: &str, score: f32) -> bool {
    q.class.as_deref().is_none_or(|c| c == class_name) && q.min_score.is_none_or(|m| score >= m)
}
