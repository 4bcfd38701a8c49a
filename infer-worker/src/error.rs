//! Why a model cannot be loaded or run. Its own module, so the model and the
//! execution providers both use it without importing each other.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("cannot load ONNX Runtime from {path}: {message} (run `visionq model fetch`, or set ORT_DYLIB_PATH)")]
    Runtime { path: PathBuf, message: String },
    #[error("model file {0} does not exist (run `visionq model fetch`, or set VISIONQ_MODEL)")]
    MissingModel(PathBuf),
    #[error("cannot load model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("the CUDA execution provider was asked for but is not usable: {0}")]
    CudaUnavailable(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Repository(#[from] visionq_models::RepoError),
}
