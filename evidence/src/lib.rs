//! Evidence: frames kept for review and retraining (issue 15). This crate owns what
//! is kept of a frame — its original image bytes and a JSON sidecar ([`Evidence`]:
//! the result with its detections in original pixels, class names, decision,
//! station, frame id and times, and a reviewer's [`Review`] once there is one) —,
//! the narrow [`EvidenceStore`] trait it is kept behind (put, list by time and
//! station, get, delete, prune to byte and age bounds) with its local-directory
//! implementation ([`LocalDir`]), and the export of kept frames as a labelled
//! dataset ([`export`]: YOLO or COCO, reviewers' corrections applied).
//!
//! It decides nothing about which frames to keep (the results role does, from the
//! decision) and does not know where the bytes come from. It imports only the
//! contract; it must not import a role, a queue, a SQL store or HTTP, so any of
//! them (and the dashboard's review queue) can use it.

pub mod export;
mod local;
mod record;
mod store;

pub use local::LocalDir;
pub use record::{Evidence, ImageFile, KeptFor, LabelledBox, Review, Verdict, image_type};
pub use store::{Bounds, EvidenceStore, Pruned, Query, SharedEvidence, record_review};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence store {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("evidence sidecar {path} is not valid: {source}")]
    Sidecar { path: std::path::PathBuf, source: serde_json::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("no evidence kept for frame {0}")]
    NotFound(uuid::Uuid),
}

impl EvidenceError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> EvidenceError {
        let path = path.into();
        move |source| EvidenceError::Io { path, source }
    }
}
