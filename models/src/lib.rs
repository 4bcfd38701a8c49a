//! The model repository (issue 16). This crate owns the layout of a repository —
//! a directory `<root>/<name>/<version>/model.onnx` with a small `model.toml`
//! beside each file ([`Manifest`]: input size and format, output layout, class
//! names when the file lacks them, default thresholds) — and which version of each
//! name is active, kept in `<root>/active.toml` ([`State`]), written atomically
//! (temporary file, fsync, rename, fsync of the directory) under a file lock, with
//! the versions active before so a rollback knows where to go back to. The same
//! layout serves a laptop, the container image and a mounted volume; a process that
//! starts reads the active version from here, so a restarted or a new replica
//! serves what was activated.
//!
//! It knows files only: it does not load or run a model (the infer-worker does),
//! speak HTTP or touch a queue. It must not import any other visionq crate, so the
//! infer-worker, the binary and tests can all use it.

mod manifest;
mod repository;
mod state;

pub use manifest::{MANIFEST_FILE, MODEL_FILE, Manifest};
pub use repository::{Entry, Repository, Version};
pub use state::{CandidateState, STATE_FILE, State, Track};

/// Why a repository operation was refused; [`RepoError::code`] is the API's `code`.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("`{0}` is not a valid model name (1-64 of A-Z a-z 0-9 _ -)")]
    BadName(String),
    #[error("`{0}` is not a valid model version (1-64 of A-Z a-z 0-9 . _ -, not starting with `.`)")]
    BadVersion(String),
    #[error("no model `{name}` in the repository {root}")]
    UnknownModel { name: String, root: String },
    #[error("model `{name}` has no version `{version}`")]
    UnknownVersion { name: String, version: String },
    #[error("model `{name}` already has a version `{version}`; a version is never replaced (add another)")]
    VersionExists { name: String, version: String },
    #[error("model `{0}` has no active version (`visionq model activate {0} VERSION`)")]
    NoActive(String),
    #[error("model `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    #[error("{path}: {message}")]
    BadManifest { path: String, message: String },
    #[error("{path}: {message}")]
    BadState { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl RepoError {
    /// The machine-readable reason (the `code` of an `{error, code}` refusal).
    pub fn code(&self) -> &'static str {
        match self {
            RepoError::BadName(_) | RepoError::BadVersion(_) => "bad_parameter",
            RepoError::UnknownModel { .. } => "unknown_model",
            RepoError::UnknownVersion { .. } => "unknown_version",
            RepoError::VersionExists { .. } => "version_exists",
            RepoError::NoActive(_) => "no_active_version",
            RepoError::NoPrevious(_) => "no_previous_version",
            RepoError::BadManifest { .. } => "bad_manifest",
            RepoError::BadState { .. } | RepoError::Io { .. } => "repository_unavailable",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> RepoError {
        RepoError::Io { path: path.display().to_string(), source }
    }
}

/// A model name: 1–64 of `[A-Za-z0-9_-]` (a directory name, a metric label, and
/// never the state file's name, which has a dot).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// A version: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot (so never `.`, `..`
/// or a hidden temporary directory).
pub fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_are_safe_path_components() {
        for ok in ["yolov3-tiny", "parts_2", "A"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a.b", "active.toml", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["1", "2.0.1", "2026-12-05_a"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".tmp", "a/b", "a b", "1\\2"] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
